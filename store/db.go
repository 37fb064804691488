// Package store is the broker's durable state: meshes, members, invites,
// known sessions, and the message queue with its per-recipient delivery
// records, all in one bbolt file. The daemon reuses its committer for
// daemon.db with a schema of its own.
//
// Every write goes through one committer goroutine (group commit): it drains
// whatever writes are waiting, applies them in one bbolt transaction and
// pays one fsync for all of them. Under load that turns N fsyncs into one
// without the fixed delay of bbolt's DB.Batch, whose 10 ms default alone
// would break the broker's latency targets. Post-commit callbacks run on a
// second goroutine, the dispatcher, in commit order — which is what lets the
// hub push messages to a recipient in exactly the order they were made
// durable — while the committer already applies the next batch.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the broker layout this code reads and writes. Open
// migrates older files forward and refuses newer ones.
const SchemaVersion = 8

// ErrClosed is returned for writes submitted after Close.
var ErrClosed = errors.New("store: closed")

// ErrNewerSchema means the file was written by a newer broker.
var ErrNewerSchema = errors.New("store: file has a newer schema version")

var (
	bucketMeta   = []byte("meta")
	bucketMeshes = []byte("meshes")
	bucketSlugs  = []byte("slugs")
	keySchema    = []byte("schemaVersion")
)

// Migration upgrades a file from schema version i to i+1 (its index in the
// list). Each runs in the same transaction that records the new version, so
// a crash mid-way leaves the old version intact.
type Migration func(tx *bolt.Tx) error

// BrokerMigrations is the broker's schema history; len = SchemaVersion.
var BrokerMigrations = []Migration{
	// 0 → 1: the initial layout.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeshes, bucketSlugs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: queue records (messages, queue entries, delivery records)
	// are written in the binary layout of records.go. Nothing is
	// rewritten — JSON records are still read — but a broker of schema 1
	// cannot read the new records, so the bump makes it refuse the file
	// instead of failing on its first ack.
	func(tx *bolt.Tx) error { return nil },
	// 2 → 3: every member and session keeps at most MaxGroups valid,
	// distinct groups. Before the cap covered hellos, repeated hellos
	// could give one member thousands of groups, which made its
	// list_peers entry megabytes long.
	func(tx *bolt.Tx) error { return trimGroups(WrapTx(tx, nil)) },
	// 3 → 4: governance. Every mesh gains its audit chain (empty: the
	// chain starts at the upgrade), grants and skills buckets. A broker of
	// schema 3 would make changes without recording them, so the bump
	// makes it refuse the file.
	func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeshes).ForEachBucket(func(id []byte) error {
			mb := tx.Bucket(bucketMeshes).Bucket(id)
			for _, b := range [][]byte{bAudit, bGrants, bSkills} {
				if _, err := mb.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
			return nil
		})
	},
	// 4 → 5: topics and API keys. Every existing mesh gets the topic and
	// API-key buckets and its reserved general topic (no key yet).
	func(tx *bolt.Tx) error { return migrateTopics(WrapTx(tx, nil)) },
	// 5 → 6: the append-friendly queue layout (migrate_queue.go).
	func(tx *bolt.Tx) error { return migrateQueueLayout(WrapTx(tx, nil)) },
	// 6 → 7: pushes larger than a page live apart from the other bodies
	// (queue.go, largeBody). Nothing is moved; a broker of schema 6 would
	// read a large message's count-only body record as an empty push, so
	// the bump makes it refuse the file.
	func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeshes).ForEachBucket(func(id []byte) error {
			_, err := tx.Bucket(bucketMeshes).Bucket(id).CreateBucketIfNotExists(bLargeBodies)
			return err
		})
	},
	// 7 → 8: messages written from now on keep the compact header and
	// idempotency value (records.go, encodeHeader; queue.go,
	// encodeIdemValue), and delivery records of one size, with what an
	// ack needs in the queue entry (records.go, deliveryRec). Nothing is
	// rewritten — both forms are read — but a broker of schema 7 cannot
	// read the new ones, so the bump makes it refuse the file.
	func(tx *bolt.Tx) error { return nil },
}

// Options tune a Store.
type Options struct {
	// OpenTimeout bounds the wait for bbolt's file lock, so a second broker
	// on the same data dir fails fast instead of hanging.
	OpenTimeout time.Duration
	// OnCommit observes each group commit's duration and size (metrics).
	OnCommit func(d time.Duration, writes int)
	// MaxBatch caps the writes folded into one transaction, bounding the
	// latency a very large batch could add to its first member.
	MaxBatch int
	Logger   *slog.Logger
	// Migrations is the file's schema history; nil means the broker's.
	// The daemon keeps its own database on the same committer.
	Migrations []Migration
	// AfterBatch, when set, runs on the dispatcher after the callbacks of
	// each committed batch (the broker writes what they queued, once per
	// connection). Like the callbacks it must not block.
	AfterBatch func()
	// Init allows an existing empty (0-byte) file to be made a new
	// database; without it Open refuses one with ErrEmptyFile.
	Init bool
	// DeferFor is how long a batch made only of deferrable writes
	// (SubmitDeferred) may wait for company before it is committed. Zero
	// commits them at once, like any write.
	DeferFor time.Duration
	// SplitDeferred is how many deferrable writes a batch must hold for
	// its other writes to commit first, in a transaction of their own,
	// and the deferrable ones right after in another: a send that finds a
	// broadcast's worth of acks waiting (hundreds of them) is then durable
	// and fanned out without first applying them all and running their
	// callbacks. Fewer deferrable writes than this share the other
	// writes' commit (one fsync for all). 0 means DefaultSplitDeferred; a
	// negative value never splits.
	SplitDeferred int
	// LargeWrite is the size (SubmitSized) from which a write is large:
	// large writes wait in a lane of their own, and each commit takes
	// every small write waiting but at most LargeBudget bytes of large
	// ones (always at least one), so a burst of large messages is spread
	// over several commits instead of making everyone's small writes wait
	// for megabytes of pages and their fsync. 0 means DefaultLargeWrite; a
	// negative value turns the lane off.
	LargeWrite int
	// LargeBudget is the bytes of large writes one commit takes at most;
	// 0 means DefaultLargeBudget.
	LargeBudget int
	// PreemptDeferred lets a send (SubmitSized) that someone waits for,
	// submitted while the deferrable writes at the end of a batch are
	// being applied (at least SplitDeferred of them, none put off before),
	// commit without waiting for the rest of them (commit); any other
	// write is applied after them, in submission order. It also
	// runs the callbacks of such a commit in two rounds, each followed by
	// AfterBatch: the waited-on writes' first, then the deferrable ones',
	// each in commit order.
	// The broker sets it: a send's commit and fan-out need not wait for
	// the previous broadcast's 1,000 acks. A store whose callbacks must
	// run in the order its writes were applied (the daemon publishes
	// events in the order of the ids its writes allocate) leaves it
	// unset.
	PreemptDeferred bool
}

// The large-write lane's defaults (Options.LargeWrite, LargeBudget): a DM
// of 16 KiB or more is large; a commit takes up to 256 KiB of them.
const (
	DefaultLargeWrite  = 16 << 10
	DefaultLargeBudget = 256 << 10
)

// Store is the broker's bbolt database plus its group committer.
type Store struct {
	db      *bolt.DB
	opts    Options
	writes  chan *write
	closing chan struct{}
	done    chan struct{}
	// finished carries committed batches to the dispatcher, which runs
	// their callbacks in commit order while the committer already applies
	// the next batch: the fan-out of one commit (pushes, acks) overlaps the
	// fsync of the next instead of adding to it.
	finished   chan []finished
	dispatched chan struct{}
	once       sync.Once
	mu         sync.RWMutex // guards closed against Submit racing Close
	closed     bool
}

// finished is a write with its outcome, waiting for its callbacks. One
// with no write marks the end of a round of callbacks within a batch: the
// dispatcher runs AfterBatch there, as at a batch's end.
type finished struct {
	w   *write
	err error
}

// outcome is w's result; a failed write's refused hook runs here, on the
// committer, before any later write is applied.
func outcome(w *write, err error) finished {
	if err != nil && w.refused != nil {
		w.refused(err)
	}
	return finished{w, err}
}

// write is one unit of the group commit.
type write struct {
	fn    func(tx *bolt.Tx) error
	after func(err error) // runs on the committer after the commit, in order
	// refused (SubmitRefusable) runs on the committer goroutine when the
	// write fails, before any later write is applied.
	refused func(err error)
	done    chan error // nil when the caller does not wait
	// deferrable: nobody waits for this write to be durable, so it may
	// wait up to Options.DeferFor for others to share its commit.
	deferrable bool
	// carried: a commit stopped before this deferrable write for a
	// waited-on one (PreemptDeferred); the next commit applies it
	// whatever arrives, so no deferrable write is put off twice.
	carried bool
	// size is the payload the submitter said the write carries
	// (SubmitSized), 0 if it did not; key names whose write it is: while
	// one of a key's writes waits in the large lane, its later writes wait
	// there too, behind it, so each key's writes commit in the order they
	// were submitted.
	size int
	key  string
	// overtakes: a write (SubmitSized) that may be applied before the
	// deferrable writes submitted before it; any other write is applied
	// after them.
	overtakes bool
}

// Open opens (creating if needed) the store at path and runs migrations.
func Open(path string, opts Options) (*Store, error) {
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = 5 * time.Second
	}
	if opts.MaxBatch == 0 {
		opts.MaxBatch = 4096
	}
	if opts.SplitDeferred == 0 {
		opts.SplitDeferred = DefaultSplitDeferred
	}
	if opts.LargeWrite == 0 {
		opts.LargeWrite = DefaultLargeWrite
	}
	if opts.LargeBudget <= 0 {
		opts.LargeBudget = DefaultLargeBudget
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Migrations == nil {
		opts.Migrations = BrokerMigrations
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if err := checkFile(path, opts.Init); err != nil {
		return nil, err
	}
	db, err := openBolt(path, &bolt.Options{
		Timeout:        opts.OpenTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, err
	}
	if err := Guard(func() error { return migrate(db, opts.Migrations) }); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &Store{
		db:         db,
		opts:       opts,
		writes:     make(chan *write, 8192),
		closing:    make(chan struct{}),
		done:       make(chan struct{}),
		finished:   make(chan []finished, 1024),
		dispatched: make(chan struct{}),
	}
	go s.commitLoop()
	go s.dispatchLoop()
	return s, nil
}

func migrate(db *bolt.DB, migrations []Migration) error {
	target := len(migrations)
	return db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		version := 0
		if v := meta.Get(keySchema); len(v) == 8 {
			version = int(be64(v))
		}
		if version > target {
			return fmt.Errorf("%w (%d > %d)", ErrNewerSchema, version, target)
		}
		for ; version < target; version++ {
			if err := migrations[version](tx); err != nil {
				return fmt.Errorf("migration %d→%d: %w", version, version+1, err)
			}
		}
		return meta.Put(keySchema, u64(uint64(target)))
	})
}

// OpenDB opens (creating if needed) a bbolt file and runs the migrations,
// without a committer: for an engine that writes on its own goroutine (the
// cluster's).
func OpenDB(path string, opts Options) (*bolt.DB, error) {
	if opts.OpenTimeout == 0 {
		opts.OpenTimeout = 5 * time.Second
	}
	if opts.Migrations == nil {
		opts.Migrations = BrokerMigrations
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.OpenTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := migrate(db, opts.Migrations); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Path is the database file's path.
func (s *Store) Path() string { return s.db.Path() }

// Update applies fn in a group-committed transaction and returns once it is
// durable (or failed). fn may run more than once if another write in its
// batch fails, so it must only touch the transaction.
func (s *Store) Update(fn func(tx *bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan error, 1)}
	if err := s.submit(w); err != nil {
		return err
	}
	return <-w.done
}

// Submit queues fn without waiting; after (if non-nil) runs on the
// dispatcher goroutine once the transaction is durable or has failed, in
// commit order. after must not block: every later callback waits for it.
func (s *Store) Submit(fn func(tx *bolt.Tx) error, after func(err error)) error {
	return s.submit(&write{fn: fn, after: after})
}

// SubmitDeferred is Submit for a write nobody is waiting on (a client_ack
// without a reqId: the client does not wait, and losing it in a crash only
// means a redelivery). A batch made only of such writes waits up to
// Options.DeferFor for more writes before it is committed, so a burst of
// them — a broadcast's 1,000 acks — shares a few commits instead of
// rewriting the same B+tree pages in one commit after another. Any other
// write ends the wait: it commits at once, with them.
func (s *Store) SubmitDeferred(fn func(tx *bolt.Tx) error, after func(err error)) error {
	return s.submit(&write{fn: fn, after: after, deferrable: true})
}

// SubmitSized is Submit for a write that carries size bytes of payload (a
// message's body), made on behalf of key (its sender). A write of
// Options.LargeWrite bytes or more waits in the large lane, from which each
// commit takes at most Options.LargeBudget bytes; a later write of the same
// key waits there behind it, so a key's writes still commit in the order
// they were submitted. Writes of different keys may commit out of their
// submission order: that is the point, a small message does not wait for
// another sender's large ones.
//
// A sized write is a send, which only adds records (a new message and its
// deliveries) that no deferrable write submitted before it can touch: it
// alone may commit before them (splitDeferred, Options.PreemptDeferred).
// Every other write is applied after the deferrable writes submitted
// before it: a sweep, a forget or a ban applied first made an earlier ack
// settle nothing (no receipt, and an expired delivery of a message its
// recipient had).
func (s *Store) SubmitSized(fn func(tx *bolt.Tx) error, after func(err error), size int, key string) error {
	return s.submit(&write{fn: fn, after: after, size: size, key: key, overtakes: true})
}

// SubmitRefusable is SubmitSized whose refused runs on the committer
// goroutine as soon as the write has failed, before any write submitted
// after it is applied (store.Refuser).
func (s *Store) SubmitRefusable(fn func(tx *bolt.Tx) error, after, refused func(err error), size int, key string) error {
	return s.submit(&write{fn: fn, after: after, refused: refused, size: size, key: key, overtakes: true})
}

func (s *Store) submit(w *write) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.writes <- w
	return nil
}

// View runs fn in a read-only transaction. Reads never wait for the
// committer.
func (s *Store) View(fn func(tx *bolt.Tx) error) error { return s.db.View(fn) }

// largeLane holds the large writes (and the writes queued behind them by
// key) in submission order, with how many of each key's writes it holds.
type largeLane struct {
	q    []*write
	keys map[string]int
}

// route puts w in the batch or, when it is large or its key has a write in
// the lane, at the end of the lane.
func (s *Store) route(l *largeLane, batch []*write, w *write) []*write {
	if s.opts.LargeWrite < 0 || (w.size < s.opts.LargeWrite && (w.key == "" || l.keys[w.key] == 0)) {
		return append(batch, w)
	}
	l.q = append(l.q, w)
	if w.key != "" {
		l.keys[w.key]++
	}
	return batch
}

// take moves writes from the head of the lane into the batch, up to
// LargeBudget bytes, but always at least one (even into a full batch, so
// the lane cannot starve behind a stream of small writes).
func (s *Store) take(l *largeLane, batch []*write) []*write {
	used := 0
	for len(l.q) > 0 {
		w := l.q[0]
		if used > 0 && (used+w.size > s.opts.LargeBudget || len(batch) >= s.opts.MaxBatch) {
			break
		}
		used += max(w.size, 1)
		batch = append(batch, w)
		l.q[0] = nil
		l.q = l.q[1:]
		if w.key != "" {
			if l.keys[w.key]--; l.keys[w.key] == 0 {
				delete(l.keys, w.key)
			}
		}
	}
	if len(l.q) == 0 {
		l.q = nil
	}
	return batch
}

// fill routes whatever writes are waiting, without blocking, until the
// batch is full.
func (s *Store) fill(l *largeLane, batch []*write) []*write {
	for len(batch) < s.opts.MaxBatch {
		select {
		case w := <-s.writes:
			batch = s.route(l, batch, w)
		default:
			return batch
		}
	}
	return batch
}

func (s *Store) commitLoop() {
	defer close(s.done)
	lane := &largeLane{keys: map[string]int{}}
	batch := make([]*write, 0, 64)
	var carry []*write
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	closing := false
	for {
		// What the last commit left unapplied (deferrable writes it
		// stopped at for a write that is waited on) goes first, at once:
		// it has waited for company already.
		batch = append(batch[:0], carry...)
		carried := len(carry) > 0
		carry = nil
		if !carried && len(lane.q) == 0 && !closing {
			select {
			case w := <-s.writes:
				batch = s.route(lane, batch, w)
			case <-s.closing:
				// Commit what was submitted before Close (the loop
				// goes on until the queue and the lane are empty), so
				// nothing accepted is dropped.
				closing = true
			}
		}
		batch = s.fill(lane, batch)
		if !carried && !closing && s.opts.DeferFor > 0 && len(lane.q) == 0 && len(batch) > 0 && len(batch) < s.opts.MaxBatch && allDeferrable(batch) {
			batch = s.waitForCompany(lane, batch, timer)
		}
		batch = s.take(lane, batch)
		if len(batch) == 0 {
			if closing {
				return
			}
			continue
		}
		if first, rest := s.splitDeferred(batch); rest != nil {
			s.commit(first, nil)
			carry = s.commit(rest, lane)
			continue
		}
		carry = s.commit(batch, lane)
	}
}

// DefaultSplitDeferred is Options.SplitDeferred's default: well above the
// acks that share a commit with the sends of a busy mesh of DMs (tens), well
// below a broadcast's (up to 1,000).
const DefaultSplitDeferred = 128

// splitDeferred parts a batch holding at least SplitDeferred deferrable
// writes and at least one other write into the others, then the
// deferrable ones, each part in submission order; it returns a nil rest
// when the batch stays whole, as it does when a write that may not
// overtake them (not a send) follows a deferrable one. Nothing waits on a deferrable write's
// durability, so committing it after a write submitted later breaks no
// promise; each part keeps its own order.
func (s *Store) splitDeferred(batch []*write) (first, rest []*write) {
	if s.opts.SplitDeferred < 0 {
		return batch, nil
	}
	n := 0
	for _, w := range batch {
		if w.deferrable {
			n++
		}
	}
	if n < s.opts.SplitDeferred || n == len(batch) {
		return batch, nil
	}
	if mustFollowDeferred(batch) {
		return batch, nil
	}
	first = make([]*write, 0, len(batch)-n)
	rest = make([]*write, 0, n)
	for _, w := range batch {
		if w.deferrable {
			rest = append(rest, w)
		} else {
			first = append(first, w)
		}
	}
	return first, rest
}

// mustFollowDeferred reports whether a write that may not overtake
// deferrable writes (not SubmitSized) comes after one in batch: the batch
// is then applied in its order.
func mustFollowDeferred(batch []*write) bool {
	seen := false
	for _, w := range batch {
		switch {
		case w.deferrable:
			seen = true
		case seen && !w.overtakes:
			return true
		}
	}
	return false
}

func allDeferrable(batch []*write) bool {
	for _, w := range batch {
		if !w.deferrable {
			return false
		}
	}
	return true
}

// waitForCompany holds a batch of deferrable writes until DeferFor has
// passed, the batch is full, a write that is not deferrable arrives (it
// joins the batch or the lane, with whatever else is waiting, and the batch
// commits at once), or the store closes.
func (s *Store) waitForCompany(l *largeLane, batch []*write, timer *time.Timer) []*write {
	timer.Reset(s.opts.DeferFor)
	defer timer.Stop()
	for len(batch) < s.opts.MaxBatch {
		select {
		case w := <-s.writes:
			batch = s.route(l, batch, w)
			if !w.deferrable {
				return s.fill(l, batch)
			}
		case <-timer.C:
			return batch
		case <-s.closing:
			return batch
		}
	}
	return batch
}

// commit applies a batch in one transaction. If any write fails, the whole
// transaction is rolled back and each write is retried alone, so one bad
// write never takes its neighbours down with it. Outcomes go to the
// dispatcher in commit order.
//
// With Options.PreemptDeferred and lane set, a write that someone waits
// for does not wait for the deferrable writes at the batch's end to be
// applied (a broadcast's 1,000 acks take longer to apply than the next
// send's 1,000 deliveries, and the send's fan-out waits for its commit):
// once only deferrable writes are left, at least SplitDeferred of them
// and none put off before, commit looks for a new write after each one.
// A deferrable write joins the batch (up to MaxBatch); any other is applied
// next, with whatever else is waiting, and the deferrable writes not yet
// applied are returned, to be committed next, in their order. The
// callbacks of such a commit run in two rounds, each followed by
// Options.AfterBatch: the waited-on writes' first, then the deferrable
// ones'. Nobody waits for a deferrable write, and its callbacks (in the
// broker: receipts, a freed window) need not come before the fan-out of a
// send that shares its commit, which AfterBatch writes.
func (s *Store) commit(batch []*write, lane *largeLane) (carry []*write) {
	start := time.Now()
	failedAt := -1
	lastWaited := -1 // the last write in batch that is not deferrable
	for i, w := range batch {
		if !w.deferrable {
			lastWaited = i
		}
	}
	applied := 0
	interrupted := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		for applied < len(batch) {
			if err := batch[applied].fn(tx); err != nil {
				failedAt = applied
				return err
			}
			applied++
			// Only a wave of deferrable writes is preempted (at least
			// SplitDeferred left, as a broadcast's acks; the tens of
			// acks in a busy mesh's batch of DMs are not), and never
			// one put off before: carried writes come first in a
			// batch, and are applied whatever arrives.
			if !s.opts.PreemptDeferred || lane == nil || applied <= lastWaited || applied == len(batch) ||
				batch[applied].carried || len(batch)-applied < max(s.opts.SplitDeferred, 1) {
				continue
			}
			select {
			case w := <-s.writes:
				if w.deferrable && len(batch) < s.opts.MaxBatch {
					batch = append(batch, w)
					continue
				}
				if !w.deferrable && !w.overtakes {
					// Applied after the deferrable writes submitted
					// before it, in this commit: nothing preempts
					// them until it is applied.
					batch = append(batch, w)
					lastWaited = len(batch) - 1
					continue
				}
				// Leave the rest for the next commit; w goes first
				// (or to the lane, or after the rest when it is a
				// deferrable write over MaxBatch).
				carry = append(carry, batch[applied:]...)
				for _, w := range carry {
					w.carried = true
				}
				batch = batch[:applied:applied]
				interrupted = true
				if w.deferrable {
					carry = append(carry, w)
				} else {
					batch = s.route(lane, batch, w)
				}
				batch, carry = s.fillWaited(lane, batch, carry)
				for applied < len(batch) {
					if err := batch[applied].fn(tx); err != nil {
						failedAt = applied
						return err
					}
					applied++
				}
				return nil
			default:
			}
		}
		return nil
	})
	out := make([]finished, 0, len(batch))
	switch {
	case err == nil:
		if s.opts.OnCommit != nil {
			s.opts.OnCommit(time.Since(start), len(batch))
		}
		if interrupted {
			for _, w := range batch {
				if !w.deferrable {
					out = append(out, finished{w, nil})
				}
			}
			out = append(out, finished{}) // their fan-out is written here
			for _, w := range batch {
				if w.deferrable {
					out = append(out, finished{w, nil})
				}
			}
		} else {
			for _, w := range batch {
				out = append(out, finished{w, nil})
			}
		}
	case failedAt < 0 || len(batch) == 1:
		// The commit itself failed (disk full, I/O error), or the only
		// write did: there is nothing to retry separately.
		for _, w := range batch {
			out = append(out, outcome(w, err))
		}
	default:
		out = s.retryAfterFailure(batch, failedAt, out)
	}
	s.finished <- out
	return carry
}

// retryAfterFailure commits a batch whose write failedAt failed, so that the
// others are not lost with it: the writes before it applied without error in
// this order, so they commit together again; the failed one runs alone (its
// own outcome, on the state the writes before it left); the rest go the
// same way. Retrying every write alone made a failing write (any member's
// request that is refused inside its transaction, such as the revocation
// of an unknown API key) cost a commit, two fdatasyncs, for each of the
// hundreds of writes beside it, a broadcast's acks among them.
func (s *Store) retryAfterFailure(batch []*write, failedAt int, out []finished) []finished {
	alone := func(w *write) {
		t0 := time.Now()
		err := s.db.Update(w.fn)
		if err == nil && s.opts.OnCommit != nil {
			s.opts.OnCommit(time.Since(t0), 1)
		}
		out = append(out, outcome(w, err))
	}
	for len(batch) > 0 {
		if failedAt > 0 {
			ok := batch[:failedAt]
			t0 := time.Now()
			failed := -1
			err := s.db.Update(func(tx *bolt.Tx) error {
				for i, w := range ok {
					if err := w.fn(tx); err != nil {
						failed = i
						return err
					}
				}
				return nil
			})
			switch {
			case err == nil:
				if s.opts.OnCommit != nil {
					s.opts.OnCommit(time.Since(t0), len(ok))
				}
				for _, w := range ok {
					out = append(out, finished{w, nil})
				}
			case failed < 0:
				// The commit itself failed: nothing of it is stored.
				for _, w := range ok {
					out = append(out, outcome(w, err))
				}
			default:
				// Not what they did a moment ago: each alone.
				for _, w := range ok {
					alone(w)
				}
			}
		}
		alone(batch[failedAt])
		batch = batch[failedAt+1:]
		if len(batch) == 0 {
			break
		}
		t0 := time.Now()
		failedAt = -1
		err := s.db.Update(func(tx *bolt.Tx) error {
			for i, w := range batch {
				if err := w.fn(tx); err != nil {
					failedAt = i
					return err
				}
			}
			return nil
		})
		switch {
		case err == nil:
			if s.opts.OnCommit != nil {
				s.opts.OnCommit(time.Since(t0), len(batch))
			}
			for _, w := range batch {
				out = append(out, finished{w, nil})
			}
			return out
		case failedAt < 0:
			for _, w := range batch {
				out = append(out, outcome(w, err))
			}
			return out
		}
	}
	return out
}

// fillWaited takes the writes waiting, without blocking: the waited-on
// ones into the batch (or the lane), the deferrable ones after carry, up to
// MaxBatch writes in all.
func (s *Store) fillWaited(l *largeLane, batch, carry []*write) ([]*write, []*write) {
	behind := false // a write that may not overtake the carried ones came
	for len(batch)+len(carry) < s.opts.MaxBatch {
		select {
		case w := <-s.writes:
			if !w.deferrable && !w.overtakes {
				behind = true
			}
			if w.deferrable || behind {
				carry = append(carry, w)
			} else {
				batch = s.route(l, batch, w)
			}
		default:
			return batch, carry
		}
	}
	return batch, carry
}

// dispatchLoop runs callbacks and wakes waiters, batch by batch in commit
// order.
func (s *Store) dispatchLoop() {
	defer close(s.dispatched)
	for batch := range s.finished {
		for _, f := range batch {
			if f.w == nil {
				if s.opts.AfterBatch != nil {
					s.opts.AfterBatch()
				}
				continue
			}
			if f.w.after != nil {
				f.w.after(f.err)
			}
			if f.w.done != nil {
				f.w.done <- f.err
			}
		}
		if s.opts.AfterBatch != nil {
			s.opts.AfterBatch()
		}
	}
}

// Ping reports whether the store accepts writes (for /health/ready).
func (s *Store) Ping() error {
	return s.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put([]byte("ping"), u64(uint64(time.Now().UnixMilli())))
	})
}

// Close stops accepting writes, commits what was already submitted, and
// closes the file.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		<-s.done
		close(s.finished)
		<-s.dispatched
		err = s.db.Close()
	})
	return err
}
