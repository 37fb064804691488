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

// lookupCatchUpTimeout bounds one catch-up, the leader's answer included.
// A send that misses while a catch-up that began before it runs waits for
// that one and then for the next: at most twice this.
const lookupCatchUpTimeout = 2 * time.Second

// logCatchUp runs one catch-up at a time for the node: lookups that miss
// together (a burst of DMs to a key just joined elsewhere, or a member
// sending to keys that are nobody's) share one, so the log's leader is
// asked once per catch-up rather than once per send. No lock is held while
// one runs.
type logCatchUp struct {
	mu    sync.Mutex
	cur   *catchUpRun // the running catch-up, or the last one
	count atomic.Uint64
	// holdRemote (tests) holds the hub's feed of other nodes' writes
	// until the channel is closed.
	holdRemote atomic.Pointer[chan struct{}]
}

// catchUpRun is one catch-up: its start, and its outcome once done is
// closed.
type catchUpRun struct {
	started time.Time
	done    chan struct{}
	ok      bool
}

// catchUpLog brings this node's hub to the log's end as it was at some
// moment after asked (when the lookup missed), and says whether it got
// there. A catch-up that began at or after asked serves; one that began
// before it cannot (the record may have come after its look at the log's
// end), so the send waits for it to end and takes the next. On a single
// broker it is false at once: there is nothing to wait for.
func (b *Broker) catchUpLog(asked time.Time) bool {
	if b.engine == nil {
		return false
	}
	l := &b.lookups
	for {
		l.mu.Lock()
		r := l.cur
		if r != nil && !r.started.Before(asked) {
			l.mu.Unlock()
			<-r.done
			return r.ok
		}
		if r == nil || r.finished() {
			r = &catchUpRun{started: time.Now(), done: make(chan struct{})}
			l.cur = r
			l.mu.Unlock()
			l.count.Add(1)
			r.ok = b.engine.CatchUp(lookupCatchUpTimeout)
			close(r.done)
			return r.ok
		}
		l.mu.Unlock()
		<-r.done // began before the miss: then the next one
	}
}

func (r *catchUpRun) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}
