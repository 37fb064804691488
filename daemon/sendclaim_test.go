package daemon

import (
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// roundBlockedInRead starts a drain round (due) of m that stops inside
// its read of the outbox, at the gate (the test holds m.order.mu, which
// the gate takes first), and returns a function that lets it finish and
// returns the rows it found due.
func roundBlockedInRead(t *testing.T, m *meshRT) func() []*outboxRow {
	t.Helper()
	m.order.mu.Lock()
	got := make(chan []*outboxRow, 1)
	go func() {
		rows, _ := m.due(drainWindow)
		got <- rows
	}()
	waitFor(t, 10*time.Second, "the round waits at the gate, inside its read", func() bool {
		buf := make([]byte, 1<<20)
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "(*sendOrder).gate") && strings.Contains(g, "sync.(*Mutex).Lock") {
				return true
			}
		}
		return false
	})
	return func() []*outboxRow {
		m.order.mu.Unlock()
		return <-got
	}
}

func returnsSeq(rows []*outboxRow, seq uint64) bool {
	for _, r := range rows {
		if r.Seq == seq {
			return true
		}
	}
	return false
}

// A row being sent whose ack was recorded while a drain round was reading
// the outbox: the round's read still holds it pending. Before claims, the
// send dropped its busy mark right after the record, and the round sent
// the row again (a duplicate at the broker at best; refused rate_limited,
// a line held at the broker behind a message the daemon never sends
// again). The claim is released only by a round that reads the record.
func TestARoundDoesNotResendARowRecordedWhileItRead(t *testing.T) {
	alice, m := idleOutbox(t)
	const x = 500
	storePending(t, alice.d, m, map[uint64]int64{x: 0}, nil)
	if !alice.d.claimForSend(x) { // the drain sends it
		t.Fatal("the row was claimed already")
	}
	finish := roundBlockedInRead(t, m)
	// The send's goroutine: the ack's record commits, then the claim is
	// settled.
	err := alice.d.db.Update(func(tx *bolt.Tx) error {
		cur, err := getOutbox(tx, x)
		if err != nil {
			return err
		}
		before := cur.State
		cur.State, cur.Acked, cur.BrokerMessageID = stateQueued, true, "m1"
		_, err = writeRow(tx, cur, before, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	alice.d.settle(m, x)
	if returnsSeq(finish(), x) {
		t.Fatalf("the round returned row %d, acked and recorded queued while it read: the drain sends it again", x)
	}
	// The next round reads the record, and releases the claim.
	if rows, _ := m.due(drainWindow); returnsSeq(rows, x) {
		t.Fatalf("a later round returned the queued row %d", x)
	}
	if alice.d.claimed(x) {
		t.Fatal("the claim of a recorded row outlived the next round")
	}
}

// A row failed (session_ended) while a drain round was reading the outbox
// was still returned by that round: sent, though the outbox says dead.
func TestARoundDoesNotSendARowFailedWhileItRead(t *testing.T) {
	alice, m := idleOutbox(t)
	const x = 500
	storePending(t, alice.d, m, map[uint64]int64{x: 0}, nil)
	finish := roundBlockedInRead(t, m)
	// The member's own rows (SenderPubkey ""), the path an ended
	// session's rows take.
	alice.d.failUnsent(m.cfg.MeshID, "", "session ended")
	var state string
	alice.d.db.View(func(tx *bolt.Tx) error {
		if r, err := getOutbox(tx, x); err == nil {
			state = r.State
		}
		return nil
	})
	if state != stateDead {
		t.Fatalf("failUnsent left the row %q", state)
	}
	if returnsSeq(finish(), x) {
		t.Fatalf("the round returned row %d, failed dead while it read: the drain sends a message the outbox calls dead", x)
	}
}

// A row a round returned (the drain sends it) is not failed by a failer
// meanwhile: its outcome is the drain's to record.
func TestAFailerLeavesARowTheDrainSends(t *testing.T) {
	alice, m := idleOutbox(t)
	const x = 500
	storePending(t, alice.d, m, map[uint64]int64{x: 0}, nil)
	rows, _ := m.due(drainWindow)
	if !returnsSeq(rows, x) {
		t.Fatalf("the round did not return the pending row %d", x)
	}
	alice.d.failUnsent(m.cfg.MeshID, "", "session ended")
	alice.d.db.View(func(tx *bolt.Tx) error {
		if r, err := getOutbox(tx, x); err != nil || r.State != statePending {
			t.Errorf("a failer changed the row the drain sends: %v, %v", r, err)
		}
		return nil
	})
	if rows, _ := m.due(drainWindow); returnsSeq(rows, x) {
		t.Fatalf("a second round returned row %d, which the first one claimed", x)
	}
}

// The rows a round remembered behind a held line (lineOf) are forgotten
// once that line is not held, even while another line is: they stayed for
// as long as any line was held, and a line held for long with others held
// now and then filled the 16,384 places with rows sent long ago, so the
// rows behind the long hold were read and decoded every round again.
func TestRowsBehindALineAreForgottenWhenItsHoldEnds(t *testing.T) {
	alice, m := idleOutbox(t)
	later := time.Now().Add(time.Hour).UnixMilli()
	put := func(tx *bolt.Tx, seq uint64, line string, at int64) error {
		r := &outboxRow{Seq: seq, MeshID: m.cfg.MeshID, State: statePending, TargetSpec: line, NextAttemptAt: at}
		if err := putOutbox(tx, r); err != nil {
			return err
		}
		return setPendingIndex(tx, r, true)
	}
	const a, b, behind = 1000, 100000, 2000
	err := alice.d.db.Update(func(tx *bolt.Tx) error {
		for i := range behind + 1 {
			at := int64(0)
			if i == 0 {
				at = later // the held heads back off
			}
			if err := put(tx, uint64(a+i), "A", at); err != nil {
				return err
			}
			if err := put(tx, uint64(b+i), "B", at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	m.order.hold("\x00A", a)
	m.order.hold("\x00B", b)
	rows, _ := m.due(drainWindow)
	unclaimAll(alice.d, rows)
	m.lineMu.Lock()
	remembered := len(m.lineOf)
	m.lineMu.Unlock()
	if remembered != 2*behind {
		t.Fatalf("the round remembered %d rows behind the held lines, want %d", remembered, 2*behind)
	}
	// B's hold ends: its rows are sent (recorded queued). A stays held.
	err = alice.d.db.Update(func(tx *bolt.Tx) error {
		for i := range behind + 1 {
			cur, err := getOutbox(tx, uint64(b+i))
			if err != nil {
				return err
			}
			before := cur.State
			cur.State = stateQueued
			if _, err := writeRow(tx, cur, before, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	rows, _ = m.due(drainWindow)
	unclaimAll(alice.d, rows)
	m.lineMu.Lock()
	defer m.lineMu.Unlock()
	stale := 0
	for seq := range m.lineOf {
		if seq >= b {
			stale++
		}
	}
	if stale > 0 || len(m.lineOf) != behind {
		t.Fatalf("lineOf keeps %d rows of line B, no longer held, and %d in all; want 0 and A's %d", stale, len(m.lineOf), behind)
	}
}
