package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/store"
)

var snapTestBucket = []byte("snaptest")

// putKey writes one key through an engine: one log entry.
func putKey(e *Engine, key string, size int) error {
	return e.Update(func(tx *store.Tx) error {
		b, err := tx.CreateBucketIfNotExists(snapTestBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), bytes.Repeat([]byte{key[len(key)-1]}, size))
	})
}

// digest hashes the test bucket of a node's copy, and counts its keys.
func digest(t *testing.T, e *Engine) (string, int) {
	t.Helper()
	h, n := sha256.New(), 0
	if err := e.View(func(tx *store.Tx) error {
		b := tx.Bucket(snapTestBucket)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			n++
			fmt.Fprintf(h, "%x=%x;", k, v)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// waitAllApplied waits until every engine's copy is at the log's last
// entry.
func waitAllApplied(t *testing.T, es []*Engine) {
	t.Helper()
	_, last, _, err := es[0].LogState()
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if !e.WaitApplied(last, 30*time.Second) {
			t.Fatalf("node %d is at %d, the log at %d", i+1, e.Applied(), last)
		}
	}
}

// Compaction on three nodes: writes, a snapshot and a purge while another
// node keeps writing, then a node whose broker.db is wiped comes back by
// restoring the snapshot and replaying the log after it, and every node
// ends with the same records, every acknowledged write among them.
func TestCompactionRestoresWipedNode(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, "snap3", 3)
	es := openEngines(t, nodes, EngineOptions{})
	acked := map[string]bool{}
	for i := range 150 {
		k := fmt.Sprintf("a%04d", i)
		if err := putKey(es[i%3], k, 512); err != nil {
			t.Fatal(err)
		}
		acked[k] = true
	}
	first0, last0, bytes0, err := es[0].LogState()
	if err != nil {
		t.Fatal(err)
	}

	// Writes on another node while the snapshot is taken and the log purged.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("c%04d", i)
			if err := putKey(es[1], k, 512); err != nil {
				t.Errorf("write during the snapshot: %v", err)
				return
			}
			mu.Lock()
			acked[k] = true
			mu.Unlock()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	snap, first, err := es[0].Compact(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if snap < last0 || first != snap+1 {
		t.Fatalf("Compact = snapshot %d, first %d; the log was at %d before", snap, first, last0)
	}
	first1, last1, bytes1, err := es[0].LogState()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("log before: entries %d..%d, %d bytes; after a snapshot at %d: entries %d..%d, %d bytes", first0, last0, bytes0, snap, first1, last1, bytes1)
	if first1 != snap+1 || first1 <= first0 {
		t.Fatalf("the log's first entry is %d after the purge (was %d, snapshot %d)", first1, first0, snap)
	}
	if bytes1 >= bytes0 {
		t.Fatalf("the log did not shrink: %d bytes before, %d after", bytes0, bytes1)
	}

	// Wipe node 3's copy and open it again: it must restore the snapshot.
	path := es[2].Path()
	if err := es[2].Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// More writes while it is away: the tail it replays after the snapshot.
	for i := range 30 {
		k := fmt.Sprintf("t%04d", i)
		if err := putKey(es[i%2], k, 512); err != nil {
			t.Fatal(err)
		}
		acked[k] = true
	}
	e3, err := OpenEngine(nodes[2], EngineOptions{Path: path, PublishTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e3.Close() })
	es[2] = e3
	if st := e3.SnapshotStats(); st.Restored != 1 || st.Seq < snap {
		t.Fatalf("the wiped node did not restore the snapshot: %+v", st)
	}
	// And it writes again, on top of what it restored.
	if err := putKey(e3, "z0000", 512); err != nil {
		t.Fatal(err)
	}
	acked["z0000"] = true

	waitAllApplied(t, es)
	want, n := digest(t, es[0])
	if n != len(acked) {
		t.Fatalf("node 1 holds %d keys, %d writes were acknowledged", n, len(acked))
	}
	for i, e := range es[1:] {
		if got, m := digest(t, e); got != want {
			t.Fatalf("node %d holds %d keys with digest %s; node 1 %d keys, %s", i+2, m, got, n, want)
		}
	}
	if err := e3.View(func(tx *store.Tx) error {
		for k := range acked {
			if tx.Bucket(snapTestBucket).Get([]byte(k)) == nil {
				return fmt.Errorf("the restored node lacks %s", k)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".restoring"); !os.IsNotExist(err) {
		t.Fatalf("the restore left %s.restoring behind (%v)", filepath.Base(path), err)
	}
}

// The snapshot loop compacts on its own once SnapshotEvery entries were
// applied, keeping LogKeep entries behind the snapshot.
func TestCompactionLoop(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "snap1", 1), EngineOptions{SnapshotEvery: 40, SnapshotCheck: 20 * time.Millisecond, LogKeep: 10})
	for i := range 60 {
		if err := putKey(es[0], fmt.Sprintf("k%04d", i), 256); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		first, last, _, err := es[0].LogState()
		st := es[0].SnapshotStats()
		if err == nil && st.Taken > 0 && first > 1 {
			if first != st.Seq-10+1 || last < st.Seq {
				t.Fatalf("snapshot at %d, log %d..%d: want the log to keep the 10 entries before the snapshot", st.Seq, first, last)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no compaction: log starts at %d (%v), stats %+v", first, err, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A running node that needs entries the log no longer holds (it fell
// behind while the log was compacted) stops applying instead of skipping
// them, refuses writes, says to restart it, and restarted, restores.
// It finds out from the next entry it receives, or when a write of its own
// conflicts with the entries it lacks.
func TestCompactionGapHaltsRunningNode(t *testing.T) {
	t.Parallel()
	t.Run("NextEntry", func(t *testing.T) { t.Parallel(); testGapHalts(t, "gapnext", gapNextEntry) })
	t.Run("OwnWrite", func(t *testing.T) { t.Parallel(); testGapHalts(t, "gapwrite", gapOwnWrite) })
	t.Run("Watchdog", func(t *testing.T) { t.Parallel(); testGapHalts(t, "gapwatch", gapWatchdog) })
}

// How the node behind the log finds the gap.
const (
	gapNextEntry = iota // its consumer delivers the entry after the gap
	gapOwnWrite         // a write of its own conflicts
	gapWatchdog         // the watchdog reads a purged entry
)

func testGapHalts(t *testing.T, name string, how int) {
	nodes := startNodes(t, name, 3)
	es := openEngines(t, nodes, EngineOptions{})
	if err := putKey(es[0], "a0000", 64); err != nil {
		t.Fatal(err)
	}
	waitAllApplied(t, es)
	// Node 3 stops following the log for a while: its consumer, and the
	// watchdog that would read the entries itself.
	es[2].watchPaused.Store(true)
	stopConsumer(t, es[2])
	for i := range 20 {
		if err := putKey(es[i%2], fmt.Sprintf("b%04d", i), 64); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := es[0].Compact(ctx); err != nil {
		t.Fatal(err)
	}
	if how == gapWatchdog {
		es[2].watchPaused.Store(false)
	} else if err := es[2].follow(ctx); err != nil {
		t.Fatal(err)
	}
	wantKeys := 21
	switch how {
	case gapWatchdog:
		// Nothing else: the watchdog finds node 3 idle behind the log.
	case gapOwnWrite:
		if err := putKey(es[2], "refused", 64); err == nil || !strings.Contains(err.Error(), "restart the node") {
			t.Fatalf("a write on the node behind the log: %v", err)
		}
	default:
		// The next entry shows node 3 the gap.
		if err := putKey(es[0], "c0000", 64); err != nil {
			t.Fatal(err)
		}
		wantKeys++
	}
	// The entry after the gap reaches node 3 through a consumer created
	// just above, which a loaded machine was once slow to start.
	deadline := time.Now().Add(90 * time.Second)
	for es[2].haltErr() == nil {
		if time.Now().After(deadline) {
			t.Fatalf("node 3 did not halt; it is at %d", es[2].Applied())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := putKey(es[2], "refused", 64); err == nil {
		t.Fatal("a halted node took a write")
	}
	if err := es[2].Ping(); err == nil || !strings.Contains(err.Error(), "restart the node") {
		t.Fatalf("Ping of a halted node: %v", err)
	}
	path := es[2].Path()
	es[2].Close()
	e3, err := OpenEngine(nodes[2], EngineOptions{Path: path, PublishTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e3.Close() })
	es[2] = e3
	if e3.SnapshotStats().Restored != 1 {
		t.Fatalf("the restarted node did not restore: %+v", e3.SnapshotStats())
	}
	waitAllApplied(t, es)
	want, n := digest(t, es[0])
	if got, m := digest(t, e3); got != want || n != wantKeys {
		t.Fatalf("restored node: %d keys %s; node 1: %d keys %s", m, got, n, want)
	}
}
