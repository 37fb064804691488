package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
)

// Departing sessions. A session's rows go out on its own connection, sealed
// with its key (outbox.go, sendConn), so a session that ends — `launch`
// deregisters it when the agent exits, the reaper drops it when its process
// is gone — with rows it sent still pending (not yet sent, or written and
// not yet acked) would leave them "accepted" for ever: nothing else can
// send as its key. Such a session departs instead: it leaves the registry
// (its token no longer works, it is not listed by the daemon) but keeps
// its connection, or its presence keeps reconnecting (after a broker
// outage, the mesh's backoff), until every row it sent is out (acked, or
// failed); then it closes. A resend of a row whose frame may have reached
// the broker gets a duplicate ack, which the drain resolves with
// message_status, so nothing is sent twice. Its record stays in daemon.db,
// marked departing, so a daemon restart opens its connection again
// (reviveSessions). A departing session the broker refuses for good
// (revoked, kicked, its key taken) cannot send: its rows fail with
// session_ended and the reason. One whose connection met a server that
// cannot prove the broker's key waits: that is checked again until the
// real broker answers. Pending rows of a session key the daemon
// no longer has a record of (rows left by a version without departures)
// fail the same way at start-up, never stay accepted in silence.

// unsentBy returns the seqs of the pending rows (not sent, or in flight)
// of mesh meshID that were sent as pubkey.
func (d *Daemon) unsentBy(meshID, pubkey string) []uint64 {
	var out []uint64
	prefix := append([]byte(meshID), 0)
	pk := []byte(pubkey)
	d.db.View(func(tx *bolt.Tx) error {
		rows := tx.Bucket(bOutbox)
		for _, b := range []*bolt.Bucket{tx.Bucket(bOutboxPending), tx.Bucket(bOutboxRetry)} {
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				v := rows.Get(seqKey(seqOf(k)))
				if v == nil || !bytes.Contains(v, pk) {
					continue // the key is stored as text: no need to decode
				}
				var r outboxRow
				if decodeOutbox(v, &r) == nil && r.State == statePending && r.SenderPubkey == pubkey {
					out = append(out, r.Seq)
				}
			}
		}
		return nil
	})
	return out
}

// depart keeps an ended session's connection while it has pending rows
// (see above), and says whether it did; without any, the caller closes it.
func (d *Daemon) depart(s *sessionRT) bool {
	m := d.meshByID(s.rec.MeshID)
	if m == nil || s.pres() == nil {
		return false
	}
	// A send answered just before the session ended may still be in the
	// accept journal only.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	d.acc.settled(ctx)
	cancel()
	n := len(d.unsentBy(s.rec.MeshID, s.rec.Pubkey))
	if n == 0 {
		return false
	}
	d.sessMu.Lock()
	if d.departing == nil {
		d.departing = map[string]*sessionRT{}
	}
	old := d.departing[s.rec.Pubkey]
	d.departing[s.rec.Pubkey] = s
	d.sessMu.Unlock()
	if old != nil && old != s {
		old.retire()
		if old.rec.TokenHash != s.rec.TokenHash {
			d.deleteSessionRecord(old.rec.TokenHash)
		}
	}
	s.mu.Lock()
	s.rec.Departing = true
	rec := s.rec
	s.mu.Unlock()
	if err := d.putSessionRecord(&rec); err != nil {
		d.log.Error("session record", "session", rec.SessionID, "err", err)
	}
	d.log.Info("session ended with messages still to send; its connection stays until they are out",
		"session", rec.SessionID, "rows", n)
	m.kick()
	return true
}

// isDeparting says whether pubkey is a departing session's key.
func (d *Daemon) isDeparting(pubkey string) bool {
	d.sessMu.Lock()
	defer d.sessMu.Unlock()
	return d.departing[pubkey] != nil
}

// departedList is the departing sessions.
func (d *Daemon) departedList() []*sessionRT {
	d.sessMu.Lock()
	defer d.sessMu.Unlock()
	out := make([]*sessionRT, 0, len(d.departing))
	for _, s := range d.departing {
		out = append(out, s)
	}
	return out
}

// wakeDeparted asks the reaper to look at the departing sessions now (a
// row of one was recorded).
func (d *Daemon) wakeDeparted() {
	select {
	case d.departWake <- struct{}{}:
	default:
	}
}

// settleDeparted closes the departing sessions whose rows are all out, and
// fails the rows of those the broker refuses for good.
func (d *Daemon) settleDeparted() {
	for _, s := range d.departedList() {
		if d.ctx != nil && d.ctx.Err() != nil {
			return // shutting down: the records stay for the next start
		}
		if p := s.pres(); p != nil {
			// Closed by the daemon itself (a stop, a restart of the mesh)
			// is no refusal, nor is a broker key mismatch the presence
			// checks again (mismatchRecheck): the real broker may answer
			// the next attempt.
			st, err := p.State()
			if finalForGood(p, st) && !(st == client.StateClosed && (err == nil || errors.Is(err, context.Canceled))) {
				why := string(st)
				if err != nil {
					why = err.Error()
				}
				d.failUnsent(s.rec.MeshID, s.rec.Pubkey, fmt.Sprintf("%s: the session that sent it ended before it went out, and the broker refuses its connection since (%s)",
					localapi.CodeSessionEnded, why))
				d.endDeparted(s)
				continue
			}
		}
		if len(d.unsentBy(s.rec.MeshID, s.rec.Pubkey)) == 0 {
			d.endDeparted(s)
		}
	}
}

// finalForGood says whether st, p's state, is final for good: a broker
// key mismatch is not while p checks it again (PresenceOptions.
// MismatchRecheck), until the real broker answers.
func finalForGood(p *client.Presence, st client.State) bool {
	return st.Final() && !(st == client.StateBrokerKeyMismatch && !presenceDone(p))
}

// presenceDone says whether p has stopped for good.
func presenceDone(p *client.Presence) bool {
	select {
	case <-p.Done():
		return true
	default:
		return false
	}
}

// endDeparted closes a departing session and forgets its record.
func (d *Daemon) endDeparted(s *sessionRT) {
	d.sessMu.Lock()
	if d.departing[s.rec.Pubkey] == s {
		delete(d.departing, s.rec.Pubkey)
	}
	d.sessMu.Unlock()
	s.retire()
	d.deleteSessionRecord(s.rec.TokenHash)
	d.removeAmbientKey(s.rec.MeshID, s.rec.SessionID)
	d.log.Info("ended session's messages are out; its connection closed", "session", s.rec.SessionID)
}

// failUnsent fails the pending rows of mesh meshID sent as pubkey that are
// not being sent, with code session_ended and why.
func (d *Daemon) failUnsent(meshID, pubkey, why string) {
	m := d.meshByID(meshID)
	for _, seq := range d.unsentBy(meshID, pubkey) {
		// A row the drain has is its to record (sendclaim.go).
		d.failUnlessSending(m, seq, func() {
			d.updateRow(seq, func(cur *outboxRow) bool {
				if cur.State != statePending || cur.SenderPubkey != pubkey {
					return false
				}
				cur.State, cur.ErrorCode, cur.LastError = stateDead, localapi.CodeSessionEnded, why
				return true
			})
		})
	}
}

// reviveDeparting starts a departing session from its record (a daemon
// restart, or a session whose process ended while the daemon was down),
// and says whether it did: only while it has pending rows.
func (d *Daemon) reviveDeparting(m *meshRT, rec sessionRecord) bool {
	if len(d.unsentBy(rec.MeshID, rec.Pubkey)) == 0 {
		return false
	}
	key, inboxFrom, err := loadOrCreateSessionKey(d.home, m.cfg.Slug, m.cfg.MeshID, rec.SessionID, d.lastEventID)
	if err != nil || key.PublicHex() != rec.Pubkey {
		return false
	}
	rec.Departing = true
	s := &sessionRT{d: d, rec: rec, key: key, inboxFrom: inboxFrom}
	d.sessMu.Lock()
	if d.departing == nil {
		d.departing = map[string]*sessionRT{}
	}
	d.departing[rec.Pubkey] = s
	d.sessMu.Unlock()
	if err := d.putSessionRecord(&rec); err != nil {
		d.log.Error("session record", "session", rec.SessionID, "err", err)
	}
	s.start(m)
	d.log.Info("ended session revived to send its messages", "session", rec.SessionID)
	return true
}

// failOrphans fails, at start-up, the pending rows sent as a session key
// that is neither a registered nor a departing session's: nothing can send
// them any more (their session ended before this version kept departing
// sessions, or its record was lost).
func (d *Daemon) failOrphans() {
	type orphan struct{ meshID, pubkey string }
	found := map[orphan]bool{}
	d.db.View(func(tx *bolt.Tx) error {
		rows := tx.Bucket(bOutbox)
		for _, b := range []*bolt.Bucket{tx.Bucket(bOutboxPending), tx.Bucket(bOutboxRetry)} {
			c := b.Cursor()
			for k, _ := c.First(); k != nil; k, _ = c.Next() {
				v := rows.Get(seqKey(seqOf(k)))
				var r outboxRow
				if v == nil || decodeOutbox(v, &r) != nil || r.State != statePending || r.SenderPubkey == "" {
					continue
				}
				found[orphan{r.MeshID, r.SenderPubkey}] = true
			}
		}
		return nil
	})
	for o := range found {
		m := d.meshByID(o.meshID)
		if m == nil || o.pubkey == m.key.PublicHex() || d.sessionBySender(o.pubkey) != nil {
			continue
		}
		if d.failEarlierMembership(m, o.pubkey) {
			continue
		}
		d.log.Warn("pending messages of an ended session nothing can send any more; failing them", "mesh", m.cfg.Slug, "session", o.pubkey)
		d.failUnsent(o.meshID, o.pubkey, localapi.CodeSessionEnded+
			": the session that sent it ended before it went out, and the daemon no longer has its registration to send as it; if it was being sent when the session ended, it may have reached the broker")
	}
}

// failEarlierMembership fails, as failLeftMeshes does, the pending rows
// of m's mesh sent as pubkey before this membership began (the member
// left, the daemon down, and joined again: a new key, the same mesh id),
// and says whether none of pubkey's is left pending. They are left_mesh, not
// session_ended: what they were sealed and signed with is the key of the
// membership that left, which is gone. Rows sent as pubkey since the
// join (an ended session's) are the caller's.
func (d *Daemon) failEarlierMembership(m *meshRT, pubkey string) bool {
	n := 0
	for _, seq := range d.unsentBy(m.cfg.MeshID, pubkey) {
		d.failUnlessSending(m, seq, func() {
			d.updateRow(seq, func(cur *outboxRow) bool {
				if cur.State != statePending || cur.SenderPubkey != pubkey || !m.earlierMembership(cur.SenderPubkey, cur.EnqueuedAt) {
					return false
				}
				cur.State, cur.ErrorCode = stateDead, localapi.CodeLeftMesh
				cur.LastError = "you left " + cur.Mesh + " (and joined it again since) before the broker confirmed it; it was sealed and signed with the key you had there, which is gone, so it cannot be sent again: send it anew"
				n++
				return true
			})
		})
	}
	if n > 0 {
		d.log.Info("failed the unsent rows of an earlier membership of a mesh joined again", "mesh", m.cfg.Slug, "rows", n)
	}
	return len(d.unsentBy(m.cfg.MeshID, pubkey)) == 0
}
