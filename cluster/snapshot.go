package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"claudemesh/store"
)

// Log compaction: snapshots of a node's copy, and purging the log behind
// them.
//
// A snapshot is the node's whole bbolt file as one read transaction sees
// it (bbolt's Tx.WriteTo), so it holds exactly the entries up to the
// sequence that same transaction records in meta/clusterApplied: the
// sequence and the bytes cannot disagree. It is stored in a replicated
// JetStream object store (the log's replicas) under a name that carries
// that sequence, and only once the object store has acknowledged every
// chunk and the object's description is the log purged, up to the
// snapshot's sequence minus LogKeep. Every purge point is therefore at or
// below a stored snapshot, and a snapshot is never deleted while it is the
// newest: a node whose copy is older than the log's first entry (a wiped
// disk, a new node, a node away for long) restores the newest snapshot at
// start and replays the log after it.
//
// Names carry the sequence, so two nodes that snapshot at once (a leader
// change in the middle) store two objects and neither replaces a newer
// one with an older; each keeps the newest snapshotsKept.

const snapshotsKept = 2

func snapBucket(cluster string) string { return "CLAUDEMESH_" + cluster + "_SNAP" }

// snapName sorts by sequence.
func snapName(seq uint64) string { return fmt.Sprintf("snapshot-%020d", seq) }

// SnapshotStats are counters for metrics.
type SnapshotStats struct {
	// Seq is the sequence of the newest snapshot this node wrote or
	// restored (0: none yet).
	Seq uint64
	// Taken and Restored count this node's snapshots and restores;
	// Failed counts snapshots or purges that failed (logged).
	Taken, Restored, Failed uint64
	// Loop is what the snapshot loop last found or is waiting for (for
	// a node that should have compacted and did not).
	Loop string
}

type snapState struct {
	seq, taken, restored, failed atomic.Uint64
	obs                          atomic.Pointer[jetstream.ObjectStore]
	loop                         atomic.Pointer[string]
	orphans                      orphanChunks
}

// SnapshotStats reports this node's snapshots.
func (e *Engine) SnapshotStats() SnapshotStats {
	st := SnapshotStats{Seq: e.snap.seq.Load(), Taken: e.snap.taken.Load(), Restored: e.snap.restored.Load(), Failed: e.snap.failed.Load()}
	if p := e.snap.loop.Load(); p != nil {
		st.Loop = *p
	}
	return st
}

// loopAt records what the snapshot loop is doing (SnapshotStats.Loop).
func (e *Engine) loopAt(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.snap.loop.Store(&s)
}

// snapshotStore opens (creating) the object store of snapshots.
func (e *Engine) snapshotStore(ctx context.Context) (jetstream.ObjectStore, error) {
	if p := e.snap.obs.Load(); p != nil {
		return *p, nil
	}
	started := time.Now()
	warned := started
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		obs, err := e.js.CreateOrUpdateObjectStore(c, jetstream.ObjectStoreConfig{
			Bucket:      snapBucket(e.cluster),
			Description: "claudemesh: snapshots of the cluster's records, for log compaction",
			Storage:     jetstream.FileStorage, Replicas: e.replicas,
		})
		cancel()
		if err == nil {
			e.snap.obs.Store(&obs)
			return obs, nil
		}
		e.loopAt("opening the snapshot store since %s: %v", started.Format(time.RFC3339Nano), err)
		if time.Since(warned) > 10*time.Second {
			warned = time.Now()
			e.log.Warn("cluster: the snapshot store does not open yet; retrying", "err", err, "since", started)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: snapshot store: %w", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// listTimeout bounds one listing of the stored snapshots.
const listTimeout = 10 * time.Second

// snapshotInfo is one stored snapshot.
type snapshotInfo struct {
	name string
	seq  uint64
}

// snapshots lists the stored snapshots, newest first.
//
// The list is bounded in time whatever ctx allows: nats.go's List waits for
// its watcher to report the end of the initial values, and under load that
// report never comes when its first question (the bucket's last entry)
// times out on an empty bucket. The snapshot loop, whose own context lasts as
// long as the node, then waited forever, and the node never compacted
// again (TestClusterCompactionRestoresWipedNode, at load 9–15). The caller
// tries again at its next check.
func snapshots(ctx context.Context, obs jetstream.ObjectStore) ([]snapshotInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	list, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []snapshotInfo
	for _, o := range list {
		seq, err := strconv.ParseUint(o.Metadata["seq"], 10, 64)
		if err != nil || o.Name != snapName(seq) {
			continue // not one of ours
		}
		out = append(out, snapshotInfo{name: o.Name, seq: seq})
	}
	// newest first
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].seq > out[j-1].seq; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out, nil
}

// Snapshot stores a snapshot of this node's copy and returns the log
// sequence it holds (0 and nothing stored if the copy holds no entry).
func (e *Engine) Snapshot(ctx context.Context) (uint64, error) {
	obs, err := e.snapshotStore(ctx)
	if err != nil {
		return 0, err
	}
	tmp := e.opts.Path + ".snapshot"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp)
	defer f.Close()
	// One read transaction: the bytes written and the sequence they hold
	// are the same state. (The copy goes to a local file first, so the
	// read transaction does not stay open for the upload: a long one
	// would hold up writers that need to grow the file.)
	var seq uint64
	err = e.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyApplied); len(v) == 8 {
			seq = be64(v)
		}
		if seq == 0 {
			return nil
		}
		_, err := tx.WriteTo(f)
		return err
	})
	if err != nil || seq == 0 {
		return 0, err
	}
	// Retried within ctx: a bucket created a moment ago may have no
	// leader yet ("no responders"). A failed Put stores nothing: the
	// object's description is written after its last chunk.
	for {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		_, err := obs.Put(ctx, jetstream.ObjectMeta{
			Name:     snapName(seq),
			Metadata: map[string]string{"seq": strconv.FormatUint(seq, 10), "node": e.node},
		}, f)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("cluster: store snapshot at %d: %w", seq, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
	e.snap.taken.Add(1)
	if seq > e.snap.seq.Load() {
		e.snap.seq.Store(seq)
	}
	// Keep the newest few; never the newest, whoever stored it.
	if list, err := snapshots(ctx, obs); err == nil {
		for _, s := range list[min(snapshotsKept, len(list)):] {
			if err := obs.Delete(ctx, s.name); err != nil {
				e.log.Warn("cluster: delete an old snapshot", "name", s.name, "err", err)
			}
		}
	}
	if n, err := e.snap.orphans.sweep(ctx, e.js, obs, snapBucket(e.cluster), time.Now(), orphanGrace); err != nil {
		e.log.Warn("cluster: look for chunks of failed snapshot uploads", "err", err)
	} else if n > 0 {
		e.log.Info("cluster: purged the chunks of failed snapshot uploads", "uploads", n)
	}
	return seq, nil
}

// Compact stores a snapshot and purges the log up to its sequence minus
// LogKeep. It returns the snapshot's sequence and the log's first
// sequence after the purge (0 if it did not purge).
func (e *Engine) Compact(ctx context.Context) (snap, first uint64, err error) {
	seq, err := e.Snapshot(ctx)
	if err != nil || seq <= e.opts.LogKeep {
		return seq, 0, err
	}
	upTo := seq - e.opts.LogKeep
	info, err := e.stream.Info(ctx)
	if err != nil {
		return seq, 0, err
	}
	if info.State.FirstSeq > upTo {
		return seq, 0, nil // purged that far already
	}
	// Entries up to upTo go (upTo+1 is kept): the snapshot just stored
	// holds every one of them.
	if err := e.stream.Purge(ctx, jetstream.WithPurgeSequence(upTo+1)); err != nil {
		return seq, 0, fmt.Errorf("cluster: purge the log up to %d: %w", upTo, err)
	}
	e.log.Info("cluster: log compacted", "snapshot", seq, "purgedThrough", upTo)
	return seq, upTo + 1, nil
}

// snapshotLoop compacts the log when this node leads it and it has applied
// SnapshotEvery entries since the newest snapshot.
func (e *Engine) snapshotLoop() {
	defer close(e.snapDone)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-e.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTicker(e.opts.SnapshotCheck)
	defer t.Stop()
	newest := uint64(0) // the newest stored snapshot, as last seen
	due := func() bool {
		a := e.applied.Load()
		if a < newest+e.opts.SnapshotEvery {
			e.loopAt("leads the log; applied %d, newest snapshot %d, next due at %d", a, newest, newest+e.opts.SnapshotEvery)
			return false
		}
		return true
	}
	for {
		select {
		case <-e.closing:
			return
		case <-t.C:
		}
		if err := e.haltErr(); err != nil {
			e.loopAt("halted: %v", err)
			continue
		}
		if lead, why := e.leadsLog(ctx); !lead {
			e.loopAt("not taking snapshots: %s", why)
			continue
		}
		if !due() {
			continue
		}
		if obs, err := e.snapshotStore(ctx); err == nil {
			e.loopAt("listing the snapshots")
			list, err := snapshots(ctx, obs)
			if err == nil && len(list) > 0 {
				newest = max(newest, list[0].seq)
			} else if err != nil {
				e.loopAt("listing the snapshots: %v", err)
			}
		}
		if !due() {
			continue
		}
		e.loopAt("compacting at %d", e.applied.Load())
		c, cancelC := context.WithTimeout(ctx, 5*time.Minute)
		seq, _, err := e.Compact(c)
		cancelC()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.snap.failed.Add(1)
			e.log.Warn("cluster: log compaction failed; the log keeps growing until it succeeds", "err", err)
			continue
		}
		newest = max(newest, seq)
		e.loopAt("compacted at %d", seq)
	}
}

// leadsLog reports whether this node should take the snapshots: the one
// whose embedded NATS server leads the log. With --nats the leader is a
// server of that system, no node's own, so every node may: the first to
// find a snapshot due takes it, and the others find it stored at their
// next check (two at once store two snapshots, which is safe).
// When it does not, why says why (SnapshotStats.Loop).
func (e *Engine) leadsLog(ctx context.Context) (lead bool, why string) {
	if e.external {
		return true, ""
	}
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := e.stream.Info(c)
	if err != nil {
		return false, "the log's state: " + err.Error()
	}
	if info.Cluster == nil || (info.Cluster.Leader == "" && len(info.Cluster.Replicas) == 0 && info.Cluster.Name == "") {
		return true, ""
	}
	if me := e.nc.ConnectedServerName(); info.Cluster.Leader == "" || info.Cluster.Leader != me {
		return false, fmt.Sprintf("the log's leader is %q, this server %q", info.Cluster.Leader, me)
	}
	return true, ""
}

// restoreIfBehind replaces this node's copy with the newest snapshot when
// the log no longer holds the entries after it (they were purged behind a
// snapshot). Called at open, before the node follows the log.
func (e *Engine) restoreIfBehind(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		info, err := e.streamInfo(ctx)
		if err != nil {
			return err
		}
		first, applied := info.State.FirstSeq, e.applied.Load()
		if first <= applied+1 {
			return nil
		}
		e.log.Info("cluster: this node's copy is older than the log's first entry; restoring the newest snapshot", "applied", applied, "logFirst", first)
		if lastErr = e.restore(ctx, first); lastErr == nil {
			return nil
		}
		e.log.Warn("cluster: restore failed; trying again", "err", lastErr)
		select {
		case <-ctx.Done():
			return lastErr
		case <-time.After(time.Second):
		}
	}
	return lastErr
}

// streamInfo asks for the log's state, retrying while a stream created a
// moment ago has no leader yet (it answers "stream not found" then).
func (e *Engine) streamInfo(ctx context.Context) (*jetstream.StreamInfo, error) {
	for {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		info, err := e.stream.Info(c)
		cancel()
		if err == nil {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: the log's state: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restore downloads the newest snapshot (which must reach the log's first
// entry) and puts it in place of broker.db: written beside it, synced,
// checked, renamed over it, and opened again.
func (e *Engine) restore(ctx context.Context, first uint64) error {
	obs, err := e.snapshotStore(ctx)
	if err != nil {
		return err
	}
	list, err := snapshots(ctx, obs)
	if err != nil {
		return fmt.Errorf("cluster: list snapshots: %w", err)
	}
	if len(list) == 0 || list[0].seq+1 < first {
		return fmt.Errorf("cluster: the log starts at entry %d and no snapshot reaches it (this node is at %d); it cannot rebuild its copy", first, e.applied.Load())
	}
	snap := list[0]
	tmp := e.opts.Path + ".restoring"
	if err := download(ctx, obs, snap.name, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cluster: download %s: %w", snap.name, err)
	}
	if got, err := fileApplied(tmp); err != nil || got != snap.seq {
		os.Remove(tmp)
		if err == nil {
			err = fmt.Errorf("it holds entry %d, its name says %d", got, snap.seq)
		}
		return fmt.Errorf("cluster: snapshot %s: %w", snap.name, err)
	}
	if err := e.db.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, e.opts.Path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(e.opts.Path)); err == nil {
		d.Sync()
		d.Close()
	}
	db, err := store.OpenDB(e.opts.Path, store.Options{OpenTimeout: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	e.db = db
	e.applied.Store(snap.seq)
	e.snap.restored.Add(1)
	e.snap.seq.Store(snap.seq)
	e.log.Info("cluster: restored a snapshot; replaying the log after it", "snapshot", snap.seq)
	return nil
}

// download writes an object to path (0600) and syncs it; the object
// store checks the digest as the last chunk is read.
func download(ctx context.Context, obs jetstream.ObjectStore, name, path string) error {
	r, err := obs.Get(ctx, name)
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fileApplied reads the log sequence a bbolt file records.
func fileApplied(path string) (uint64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var seq uint64
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if b == nil {
			return errors.New("no meta bucket")
		}
		if v := b.Get(keyApplied); len(v) == 8 {
			seq = be64(v)
		}
		return nil
	})
	return seq, err
}

// LogState is the log as its leader describes it: its first and last
// entries and its size in bytes.
func (e *Engine) LogState() (first, last, bytes uint64, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := e.stream.Info(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	return info.State.FirstSeq, info.State.LastSeq, info.State.Bytes, nil
}
