package broker

import (
	"errors"
	"sync"
	"time"

	"claudemesh/store"
)

// Stored last-seen times. When a connection ends, its member's lastSeenAt
// (and a session key's, which dates the session's expiry) is written to
// the store; memory has it at once (detachLocked), the store is for the
// next start. One write per ended connection let a member opening and
// closing presences in a loop (bench --adversary's churn: a hundred at
// the start, within --presence-rate's burst) put a member read, decode,
// encode and write on the committer every mesh shares for each of them.
// So the first connection to end after a quiet second is written at once,
// and those that end within the next second wait and are written together
// at its end, each key's latest time once.

// seenEvery is how often stored last-seen times are written at most.
const seenEvery = time.Second

// seenKey is a record whose last-seen time waits to be written.
type seenKey struct {
	meshID string
	id     string // the member's ID, or the session's pubkey
	// session: id is a session key (store.TouchSession).
	session bool
}

// lastSeen holds the last-seen times waiting to be written.
type lastSeen struct {
	mu    sync.Mutex
	wait  map[seenKey]int64
	timer *time.Timer // the next write, while times wait
	last  time.Time   // when the last write was submitted
	// closed: the broker is shutting down; flush wrote what waited and
	// later times are written at once.
	closed bool
}

// noteSeen records that a member (and, for a session's connection, its
// session key) was last seen at (Unix ms), and writes it now or with the
// others at the end of the second. It must not be called with ms.mu held:
// the write may wait for room in the committer's queue.
func (h *hub) noteSeen(meshID, memberID, session string, at int64) {
	l := &h.seen
	l.mu.Lock()
	if l.wait == nil {
		l.wait = map[seenKey]int64{}
	}
	if session != "" {
		k := seenKey{meshID: meshID, id: session, session: true}
		l.wait[k] = max(l.wait[k], at)
	}
	k := seenKey{meshID: meshID, id: memberID}
	l.wait[k] = max(l.wait[k], at)
	if l.timer != nil {
		l.mu.Unlock()
		return // written with the others when the timer fires
	}
	now := time.Now()
	if wait := seenEvery - now.Sub(l.last); wait > 0 && !l.closed {
		l.timer = time.AfterFunc(wait, h.flushSeen)
		l.mu.Unlock()
		return
	}
	batch := l.takeLocked(now)
	l.mu.Unlock()
	h.writeSeen(batch)
}

// flushSeen writes the times waiting (the timer's, and at shutdown).
func (h *hub) flushSeen() {
	l := &h.seen
	l.mu.Lock()
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
	batch := l.takeLocked(time.Now())
	l.mu.Unlock()
	h.writeSeen(batch)
}

// closeSeen writes the times waiting and makes later ones written at
// once: for shutdown, once the connections are closed and before the
// store is.
func (h *hub) closeSeen() {
	h.seen.mu.Lock()
	h.seen.closed = true
	h.seen.mu.Unlock()
	h.flushSeen()
}

// takeLocked hands over the times waiting. Caller holds l.mu.
func (l *lastSeen) takeLocked(now time.Time) map[seenKey]int64 {
	batch := l.wait
	l.wait, l.last = nil, now
	return batch
}

// writeSeen submits one write of a batch of last-seen times. The batch is
// not changed after: the write may be applied more than once (store.Update).
// A time never moves a stored one back (a session recorded again by a
// later hello meanwhile keeps that hello's).
func (h *hub) writeSeen(batch map[seenKey]int64) {
	if len(batch) == 0 {
		return
	}
	h.b.store.Submit(func(tx *store.Tx) error {
		for k, at := range batch {
			if k.session {
				if err := store.TouchSession(tx, k.meshID, k.id, at); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
				continue
			}
			m, err := store.GetMember(tx, k.meshID, k.id)
			if err != nil || m.LastSeenAt >= at {
				continue // left or removed meanwhile, or seen later already
			}
			m.LastSeenAt = at
			if err := store.PutMember(tx, k.meshID, m); err != nil && !errors.Is(err, store.ErrNameTaken) {
				return err
			}
		}
		return nil
	}, nil)
}
