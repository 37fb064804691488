package cluster

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A node's copy records the log it follows; opened on another log (its
// JetStream state was lost and the log created anew) it refuses to start
// instead of skipping the new log's entries, whether its position is past
// the new log's end or not.
func TestEngineRefusesACopyOfAnotherLog(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, "otherlog", 3)
	es := openEngines(t, nodes, EngineOptions{})
	for i := range 3 {
		if err := putKey(es[i], "k"+string(rune('a'+i)), 8); err != nil {
			t.Fatal(err)
		}
	}
	waitAllApplied(t, es)
	es[2].Close()
	path := filepath.Join(nodes[2].cfg.DataDir, "broker.db")
	edit := func(k, v []byte) {
		t.Helper()
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(k, v) }); err != nil {
			t.Fatal(err)
		}
		db.Close()
	}
	open := func() error {
		e, err := OpenEngine(nodes[2], EngineOptions{Path: path, PublishTimeout: 10 * time.Second, CatchUpTimeout: testCatchUp})
		if err == nil {
			e.Close()
		}
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("the node's own copy was refused: %v", err)
	}
	edit(keyLogID, []byte("2001-01-01T00:00:00Z"))
	if err := open(); err == nil || !strings.Contains(err.Error(), "created at 2001") || !strings.Contains(err.Error(), "cluster-restore") {
		t.Fatalf("a copy of another log: %v", err)
	}
	edit(keyApplied, u64(1_000_000))
	if err := open(); err == nil || !strings.Contains(err.Error(), "at entry 1000000") {
		t.Fatalf("a copy past the log's end: %v", err)
	}
}
