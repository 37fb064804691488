package daemon

import (
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkDueWithBackoff: one drain round (due) over a mesh with 1,000 or
// 100,000 rows backing off (a recipient's queue full at the broker, say)
// and, enqueued after them, the window's worth of rows that are due: what
// every accept and every send's outcome costs the daemon while such a
// backlog waits. A round reads the rows it returns and the first row not
// yet due, so both sizes cost the same.
func BenchmarkDueWithBackoff(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("backoff=%d", n), func(b *testing.B) { benchDue(b, n) })
	}
}

func benchDue(b *testing.B, backingOff int) {
	alice, m := idleOutbox(b)
	const dueRows = drainWindow
	later := time.Now().Add(time.Hour).UnixMilli()
	rows := map[uint64]int64{}
	for i := range backingOff + dueRows {
		rows[uint64(1000+i)] = 0
		if i < backingOff {
			rows[uint64(1000+i)] = later
		}
	}
	storePending(b, alice.d, m, rows, nil)
	b.ResetTimer()
	for b.Loop() {
		rows, wait := m.due(drainWindow)
		if len(rows) != dueRows || wait <= 0 {
			b.Fatalf("due: %d rows, wait %v; want %d rows and a wait", len(rows), wait, dueRows)
		}
		unclaimAll(alice.d, rows) // not sent: due again next time
	}
}

// BenchmarkStatusRound: one round of the message_status check of rows left
// queued (checkUnsettled) in an outbox of 1,000 or 100,000 settled rows
// and 10 rows queued, none due: what the check costs every
// StatusCheckEvery while nothing is to be asked. It walks the index of
// rows left queued or sent, not the outbox.
func BenchmarkStatusRound(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("settled=%d", n), func(b *testing.B) {
			alice, m := idleOutbox(b)
			err := alice.d.db.Update(func(tx *bolt.Tx) error {
				for i := range n + 10 {
					st := stateDelivered
					if i >= n {
						st = stateQueued
					}
					if err := putOutbox(tx, &outboxRow{Seq: uint64(1000 + i), MeshID: m.cfg.MeshID, State: st, BrokerMessageID: "x", Pending: 1}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			next := map[uint64]statusCheck{}
			alice.d.checkUnsettled(next) // schedules the 10, due a while from now
			if len(next) != 10 {
				b.Fatalf("%d rows scheduled, want 10", len(next))
			}
			b.ResetTimer()
			for b.Loop() {
				alice.d.checkUnsettled(next)
			}
		})
	}
}

// BenchmarkDueBehindAHeldLine: one drain round over a mesh where one line
// (a sender's rows to one recipient) is held behind a failed row (the
// broker refused it, rate_limited say) with 1,000 or 10,000 of its rows
// due behind it, and the window's worth of another line's rows after
// them: what every ack and every accept costs the daemon while the line
// waits. Each round used to read and decode every row behind the head
// again (a BenchmarkAccept/drain run at the broker's default rate:
// 549,292 decodes in 4,707 rounds for 4,000 messages, 45 % of the CPU);
// a round now passes over the rows it read before by their seq.
func BenchmarkDueBehindAHeldLine(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("behind=%d", n), func(b *testing.B) { benchDueHeld(b, n) })
	}
}

func benchDueHeld(b *testing.B, behind int) {
	alice, m := idleOutbox(b)
	const head, other = 1000, drainWindow
	later := time.Now().Add(time.Hour).UnixMilli()
	err := alice.d.db.Update(func(tx *bolt.Tx) error {
		for i := range 1 + behind + other {
			r := &outboxRow{Seq: uint64(head + i), MeshID: m.cfg.MeshID, State: statePending, TargetSpec: "held"}
			switch {
			case i == 0:
				r.NextAttemptAt = later // the refused row, backing off
			case i > behind:
				r.TargetSpec = "other"
			}
			if err := putOutbox(tx, r); err != nil {
				return err
			}
			if err := setPendingIndex(tx, r, true); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	m.order.hold("\x00held", head)
	b.ResetTimer()
	for b.Loop() {
		rows, _ := m.due(drainWindow)
		if len(rows) != other || rows[0].TargetSpec != "other" {
			b.Fatalf("due: %d rows; want the other line's %d", len(rows), other)
		}
		unclaimAll(alice.d, rows)
	}
}

// unclaimAll releases the claims due took on rows a test does not send.
func unclaimAll(d *Daemon, rows []*outboxRow) {
	for _, r := range rows {
		d.unclaim(r.Seq)
	}
}
