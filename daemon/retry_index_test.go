package daemon

import (
	"context"
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
	// Two are queued for bob; two back off, and fail again.
	waitFor(t, 10*time.Second, "two rows refused twice", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &rows)
		n := 0
		for _, r := range rows {
			if r.State == statePending && r.Attempts >= 2 {
				n++
			}
		}
		return n == 2
	})
	checkPendingIndex(t, alice.d.db)
	alice.d.db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bOutboxRetry).Stats().KeyN; n != 2 {
			t.Errorf("%d rows in the retry index, want the 2 backing off", n)
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
// empty value and the time in the row); a newer daemon moves them to the
// retry index and leaves the rest.
func TestRetryIndexMigration(t *testing.T) {
	const mesh = "01JDQM9S346Q3D25VT4F5V37E3"
	later := time.Now().Add(time.Hour).UnixMilli()
	rows := []struct {
		seq   uint64
		at    int64
		value []byte // the pending index's value
	}{
		{1, 0, seqKey(0)},                 // due: stays
		{2, later, seqKey(uint64(later))}, // backing off: moves
		{3, later, nil},                   // backing off, older empty value: moves by its row
		{4, 0, nil},                       // due, older empty value: stays
	}
	s := migrated(t, 5, func(tx *bolt.Tx) error {
		for _, r := range rows {
			row := &outboxRow{Seq: r.seq, MeshID: mesh, State: statePending, NextAttemptAt: r.at}
			if err := putOutbox(tx, row); err != nil {
				return err
			}
			if err := tx.Bucket(bOutboxPending).Put(pendingKey(mesh, r.seq), r.value); err != nil {
				return err
			}
		}
		return nil
	})
	checkPendingIndex(t, s)
	s.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bOutboxRetry).Stats().KeyN; n != 2 {
			t.Errorf("%d rows in the retry index, want 2", n)
		}
		return nil
	})
}
