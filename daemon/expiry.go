package daemon

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// Expired deliveries on the normal path. A row the broker acked as queued
// or sent waits for its recipients' receipts; a recipient whose delivery
// expires (its queue timed out after --queue-ttl, it left the mesh) sends
// none, and the broker tells the sender nothing, so the row stayed queued
// for good while `message status` said expired. The daemon asks the
// broker's message_status about such rows now and then (first after
// StatusCheckEvery, then twice as long each time, at most hourly, a
// bounded batch per round, paced) and, when some recipient's delivery expired,
// counts them as the duplicate-ack path does (applyStatus) and settles the
// row: failed with delivery_expired once every recipient has it or
// expired (settle). A row every recipient has is settled delivered: its
// receipts may never come (an agent session's go to its key, whose
// connection closed when the session ended). Other rows are left to their
// receipts.

const (
	statusBatch  = 64        // message_status requests per round
	maxStatusGap = time.Hour // the longest wait between two looks at a row
)

// statusCheck is when to look at a row next, and the wait after that;
// notFound counts the broker's not_found answers in a row.
type statusCheck struct {
	at       time.Time
	gap      time.Duration
	notFound int
}

// lostAfter is how many not_found answers in a row, StatusCheckEvery
// apart, fail a row as lost_by_broker. The broker answers not_found only
// once its node has the cluster's log up to its end, so one is final;
// the second guards against a broker (or a node of an older version)
// that answers before it has caught up.
const lostAfter = 2

func (d *Daemon) statusLoop() {
	t := time.NewTicker(d.opts.StatusCheckEvery)
	defer t.Stop()
	next := map[uint64]statusCheck{}
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		d.checkUnsettled(next)
	}
}

// checkUnsettled runs one round: it walks the index of rows acked as
// queued or sent (bOutboxUnsettled: keys only), reads the rows due among
// them, asks about them one at a time, paced (statusPace), and forgets the
// rows that left those states. It read every row of the outbox each
// round, and sent its requests back to back.
func (d *Daemon) checkUnsettled(next map[uint64]statusCheck) {
	now := time.Now()
	type candidate struct {
		seq           uint64
		meshID, msgID string
		sender        string
		enqueuedAt    int64
	}
	var due []candidate
	seen := map[uint64]bool{}
	d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bOutboxUnsettled).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			seq := seqOf(k)
			seen[seq] = true
			n, ok := next[seq]
			if !ok {
				next[seq] = statusCheck{at: now.Add(d.opts.StatusCheckEvery), gap: d.opts.StatusCheckEvery}
				continue
			}
			if now.Before(n.at) || len(due) >= statusBatch {
				continue
			}
			r, err := getOutbox(tx, seq)
			if err != nil || !unsettled(r.State) || r.BrokerMessageID == "" || r.Pending == 0 || r.Kind == wire.KindTopic {
				// Nothing to expire (nobody was listed for it; a topic
				// post's readers fetch it): never asked about.
				next[seq] = statusCheck{at: now.Add(100 * 365 * 24 * time.Hour), gap: maxStatusGap}
				continue
			}
			due = append(due, candidate{seq, r.MeshID, r.BrokerMessageID, r.SenderPubkey, r.EnqueuedAt})
		}
		return nil
	})
	for seq := range next {
		if !seen[seq] {
			delete(next, seq)
		}
	}
	pace := d.statusPace()
	for i, c := range due {
		if i > 0 {
			t := time.NewTimer(pace)
			select {
			case <-d.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		n := next[c.seq]
		n.gap = min(2*n.gap, maxStatusGap)
		n.at = now.Add(n.gap)
		next[c.seq] = n
		m := d.meshByID(c.meshID)
		if m == nil {
			continue
		}
		if m.earlierMembership(c.sender, c.enqueuedAt) {
			// The broker answers message_status for the member that
			// sent it only: asked as the new member, it says not_found
			// of a message it still holds and delivers.
			d.untrack(c.seq, "you joined "+m.cfg.Slug+" again after the broker took it (as your earlier membership): the broker still delivers it, but this machine no longer learns whether it was delivered")
			continue
		}
		conn := m.conn() // the member's: message_status answers for its sessions' messages too
		if conn == nil {
			continue
		}
		if h := d.opts.testHookStatusCheck; h != nil {
			h(c.seq)
		}
		ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
		st, err := conn.MessageStatus(ctx, c.msgID, "")
		cancel()
		switch client.CodeOf(err) {
		case wire.CodeNotFound:
			if n.notFound++; n.notFound < lostAfter {
				n.at, n.gap = now.Add(d.opts.StatusCheckEvery), d.opts.StatusCheckEvery
				next[c.seq] = n
				continue
			}
			d.failUnknown(c.seq, localapi.CodeLostByBroker)
			continue
		case wire.CodeExpired:
			d.failUnknown(c.seq, localapi.CodeRecordPurged)
			continue
		}
		if n.notFound > 0 {
			n.notFound = 0
			next[c.seq] = n
		}
		if err != nil || !(anyExpired(st) || allDelivered(st)) {
			continue
		}
		d.updateRow(c.seq, func(cur *outboxRow) bool {
			if cur.State != stateQueued && cur.State != stateSent {
				return false
			}
			applyStatus(cur, st)
			settle(cur, time.Now().UnixMilli())
			return true
		})
	}
}

// statusPace is the wait between two message_status requests of a round:
// a round of statusBatch takes half the time to the next, so the check
// is a trickle beside the daemon's own traffic, not a burst of 64.
func (d *Daemon) statusPace() time.Duration {
	return d.opts.StatusCheckEvery / (2 * statusBatch)
}

// allDelivered reports whether every recipient has the message: a row
// whose receipts cannot come is settled with it. An agent session's
// receipts come to the session's key, on its connection, which closes
// when the session ends: a message delivered after that stayed queued in
// the outbox, and in daemon status, while message status said delivered.
func allDelivered(st *wire.MessageStatus) bool {
	for _, r := range st.Recipients {
		if r.State != wire.StateDelivered {
			return false
		}
	}
	return len(st.Recipients) > 0
}

func anyExpired(st *wire.MessageStatus) bool {
	for _, r := range st.Recipients {
		if r.State == wire.StateExpired {
			return true
		}
	}
	return false
}

// failUnknown fails a queued or sent row whose message the broker has no
// record of: lost (its store was restored from an older backup:
// CodeLostByBroker) or purged before this daemon learned how it ended
// (CodeRecordPurged). A lost row is never sent again on its own: a
// recipient may have had it before the restore, so the user decides.
func (d *Daemon) failUnknown(seq uint64, code string) {
	d.updateRow(seq, func(cur *outboxRow) bool {
		if !unsettled(cur.State) {
			return false
		}
		cur.State, cur.ErrorCode, cur.LastError = stateDead, code, unknownText(cur, code, d.opts.Home)
		return true
	})
	if code == localapi.CodeLostByBroker {
		d.log.Warn("the broker has no record of a message it had taken (was it restored from a backup?): the row is failed, lost_by_broker", "row", seq)
	}
}

// unknownText is a lost or purged row's error, with the way out.
func unknownText(r *outboxRow, code, home string) string {
	what, hint := unknownWhy(r, code, home)
	if hint != "" {
		what += "; " + hint
	}
	return code + ": " + what
}

// unknownWhy says what became of a lost or purged row, and what to do.
func unknownWhy(r *outboxRow, code, home string) (what, hint string) {
	if code == localapi.CodeRecordPurged {
		return "the broker no longer keeps a record of it (it keeps one for its queue time plus a day) and this daemon did not learn in time whether it was delivered: each recipient had it, or its delivery expired", ""
	}
	had := ""
	if r.Receipts > 0 {
		had = fmt.Sprintf(" (%d of %d recipients had it before)", min(r.Receipts, r.Pending), r.Pending)
	}
	return "the broker took it, but now has no record of it (was it restored from a backup?), so it will not deliver it" + had,
		fmt.Sprintf("resend it with %s daemon outbox requeue %d", config.Invocation(home), r.Seq)
}

// earlierMembership reports whether a row (its sender key and enqueue
// time) was sent by an earlier membership of m's mesh than the one this
// daemon now holds: a member removed and invited again, or one that left
// and joined again, has a new key, and the mesh keeps its id.
func (m *meshRT) earlierMembership(sender string, enqueuedAt int64) bool {
	if sender == m.key.PublicHex() {
		return false
	}
	joined, err := time.Parse(time.RFC3339, m.cfg.JoinedAt)
	return err == nil && enqueuedAt < joined.UnixMilli()
}
