package broker

import (
	"slices"
	"time"

	"claudemesh/wire"
)

// Presence events are coalesced per receiver. Every presence that starts
// or ends is announced to every other presence of the mesh, so N presences
// connecting at once (a broker restart, a fleet of agents launched
// together) would cost N² frames, minutes of CPU and gigabytes of buffers.
//
// Instead, an event is appended to the mesh's event log (O(1)), and a flush
// hands each receiver what it has not seen: a lone event at once, as
// before; while events keep coming, a flush every eventInterval (longer in
// a large mesh: eventIntervalLocked), which
// writes a receiver's events individually when there are at most
// eventBatch of them and otherwise one peers_changed standing for all of
// them (it tells a client keeping a directory to read list_peers once). A
// storm therefore costs each receiver a bounded number of frames per
// interval, and the broker O(receivers) work per interval, not per event.
const (
	eventInterval = 250 * time.Millisecond
	eventBatch    = 64
	// eventPresencesPerInterval: a larger mesh flushes less often (one
	// more eventInterval per this many presences, up to eventIntervalMax),
	// so a storm costs each receiver a few frames, not one per interval.
	eventPresencesPerInterval = 1000
	eventIntervalMax          = 5 * time.Second
)

// eventIntervalLocked is the mesh's current flush interval. Caller holds
// ms.mu.
func (ms *meshState) eventIntervalLocked() time.Duration {
	return min(eventInterval*time.Duration(1+len(ms.presences)/eventPresencesPerInterval), eventIntervalMax)
}

// loggedEvent is one presence event waiting in the mesh's log.
type loggedEvent struct {
	seq uint64
	// push is the event; frame its encoding, made when a receiver is
	// first handed it (frameLocked).
	push    *wire.Push
	frame   []byte
	subject *presence // the presence the event is about (not told of itself)
	onlyFor *member   // set for a hidden presence: announced to its own member only
	starts  bool      // peer_joined or peer_returned (cancelStartLocked)
}

// eventLog is a mesh's presence events since the last flush, guarded by
// ms.mu.
type eventLog struct {
	events    []loggedEvent
	seq       uint64      // of the last event logged
	handed    uint64      // the last seq a receiver was handed ahead of a flush
	lastFlush time.Time   // when events were last handed out
	timer     *time.Timer // the next flush, while events wait
}

// logLocked records an event and hands it out now, or at the next flush
// when one happened less than eventInterval ago. Caller holds ms.mu.
func (ms *meshState) logLocked(e loggedEvent) {
	l := &ms.eventLog
	l.seq++
	e.seq = l.seq
	l.events = append(l.events, e)
	if l.timer != nil {
		return // a flush is already due
	}
	now := time.Now()
	if wait := ms.eventIntervalLocked() - now.Sub(l.lastFlush); wait > 0 {
		l.timer = time.AfterFunc(wait, ms.flushEvents)
		return
	}
	ms.flushEventsLocked(now)
}

// cancelStartLocked removes subject's peer_joined or peer_returned from
// the log if no receiver has been handed it yet, and reports whether it
// did: a presence that came and went between two flushes was never seen,
// so its peer_left need not be announced either. One member opening and
// closing presences in a loop (within --presence-rate) otherwise had two
// frames per presence written to, and read by, every presence of the mesh
// (bench --adversary --attacks churn: ~24,000 frames in a 1.5 s run of
// 100 peers). Caller holds ms.mu.
func (l *eventLog) cancelStartLocked(subject *presence) bool {
	for i := len(l.events) - 1; i >= 0 && l.events[i].seq > l.handed; i-- {
		if e := l.events[i]; e.subject == subject && e.starts {
			l.events = slices.Delete(l.events, i, i+1)
			return true
		}
	}
	return false
}

// flushEvents is the timer's flush.
func (ms *meshState) flushEvents() {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	ms.eventLog.timer = nil
	ms.flushEventsLocked(time.Now())
}

// flushEventsLocked hands every presence connection the logged events it
// has not seen, then empties the log. Caller holds ms.mu.
func (ms *meshState) flushEventsLocked(now time.Time) {
	l := &ms.eventLog
	l.lastFlush = now
	if len(l.events) == 0 {
		return
	}
	// Counts that let a receiver's share be computed without walking the
	// log for each receiver when the log is long.
	var public int
	about := map[*presence]int{}
	private := map[*member]int{}
	for _, e := range l.events {
		if e.onlyFor != nil {
			private[e.onlyFor]++
		} else {
			public++
		}
		about[e.subject]++
	}
	for _, p := range ms.presences {
		c := p.conn
		if c == nil || c.closed || c.eventSeen >= l.seq {
			continue
		}
		c.handOutEventsLocked(l, now, public+private[p.member]-about[p], p)
	}
	clear(l.events)
	l.events = l.events[:0]
}

// handOutEventsLocked writes the logged events c has not seen: one by one
// when they are few, else one peers_changed counting them. n is the
// number of logged events for c if it has seen none of them (-1: count
// them). Caller holds ms.mu.
func (c *conn) handOutEventsLocked(l *eventLog, now time.Time, n int, p *presence) {
	var mine []int // indexes into l.events
	if n < 0 || n <= eventBatch || c.eventSeen > l.events[0].seq-1 {
		n = 0
		for i, e := range l.events {
			if e.seq <= c.eventSeen || e.subject == p || (e.onlyFor != nil && e.onlyFor != p.member) {
				continue
			}
			n++
			if len(mine) <= eventBatch {
				mine = append(mine, i)
			}
		}
	}
	c.eventSeen = l.seq
	switch {
	case n == 0:
	case n <= eventBatch:
		for _, i := range mine {
			c.enqueue(l.frameLocked(i))
		}
	default:
		c.enqueue(wire.MustEncode(wire.Push{
			Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: wire.EventPeersChanged,
			MessageID: newID(), CreatedAt: now.UnixMilli(),
			EventData: wire.PeersChangedEvent{Events: n},
		}))
	}
}

// frameLocked is the encoding of the i-th logged event, made once, when
// the first receiver is handed it. Caller holds ms.mu.
func (l *eventLog) frameLocked(i int) []byte {
	e := &l.events[i]
	if e.frame == nil {
		e.frame = wire.MustEncode(e.push)
	}
	return e.frame
}

// releaseEventsLocked hands c the events the log holds for it now, ahead
// of the flush: they go before the answer c asked for, so events and
// answers keep the order in which things happened. Caller holds ms.mu.
func (c *conn) releaseEventsLocked() {
	l := &c.ms.eventLog
	if c.pres == nil || len(l.events) == 0 || c.eventSeen >= l.seq {
		return
	}
	c.handOutEventsLocked(l, time.Now(), -1, c.pres)
	l.handed = l.seq
}

// startEventsLocked makes a new presence connection a receiver of events
// logged from now on. Caller holds ms.mu.
func (c *conn) startEventsLocked() { c.eventSeen = c.ms.eventLog.seq }
