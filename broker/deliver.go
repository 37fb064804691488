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
//
// Fair shares. The window's last eighth (reservePushes pushes, an eighth
// of its bytes) is kept for sending members (a member key and its
// sessions together: a queue entry's From) with fewer than reserveShare
// pushes in flight on the connection. A recipient's daemon leaves a
// flooder's pushes unacked once that flooder holds its share of the inbox
// (daemon inboxshare.go), and in queue order those pushes alone held the
// whole window: everyone else's messages waited behind them on the
// broker (trial 18, finding 11). Now a sender that cannot be pushed is
// marked waiting (its later messages wait behind its earlier ones: one
// sender's order is kept) while others' messages are pushed past it, and
// refill takes what is queued round-robin across senders, each in its
// own queue order. A single sender still gets seven eighths of the window
// (224 pushes, 3.5 MiB), so a client that acks in batches of up to 128
// catches up as before.

// held reports whether next/low messages wait for this connection's
// presence to become idle. Caller holds ms.mu.
func (c *conn) heldLocked() bool {
	if c.pres == nil {
		return false
	}
	st := c.ms.status(c.pres, c.b.cfg.WorkingDecay)
	return st == wire.StatusWorking || st == wire.StatusDND
}

// offerLocked pushes one queue entry to c if flow control, its sender's
// share of the window and priority holding allow, reporting whether it
// was pushed. from is the entry's sending member (store.QueueEntry.From);
// a receipt has no share. Caller holds ms.mu.
func (c *conn) offerLocked(id string, seq uint64, priority, from string, receipt bool, frame outFrame) bool {
	if c.closed || c.transient || c.inflight == nil {
		return false
	}
	if _, ok := c.inflight[id]; ok {
		return false
	}
	if c.backlog {
		return false // older entries are waiting in the store: keep FIFO
	}
	if _, waits := c.waiting[from]; waits && !receipt {
		return false // this sender's older entries wait for its share
	}
	if priority != wire.PriorityNow && c.heldLocked() {
		return false
	}
	if !c.windowHasRoomLocked(frame.size()) {
		c.backlog = true
		return false
	}
	if !receipt && !c.shareHasRoomLocked(from, frame.size()) {
		c.markWaitingLocked(from, seq)
		return false
	}
	if !c.enqueueFanoutOut(frame) {
		return false
	}
	c.addInflightLocked(id, from, receipt, frame.size())
	return true
}

// The window's reserve: its last reservePushes pushes and eighth of its
// bytes, which only a sender with fewer than reserveShare pushes in
// flight on the connection may take.
const (
	reservePushes = maxInflight / 8
	reserveShare  = 2
)

// shareHasRoomLocked reports whether a push of size bytes from sending
// member from may take its place in c's window (which windowHasRoomLocked
// says has room): outside the window's reserve anyone's may, inside it
// only a sender's with fewer than reserveShare pushes in flight, so one
// sender's (or a few senders') unacked pushes never hold the whole
// window. Caller holds ms.mu.
func (c *conn) shareHasRoomLocked(from string, size int) bool {
	limit := maxInflight
	if c.window > 0 {
		limit = min(limit, c.window)
	}
	wb := c.b.cfg.windowBytes()
	if len(c.inflight) < limit-reservePushes && c.inflightBytes+size <= wb-wb/8 {
		return true
	}
	return c.senders[from].n < reserveShare
}

// markWaitingLocked records that from has queued entries c was not pushed
// because the window's reserve is not for it (counted
// limits_tripped{sender_window_share}): its new messages wait behind them, and an
// ack (or a redelivery) refills. Caller holds ms.mu.
func (c *conn) markWaitingLocked(from string, seq uint64) {
	if c.waitsLocked(from, seq) {
		c.b.metrics.limitTripped.WithLabelValues("sender_window_share").Inc()
	}
}

// waitsLocked marks from waiting on c from queue seq on (its first entry
// not pushed; 0: not known), reporting whether it was not yet. Caller
// holds ms.mu.
func (c *conn) waitsLocked(from string, seq uint64) bool {
	if c.waiting == nil {
		c.waiting = map[string]uint64{}
	}
	if at, ok := c.waiting[from]; ok {
		if seq < at {
			c.waiting[from] = seq
		}
		return false
	}
	c.waiting[from] = seq
	return true
}

// behindLocked reports whether queued entries wait for c's window or a
// sender's share of it, so that an ack or a dropped push should refill.
// Caller holds ms.mu.
func (c *conn) behindLocked() bool { return c.backlog || len(c.waiting) > 0 }

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
func (c *conn) addInflightLocked(id, from string, receipt bool, size int) {
	c.inflight[id] = inflight{size: size, sentAt: time.Now(), from: from, receipt: receipt}
	c.inflightBytes += size
	c.ms.keyInflight[c.pubkey]++
	if !receipt {
		if c.senders == nil {
			c.senders = map[string]senderFlight{}
		}
		f := c.senders[from]
		f.n++
		f.bytes += size
		c.senders[from] = f
	}
}

// dropInflightLocked forgets an acked push. Caller holds ms.mu.
func (c *conn) dropInflightLocked(id string) {
	if f, ok := c.inflight[id]; ok {
		delete(c.inflight, id)
		c.inflightBytes -= f.size
		c.ms.uncountInflightLocked(c.pubkey, 1)
		if !f.receipt {
			if sf := c.senders[f.from]; sf.n <= 1 {
				delete(c.senders, f.from)
			} else {
				sf.n--
				sf.bytes -= f.size
				c.senders[f.from] = sf
			}
		}
	}
}

// forgetInflightLocked forgets every push in flight on a closing c.
// Caller holds ms.mu.
func (c *conn) forgetInflightLocked() {
	c.ms.uncountInflightLocked(c.pubkey, len(c.inflight))
	c.inflight, c.inflightBytes, c.senders, c.waiting = nil, 0, nil, nil
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
	if len(expired) > 0 {
		c.rescanLocked()
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
	c.rescanLocked()
	c.requestRefill()
}

// refillNewLocked is refillLocked for entries added to the end of c's
// queue (another cluster node's write): what is before c's cursor is as
// the last refill left it. Caller holds ms.mu.
func (c *conn) refillNewLocked() {
	c.backlog = true
	c.requestRefill()
}

// refill pushes queued entries the connection has not been sent yet
// until the window is full: receipts in queue order as they are met, and
// messages round-robin across their sending members, each sender's in
// queue order. It runs on the writer goroutine.
//
// The walk is cheap when senders wait (a flooder's backlog held back
// while its recipient leaves its pushes unacked): c.scanned is a seq up
// to which every queue entry is in flight on c or belongs to a sender in
// c.waiting (or is held, whose release rescans), so a refill reads only
// the entries after it, plus, when a waiting sender can be pushed again,
// the entries before it until the window's room is found. Read at every
// ack while anyone waited, the whole queue held the mesh lock for
// milliseconds an ack with a few thousand entries queued.
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
	// A window full by count takes nothing more, whatever the entry's
	// size: known before anything is read (as at every reconnect of a
	// presence that never acks, whose resumed window is one push).
	if !c.windowHasRoomLocked(0) {
		c.backlog = true
		return
	}
	prev, start := c.waiting, c.scanned
	c.waiting = nil
	if prev == nil {
		start = 0 // nobody waited: nothing before the cursor needs it
	}
	// The senders that waited and may be pushed now: their entries
	// before the cursor are read again, from the first of them. The
	// others go on waiting.
	var able map[string]bool
	var from0 uint64
	for from, at := range prev {
		if c.shareHasRoomLocked(from, 0) {
			if able == nil {
				able, from0 = map[string]bool{}, at
			}
			able[from] = true
			from0 = min(from0, at)
		} else {
			c.waitsLocked(from, at)
		}
	}
	held := c.heldLocked()
	room := c.roomLocked()
	err := c.b.store.View(func(tx *store.Tx) error {
		// Messages found per sending member, in queue order; order is
		// the senders in the order of their first entry.
		type entry struct {
			seq uint64
			e   *store.QueueEntry
		}
		var order []string
		found := map[string][]entry{}
		kept := 0
		stopped := false
		// take considers one entry; false stops the walk.
		take := func(seq uint64, e *store.QueueEntry) bool {
			if _, ok := c.inflight[e.ID]; ok {
				return true
			}
			if e.Receipt {
				// Receipts are not held, have no share and bypass
				// the backlog rule.
				if !c.windowHasRoomLocked(len(e.Frame)) {
					c.backlog, stopped = true, true
					return false
				}
				if !c.enqueue(e.Frame) {
					stopped = true
					return false
				}
				c.addInflightLocked(e.ID, e.From, true, len(e.Frame))
				if room--; room <= 0 {
					c.backlog, stopped = true, true
					return false
				}
				return true
			}
			if e.Priority != wire.PriorityNow && held {
				return true
			}
			if _, waits := c.waiting[e.From]; waits {
				return true // behind its own earlier entries
			}
			l, seen := found[e.From]
			if !seen {
				order = append(order, e.From)
			}
			// Each sender's entries are kept up to what the window's
			// room could take this round; past a few windows in all,
			// only each new sender's first. The rest wait for the next
			// refill, and their sender is marked waiting so that its
			// new messages keep their place.
			if len(l) >= room || (kept >= 2*maxInflight && len(l) > 0) {
				c.waitsLocked(e.From, seq)
				return true
			}
			found[e.From] = append(l, entry{seq, e})
			kept++
			return true
		}
		if len(able) > 0 && start > 0 && from0 <= start {
			// Before the cursor only the able senders' entries can be
			// new to c; the walk stops once they fill the room, and
			// then they all go on waiting (those reached have entries
			// left before the cursor).
			after := uint64(0)
			if from0 > 0 {
				after = from0 - 1
			}
			err := store.ScanQueue(tx, ms.id, c.pubkey, after, func(seq uint64, e *store.QueueEntry) bool {
				if seq > start {
					return false
				}
				if e.Receipt || !able[e.From] {
					return true
				}
				if kept >= room {
					for from := range able {
						at := seq
						if l := found[from]; len(l) > 0 {
							at = l[0].seq
						}
						c.waitsLocked(from, at)
					}
					return false
				}
				return take(seq, e)
			})
			if err != nil || stopped {
				c.scanned = 0
				return err
			}
		}
		last := start
		err := store.ScanQueue(tx, ms.id, c.pubkey, start, func(seq uint64, e *store.QueueEntry) bool {
			last = seq
			return take(seq, e)
		})
		if err != nil || stopped {
			c.scanned = 0
			return err
		}
		c.scanned = last
		// Round-robin: one message of each sender a round, oldest
		// sender first.
		defer func() {
			// What the round stopped before waits: its senders are
			// marked so that the cursor's promise holds.
			for from, l := range found {
				if len(l) > 0 {
					c.waitsLocked(from, l[0].seq)
				}
			}
		}()
		for len(order) > 0 {
			next := order[:0]
			for _, from := range order {
				l := found[from]
				if len(l) == 0 {
					continue
				}
				e := l[0].e
				if h := c.b.cfg.testHookRefillLoad; h != nil {
					h()
				}
				m, err := store.GetMessage(tx, ms.id, e.ID)
				if err != nil {
					return err
				}
				frame := wire.EncodePushWithKey(m.Push, e.Key)
				if !c.windowHasRoomLocked(len(frame)) {
					c.backlog = true
					return nil
				}
				if !c.shareHasRoomLocked(from, len(frame)) {
					c.markWaitingLocked(from, l[0].seq)
					continue
				}
				if !c.enqueue(frame) {
					return nil
				}
				c.addInflightLocked(e.ID, from, false, len(frame))
				found[from] = l[1:]
				if len(l) > 1 {
					next = append(next, from)
				}
			}
			order = next
		}
		return nil
	})
	if err != nil {
		c.scanned = 0
		c.b.log.Error("refill", "err", err)
	}
}

// rescanLocked makes c's next refill read its queue from the start: a
// push dropped from its window unacked (redelivery), or held messages
// released, are before its cursor. Caller holds ms.mu.
func (c *conn) rescanLocked() { c.scanned = 0 }

// roomLocked is how many more pushes c's window takes by count. Caller
// holds ms.mu.
func (c *conn) roomLocked() int {
	limit := maxInflight
	if c.window > 0 {
		limit = min(limit, c.window)
	}
	return max(limit-len(c.inflight), 1)
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
			c.rescanLocked()
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
