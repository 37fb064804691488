package broker

import (
	"errors"
	"sort"
	"sync/atomic"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// Limits on what one member can make the broker remember or announce
// (issue: 3,000 session joins and leaves from one member, each a presence
// event to every daemon of the mesh, cut another member's daemon off; and
// the maps of known sessions and of presence history only ever grew).

// checkPresenceRate refuses a hello that would start a new presence (and
// so a peer_joined to every presence of the mesh) when its member has
// started presences faster than --presence-rate (burst --presence-burst).
// Re-attaching an existing presence announces nothing and is not counted;
// a presence's end needs a start, so leaves are bounded too. Caller holds
// ms.mu.
func (ms *meshState) checkPresenceRate(b *Broker, mem *member, id helloIdentity) *handshakeError {
	if !id.presence || mem.presenceLimiter == nil || ms.presences[presenceKey(id, mem.Pubkey)] != nil {
		return nil
	}
	r := mem.presenceLimiter.Reserve()
	d := r.Delay()
	if d <= 0 {
		return nil
	}
	r.Cancel()
	b.metrics.limitTripped.WithLabelValues("presence_rate").Inc()
	e := refuse(wire.CodeRateLimited, "this member is starting presences faster than %g/s; retry in %s", b.cfg.PresenceRate, d.Round(time.Millisecond))
	e.retryAfterMs = max(d.Milliseconds(), 1)
	return e
}

// makeRoomForSession keeps a member's known session keys under
// --max-sessions-per-member when a new one arrives: the one connected
// least recently, and not present now, is forgotten (with its queue, as if
// it had expired). If every one of them is present the hello is refused
// with capacity. Caller holds ms.mu; evict (if any) is for the caller to
// run after the hello is accepted.
func (ms *meshState) makeRoomForSession(b *Broker, mem *member, pubkey string) (evict string, herr *handshakeError) {
	max := b.cfg.MaxSessionsPerMember
	if max <= 0 || ms.sessions[pubkey] != nil {
		return "", nil
	}
	keys := ms.memberSessions[mem.ID]
	n := len(keys)
	if n < max {
		return "", nil
	}
	var oldest *store.Session
	elsewhere := false
	for k := range keys {
		if ms.presences[k] != nil {
			continue
		}
		if ms.cluster().recordedElsewhere(ms.sessions[k].Node) {
			elsewhere = true
			continue
		}
		if s := ms.sessions[k]; oldest == nil || s.LastSeenAt < oldest.LastSeenAt {
			oldest = s
		}
	}
	if oldest == nil && elsewhere {
		// The rest are other nodes' to forget: over the cap here until
		// they do (each node keeps its own recordings under it).
		return "", nil
	}
	b.metrics.limitTripped.WithLabelValues("sessions_per_member").Inc()
	if oldest == nil {
		return "", refuse(wire.CodeCapacity, "this member already has %d sessions connected", n)
	}
	return oldest.Pubkey, nil
}

// forgetSessions removes session keys memory forgot (evicted, expired, or
// of a member banned or removed) from the store with their queues, and
// settles the dropped deliveries. It must be called without ms.mu; the
// keys are already gone from ms.sessions, and forgotten are their records
// as memory had them.
//
// A key said hello with again is live, and what is queued for it is the
// new session's: a key memory knows again when this is called is left
// alone, and a hello after it cancels the forget of its key still to
// come (putSessionLocked, ms.sessionForgets). The store could not tell:
// the new hello's record may not be written yet, and a forget finding no
// record (or the one it forgot) dropped the DMs queued for the live key
// meanwhile. A key recorded again on another node of a cluster is left
// with its new record and queue too (store.ForgetSession): deleting by
// key alone, the forget could commit after the new record and leave a
// live session unknown to the store (after a restart) or, replicated, to
// the node holding its connection.
func (h *hub) forgetSessions(ms *meshState, forgotten []*store.Session) {
	if len(forgotten) == 0 {
		return
	}
	type forget struct {
		s *store.Session
		f *sessionForget
		// kept is the other recording of the key the store holds and
		// the forget left (store.ForgetSession); set by the last run
		// of the transaction.
		kept *store.Session
	}
	var todo []forget
	ms.mu.Lock()
	for _, s := range forgotten {
		if ms.sessions[s.Pubkey] != nil {
			continue // said hello again
		}
		f := ms.sessionForgets[s.Pubkey]
		if f == nil {
			f = &sessionForget{}
			ms.sessionForgets[s.Pubkey] = f
		}
		f.n++
		todo = append(todo, forget{s: s, f: f})
	}
	ms.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	var dropped []store.Expired
	// done ends the forgets. After a commit (adopt), memory takes each
	// recording a forget left in the store: another node's hello of
	// the key, which this node did not take when it arrived from the
	// log because its own hello's write of the key was still to come
	// (applyRemote), the write the eviction or expiry cancelled. Memory
	// knew no recording of the key then, and the store keeps one: DMs
	// to the session were refused here as unknown_recipient while it
	// was connected to the other node. Callbacks run in commit (log)
	// order, so memory is at this commit here; a forget cancelled, or a
	// key known again, was recorded anew since.
	done := func(adopt bool) {
		ms.mu.Lock()
		for _, t := range todo {
			if t.f.n--; t.f.n == 0 && ms.sessionForgets[t.s.Pubkey] == t.f {
				delete(ms.sessionForgets, t.s.Pubkey)
			}
		}
		for _, t := range todo {
			k := t.s.Pubkey
			if adopt && t.kept != nil && !t.f.cancelled.Load() && ms.sessions[k] == nil && ms.sessionWrites[k] == nil && ms.members[k] == nil {
				ms.putSessionLocked(k, t.kept)
			}
		}
		ms.mu.Unlock()
	}
	err := h.b.store.Submit(func(tx *store.Tx) error {
		dropped = dropped[:0]
		for i := range todo {
			t := &todo[i]
			t.kept = nil
			if t.f.cancelled.Load() {
				continue
			}
			d, kept, err := store.ForgetSession(tx, ms.id, t.s)
			if err != nil {
				return err
			}
			t.kept = kept
			dropped = append(dropped, d...)
		}
		return nil
	}, func(err error) {
		done(err == nil)
		if err != nil {
			h.b.log.Error("forget sessions", "err", err)
			return
		}
		h.settleExpired(ms, dropped)
	})
	if err != nil {
		done(false)
		h.b.log.Warn("forget sessions", "err", err)
	}
}

// sessionForget is the forget of a session key submitted to the store and
// not yet committed (ms.sessionForgets), shared by the forgets of one key
// (n of them): a hello of the key before it commits cancels it.
type sessionForget struct {
	cancelled atomic.Bool
	n         int // forgets waiting on it; guarded by ms.mu
}

// expireSessions forgets session keys not connected for --queue-ttl: what
// was queued for them has expired, and a session that comes back says
// hello again, which records it anew.
func (h *hub) expireSessions(ms *meshState, now time.Time) {
	cutoff := now.Add(-h.b.cfg.QueueTTL).UnixMilli()
	var gone []*store.Session
	ms.mu.Lock()
	cp := ms.cluster()
	for k, s := range ms.sessions {
		if s.LastSeenAt < cutoff && ms.presences[k] == nil && !cp.recordedElsewhere(s.Node) {
			gone = append(gone, s)
			ms.deleteSessionLocked(k)
		}
	}
	ms.mu.Unlock()
	h.forgetSessions(ms, gone)
}

// sessionWrite is a session record submitted to the store and not yet
// written (ms.sessionWrites): a forget of its key in memory before it is
// written cancels it. hello is set for the write of a new recording
// (store.PutSession), which replaces any other; the others
// (store.UpdateSession) only change the recording they copy.
type sessionWrite struct {
	cancelled atomic.Bool
	hello     bool
	sess      *store.Session
	// prev is, for a hello, the recording memory held for the key when
	// the hello was admitted (nil: none): the write is a compare-and-set
	// over it (store.PutSessionOver). lost is the recording the store
	// held instead, when the write lost (set by persist, read by written).
	prev *store.Session
	lost atomic.Pointer[store.Session]
}

// sessionWriteLocked makes the write of a session record memory has just
// recorded (putSessionLocked), and its callback, for the caller to submit
// after unlocking (writeSession). Caller holds ms.mu.
//
// The write is cancelled when memory forgets the key before it runs
// (deleteSessionLocked). A hello unlocks before it submits the write, and
// a forget in between (a ban's callback finding the session accepted
// before it applied, an unban having committed since; an eviction) could
// commit first, with nothing stored yet to delete: the record written
// after it was unknown to memory, and came back at the next restart.
//
// A write still to come of an earlier record of the key is cancelled too:
// two hellos of one key submit theirs after unlocking, so the earlier
// record's could be written last, and the store keep a recording memory
// has replaced. A change of a recording whose hello's write it cancels
// (a join_group right after the hello) is that recording's first write:
// it is written as the hello's would have been, over the same prev.
//
// A hello's write is a compare-and-set over prev, the recording memory
// held when the hello was admitted (store.PutSessionOver). In a cluster a
// node's write can wait in the log for seconds: written unconditionally,
// a hello admitted on A before the client failed over to B replaced B's
// later recording on every node when it came, and every node then said
// the session was A's. A hello whose write finds a recording it did not
// know writes nothing; its callback adopts that recording, unless the
// session is connected here (then this node's recording is the live one,
// and is written again over it).
func (ms *meshState) sessionWriteLocked(sess *store.Session, hello bool, prev *store.Session) (persist func(tx *store.Tx) error, written func(error)) {
	if old := ms.sessionWrites[sess.Pubkey]; old != nil {
		old.cancelled.Store(true)
		if old.hello && store.SameRecording(old.sess, sess) {
			hello, prev = true, old.prev
		}
	}
	w := &sessionWrite{hello: hello, sess: sess, prev: prev}
	ms.sessionWrites[sess.Pubkey] = w
	persist = func(tx *store.Tx) error {
		if w.cancelled.Load() {
			return nil
		}
		// Not for a member banned or removed since: its transaction
		// committed before this one and did not find the session, and
		// its callback forgets it in memory (forgetMemberSessionsLocked).
		m, err := store.GetMember(tx, ms.id, sess.ParentMemberID)
		switch {
		case errors.Is(err, store.ErrNotFound) || (err == nil && m.RevokedAt != 0):
			return nil
		case err != nil:
			return err
		}
		if hello {
			held, err := store.PutSessionOver(tx, ms.id, sess, w.prev)
			w.lost.Store(held) // persist may run again (a conflict): the last run's
			return err
		}
		return store.UpdateSession(tx, ms.id, sess)
	}
	written = func(err error) {
		var again func(tx *store.Tx) error
		var againDone func(error)
		ms.mu.Lock()
		if ms.sessionWrites[sess.Pubkey] == w {
			delete(ms.sessionWrites, sess.Pubkey)
			if held := w.lost.Load(); err == nil && !w.cancelled.Load() && held != nil {
				if cur := ms.sessions[sess.Pubkey]; cur != nil && store.SameRecording(cur, sess) {
					if ms.connectedSessionLocked(sess.Pubkey) {
						again, againDone = ms.sessionWriteLocked(cur, true, held)
					} else {
						ms.putSessionLocked(sess.Pubkey, held)
					}
				}
			}
		}
		ms.mu.Unlock()
		if again != nil && ms.hub != nil {
			go ms.hub.writeSession(again, againDone)
		}
	}
	return persist, written
}

// writeSession submits a session record's write (sessionWriteLocked).
// Best effort and off the handshake's critical path: a lost session
// record only means DMs to it are refused after a restart until it
// reconnects. Called without ms.mu (Submit may block).
func (h *hub) writeSession(persist func(tx *store.Tx) error, written func(error)) {
	if err := h.b.store.Submit(persist, written); err != nil {
		written(err)
	}
}

// History of presence keys, for peer_joined versus peer_returned: a
// presence key is remembered for historyTTL after it ends, and a mesh
// remembers at most maxHistory of them (the oldest go first).
const (
	historyTTL = 24 * time.Hour
	maxHistory = 100_000
)

// pruneHistory drops ended presences older than historyTTL, then the
// oldest beyond maxHistory. Caller holds ms.mu.
func (ms *meshState) pruneHistory(now time.Time) {
	cutoff := now.Add(-historyTTL).UnixMilli()
	for k, at := range ms.history {
		if at < cutoff && ms.presences[k] == nil {
			delete(ms.history, k)
		}
	}
	if len(ms.history) <= maxHistory {
		return
	}
	type entry struct {
		key string
		at  int64
	}
	old := make([]entry, 0, len(ms.history))
	for k, at := range ms.history {
		if ms.presences[k] == nil {
			old = append(old, entry{k, at})
		}
	}
	sort.Slice(old, func(i, j int) bool { return old[i].at < old[j].at })
	for _, e := range old[:max(0, min(len(old), len(ms.history)-maxHistory))] {
		delete(ms.history, e.key)
	}
}

// putSessionLocked records a known session key, or a new copy of its
// record (records are shared with persist closures: replaced, never
// mutated). Caller holds ms.mu.
//
// A forget of the key still to come is cancelled (forgetSessions): the key
// is live again.
func (ms *meshState) putSessionLocked(key string, s *store.Session) {
	if f := ms.sessionForgets[key]; f != nil {
		f.cancelled.Store(true)
		delete(ms.sessionForgets, key)
	}
	if old := ms.sessions[key]; old != nil && old.ParentMemberID != s.ParentMemberID {
		ms.unindexSessionLocked(key, old.ParentMemberID)
	}
	ms.sessions[key] = s
	idx := ms.memberSessions[s.ParentMemberID]
	if idx == nil {
		idx = map[string]struct{}{}
		ms.memberSessions[s.ParentMemberID] = idx
	}
	idx[key] = struct{}{}
}

// deleteSessionLocked forgets a known session key, and cancels the write
// of its record if it is not written yet (sessionWriteLocked). Caller
// holds ms.mu.
func (ms *meshState) deleteSessionLocked(key string) {
	if s := ms.sessions[key]; s != nil {
		ms.unindexSessionLocked(key, s.ParentMemberID)
		delete(ms.sessions, key)
	}
	if w := ms.sessionWrites[key]; w != nil {
		w.cancelled.Store(true)
		delete(ms.sessionWrites, key)
	}
	// Its mark of pushes left unacknowledged goes too: what was queued
	// for a forgotten key is gone, and a member churning session keys
	// would otherwise leave a mark per key until --queue-ttl.
	delete(ms.unacked, key)
}

// forgetMemberSessionsLocked forgets every known session key of a member
// that was banned or removed, and returns their records. Its transaction
// deleted the stored ones; one accepted between that commit and its callback (the
// member still looked active in memory) was not stored then, and its
// record is not written after a ban or removal (admit), nor once
// forgotten here (deleteSessionLocked cancels it) — but it may have been
// written already, after an unban committed meanwhile, so a ban's callback
// gives the keys it gets here that its transaction did not delete to
// forgetSessions. Caller
// holds ms.mu.
func (ms *meshState) forgetMemberSessionsLocked(memberID string) (forgotten []*store.Session) {
	for k := range ms.memberSessions[memberID] {
		forgotten = append(forgotten, ms.sessions[k])
		ms.deleteSessionLocked(k)
	}
	return forgotten
}

func (ms *meshState) unindexSessionLocked(key, memberID string) {
	if idx := ms.memberSessions[memberID]; idx != nil {
		delete(idx, key)
		if len(idx) == 0 {
			delete(ms.memberSessions, memberID)
		}
	}
}
