package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrLocked means another process (a running broker or daemon) holds the
// database's file lock.
var ErrLocked = errors.New("the database is open in another process")

// ErrNothingToReclaim means the compacted copy was no smaller than the
// file, which was left as it was.
var ErrNothingToReclaim = errors.New("compacting would not make the file smaller")

// compactTxSize bounds each transaction of the copy, so a large file is
// not copied in one transaction held in memory.
const compactTxSize = 64 << 20

// CompactFile rewrites the bbolt file at path with bbolt's Compact: every
// bucket and record copied into a new file, without the free pages the old
// one kept (bbolt reuses freed pages but never shrinks a file). It needs
// the file's exclusive lock, so it refuses (ErrLocked) while a process has
// the file open, and no process can open it meanwhile. The copy is
// written beside the file, checked, fsynced and renamed over it: a crash
// at any point leaves either the old file or the new one whole. It returns
// the file's size before and after.
func CompactFile(path string, lockTimeout time.Duration) (before, after int64, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	if fi.Size() == 0 {
		return 0, 0, fmt.Errorf("%s: %w", path, ErrEmptyFile)
	}
	before = fi.Size()
	src, err := openBolt(path, &bolt.Options{Timeout: lockTimeout, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return 0, 0, fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return 0, 0, err
	}
	defer src.Close()
	tmp := path + ".compacting"
	os.Remove(tmp) // a leftover of an interrupted compaction
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		return 0, 0, err
	}
	fail := func(err error) (int64, int64, error) {
		dst.Close()
		os.Remove(tmp)
		return 0, 0, err
	}
	if err := Guard(func() error { return bolt.Compact(dst, src, compactTxSize) }); err != nil {
		return fail(fmt.Errorf("compact %s: %w", path, err))
	}
	if err := dst.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // drained: Check's goroutine sends them all
			if first == nil {
				first = fmt.Errorf("the compacted copy does not check out: %w", err)
			}
		}
		return first
	}); err != nil {
		return fail(err)
	}
	if err := dst.Sync(); err != nil {
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	// bbolt's Compact fills pages half full, where the broker packs its
	// append-only buckets: a file with little free space can come out
	// larger. Then the old file stays.
	if fi, err := os.Stat(tmp); err != nil || fi.Size() >= before {
		os.Remove(tmp)
		return before, before, ErrNothingToReclaim
	}
	// Renamed while the old file is still open and locked: nothing can
	// open the old file in between and write what the copy lacks.
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return 0, 0, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	if fi, err := os.Stat(path); err == nil {
		after = fi.Size()
	}
	return before, after, nil
}
