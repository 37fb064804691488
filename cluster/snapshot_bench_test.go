package cluster

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"claudemesh/store"
)

// fillEngine writes about mib MiB of 1 KiB values, 3000 per log entry.
func fillEngine(b *testing.B, e *Engine, mib int) {
	b.Helper()
	val := make([]byte, 1024)
	for i := 0; i < mib*1024; i += 3000 {
		if err := e.Update(func(tx *store.Tx) error {
			bk, err := tx.CreateBucketIfNotExists(snapTestBucket)
			if err != nil {
				return err
			}
			for j := i; j < min(i+3000, mib*1024); j++ {
				if err := bk.Put([]byte(fmt.Sprintf("k%09d", j)), val); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompact64MiB: a snapshot of a 64 MiB copy stored in the object
// store (one node, R1, file storage) and the log purged behind it.
func BenchmarkCompact64MiB(b *testing.B) {
	es := openEngines(b, startNodes(b, "bsnap", 1), EngineOptions{})
	fillEngine(b, es[0], 64)
	fi, _ := os.Stat(es[0].Path())
	b.SetBytes(fi.Size())
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		if err := putKey(es[0], "tick", 8); err != nil { // a new position each time
			b.Fatal(err)
		}
		if _, _, err := es[0].Compact(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestore64MiB: a node without broker.db opening on a compacted
// log: the download, the checks and the rename, and the reopen.
func BenchmarkRestore64MiB(b *testing.B) {
	nodes := startNodes(b, "brest", 1)
	es := openEngines(b, nodes, EngineOptions{})
	fillEngine(b, es[0], 64)
	if _, _, err := es[0].Compact(context.Background()); err != nil {
		b.Fatal(err)
	}
	path := es[0].Path()
	fi, _ := os.Stat(path)
	b.SetBytes(fi.Size())
	es[0].Close()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		if err := os.Remove(path); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		e, err := OpenEngine(nodes[0], EngineOptions{Path: path, PublishTimeout: 10 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if e.SnapshotStats().Restored != 1 {
			b.Fatal("no restore")
		}
		e.Close()
		b.StartTimer()
	}
}
