package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrEmptyFile means the database file exists and has no bytes: a crash
// or a failed copy truncated it. bbolt would quietly make a new, empty
// database of it, and the broker would start "ready" with no meshes (the
// daemon without its inbox and replay guard), so Open refuses it unless
// Options.Init says a new database is wanted.
var ErrEmptyFile = errors.New("the database file is empty (0 bytes)")

// ErrCorrupt means the database file is damaged: not a bbolt file, a bad
// checksum, shorter than its header says, or a page that makes bbolt
// panic while it is read.
var ErrCorrupt = errors.New("the database file is damaged")

// Guard runs fn, turning a panic — bbolt's own on an inconsistent page, or
// a memory fault in the map of a truncated file — into ErrCorrupt, so a
// damaged file gives a clear message instead of a stack trace.
func Guard(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, r)
		}
	}()
	return fn()
}

// Why says in words what is wrong with a database file that Open or
// CheckFile refused (ErrEmptyFile, ErrCorrupt), "" for another error. It
// leaves bbolt's own texts out ("assertion failed: Page expected to be:
// 2, but self identifies as 6654543676951633860"): they name its code, not
// the file; the error itself keeps them for a closer look.
func Why(err error) string {
	switch {
	case errors.Is(err, ErrEmptyFile):
		return "it is empty: a crash or a failed copy truncated it"
	case !errors.Is(err, ErrCorrupt):
		return ""
	case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrVersionMismatch), errors.Is(err, bolt.ErrChecksum):
		return "it is damaged: its header does not check out (not a database file, or overwritten)"
	}
	s := err.Error()
	if i := strings.Index(s, ErrCorrupt.Error()+": "); i >= 0 {
		// preflight's and openBolt's own words about the file.
		if rest := s[i+len(ErrCorrupt.Error())+2:]; strings.HasPrefix(rest, "the file is ") || strings.HasPrefix(rest, "its ") {
			return "it is damaged: " + rest
		}
	}
	return "it is damaged: a page of it does not hold what the file's structure says (overwritten or cut short)"
}

// checkFile refuses an empty file (unless init) before bbolt sees it.
func checkFile(path string, init bool) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != 0 || init {
		return nil
	}
	return fmt.Errorf("%s: %w", path, ErrEmptyFile)
}

// preflight reads bbolt's two meta pages itself and refuses a file
// shorter than the newer valid one says (a truncated copy), before bbolt
// maps it: bbolt would fault reading past the end, and a fault in the
// middle of its Open leaks the file lock. It also checks that the pages
// that meta names as the root bucket and the freelist (when it is synced)
// say they are those pages (their id; a branch or leaf, a freelist),
// which a read-only open (CheckFile) would not read. A file whose meta
// pages do not check out is left to bbolt, which reports it.
func preflight(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	const header = 16 // bbolt's page header: id, flags, count, overflow
	type metaPage struct {
		pageSize, root, freelist, pgid, txid uint64
	}
	le := binary.LittleEndian
	meta := func(off int64) (metaPage, bool) {
		var b [header + 64]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return metaPage{}, false
		}
		m := b[header:]
		h := fnv.New64a()
		h.Write(m[:56])
		if le.Uint32(m[0:]) != 0xED0CDAED || h.Sum64() != le.Uint64(m[56:]) {
			return metaPage{}, false
		}
		return metaPage{pageSize: uint64(le.Uint32(m[8:])), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
			pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, true
	}
	m0, ok0 := meta(0)
	if !ok0 {
		return nil
	}
	use := m0
	if m1, ok1 := meta(int64(m0.pageSize)); ok1 && m1.txid > m0.txid {
		use = m1
	}
	if want := use.pageSize * use.pgid; uint64(fi.Size()) < want {
		return fmt.Errorf("%w: the file is %d bytes but its header counts %d (truncated)", ErrCorrupt, fi.Size(), want)
	}
	// Page flags (bbolt's page.go).
	const branch, leaf, freelist = 0x01, 0x02, 0x10
	page := func(id uint64, what string, flags ...uint16) error {
		if id < 2 || id >= use.pgid {
			return fmt.Errorf("%w: its %s page %d is outside the file's %d pages", ErrCorrupt, what, id, use.pgid)
		}
		var b [header]byte
		if _, err := f.ReadAt(b[:], int64(id*use.pageSize)); err != nil {
			return fmt.Errorf("%w: reading its %s page %d: %v", ErrCorrupt, what, id, err)
		}
		if got := le.Uint64(b[0:]); got != id {
			return fmt.Errorf("%w: its %s page %d is overwritten (it holds page %d's header)", ErrCorrupt, what, id, got)
		}
		if fl := le.Uint16(b[8:]); !slices.Contains(flags, fl) {
			return fmt.Errorf("%w: its %s page %d is overwritten (flags %#x)", ErrCorrupt, what, id, fl)
		}
		return nil
	}
	if err := page(use.root, "root", branch, leaf); err != nil {
		return err
	}
	if use.freelist != ^uint64(0) { // pgidNoFreelist: the freelist is not synced
		if err := page(use.freelist, "freelist", freelist); err != nil {
			return err
		}
	}
	return nil
}

// openBolt opens the file and checks what can be checked cheaply: bbolt's
// header (magic, version, checksum) and that the file holds every page the
// header counts.
func openBolt(path string, opts *bolt.Options) (*bolt.DB, error) {
	var db *bolt.DB
	err := Guard(func() error {
		if err := preflight(path); err != nil {
			return err
		}
		var err error
		db, err = bolt.Open(path, 0o600, opts)
		if err != nil {
			if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrVersionMismatch) || errors.Is(err, bolt.ErrChecksum) {
				return fmt.Errorf("%w: %w", ErrCorrupt, err)
			}
			return err
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		return db.View(func(tx *bolt.Tx) error {
			if want := tx.Size(); fi.Size() < want {
				return fmt.Errorf("%w: the file is %d bytes but its header counts %d (truncated)", ErrCorrupt, fi.Size(), want)
			}
			return nil
		})
	})
	if err != nil {
		if db != nil {
			db.Close()
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}

// CheckFile reports, without taking the writer's lock or changing
// anything, whether Open would refuse the file at path as empty
// (ErrEmptyFile, unless init) or damaged (ErrCorrupt). A file that is
// missing, or locked by a running process, is fine as far as it can tell.
func CheckFile(path string, init bool) error {
	if err := checkFile(path, init); err != nil {
		return err
	}
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	db, err := openBolt(path, &bolt.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return err
		}
		return nil
	}
	defer db.Close()
	// A writer's open reads every page of the tree (it rebuilds the
	// freelist, which is not synced), and bbolt panics on a page that is
	// not what its parent says; a read-only open reads none of them. So
	// the tree is walked here as the writer's open would: a damaged page
	// is found now, not in the daemon's log after it refused to start.
	err = Guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { walkBucket(b); return nil })
		})
	})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	return nil
}

// walkBucket reads every branch and leaf page of b and its sub-buckets.
func walkBucket(b *bolt.Bucket) {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v == nil {
			if sub := b.Bucket(k); sub != nil {
				walkBucket(sub)
			}
		}
	}
}
