package broker

import (
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// settleable is the gate in front of client_ack's commit (issue: a member
// of one mesh sending 1,728 acks/s of ids that settled nothing turned every
// mesh's 30 ms sends into 5–8 s, because each ack was a write on the one
// committer all meshes share). Ack frames per connection (--ack-rate)
// are limited before the frame is decoded (route.go); this keeps only the ids that settle something for this
// connection's key: those in flight on one of its connections (memory), or
// with a pending delivery record (a read transaction, which never waits for
// the committer). The ids that need that read are charged to the member's
// lookup budget (5 × --ack-rate ids/s, burst 20 ×): an honest client
// re-acking redeliveries or acking a fetch_queued backlog stays far below
// it, a flood of invented ids does not. ok is false when the frame was
// refused (the error is sent).
func (c *conn) settleable(reqID string, ids []string) (known []string, ok bool) {
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
	if len(rest) == 0 {
		return known, true
	}
	if lim := c.mem.ackLookups; lim != nil {
		if r := lim.ReserveN(time.Now(), len(rest)); !r.OK() || r.Delay() > 0 {
			r.Cancel()
			c.b.metrics.limitTripped.WithLabelValues("unknown_acks").Inc()
			c.sendError(reqID, wire.CodeRateLimited, "too many acks of ids that are not in flight; slow down")
			c.refusedForRate()
			return nil, false
		}
	}
	var pending []string
	err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		pending, err = store.PendingFor(tx, ms.id, c.pubkey, rest)
		return err
	})
	if err != nil {
		pending = rest // let the commit decide: it reads the same records
	}
	return append(known, pending...), true
}
