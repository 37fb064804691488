package store

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Engine is where the broker keeps its records: one interface, two
// implementations. Local (below) is a single broker's bbolt file behind the
// group committer; the cluster package's JetStream engine runs the same
// writes against each node's bbolt copy and replicates what they changed
// through a RAFT-replicated JetStream stream, so that every node of a
// cluster holds the same records. The broker's code is the same on both.
//
// Contract, on both:
//   - Update and Submit run fn in a write transaction. fn may run more than
//     once (when another write of its batch fails, or, in a cluster, when
//     another node wrote first), so it must only touch the transaction and
//     reset what it computes at its start.
//   - A write is acknowledged (Update returns nil, after gets nil) only
//     once it is durable: fsynced on one node, or stored by a quorum of a
//     cluster.
//   - after callbacks run on one goroutine in commit order and must not
//     block.
//   - View reads the local copy. In a cluster it reflects every write this
//     node acknowledged and the other nodes' writes it has applied so far.
type Engine interface {
	Update(fn func(tx *Tx) error) error
	Submit(fn func(tx *Tx) error, after func(err error)) error
	View(fn func(tx *Tx) error) error
	// Ping reports whether writes are accepted now (for /health/ready).
	Ping() error
	// Path is the local bbolt file.
	Path() string
	Close() error
}

// Deferrer is an Engine that can hold writes nobody waits for, so that a
// burst of them shares commits (Store.SubmitDeferred). Submit them with
// SubmitDeferred, which falls back to Submit on an engine without it.
type Deferrer interface {
	SubmitDeferred(fn func(tx *Tx) error, after func(err error)) error
}

// SubmitDeferred submits fn as a deferrable write when e supports it.
func SubmitDeferred(e Engine, fn func(tx *Tx) error, after func(err error)) error {
	if d, ok := e.(Deferrer); ok {
		return d.SubmitDeferred(fn, after)
	}
	return e.Submit(fn, after)
}

// Sizer is an Engine that can spread large writes over several commits
// (Store.SubmitSized). Submit them with SubmitSized, which falls back to
// Submit on an engine without it (the cluster's, which replicates each
// write on its own path).
type Sizer interface {
	SubmitSized(fn func(tx *Tx) error, after func(err error), size int, key string) error
}

// SubmitSized submits fn, which carries size bytes of payload on behalf of
// key, through the large-write lane when e has one.
func SubmitSized(e Engine, fn func(tx *Tx) error, after func(err error), size int, key string) error {
	if z, ok := e.(Sizer); ok {
		return z.SubmitSized(fn, after, size, key)
	}
	return e.Submit(fn, after)
}

// Refuser is an Engine that can tell a write's submitter, on the writer's
// own goroutine, that the write was refused, before any write submitted
// after it is run: the broker keeps one sender's sends to one target in
// order across a refusal that way (a later send already queued behind a
// refused one is refused too, broker/sendorder.go). refused runs once per
// failed write, before its after; it must not block.
type Refuser interface {
	SubmitRefusable(fn func(tx *Tx) error, after, refused func(err error), size int, key string) error
}

// SubmitRefusable is SubmitSized with refused (see Refuser). On an engine
// without it, refused runs just before after.
func SubmitRefusable(e Engine, fn func(tx *Tx) error, after, refused func(err error), size int, key string) error {
	if r, ok := e.(Refuser); ok {
		return r.SubmitRefusable(fn, after, refused, size, key)
	}
	return SubmitSized(e, fn, func(err error) {
		if err != nil && refused != nil {
			refused(err)
		}
		after(err)
	}, size, key)
}

// ErrUnavailable means a clustered store cannot make writes durable now
// (no quorum): nothing was written. Retry later.
var ErrUnavailable = errors.New("store: the cluster has no quorum; the write is not acknowledged")

// ErrBehind is ErrUnavailable for a node that could not apply the log's
// newer entries in time (another node wrote first, and this node must be
// at that entry before it can write): nothing was written. Retry later,
// here or on another node.
var ErrBehind error = behind{}

type behind struct{}

func (behind) Error() string {
	return "store: this node could not catch up with the cluster's log in time; the write is not acknowledged"
}
func (behind) Unwrap() error { return ErrUnavailable }

// Local is a single broker's Engine: the bbolt file and its committer.
type Local struct {
	s *Store
	// tx is the Tx of the write transaction the committer is applying:
	// the writes of one commit share it, and with it the buckets they
	// open (Tx.meshes). Only the committer goroutine, which runs every
	// write, touches it; the transaction's commit drops it.
	tx *Tx
}

// OpenLocal opens the broker's bbolt store.
func OpenLocal(path string, opts Options) (*Local, error) {
	s, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	return &Local{s: s}, nil
}

// Store is the committer underneath (tests, benchmarks).
func (l *Local) Store() *Store { return l.s }

func wrapFn(fn func(tx *Tx) error) func(*bolt.Tx) error {
	return func(btx *bolt.Tx) error { return fn(&Tx{tx: btx}) }
}

// write wraps a write for the committer: the writes applied in one bbolt
// transaction share one Tx (Local.tx). A failed write's transaction is
// rolled back and its writes run again in new ones, each with a Tx of its
// own.
func (l *Local) write(fn func(tx *Tx) error) func(*bolt.Tx) error {
	return func(btx *bolt.Tx) error {
		t := l.tx
		if t == nil || t.tx != btx {
			t = &Tx{tx: btx}
			l.tx = t
			btx.OnCommit(func() {
				if l.tx == t {
					l.tx = nil
				}
			})
		}
		return fn(t)
	}
}

// Update implements Engine.
func (l *Local) Update(fn func(tx *Tx) error) error { return l.s.Update(l.write(fn)) }

// Submit implements Engine.
func (l *Local) Submit(fn func(tx *Tx) error, after func(err error)) error {
	return l.s.Submit(l.write(fn), after)
}

// SubmitDeferred implements Deferrer.
func (l *Local) SubmitDeferred(fn func(tx *Tx) error, after func(err error)) error {
	return l.s.SubmitDeferred(l.write(fn), after)
}

// SubmitSized implements Sizer.
func (l *Local) SubmitSized(fn func(tx *Tx) error, after func(err error), size int, key string) error {
	return l.s.SubmitSized(l.write(fn), after, size, key)
}

// SubmitRefusable implements Refuser.
func (l *Local) SubmitRefusable(fn func(tx *Tx) error, after, refused func(err error), size int, key string) error {
	return l.s.SubmitRefusable(l.write(fn), after, refused, size, key)
}

// View implements Engine.
func (l *Local) View(fn func(tx *Tx) error) error { return l.s.View(wrapFn(fn)) }

// Ping implements Engine.
func (l *Local) Ping() error { return l.s.Ping() }

// Path implements Engine.
func (l *Local) Path() string { return l.s.Path() }

// Close implements Engine.
func (l *Local) Close() error { return l.s.Close() }
