package broker

import (
	bolt "go.etcd.io/bbolt"

	"claudemesh/store"
	"claudemesh/wire"
)

// settleable is the gate in front of client_ack's commit (issue: a member
// of one mesh sending 1,728 acks/s of ids that settled nothing turned every
// mesh's 30 ms sends into 5–8 s, because each ack was a write on the one
// committer all meshes share). It limits ack frames per connection
// (--ack-rate), and keeps only the ids that settle something for this
// connection's key: those in flight on one of its connections (memory), or
// with a pending delivery record (a read transaction, which never waits for
// the committer). An ack that settles nothing is answered without a write
// and costs a token of the connection's ordinary request budget. ok is
// false when the frame was refused (the error is sent).
func (c *conn) settleable(reqID string, ids []string) (known []string, ok bool) {
	if c.acks != nil && !c.acks.Allow() {
		c.b.metrics.limitTripped.WithLabelValues("ack_rate").Inc()
		c.sendError(reqID, wire.CodeRateLimited, "too many client_ack frames on this connection; batch ids (up to 500 per frame)")
		return nil, false
	}
	ms := c.ms
	var rest []string
	ms.mu.Lock()
	for _, id := range ids {
		inflight := false
		for sib := range ms.conns[c.pubkey] {
			if _, inflight = sib.inflight[id]; inflight {
				break
			}
		}
		if inflight {
			known = append(known, id)
		} else {
			rest = append(rest, id)
		}
	}
	ms.mu.Unlock()
	if len(rest) > 0 {
		var pending []string
		err := c.b.store.View(func(tx *bolt.Tx) error {
			var err error
			pending, err = store.PendingFor(tx, ms.id, c.pubkey, rest)
			return err
		})
		if err != nil {
			// Let the commit decide: it reads the same records.
			pending = rest
		}
		known = append(known, pending...)
	}
	if len(known) == 0 && !c.frames.Allow() {
		c.b.metrics.limitTripped.WithLabelValues("unknown_acks").Inc()
		c.sendError(reqID, wire.CodeRateLimited, "too many acks of ids that settle nothing; slow down")
		return nil, false
	}
	return known, true
}
