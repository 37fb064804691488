package broker

import (
	"sync"
	"sync/atomic"
	"time"
)

// A cluster node learns what another node wrote (a member's join, a
// session's hello) from the log, a moment after the writer's own reply.
// A DM sent to such a key through this node in that moment found no such
// recipient and was refused with unknown_recipient, although the key was
// the mesh's: the sender had the key from the member itself, or from a
// peer list another node served. So a lookup that finds nothing catches
// up with the log first (the log's end as its leader reports it, applied
// and handed to the hub: cluster.Engine.CatchUp) and looks again; only a
// key still unknown then is refused.

// lookupCatchUpTimeout bounds the wait of a refusal for a catch-up.
const lookupCatchUpTimeout = 2 * time.Second

// logCatchUp runs one catch-up at a time for the node: lookups that miss
// together (a burst of DMs to a key just joined elsewhere, or a member
// sending to keys that are nobody's) share one, and each asks the log's
// leader at most once per catch-up rather than once per send.
type logCatchUp struct {
	mu      sync.Mutex
	started time.Time // when the last catch-up began
	ok      bool      // whether it reached the log's end
	count   atomic.Uint64
	// holdRemote (tests) holds the hub's feed of other nodes' writes
	// until the channel is closed.
	holdRemote atomic.Pointer[chan struct{}]
}

// catchUpLog brings this node's hub to the log's end as it was at some
// moment after asked, and says whether it got there. On a single broker
// (or after Close) it is false at once: there is nothing to wait for.
func (b *Broker) catchUpLog(asked time.Time) bool {
	if b.engine == nil {
		return false
	}
	l := &b.lookups
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started.Before(asked) {
		return l.ok // one that began after the miss has just ended
	}
	l.started = time.Now()
	l.count.Add(1)
	l.ok = b.engine.CatchUp(lookupCatchUpTimeout)
	return l.ok
}
