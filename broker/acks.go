package broker

import (
	"bytes"
	"math"
	"time"

	"claudemesh/store"
)

// settleable is the gate in front of client_ack's commit (issue: a member
// of one mesh sending 1,728 acks/s of ids that settled nothing turned every
// mesh's 30 ms sends into 5–8 s, because each ack was a write on the one
// committer all meshes share). Ack frames per connection (--ack-rate)
// are limited before the frame is decoded (route.go); this keeps only the ids that settle something for this
// connection's key: those in flight on one of its connections (memory), or
// with a pending delivery record or a receipt queued for the key (a read
// transaction, which never waits for the committer). The ids that need that read are charged to the member's
// lookup budget (5 × --ack-rate ids/s, burst 20 ×): an honest client
// re-acking redeliveries or acking a fetch_queued backlog stays far below
// it, a flood of invented ids does not. ok is false when the frame was
// refused (the error is sent).
func (c *conn) settleable(reqID string, ids []string) (known []string, ok bool) {
	ms := c.ms
	rest := ids
	ms.mu.Lock()
	if c.keyInflightLocked() > 0 {
		// Only then is each id looked up under the mesh lock: a flood of
		// invented ids on a connection of a key that was pushed nothing
		// (bench --adversary's acks) holds it for no per-id work.
		rest = nil
		// The ids not in flight will need the lookup budget; once they
		// are more than it holds (plus what it refills while this loop
		// runs, well under one id), the frame is refused below whatever
		// the others are, so the loop stops there instead of looking up
		// all 500 under the mesh lock. A key with pushes in flight that
		// floods acks of invented ids (mallory acking while her own
		// 64 KiB self-DMs are unacked) then holds the lock for a few
		// lookups a frame, not 500 times its connections.
		budget := math.Inf(1)
		if lim := c.mem.ackLookups; lim != nil {
			budget = lim.Tokens() + 1
		}
		for _, id := range ids {
			inflight := false
			for sib := range ms.conns[c.pubkey] {
				if _, inflight = sib.inflight[id]; inflight {
					break
				}
			}
			if inflight {
				known = append(known, id)
				continue
			}
			rest = append(rest, id)
			if float64(len(rest)) > budget {
				ms.mu.Unlock()
				c.refuseUnknownAcks(reqID, len(ids)-len(known))
				return nil, false
			}
		}
	}
	ms.mu.Unlock()
	if len(rest) == 0 {
		return known, true
	}
	if lim := c.mem.ackLookups; lim != nil {
		if r := lim.ReserveN(time.Now(), len(rest)); !r.OK() || r.Delay() > 0 {
			r.Cancel()
			c.refuseUnknownAcks(reqID, len(rest))
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

// refuseAckEarly refuses, before it is decoded, a client_ack that
// settleable would refuse after: of the ids it carries, at most as many
// as its key has pushes in flight (on all its connections) can settle
// without a lookup, and its member's lookup budget has fewer left than
// the rest. A flood of 500-id frames otherwise costs a decode of each
// (~30 us with the fast decoder, ~0.35 ms before it), all to be refused
// (bench --adversary: ~0.1 CPU-s a run, also while mallory's presences
// hold a few unacked self-DMs). A frame that repeats an id in flight
// counts it more than once here; only a client past its budget that
// also sends duplicates can be refused by this where the decoded frame
// would have settled. The error carries the reqId read from the frame's
// first bytes, if it is well-formed.
func (c *conn) refuseAckEarly(data []byte) bool {
	lim := c.mem.ackLookups
	ids := ackIDsAtLeast(data)
	if lim == nil || lim.Tokens() >= float64(ids) {
		return false
	}
	ms := c.ms
	ms.mu.Lock()
	inflight := c.keyInflightLocked()
	ms.mu.Unlock()
	if lim.Tokens()+1 >= float64(ids-inflight) {
		return false
	}
	c.refuseUnknownAcks(peekReqID(data), ids-inflight)
	return true
}

// keyInflightLocked counts the pushes in flight on every connection of
// c's key, the only ids an ack can settle without a store read. Caller
// holds ms.mu.
func (c *conn) keyInflightLocked() int {
	return c.ms.keyInflight[c.pubkey]
}

// refuseUnknownAcks answers an ack frame refused by the lookup budget,
// which needed lookups more of it.
func (c *conn) refuseUnknownAcks(reqID string, lookups int) {
	c.b.metrics.limitTripped.WithLabelValues("unknown_acks").Inc()
	c.sendRateLimited(reqID, "too many acks of ids that are not in flight; slow down", untilTokens(c.mem.ackLookups, float64(lookups)))
}

// ackIDsAtLeast estimates, without parsing, how many ids a client_ack
// frame carries: each id is one JSON string, and every frame has at most
// six others (type, its value, reqId, its value, messageIds, messageId).
// Strings padded with escaped quotes count more; such a frame is refused
// rate_limited a little early instead of being parsed.
func ackIDsAtLeast(data []byte) int {
	return max(1, bytes.Count(data, []byte{'"'})/2-6)
}
