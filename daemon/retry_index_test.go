package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
	"claudemesh/store"
)

// checkPendingIndex: every pending row has exactly one index entry — in
// the pending index when it may go at once, in the retry index under its
// nextAttemptAt when it backs off — and no other row has one.
func checkPendingIndex(t testing.TB, db *store.Store) {
	t.Helper()
	db.View(func(tx *bolt.Tx) error {
		var want, got []string
		tx.Bucket(bOutbox).ForEach(func(_, v []byte) error {
			var r outboxRow
			if err := decodeOutbox(v, &r); err != nil {
				t.Fatal(err)
			}
			switch {
			case r.State != statePending:
			case r.NextAttemptAt > 0:
				want = append(want, fmt.Sprintf("retry %x", retryKey(r.MeshID, r.NextAttemptAt, r.Seq)))
			default:
				want = append(want, fmt.Sprintf("pending %x", pendingKey(r.MeshID, r.Seq)))
			}
			return nil
		})
		tx.Bucket(bOutboxPending).ForEach(func(k, _ []byte) error {
			got = append(got, fmt.Sprintf("pending %x", k))
			return nil
		})
		tx.Bucket(bOutboxRetry).ForEach(func(k, _ []byte) error {
			got = append(got, fmt.Sprintf("retry %x", k))
			return nil
		})
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("pending and retry index entries\n%v\nwant, from the rows,\n%v", got, want)
		}
		return nil
	})
}

// TestRowsBackingOffAreIndexedByWhenTheyAreDue: rows the broker refuses
// for a while (the recipient's queue holds all this sender may have in it)
// move from the pending index to the retry index under their next
// attempt, from one time to the next as they fail again, and out of both
// once the broker takes them.
func TestRowsBackingOffAreIndexedByWhenTheyAreDue(t *testing.T) {
	e := newEnv(t)
	bob := e.join("bob")
	e.b.Close()
	e.bCfg.MaxPendingPerSender = 2
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	ctx := context.Background()
	for i := range 4 {
		var res localapi.SendResponse
		if _, err := alice.api.Do(ctx, "POST", "/v1/send", localapi.SendRequest{To: bob.Pubkey, Message: fmt.Sprint("m", i)}, &res); err != nil {
			t.Fatal(err)
		}
	}
	// Two are queued for bob; two back off: the first fails again, the
	// other waits behind it (outboxorder.go), refused once or never sent.
	waitFor(t, 10*time.Second, "m2 refused twice, m3 behind it", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &rows)
		att := map[string]int{}
		for _, r := range rows {
			if r.State == statePending {
				att[r.Preview] = r.Attempts
			}
		}
		return len(att) == 2 && att["m2"] >= 2 && att["m3"] <= 1
	})
	checkPendingIndex(t, alice.d.db)
	alice.d.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bOutboxRetry).Stats().KeyN; n < 1 {
			t.Errorf("%d rows in the retry index, want the one backing off", n)
		}
		return nil
	})
	// bob comes online and takes his first two: the other two go.
	bobd := e.daemon("bob")
	bobd.waitOpen(t)
	waitFor(t, 15*time.Second, "bob has all four", func() bool {
		var rows []localapi.InboxRow
		bobd.api.Do(ctx, "GET", "/v1/inbox", nil, &rows)
		return len(rows) == 4
	})
	waitFor(t, 10*time.Second, "alice's four rows delivered", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &rows)
		n := 0
		for _, r := range rows {
			if r.State == stateDelivered {
				n++
			}
		}
		return n == 4
	})
	alice.checkCounts(t) // the index check included
	alice.d.db.View(func(tx *bolt.Tx) error {
		if p, r := tx.Bucket(bOutboxPending).Stats().KeyN, tx.Bucket(bOutboxRetry).Stats().KeyN; p != 0 || r != 0 {
			t.Errorf("index entries left: %d pending, %d retry", p, r)
		}
		return nil
	})
}

// TestRetryIndexMigration: a daemon.db of schema 5 kept rows backing off in
// the pending index (with their nextAttemptAt as the value, or with an
// empty value and the time in the row); a newer daemon rebuilds both
// indexes from the rows, so what the old index had wrong (an entry of a
// row no longer pending, a time other than its row's, no entry) is not
// carried over, and a corrupt row stays out of both.
func TestRetryIndexMigration(t *testing.T) {
	const mesh = "01JDQM9S346Q3D25VT4F5V37E3"
	later := time.Now().Add(time.Hour).UnixMilli()
	rows := []struct {
		seq   uint64
		state string
		at    int64
		value []byte // the pending index's value; nil: no entry
	}{
		{1, statePending, 0, seqKey(0)},                        // due: stays
		{2, statePending, later, seqKey(uint64(later))},        // backing off: moves
		{3, statePending, later, []byte{}},                     // backing off, older empty value: moves by its row
		{4, statePending, 0, []byte{}},                         // due, older empty value: stays
		{5, stateQueued, later, seqKey(uint64(later))},         // acked, its entry left behind: dropped
		{6, statePending, later + 5000, seqKey(uint64(later))}, // the entry's time is not the row's: the row's
		{7, statePending, 0, nil},                              // no entry: gets one
	}
	s := migrated(t, 5, func(tx *bolt.Tx) error {
		for _, r := range rows {
			row := &outboxRow{Seq: r.seq, MeshID: mesh, State: r.state, NextAttemptAt: r.at}
			if err := putOutbox(tx, row); err != nil {
				return err
			}
			if r.value != nil {
				if err := tx.Bucket(bOutboxPending).Put(pendingKey(mesh, r.seq), r.value); err != nil {
					return err
				}
			}
		}
		// 8: a corrupt row with an entry.
		if err := tx.Bucket(bOutbox).Put(seqKey(8), []byte("not a row")); err != nil {
			return err
		}
		return tx.Bucket(bOutboxPending).Put(pendingKey(mesh, 8), nil)
	})
	s.View(func(tx *bolt.Tx) error {
		var got []string
		tx.Bucket(bOutboxPending).ForEach(func(k, _ []byte) error {
			got = append(got, fmt.Sprint("pending ", seqOf(k)))
			return nil
		})
		tx.Bucket(bOutboxRetry).ForEach(func(k, _ []byte) error {
			at := int64(binary.BigEndian.Uint64(k[len(k)-16:]))
			got = append(got, fmt.Sprintf("retry %d at +%d", seqOf(k), at-later))
			return nil
		})
		want := "[pending 1 pending 4 pending 7 retry 2 at +0 retry 3 at +0 retry 6 at +5000]"
		if fmt.Sprint(got) != want {
			t.Errorf("migrated index entries\n%v\nwant\n%v", got, want)
		}
		return nil
	})
}

// dueWithOneSlot arranges pending rows (seq → nextAttemptAt) in an idle
// outbox and returns what a drain round with one place free sends. With
// atStart the round is the drain's first since the daemon started (which
// holds the lines of the rows backing off, outboxorder.go), otherwise a
// later one; the daemon's own drain may have run its first round or not
// by then, so the test sets which.
func dueWithOneSlot(t *testing.T, rows map[uint64]int64, atStart bool) []uint64 {
	alice, m := idleOutbox(t)
	m.order.mu.Lock()
	m.order.loaded, m.order.held = false, nil
	m.order.mu.Unlock()
	if !atStart {
		m.due(0) // a round before the rows: it reads no row
	}
	storePending(t, alice.d, m, rows, nil)
	out, _ := m.due(1)
	var seqs []uint64
	for _, r := range out {
		seqs = append(seqs, r.Seq)
	}
	return seqs
}

// TestDueSendsTheEarliestAcceptedFirst: with one place free in the send
// window, the earliest accepted row that may go goes, whichever index
// holds it and whenever its retry time came: two rows backing off that
// fell due in the other order, and a row not tried yet before a row
// whose retry time came.
func TestDueSendsTheEarliestAcceptedFirst(t *testing.T) {
	now := time.Now().UnixMilli()
	for _, atStart := range []bool{true, false} {
		if got := dueWithOneSlot(t, map[uint64]int64{105: now - 10, 106: now - 20}, atStart); fmt.Sprint(got) != "[105]" {
			t.Errorf("two rows backing off, both due (first round %v): sent %v, want [105]", atStart, got)
		}
		if got := dueWithOneSlot(t, map[uint64]int64{101: 0, 150: now - 10}, atStart); fmt.Sprint(got) != "[101]" {
			t.Errorf("a row not tried yet and a row due again (first round %v): sent %v, want [101]", atStart, got)
		}
		if got := dueWithOneSlot(t, map[uint64]int64{101: now + 60_000, 150: 0}, atStart); fmt.Sprint(got) != "[150]" {
			t.Errorf("a row backing off and a row not tried yet (first round %v): sent %v, want [150]", atStart, got)
		}
	}
}
