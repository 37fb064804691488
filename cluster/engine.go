package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"claudemesh/store"
)

// The engine: a store.Engine whose writes are replicated through one
// JetStream stream, the log.
//
// Every node keeps the broker's records in its own bbolt file, exactly as a
// single broker does. A write is the broker's ordinary Go function over a
// store.Tx; the node that takes the request runs it against its own copy,
// recording what it changed (store.Redo), and publishes that redo to the
// log with JetStream's expected-last-sequence set to the last entry it has
// applied. JetStream accepts it only if nothing else was appended since, so
// the write ran against exactly the state every node will have when it
// reaches that entry: the log is serialisable, and every check a write makes
// (a name taken, an invite's uses, an admin's role, the audit chain's head)
// holds cluster-wide, as it does in one bbolt transaction. When another node
// wrote first, the node applies that entry and runs its write again (writes
// may run more than once, as on one node). The PubAck means a quorum of the
// stream's replicas stored the entry: only then does the node commit its
// transaction, with the entry's sequence, and acknowledge the write.
//
// Every node follows the log with an ordered consumer and replays the
// entries written by others (store.ApplyRedo) in order, recording the
// sequence applied in the same bbolt transaction, so a restarted node
// resumes exactly where it stopped. What a replayed entry changed is handed
// to OnRemote (the broker's hub turns it into pushes and updates of its
// caches), on the same goroutine and in the same order as the callbacks of
// the node's own writes.
//
// A write that changes nothing (a refusal, a duplicate) is not published.

// EngineOptions tune an Engine.
type EngineOptions struct {
	// Context, when it ends, makes the open give up (ErrStopped) and
	// release what it holds: the node waits up to CatchUpTimeout for its
	// cluster to form, and SIGTERM must stop it meanwhile. nil: never.
	Context context.Context
	// Path of the node's bbolt file.
	Path string
	// PublishTimeout bounds the wait for a quorum to store an entry;
	// past it the write fails with store.ErrUnavailable.
	PublishTimeout time.Duration
	// CatchUpTimeout bounds the wait at open for the node to apply the
	// log written while it was away.
	CatchUpTimeout time.Duration
	// OnRemote receives the changes of each entry another node wrote,
	// after it is committed locally, in log order.
	OnRemote func(seq uint64, changes []Change)
	// OnCommit observes each local commit (metrics).
	OnCommit func(d time.Duration, writes int)
	// MaxBatch caps the writes folded into one entry.
	MaxBatch int
	// SnapshotEvery: when this node leads the log and has applied that
	// many entries since the newest snapshot, it stores a snapshot of its
	// copy and purges the log behind it (snapshot.go). 0: never.
	SnapshotEvery uint64
	// SnapshotCheck is how often that is checked (default 30s).
	SnapshotCheck time.Duration
	// LogKeep is how many entries before a snapshot's sequence a purge
	// keeps, so a node a little behind catches up from the log instead of
	// restoring the snapshot.
	LogKeep uint64
	// FollowHeartbeat is the idle heartbeat of the ordered consumer that
	// feeds the log to the node: two missed heartbeats make the client
	// recreate the consumer (default 1s). The library's own default, 5s,
	// left a node whose consumer lived on a killed node 10s behind.
	FollowHeartbeat time.Duration
	// StallAfter is how long a node waits for the consumer to deliver an
	// entry it knows exists before it reads the entry from the log itself
	// (watch.go; default 300ms).
	StallAfter time.Duration
	Logger     *slog.Logger
	// followStall (tests) makes an attempt to create the log consumer
	// get no answer when it returns true for the attempt's number.
	followStall func(attempt int) bool
}

// Change is one put or delete an entry from another node made, with the
// value the key held before (nil if none) and after (nil for a delete).
// Path is the bucket path from the root.
type Change struct {
	Path     [][]byte
	Key      []byte
	Old, New []byte
}

// Stream and subject names of one cluster's log.
func logStream(cluster string) string  { return "CLAUDEMESH_" + cluster + "_LOG" }
func logSubject(cluster string) string { return "claudemesh." + cluster + ".log" }

var (
	bucketMeta = []byte("meta")
	keyApplied = []byte("clusterApplied")
)

// Engine implements store.Engine on a JetStream log.
type Engine struct {
	opts    EngineOptions
	log     *slog.Logger
	db      *bolt.DB
	js      jetstream.JetStream
	stream  jetstream.Stream
	subject string
	node    string
	maxSize int
	// cluster, replicas and nc serve snapshots (snapshot.go).
	cluster   string
	replicas  int
	nc        *nats.Conn
	external  bool // --nats: the log's leader is no node's own server
	snap      snapState
	snapDone  chan struct{}
	watchDone chan struct{}

	writes   chan *write
	incoming chan entry
	fetched  chan []entry  // entries the watchdog read from the log itself
	want     atomic.Uint64 // the highest entry someone waits for
	poke     chan struct{}
	progress atomic.Int64 // unix nanos of the last time applied moved
	// delivered (unix nanos) is when the consumer last handed over an
	// entry: long ago while entries are missing means it is gone.
	delivered atomic.Int64
	finished  chan []outcome
	closing   chan struct{}
	done      chan struct{}
	dispatch  chan struct{}
	consMu    sync.Mutex
	cons      jetstream.ConsumeContext
	consumer  jetstream.Consumer
	once      sync.Once
	mu        sync.RWMutex
	closed    bool

	applied   atomic.Uint64 // the log sequence the bbolt file is at
	appliedMu sync.Mutex
	advanced  chan struct{} // closed (and replaced) whenever applied moves
	// visible is the log sequence the dispatcher has handed over whole:
	// OnRemote and the writers' callbacks have run for every entry up to
	// it, so the broker's hub is there too. It trails applied by the
	// dispatcher's queue.
	visible   atomic.Uint64
	visibleMu sync.Mutex
	shown     chan struct{} // closed (and replaced) whenever visible moves
	published atomic.Uint64 // entries this node wrote
	// fetches and fetchedEntries count the watchdog's reads (watch.go).
	fetches, fetchedEntries, refollows atomic.Uint64
	selfReadAt                         atomic.Int64 // unix nanos of the watchdog's last read
	watchPaused                        atomic.Bool  // tests: a node that falls behind
	turns                              *turns
	conflicts                          atomic.Uint64 // publishes refused because another node wrote first
	msgSeq                             uint64
	startID                            string
	halted                             atomic.Pointer[error]
	// refuseUntil (unix nanos): after a write found no quorum, the next
	// writes are refused at once for a moment instead of each waiting
	// PublishTimeout in turn behind the one writer.
	refuseUntil atomic.Int64
	// lastNoQuorum (unix nanos) is when a write last failed for want of
	// a quorum; 0 once one succeeds again.
	lastNoQuorum atomic.Int64
}

// entry is one entry of the log: its sequence and the redo it carries.
type entry struct {
	seq    uint64
	data   []byte
	node   string // the node that wrote it (turns.go)
	schema string // its schemaHeader ("" from a build before it)
	err    error  // its metadata could not be read
}

// schemaHeader carries, on every entry, the store schema of the node that
// wrote it (store.SchemaVersion). An entry is a redo log of that layout.
// A node on an older schema than an entry's (a mixed-version cluster: one
// node upgraded while this one was not) would apply it to a layout it was
// not written for and drift quietly; it halts instead, and upgrading it
// (then restarting it) lets it go on. An entry of an older schema than
// this node's is applied, as every entry was before the header: the log
// still holds what the nodes wrote before an upgrade, which a node that
// was stopped first, or restores an older snapshot, must replay after
// it, and halting there would stop an upgraded node for good. Entries
// written before the header existed carry none and are applied too.
const schemaHeader = "Claudemesh-Schema"

// ourSchema is this build's value of schemaHeader.
var ourSchema = strconv.Itoa(store.SchemaVersion)

// checkSchema refuses an entry written on a newer schema than this
// node's (or one whose header is not a schema number).
func checkSchema(m entry) error {
	if m.schema == "" || m.schema == ourSchema {
		return nil
	}
	v, err := strconv.Atoi(m.schema)
	if err == nil && v < store.SchemaVersion {
		return nil
	}
	if err != nil || v <= 0 {
		return fmt.Errorf("cluster: entry %d, written by node %q, carries store schema %q, which is not a schema number; this node's is %s", m.seq, m.node, m.schema, ourSchema)
	}
	return fmt.Errorf("cluster: entry %d was written by node %q on store schema %d, newer than this node's %s: upgrade this node to the writer's claudemesh version and restart it", m.seq, m.node, v, ourSchema)
}

type write struct {
	fn    func(tx *store.Tx) error
	after func(err error)
	// refused runs on the engine's loop when the write fails, before the
	// next batch is run (store.Refuser).
	refused func(err error)
	done    chan error
}

// outcome is one item for the dispatcher: a local write's result, or the
// changes of a remote entry.
type outcome struct {
	w       *write
	err     error
	seq     uint64
	changes []Change
}

// OpenEngine opens (creating and migrating) the node's bbolt file, makes
// sure the log stream exists with the cluster's replication, and catches
// up with the log.
func OpenEngine(n *Node, opts EngineOptions) (*Engine, error) {
	if opts.Context == nil {
		return openEngine(n, opts)
	}
	e, err := openEngine(n, opts)
	if opts.Context.Err() != nil {
		// Stopped while it waited (for the cluster to form, the log to
		// be followed or caught up with): whatever it got, it gives back.
		if e != nil {
			e.Close()
		}
		return nil, fmt.Errorf("%w (%v)", ErrStopped, context.Cause(opts.Context))
	}
	return e, err
}

// ErrStopped is an open that gave up because its context ended.
var ErrStopped = errors.New("cluster: stopped while starting")

func openEngine(n *Node, opts EngineOptions) (*Engine, error) {
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 5 * time.Second
	}
	if opts.CatchUpTimeout <= 0 {
		opts.CatchUpTimeout = 60 * time.Second
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SnapshotCheck <= 0 {
		opts.SnapshotCheck = 30 * time.Second
	}
	if opts.FollowHeartbeat <= 0 {
		opts.FollowHeartbeat = time.Second
	}
	if opts.StallAfter <= 0 {
		opts.StallAfter = 300 * time.Millisecond
	}
	db, err := store.OpenDB(opts.Path, store.Options{OpenTimeout: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	e := &Engine{
		opts: opts, log: opts.Logger, db: db, subject: logSubject(n.cfg.Name), node: n.cfg.NodeID,
		writes:   make(chan *write, 8192),
		incoming: make(chan entry, 4096),
		fetched:  make(chan []entry, 4),
		poke:     make(chan struct{}, 1),
		finished: make(chan []outcome, 1024),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		dispatch: make(chan struct{}),
		startID:  strconv.FormatInt(time.Now().UnixNano(), 36),
		advanced: make(chan struct{}),
		shown:    make(chan struct{}),
		cluster:  n.cfg.Name, replicas: n.cfg.Replicas, nc: n.nc, external: n.srv == nil,
		snapDone:  make(chan struct{}),
		watchDone: make(chan struct{}),
		turns:     newTurns(n.cfg.NodeID),
	}
	e.maxSize = int(n.nc.MaxPayload()) / 2
	if err := db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
			e.applied.Store(be64(v))
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, err
	}
	if e.js, err = jetstream.New(n.nc); err != nil {
		db.Close()
		return nil, err
	}
	parent := opts.Context
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, opts.CatchUpTimeout)
	defer cancel()
	// Where a slow start spent its time (a node once took the whole
	// catch-up timeout under load, with nothing else to say why).
	started := time.Now()
	var phases []any
	phase := func(name string) { phases = append(phases, name, time.Since(started).Round(time.Millisecond).String()) }
	if e.stream, err = ensureStream(ctx, e.js, jetstream.StreamConfig{
		Name: logStream(n.cfg.Name), Subjects: []string{e.subject},
		Storage: jetstream.FileStorage, Replicas: n.cfg.Replicas,
		Retention: jetstream.LimitsPolicy, Duplicates: 2 * time.Minute,
		DenyDelete: true,
	}); err != nil {
		db.Close()
		if nf := (*notFormedError)(nil); errors.As(err, &nf) {
			return nil, n.notFormed(opts.CatchUpTimeout, err)
		}
		return nil, err
	}
	phase("stream")
	// A copy applied from another log (the cluster's JetStream state was
	// lost or replaced since) would skip this log's entries.
	if err := e.checkLogIdentity(ctx); err != nil {
		db.Close()
		return nil, err
	}
	// A copy older than the log's first entry (a new or wiped node, or
	// one away while the log was compacted) starts from a snapshot.
	if err := e.restoreIfBehind(ctx); err != nil {
		e.db.Close()
		return nil, err
	}
	if err := e.turns.start(n.nc, n.cfg.Name); err != nil {
		e.db.Close()
		return nil, err
	}
	if err := e.follow(ctx); err != nil {
		e.turns.stop()
		e.db.Close()
		return nil, err
	}
	phase("following")
	e.progress.Store(time.Now().UnixNano())
	e.delivered.Store(time.Now().UnixNano())
	// What the file holds before the dispatcher starts is what the broker
	// loads its hub from.
	e.visible.Store(e.applied.Load())
	go e.loop()
	go e.dispatchLoop()
	go e.watchLog()
	if opts.SnapshotEvery > 0 {
		go e.snapshotLoop()
	} else {
		close(e.snapDone)
	}
	last, err := e.catchUp(ctx)
	phase("caught up")
	if err != nil {
		e.log.Warn("cluster: starting before catching up with the log", append([]any{"err", err, "applied", e.applied.Load(),
			"last", last, "selfReadEntries", e.fetchedEntries.Load()}, phases...)...)
	} else if time.Since(started) > 5*time.Second {
		e.log.Info("cluster: slow start", append([]any{"applied", e.applied.Load(), "last", last}, phases...)...)
	}
	return e, nil
}

// notFormedError is a log stream that could not be created before the
// start's deadline: no quorum of nodes formed (OpenEngine says which
// routes answered).
type notFormedError struct {
	stream string
	err    error
}

func (e *notFormedError) Error() string {
	return fmt.Sprintf("cluster: create stream %s: %v", e.stream, e.err)
}

func (e *notFormedError) Unwrap() error { return e.err }

// ensureStream creates or updates a stream, retrying while the cluster
// forms (the meta leader is elected a few seconds after the nodes meet).
func ensureStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	for {
		c, cancel := context.WithTimeout(ctx, time.Second)
		s, err := js.CreateOrUpdateStream(c, cfg)
		cancel()
		if err == nil {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, &notFormedError{stream: cfg.Name, err: err}
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// followAttempt bounds one request that creates the log consumer. A
// request lost in a JetStream election (the stream's leader changing as
// it is asked) gets no answer: with the whole start's context (a minute)
// as its only bound, the node waited all of it and then gave up. Each
// attempt now gets a few seconds, and another follows while ctx lasts.
const followAttempt = 5 * time.Second

// follow starts the ordered consumer that feeds the log to the loop,
// trying again (followAttempt each) until ctx ends.
func (e *Engine) follow(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, followAttempt)
		err := e.followOnce(actx, attempt)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		e.log.Warn("cluster: creating the log consumer failed; trying again", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-e.closing:
			return err
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, time.Second)):
		}
	}
}

// followOnce is one attempt of follow.
func (e *Engine) followOnce(ctx context.Context, attempt int) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if a := e.applied.Load(); a > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, a+1
	}
	if h := e.opts.followStall; h != nil && h(attempt) {
		<-ctx.Done() // a request whose answer never comes (tests)
		return fmt.Errorf("cluster: follow the log: %w", ctx.Err())
	}
	cons, err := e.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("cluster: follow the log: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		en := entry{data: m.Data(), node: writerOf(m.Headers().Get(jetstream.MsgIDHeader)), schema: m.Headers().Get(schemaHeader)}
		if md, err := m.Metadata(); err != nil {
			en.err = err
		} else {
			en.seq = md.Sequence.Stream
		}
		e.delivered.Store(time.Now().UnixNano())
		select {
		case e.incoming <- en:
		case <-e.closing:
		}
	}, jetstream.PullHeartbeat(e.opts.FollowHeartbeat))
	if err != nil {
		return fmt.Errorf("cluster: follow the log: %w", err)
	}
	e.consMu.Lock()
	e.cons, e.consumer = cc, cons
	e.consMu.Unlock()
	return nil
}

// catchUp waits until this node has applied the log up to its last entry
// at the time of the call, and returns that entry's sequence (0 if the
// log's state could not be read).
func (e *Engine) catchUp(ctx context.Context) (uint64, error) {
	info, err := e.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	last := info.State.LastSeq
	for e.applied.Load() < last {
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return last, nil
}

// Update implements store.Engine.
func (e *Engine) Update(fn func(tx *store.Tx) error) error {
	w := &write{fn: fn, done: make(chan error, 1)}
	if err := e.submit(w); err != nil {
		return err
	}
	return <-w.done
}

// Submit implements store.Engine.
func (e *Engine) Submit(fn func(tx *store.Tx) error, after func(err error)) error {
	return e.submit(&write{fn: fn, after: after})
}

// SubmitRefusable implements store.Refuser: refused runs on the engine's
// loop as soon as the write has failed, before any later write is run.
// size and key are not used (every write of a cluster goes one way).
func (e *Engine) SubmitRefusable(fn func(tx *store.Tx) error, after, refused func(err error), size int, key string) error {
	return e.submit(&write{fn: fn, after: after, refused: refused})
}

func (e *Engine) submit(w *write) error {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		return store.ErrClosed
	}
	e.writes <- w
	return nil
}

// View implements store.Engine: a read of the node's copy.
func (e *Engine) View(fn func(tx *store.Tx) error) error {
	return e.db.View(func(tx *bolt.Tx) error { return fn(store.WrapTx(tx, nil)) })
}

// Path implements store.Engine.
func (e *Engine) Path() string { return e.opts.Path }

// setApplied records the sequence the copy is at and wakes WaitApplied.
func (e *Engine) setApplied(seq uint64) {
	e.applied.Store(seq)
	e.progress.Store(time.Now().UnixNano())
	e.appliedMu.Lock()
	close(e.advanced)
	e.advanced = make(chan struct{})
	e.appliedMu.Unlock()
}

// WaitApplied waits until this node's copy is at seq or later (another
// node's news that refers to records it wrote, such as a presence of a
// member who joined there a moment ago), or until timeout; false then.
func (e *Engine) WaitApplied(seq uint64, timeout time.Duration) bool {
	var deadline <-chan time.Time
	for {
		e.appliedMu.Lock()
		ch := e.advanced
		e.appliedMu.Unlock()
		if e.applied.Load() >= seq {
			return true
		}
		if deadline == nil {
			e.wantEntry(seq)
			t := time.NewTimer(timeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-ch:
		case <-deadline:
			return false
		case <-e.closing:
			return false
		}
	}
}

// Applied is the log sequence this node's copy is at.
func (e *Engine) Applied() uint64 { return e.applied.Load() }

// setVisible records that the dispatcher has handed over every entry up
// to seq, and wakes WaitVisible.
func (e *Engine) setVisible(seq uint64) {
	if seq <= e.visible.Load() {
		return
	}
	e.visible.Store(seq)
	e.visibleMu.Lock()
	close(e.shown)
	e.shown = make(chan struct{})
	e.visibleMu.Unlock()
}

// WaitVisible waits until the dispatcher has handed over every entry up
// to seq (OnRemote and the writers' callbacks have run for each), or
// until timeout; false then. WaitApplied is enough for a read of the
// node's copy; what the broker keeps in memory, fed by OnRemote, needs
// this. Never call it from OnRemote or a write's callback: they run on
// the dispatcher, which it waits for.
func (e *Engine) WaitVisible(seq uint64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	if !e.WaitApplied(seq, timeout) {
		return false
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		e.visibleMu.Lock()
		ch := e.shown
		e.visibleMu.Unlock()
		if e.visible.Load() >= seq {
			return true
		}
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-e.closing:
			return false
		}
	}
}

// CatchUp waits until this node has applied, and handed over to the
// broker (WaitVisible), every entry the log holds at the time of the
// call: a record another node wrote a moment ago is then known here. False
// when the log's leader does not answer or timeout, which bounds the
// whole (the leader's answer included), passes first.
func (e *Engine) CatchUp(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	info, err := e.stream.Info(ctx)
	cancel()
	if err != nil {
		return false
	}
	return e.WaitVisible(info.State.LastSeq, time.Until(deadline))
}

// Stats are counters for metrics.
func (e *Engine) Stats() (published, conflicts uint64) {
	return e.published.Load(), e.conflicts.Load()
}

// Ping implements store.Engine: the log has a leader that answers, so a
// quorum of its replicas is up and writes can be made durable.
func (e *Engine) Ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		return &noQuorum{fmt.Sprintf("no quorum: the replicated log does not answer (%v); writes are refused until a majority of the nodes is back", err)}
	}
	if info.Cluster != nil && info.Cluster.Leader == "" {
		return &noQuorum{"no quorum: the replicated log has no leader; writes are refused until a majority of the nodes is back"}
	}
	if info.Cluster != nil && len(info.Cluster.Replicas) > 0 {
		up := 1 // the leader
		for _, r := range info.Cluster.Replicas {
			if r.Current && !r.Offline {
				up++
			}
		}
		if total := len(info.Cluster.Replicas) + 1; up <= total/2 {
			return &noQuorum{fmt.Sprintf("no quorum: %d of the log's %d replicas are reachable; writes are refused until a majority is back", up, total)}
		}
	}
	if at := e.lastNoQuorum.Load(); at != 0 && time.Since(time.Unix(0, at)) < 3*refuseFor {
		return &noQuorum{"no quorum: a write found no quorum a moment ago; writes are refused until a majority of the nodes is back"}
	}
	if err := e.haltErr(); err != nil {
		return fmt.Errorf("this node stopped applying the log: %v", err)
	}
	return nil
}

// noQuorum is Ping's answer without a quorum: store.ErrUnavailable with
// words for /health/ready.
type noQuorum struct{ msg string }

func (e *noQuorum) Error() string { return e.msg }
func (e *noQuorum) Unwrap() error { return store.ErrUnavailable }

// LogInfo is the log as its leader describes it: the last sequence and
// the leader's name (empty without a quorum; err when nobody answers).
func (e *Engine) LogInfo() (last uint64, leader string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		return 0, "", err
	}
	if info.Cluster != nil {
		leader = info.Cluster.Leader
	}
	return info.State.LastSeq, leader, nil
}

// Lag is how many entries of the log this node has yet to apply.
func (e *Engine) Lag() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	if a := e.applied.Load(); info.State.LastSeq > a {
		return info.State.LastSeq - a, nil
	}
	return 0, nil
}

// Close stops accepting writes, finishes those already submitted, and
// closes the file.
func (e *Engine) Close() error {
	var err error
	e.once.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		close(e.closing)
		<-e.done
		<-e.snapDone
		<-e.watchDone
		e.consMu.Lock()
		if e.cons != nil {
			e.cons.Stop()
		}
		e.consMu.Unlock()
		e.turns.stop()
		close(e.finished)
		<-e.dispatch
		err = e.db.Close()
	})
	return err
}

// loop is the engine's one writer: it applies the log and publishes this
// node's writes, so bbolt's single writer is never contended.
func (e *Engine) loop() {
	defer close(e.done)
	for {
		select {
		case m := <-e.incoming:
			e.applyIncoming(m)
		case es := <-e.fetched:
			e.applyEntries(es)
		case w := <-e.writes:
			e.writeBatch(e.fill(w))
		case <-e.closing:
			for {
				select {
				case w := <-e.writes:
					e.writeBatch(e.fill(w))
				default:
					return
				}
			}
		}
	}
}

func (e *Engine) fill(first *write) []*write {
	batch := []*write{first}
	for len(batch) < e.opts.MaxBatch {
		select {
		case w := <-e.writes:
			batch = append(batch, w)
		default:
			return batch
		}
	}
	return batch
}

// drainIncoming applies every entry already received.
func (e *Engine) drainIncoming() {
	for {
		select {
		case m := <-e.incoming:
			e.applyIncoming(m)
		case es := <-e.fetched:
			e.applyEntries(es)
		default:
			return
		}
	}
}

// applyIncoming applies one entry of the log, and any that follow it
// already received, in one transaction.
func (e *Engine) applyIncoming(first entry) {
	msgs := []entry{first}
more:
	for len(msgs) < 256 {
		select {
		case m := <-e.incoming:
			msgs = append(msgs, m)
		default:
			break more
		}
	}
	e.applyEntries(msgs)
}

// applyEntries applies entries of the log in one transaction, skipping
// those applied already (this node's own, those applied before a restart,
// and those the watchdog or the consumer delivered first).
func (e *Engine) applyEntries(msgs []entry) {
	if e.haltErr() != nil {
		return
	}
	// Entries both the consumer and the watchdog delivered come twice:
	// a batch of nothing new costs no transaction.
	at := e.applied.Load()
	msgs = slices.DeleteFunc(msgs, func(m entry) bool { return m.err == nil && m.seq <= at })
	if len(msgs) == 0 {
		return
	}
	var out []outcome
	var applied uint64
	start := time.Now()
	err := e.db.Update(func(tx *bolt.Tx) error {
		out = out[:0]
		applied = e.applied.Load()
		for _, m := range msgs {
			if m.err != nil {
				return m.err
			}
			seq := m.seq
			if seq <= applied {
				continue // this node's own entry, or one applied before a restart
			}
			if seq != applied+1 {
				return gapError(applied, seq)
			}
			if err := checkSchema(m); err != nil {
				return err
			}
			var changes []Change
			err := store.ApplyRedo(tx, m.data, func(op *store.RedoOp, old []byte) {
				c := Change{Path: clonePath(op.Path), Key: clone(op.Key), Old: clone(old)}
				if op.Op == store.OpPut {
					c.New = clone(op.Value)
				}
				changes = append(changes, c)
			})
			if err != nil {
				return fmt.Errorf("cluster: apply entry %d: %w", seq, err)
			}
			applied = seq
			if len(changes) > 0 {
				out = append(out, outcome{seq: seq, changes: changes})
			}
		}
		if n := len(out); n == 0 || out[n-1].seq != applied {
			// Entries that changed nothing still move visible
			// (WaitVisible): the dispatcher gets their last sequence.
			out = append(out, outcome{seq: applied})
		}
		return tx.Bucket(bucketMeta).Put(keyApplied, u64(applied))
	})
	if err != nil {
		// The file and the log disagree: applying further would corrupt
		// the node's copy. Stop writing; the operator restores it.
		e.log.Error("cluster: cannot apply the log; this node stops applying", "err", err)
		e.halt(err)
		return
	}
	if e.opts.OnCommit != nil {
		e.opts.OnCommit(time.Since(start), len(msgs))
	}
	// A hold for a writer ends before the wake-up, so whoever waits for
	// this entry finds the hold gone.
	for _, m := range msgs {
		e.turns.applied(m.node)
	}
	e.setApplied(applied)
	e.finished <- out
}

// gapError is the halt of a node that needs entries purged from the log.
func gapError(applied, next uint64) error {
	return fmt.Errorf("cluster: the log skips from %d to %d: it was compacted while this node was that far behind; restart the node, it restores the newest snapshot at start", applied, next)
}

// checkGap halts the node when the log no longer holds the entry after
// applied (a write of this node conflicted: the entries it must apply
// first may be gone).
func (e *Engine) checkGap(applied uint64) error {
	// A second at most: while the log elects a leader nobody answers, and
	// a write that conflicted would spend the whole write timeout here
	// before it even waits for the entries it lacks (a leader kill
	// stopped writes for 10 s instead of 6 that way). Unanswered, the
	// check is skipped: a gap also shows when the entry after it arrives.
	ctx, cancel := context.WithTimeout(context.Background(), min(e.opts.PublishTimeout, time.Second))
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil || info.State.FirstSeq <= applied+1 {
		return nil
	}
	err = gapError(applied, info.State.FirstSeq)
	e.log.Error("cluster: cannot apply the log; this node stops applying", "err", err)
	e.halt(err)
	return err
}

// halt makes every later write fail: the node's copy cannot follow the
// log. The operator restores the node (docs/operating-a-broker.md).
func (e *Engine) halt(err error) { e.halted.Store(&err) }

func (e *Engine) haltErr() error {
	if p := e.halted.Load(); p != nil {
		return *p
	}
	return nil
}

// writeBatch runs a batch of writes against the node's copy and publishes
// what they changed, until it is accepted, refused for good, or the log is
// unreachable.
func (e *Engine) writeBatch(batch []*write) {
	failed := make([]error, len(batch))
	if err := e.haltErr(); err != nil {
		e.finish(batch, failed, err)
		return
	}
	if time.Now().UnixNano() < e.refuseUntil.Load() {
		e.finish(batch, failed, store.ErrUnavailable)
		return
	}
	// judged is the log position at which the earliest of the refusals
	// in failed was decided (none: noneJudged): a refusal stands only if
	// it was decided on the state the batch is published on (or answered
	// on). The earliest, not the latest: a write refused not_found on a
	// copy behind the log, then another refused after the copy caught up,
	// left judged at the new position and the stale refusal standing
	// (the conformance suite's FailedWriteAlone, once under load).
	const noneJudged = math.MaxUint64
	judged := uint64(noneJudged)
	tr := writeTrace{start: time.Now(), writes: len(batch)}
	defer tr.report(e)
	defer e.turns.wrote()
	inARow := 0 // conflicts of this batch in a row
	attemptStart := time.Now()
	for attempt := 0; ; attempt++ {
		e.awaitTurn()
		e.drainIncoming()
		applied := e.applied.Load()
		btx, err := e.db.Begin(true)
		if err != nil {
			e.finish(batch, failed, err)
			return
		}
		rec := &store.Redo{}
		tx := store.WrapTx(btx, rec)
		rerun := false
		for i, w := range batch {
			if failed[i] != nil {
				continue
			}
			if err := w.fn(tx); err != nil {
				// Its changes are in the transaction: roll back and run
				// the batch again without it.
				failed[i] = err
				judged = min(judged, applied)
				rerun = true
				break
			}
		}
		if rerun {
			btx.Rollback()
			attempt--
			continue
		}
		if judged != applied && slices.ContainsFunc(failed, func(err error) bool { return err != nil }) {
			// Entries of other nodes were applied since a write was
			// refused (a mesh created there a moment ago): judge every
			// write again on this state.
			btx.Rollback()
			clear(failed)
			judged = noneJudged
			continue
		}
		if rec.Len() == 0 {
			// Nothing to publish: every write refused or found its work
			// done, judging by this node's copy. A copy behind the log
			// may judge wrong (an invite registered on another node a
			// moment ago), so the answer stands only if the copy is
			// current; otherwise catch up and run the batch again.
			btx.Rollback()
			if last, err := e.lastSeq(); err == nil && last > applied {
				tr.catchUps++
				if !tr.wait(e, last) {
					e.finish(batch, failed, store.ErrBehind)
					return
				}
				clear(failed)
				judged = noneJudged
				continue
			}
			e.finish(batch, failed, nil)
			return
		}
		start := time.Now()
		seq, err := e.publish(rec.Bytes(), applied)
		tr.publishes++
		tr.publishing += time.Since(start)
		switch {
		case err == nil && seq == applied+1:
			if err := btx.Bucket(bucketMeta).Put(keyApplied, u64(seq)); err != nil {
				btx.Rollback()
				e.finish(batch, failed, err)
				return
			}
			if err := btx.Commit(); err != nil {
				// The entry is in the log but not in this file: stop, as
				// for any disagreement between the two.
				e.log.Error("cluster: local commit failed after the log took the entry", "err", err)
				e.finish(batch, failed, err)
				e.halt(err)
				return
			}
			e.setApplied(seq)
			e.published.Add(1)
			e.lastNoQuorum.Store(0)
			if e.opts.OnCommit != nil {
				e.opts.OnCommit(time.Since(start), len(batch))
			}
			e.finishAt(batch, failed, seq)
			return
		case err == nil:
			// Accepted at another place than expected: impossible with
			// the expected-sequence check; treat as a disagreement.
			btx.Rollback()
			err = fmt.Errorf("cluster: the log stored the entry at %d, expected %d", seq, applied+1)
			e.finish(batch, failed, err)
			e.halt(err)
			return
		case errors.Is(err, errConflict):
			// Another node wrote first: this node's copy was behind, so
			// every outcome of the batch, refusals included, is redone
			// on the state after that entry (after the log's last entry
			// when the refusal says which it is).
			btx.Rollback()
			e.conflicts.Add(1)
			if err := e.checkGap(applied); err != nil {
				e.finish(batch, failed, err)
				return
			}
			tr.conflicts++
			if inARow++; inARow >= turnAfter {
				// Long enough for what the last round took: catching
				// up with the log, running the batch, publishing.
				e.turns.ask(e.nc, e.cluster, 2*time.Since(attemptStart))
			}
			attemptStart = time.Now()
			target := applied + 1
			var ce *conflictError
			if errors.As(err, &ce) && ce.last > target {
				target = ce.last
			}
			if !tr.wait(e, target) {
				e.finish(batch, failed, store.ErrBehind)
				return
			}
			clear(failed)
			judged = noneJudged
		default:
			btx.Rollback()
			e.log.Warn("cluster: write not made durable", "err", err)
			e.refuseUntil.Store(time.Now().Add(refuseFor).UnixNano())
			e.lastNoQuorum.Store(time.Now().UnixNano())
			e.finish(batch, failed, store.ErrUnavailable)
			return
		}
	}
}

// writeTrace times one batch's way to the log; a batch slower than
// slowWrite is logged with where its time went, so an operator (and a
// benchmark) can tell a slow quorum from a node that could not catch up.
type writeTrace struct {
	start                          time.Time
	writes                         int
	publishes, conflicts, catchUps int
	publishing, waiting            time.Duration
}

const slowWrite = 2 * time.Second

func (t *writeTrace) wait(e *Engine, seq uint64) bool {
	start := time.Now()
	ok := e.waitApplied(seq)
	t.waiting += time.Since(start)
	return ok
}

func (t *writeTrace) report(e *Engine) {
	if d := time.Since(t.start); d >= slowWrite {
		e.log.Warn("cluster: slow write", "took", d.Round(time.Millisecond), "writes", t.writes,
			"publishes", t.publishes, "publishing", t.publishing.Round(time.Millisecond),
			"conflicts", t.conflicts, "catchUps", t.catchUps, "waitingForTheLog", t.waiting.Round(time.Millisecond),
			"applied", e.applied.Load())
	}
}

// lastSeq asks the log's leader for its last entry.
func (e *Engine) lastSeq() (uint64, error) {
	return e.lastSeqWithin(context.Background(), e.opts.PublishTimeout)
}

// waitApplied applies the log until this node is at seq or later.
func (e *Engine) waitApplied(seq uint64) bool {
	deadline := time.NewTimer(e.opts.PublishTimeout)
	defer deadline.Stop()
	if e.applied.Load() < seq {
		e.wantEntry(seq)
	}
	for e.applied.Load() < seq {
		select {
		case m := <-e.incoming:
			e.applyIncoming(m)
		case es := <-e.fetched:
			e.applyEntries(es)
		case <-deadline.C:
			return false
		case <-e.closing:
			return false
		}
	}
	return true
}

// refuseFor is how long writes are refused at once after one found no
// quorum (the broker's retryAfterMs says the same).
const refuseFor = time.Second

var errConflict = errors.New("cluster: another node wrote first")

// conflictError is errConflict with the log's last entry, when JetStream's
// refusal ("wrong last sequence: N") says which it is.
type conflictError struct{ last uint64 }

func (e *conflictError) Error() string     { return errConflict.Error() }
func (e *conflictError) Is(err error) bool { return err == errConflict }

// awaitTurn holds this node's next publish while another node has its turn
// (turns.go), applying the log meanwhile.
func (e *Engine) awaitTurn() {
	for {
		d := e.turns.holding()
		if d <= 0 {
			return
		}
		t := time.NewTimer(d)
		select {
		case m := <-e.incoming:
			e.applyIncoming(m)
		case es := <-e.fetched:
			e.applyEntries(es)
		case <-e.turns.wake:
		case <-t.C:
		case <-e.closing:
		}
		t.Stop()
		select {
		case <-e.closing:
			return
		default:
		}
	}
}

// publish appends one entry, expecting the log to end at last.
func (e *Engine) publish(data []byte, last uint64) (uint64, error) {
	e.msgSeq++
	id := e.node + "-" + e.startID + "-" + strconv.FormatUint(e.msgSeq, 10)
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.PublishTimeout)
	defer cancel()
	msg := &nats.Msg{Subject: e.subject, Data: data, Header: nats.Header{schemaHeader: []string{ourSchema}}}
	for {
		ack, err := e.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id), jetstream.WithExpectLastSequence(last))
		if err == nil {
			return ack.Sequence, nil
		}
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			last, _ := strconv.ParseUint(strings.TrimPrefix(apiErr.Description, "wrong last sequence: "), 10, 64)
			return 0, &conflictError{last: last}
		}
		if ctx.Err() != nil {
			return 0, err
		}
		// No responders while the stream elects a leader: retry within
		// the deadline with the same message id, so an entry that was
		// stored after all is not stored twice.
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// finish hands a batch's outcomes to the dispatcher.
func (e *Engine) finish(batch []*write, failed []error, err error) {
	e.finished <- outcomes(batch, failed, err, 0)
}

// finishAt hands the outcomes of a batch the log took as entry seq to the
// dispatcher, which makes seq visible once their callbacks have run.
func (e *Engine) finishAt(batch []*write, failed []error, seq uint64) {
	e.finished <- outcomes(batch, failed, nil, seq)
}

func outcomes(batch []*write, failed []error, err error, seq uint64) []outcome {
	out := make([]outcome, len(batch))
	for i, w := range batch {
		out[i] = outcome{w: w, err: err, seq: seq}
		if failed[i] != nil {
			out[i].err = failed[i]
		}
		if out[i].err != nil && w.refused != nil {
			w.refused(out[i].err)
		}
	}
	return out
}

// dispatchLoop runs callbacks, wakes waiters and hands remote changes to
// OnRemote, in log order.
func (e *Engine) dispatchLoop() {
	defer close(e.dispatch)
	for batch := range e.finished {
		var through uint64
		for _, o := range batch {
			through = max(through, o.seq)
			if o.w == nil {
				if len(o.changes) > 0 && e.opts.OnRemote != nil {
					e.opts.OnRemote(o.seq, o.changes)
				}
				continue
			}
			if o.w.after != nil {
				o.w.after(o.err)
			}
			if o.w.done != nil {
				o.w.done <- o.err
			}
		}
		e.setVisible(through)
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func clonePath(p [][]byte) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = clone(p[i])
	}
	return out
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}

func be64(b []byte) uint64 {
	var v uint64
	for _, x := range b {
		v = v<<8 | uint64(x)
	}
	return v
}

var _ store.Engine = (*Engine)(nil)
