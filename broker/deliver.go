package broker

import (
	"slices"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// Delivery flow control. Each presence connection has a window of at most
// maxInflight unacked pushes (and maxInflightBytes). New messages are pushed
// straight from the commit callback while the window has room and nothing
// older is waiting; otherwise the connection is marked backlogged and its
// writer refills from the store as acks free the window. Because refills
// walk the recipient's queue in sequence order, delivery stays FIFO and a
// large backlog never trips the slow-consumer limit.
//
// Resumed windows. Whatever a connection was pushed and did not ack is
// pushed again to the recipient's next connection. A member that
// reconnects as fast as --presence-rate allows and never acks could so
// make the broker re-send its whole window (up to 2 MiB) at every
// connect, its own 64 KiB self-DMs for example: bench --adversary
// measured ~10 MiB/s of writes from one member that way. So a connection
// whose recipient key left pushes unacknowledged on another connection
// (one that closed, or one still open beside it) starts with a window of
// --resume-window messages, which each ack widens by one (doubling per
// round trip, like TCP's slow start) until it is the full window again.
// An honest client that acks catches up after a few round trips; one
// that never acks gets one push per connection. A recipient whose last
// connection acked all it was pushed (a daemon back after a day offline
// whose backlog was never pushed) starts with the full window.
//
// Redelivery is bounded the same way for a live connection: at
// --redeliver-after, one that acked nothing since the oldest of its
// expired pushes went out is re-sent --resume-window of them, not its
// whole window again (up to 2 MiB every 30 s for as long as it stays
// open): expireInflightLocked.

// held reports whether next/low messages wait for this connection's
// presence to become idle. Caller holds ms.mu.
func (c *conn) heldLocked() bool {
	if c.pres == nil {
		return false
	}
	st := c.ms.status(c.pres, c.b.cfg.WorkingDecay)
	return st == wire.StatusWorking || st == wire.StatusDND
}

// offerLocked pushes one queue entry to c if flow control and priority
// holding allow, reporting whether it was pushed. Caller holds ms.mu.
func (c *conn) offerLocked(id string, seq uint64, priority string, frame outFrame) bool {
	if c.closed || c.transient || c.inflight == nil {
		return false
	}
	if _, ok := c.inflight[id]; ok {
		return false
	}
	if c.backlog {
		return false // older entries are waiting in the store: keep FIFO
	}
	if priority != wire.PriorityNow && c.heldLocked() {
		return false
	}
	if !c.windowHasRoomLocked(frame.size()) {
		c.backlog = true
		return false
	}
	if !c.enqueueFanoutOut(frame) {
		return false
	}
	c.addInflightLocked(id, frame.size())
	return true
}

// windowHasRoomLocked reports whether a push of size bytes fits in the
// connection's replay window. An empty window always takes one push, so a
// message larger than a small window is still delivered. Caller holds ms.mu.
func (c *conn) windowHasRoomLocked(size int) bool {
	if len(c.inflight) == 0 {
		return true
	}
	if c.window > 0 && len(c.inflight) >= c.window {
		return false
	}
	return len(c.inflight) < maxInflight && c.inflightBytes+size <= c.b.cfg.windowBytes()
}

// addInflightLocked records a push sent to c and not yet acked. Caller
// holds ms.mu.
func (c *conn) addInflightLocked(id string, size int) {
	c.inflight[id] = inflight{size: size, sentAt: time.Now()}
	c.inflightBytes += size
	c.ms.keyInflight[c.pubkey]++
}

// dropInflightLocked forgets an acked push. Caller holds ms.mu.
func (c *conn) dropInflightLocked(id string) {
	if f, ok := c.inflight[id]; ok {
		delete(c.inflight, id)
		c.inflightBytes -= f.size
		c.ms.uncountInflightLocked(c.pubkey, 1)
	}
}

// forgetInflightLocked forgets every push in flight on a closing c.
// Caller holds ms.mu.
func (c *conn) forgetInflightLocked() {
	c.ms.uncountInflightLocked(c.pubkey, len(c.inflight))
	c.inflight, c.inflightBytes = nil, 0
}

// uncountInflightLocked takes n pushes off key's count. Caller holds
// ms.mu.
func (ms *meshState) uncountInflightLocked(key string, n int) {
	if n == 0 {
		return
	}
	if ms.keyInflight[key] -= n; ms.keyInflight[key] <= 0 {
		delete(ms.keyInflight, key)
	}
}

// resumeWindowLocked gives a new connection the resumed window if its
// recipient key left pushes unacknowledged. Caller holds ms.mu; c is
// already in ms.conns.
func (c *conn) resumeWindowLocked() {
	ms, w := c.ms, c.b.cfg.ResumeWindow
	if w <= 0 || w >= maxInflight {
		return
	}
	_, left := ms.unacked[c.pubkey]
	if left || ms.keyInflight[c.pubkey] > len(c.inflight) {
		c.window = w
		c.b.metrics.limitTripped.WithLabelValues("resume_window").Inc()
	}
}

// ackedLocked forgets a push its recipient acked and widens a resumed
// window by one; back at the full window, the recipient key is no longer
// marked. Caller holds ms.mu.
func (c *conn) ackedLocked(id string) {
	if _, ok := c.inflight[id]; !ok {
		return
	}
	c.dropInflightLocked(id)
	c.ackedAt = time.Now()
	if c.window == 0 {
		return
	}
	if c.window++; c.window >= maxInflight {
		c.window = 0
		delete(c.ms.unacked, c.pubkey)
	}
}

// expireInflightLocked drops from c's window the pushes unacked for
// --redeliver-after, so that refill sends them again, and reports how
// many. A connection that acked nothing since the oldest of them went out
// gets only the oldest --resume-window of them again (counted
// limits_tripped{redeliver_window}); the others stay in its window,
// unsent, until a later round or an ack. A live connection that never
// acks was re-sent its whole window (up to 2 MiB) every
// --redeliver-after, for as long as it stayed open; one that acks,
// however slowly, still gets all of them. New messages are not held:
// the window is the same size either way. Caller holds ms.mu.
func (c *conn) expireInflightLocked(now time.Time) int {
	after := c.b.cfg.RedeliverAfter
	var expired []string
	var oldest time.Time
	for id, f := range c.inflight {
		if now.Sub(f.sentAt) >= after {
			expired = append(expired, id)
			if oldest.IsZero() || f.sentAt.Before(oldest) {
				oldest = f.sentAt
			}
		}
	}
	if w := c.b.cfg.ResumeWindow; w > 0 && len(expired) > 0 && !c.ackedAt.After(oldest) {
		// Once per --redeliver-after: the loop checks every
		// --redeliver-after/4 (at most 5 s), and a connection that never
		// acks was re-sent one more of them at each check; so it was
		// when what expired fitted in the window (two pushes in flight,
		// one re-sent at a round and the other at the next check, a
		// quarter of the round later).
		if !c.windowedAt.IsZero() && now.Sub(c.windowedAt) < after {
			return 0
		}
		c.windowedAt = now
		if len(expired) > w {
			slices.SortFunc(expired, func(a, b string) int { return c.inflight[a].sentAt.Compare(c.inflight[b].sentAt) })
			expired = expired[:w]
			c.b.metrics.limitTripped.WithLabelValues("redeliver_window").Inc()
		}
	}
	for _, id := range expired {
		c.dropInflightLocked(id)
	}
	return len(expired)
}

// leftUnackedLocked marks c's recipient key when c closes with pushes
// unacknowledged, if the key is still a recipient: not a session key
// forgotten (its connection closing after its member's ban, with a push
// still in flight), nor the key of a member banned or gone, whose mark
// would stay until --queue-ttl. Caller holds ms.mu.
func (c *conn) leftUnackedLocked() {
	if c.transient || len(c.inflight) == 0 || c.b.cfg.ResumeWindow <= 0 {
		return
	}
	if ms := c.ms; ms.sessions[c.pubkey] != nil || ms.activeMember(c.pubkey) != nil {
		ms.unacked[c.pubkey] = time.Now().UnixMilli()
	}
}

// pruneUnackedLocked forgets marks older than --queue-ttl (what was left
// unacknowledged has expired by then). Caller holds ms.mu.
func (ms *meshState) pruneUnackedLocked(now time.Time, ttl time.Duration) {
	cutoff := now.Add(-ttl).UnixMilli()
	for k, at := range ms.unacked {
		if at < cutoff {
			delete(ms.unacked, k)
		}
	}
}

// refillLocked asks c's writer to push what is queued for c (c just
// became a target, or held messages were released) and keeps a message
// committed meanwhile from being pushed straight from its commit callback
// (offerLocked) before the refill has run: it went out ahead of the older
// entries the refill then pushed, so a daemon that reconnected (after a
// cluster fail-over, say) while its backlog was queued could get the
// first new message before that backlog. The refill takes it in queue
// order with the rest. Caller holds ms.mu.
func (c *conn) refillLocked() {
	c.backlog = true
	c.requestRefill()
}

// refill pushes queued entries the connection has not been sent yet, in
// queue order, until the window is full. It runs on the writer goroutine.
func (c *conn) refill() {
	ms := c.ms
	if ms == nil || c.transient {
		return
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if c.closed || c.pres == nil || c.pres.conn != c {
		return
	}
	if !ms.isTargetLocked(c) {
		return
	}
	c.backlog = false
	held := c.heldLocked()
	err := c.b.store.View(func(tx *store.Tx) error {
		var inner error
		err := store.ScanQueue(tx, ms.id, c.pubkey, 0, func(seq uint64, e *store.QueueEntry) bool {
			if _, ok := c.inflight[e.ID]; ok {
				return true
			}
			if !e.Receipt && e.Priority != wire.PriorityNow && held {
				return true
			}
			// A window full by count takes nothing more, whatever the
			// entry's size: known before the message is loaded (for a
			// member's 64 KiB self-DM an 88 KB copy under the mesh
			// lock), as at every reconnect of a presence that never
			// acks, whose resumed window is one push.
			if !c.windowHasRoomLocked(0) {
				c.backlog = true
				return false
			}
			var frame []byte
			if e.Receipt {
				frame = e.Frame
			} else {
				if h := c.b.cfg.testHookRefillLoad; h != nil {
					h()
				}
				m, err := store.GetMessage(tx, ms.id, e.ID)
				if err != nil {
					inner = err
					return false
				}
				frame = wire.EncodePushWithKey(m.Push, e.Key)
			}
			if !c.windowHasRoomLocked(len(frame)) {
				c.backlog = true
				return false
			}
			// Receipts are not held and bypass the backlog rule.
			if !c.enqueue(frame) {
				return false
			}
			c.addInflightLocked(e.ID, len(frame))
			return true
		})
		if err != nil {
			return err
		}
		return inner
	})
	if err != nil {
		c.b.log.Error("refill", "err", err)
	}
}

// maintain runs the broker's periodic work: redelivery of unacked pushes,
// release of decayed `working` holds, queue expiry and purge.
func (h *hub) maintain(stop <-chan struct{}) {
	cfg := h.b.cfg
	tick := clamp(cfg.RedeliverAfter/4, 10*time.Millisecond, 5*time.Second)
	sweepEvery := clamp(cfg.QueueTTL/4, 50*time.Millisecond, time.Minute)
	t := time.NewTicker(tick)
	defer t.Stop()
	lastSweep := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, ms := range h.meshList() {
				h.redeliver(ms, now)
			}
			if now.Sub(lastSweep) >= sweepEvery {
				lastSweep = now
				for _, ms := range h.meshList() {
					h.sweep(ms, now)
					h.expireSessions(ms, now)
					ms.mu.Lock()
					ms.pruneHistory(now)
					ms.pruneUnackedLocked(now, cfg.QueueTTL)
					ms.pruneOriginsLocked(now, cfg.QueueTTL)
					ms.mu.Unlock()
				}
			}
		}
	}
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return min(max(d, lo), hi)
}

// redeliver re-sends pushes unacked for --redeliver-after: they are dropped
// from the window and the writer's refill pushes them again in queue order.
// It also wakes connections whose `working` status has decayed to idle.
func (h *hub) redeliver(ms *meshState, now time.Time) {
	cfg := h.b.cfg
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, p := range ms.presences {
		c := p.conn
		if c == nil || c.closed {
			continue
		}
		if expired := c.expireInflightLocked(now); expired > 0 {
			h.b.metrics.redeliveries.Add(float64(expired))
			c.requestRefill()
			continue
		}
		st, at := p.status, p.statusAt
		if !p.session {
			st, at = p.member.Status, p.member.statusSetAt
		}
		if st == wire.StatusWorking && now.Sub(at) >= cfg.WorkingDecay && now.Sub(at) < cfg.WorkingDecay+2*cfg.RedeliverAfter {
			c.requestRefill()
		}
	}
}

// sweep expires deliveries older than --queue-ttl and purges expired
// messages a day later (keeping message_status answerable meanwhile and
// the idempotency window at least 24 h).
func (h *hub) sweep(ms *meshState, now time.Time) {
	cfg := h.b.cfg
	cutoff := now.Add(-cfg.QueueTTL).UnixMilli()
	for {
		var expired []store.Expired
		var more bool
		err := h.b.store.Update(func(tx *store.Tx) error {
			var err error
			expired, more, err = store.ExpireBefore(tx, ms.id, cutoff, 1000)
			return err
		})
		if err != nil {
			h.b.log.Error("expire", "err", err)
			return
		}
		h.settleExpired(ms, expired)
		if !more {
			break
		}
	}
	purge := now.Add(-cfg.QueueTTL - 24*time.Hour).UnixMilli()
	for {
		var more bool
		err := h.b.store.Update(func(tx *store.Tx) error {
			var err error
			_, more, err = store.PurgeBefore(tx, ms.id, purge, 1000)
			return err
		})
		if err != nil {
			h.b.log.Error("purge", "err", err)
			return
		}
		if !more {
			break
		}
	}
}

// settleExpired updates counters and windows after deliveries were dropped.
func (h *hub) settleExpired(ms *meshState, expired []store.Expired) {
	if len(expired) == 0 {
		return
	}
	n := 0
	ms.mu.Lock()
	for _, e := range expired {
		for c := range ms.conns[e.Recipient] {
			c.dropInflightLocked(e.MessageID)
		}
		if e.Receipt {
			continue
		}
		n++
		ms.releaseLocked(e.Recipient, e.From, e.Charge)
		ms.receiptCameLocked(e.MessageID) // none will: it is not waited for
	}
	ms.mu.Unlock()
	h.b.metrics.expired.Add(float64(n))
	h.b.metrics.pending.Sub(float64(n))
}
