// Package journal is an append-only, group-committed log of opaque
// records: the daemon's accept journal. An Append returns once its record
// is on disk (one write and one fdatasync for every record that arrived
// while the previous group was being written), which is much cheaper than
// a bbolt commit (page writes and two fdatasyncs, behind whatever else the
// commit carries). The owner copies the records somewhere durable of its
// own (daemon.db) in the background and then Releases them; released space
// is reused.
//
// The file is preallocated (written with zeros once) and overwritten in
// place, so a group's fdatasync flushes data only, never the inode: the
// file's size does not change while records fit. Layout:
//
//	header (one 4 KiB block): magic "CMJRNL01", epoch (8 bytes LE),
//	  crc32c of both (4 bytes LE)
//	records from offset 4096: payload length (4), crc32c (4), lsn (8),
//	  payload; all little-endian
//
// A record's crc covers the epoch, its lsn and its payload. Each Start
// draws a new random epoch and writes it into the header after the owner
// has made every record of the old epoch durable elsewhere; records of an
// older epoch, left further along the file, then fail their crc. Within
// an epoch, lsns are consecutive from 1, and the writer returns to the
// start of the file only once every record written so far is released:
// the records after the live tail are older, so reading stops at the
// first record whose lsn does not follow (or whose crc fails, or whose
// length is zero), and everything not released lies before that point.
//
// Released records are not left on disk: once the writer has been idle
// for ScrubAfter (and at Close) with every record released, it zeroes
// the part of the file that holds records and starts again at its start.
// Open returns every record of the epoch, released or not: the owner
// tells them apart (the daemon keeps its applied lsn beside the rows).
package journal

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"claudemesh/internal/fsutil"
)

const (
	headerSize = 4096
	recHeader  = 16
	magic      = "CMJRNL01"
	// DefaultSize is the preallocated file size.
	DefaultSize = 1 << 20
)

// castagnoli is the CRC-32C table, made on first use: making it computes
// ~1.5 MB of CRCs for the SSE4.2 path's tables (~0.25 ms), which every
// process paid at start, `claudemesh --version` included, though only a
// daemon opens a journal.
var castagnoli = sync.OnceValue(func() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) })

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("journal: closed")

// ErrFull is returned by Append when the file has no room for the record
// and nothing was released for Options.SpaceWait: the owner is not
// copying records out. It is not sticky: once something is released,
// Appends go on.
var ErrFull = errors.New("journal: full (records written are not being released)")

// Options tune a Journal.
type Options struct {
	// Size is the preallocated size of the file (DefaultSize if 0). A
	// group larger than the file grows it.
	Size int64
	// Durable, if set, is called after each group is on disk and before
	// its Appends return, with the values given to Append in lsn order
	// and the group's last lsn, one group at a time in lsn order (by the
	// writer goroutine, or by the Append of a lone record that wrote it
	// itself). It must not block.
	Durable func(values []any, last uint64)
	// ScrubAfter is how long the writer waits, idle, before it zeroes
	// the records it has written once they are all released
	// (DefaultScrubAfter if 0).
	ScrubAfter time.Duration
	// SpaceWait bounds how long an Append waits for the owner to release
	// records when the file is full (DefaultSpaceWait if 0); then it
	// fails with ErrFull, and so does every Append that needs room until
	// something is released.
	SpaceWait time.Duration
	// Sync, if set, is called instead of fdatasync to make a group
	// durable (tests make it fail, or hold it). An error fails the
	// group's Appends and every later one, as a failed fdatasync does.
	Sync func(f *os.File) error
}

// DefaultSpaceWait is Options.SpaceWait's default.
const DefaultSpaceWait = 5 * time.Second

// DefaultScrubAfter is Options.ScrubAfter's default: long enough that a
// steady load never pays for a scrub, short enough that released
// records (message previews) do not linger on disk.
const DefaultScrubAfter = time.Second

// Journal is an open journal file.
type Journal struct {
	f     *os.File
	opts  Options
	epoch uint64 // the header's: the file's at Open, the new one after Start
	next  uint64 // the epoch Start writes, drawn at Open
	size  int64

	reqs    chan *req
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	started bool
	closeMu sync.RWMutex // guards closed against Append racing Close
	closed  bool

	mu       sync.Mutex
	cond     *sync.Cond
	released uint64 // every lsn ≤ released is durable elsewhere
	failed   error  // sticky: a write or sync failed
	full     bool   // a wait for room timed out; cleared by Release

	// wmu is held while a group is written (the writer goroutine's, or a
	// lone record an Append writes itself) and while the file is
	// scrubbed: it orders the groups' lsns and their Durable calls.
	wmu     sync.Mutex
	running atomic.Bool // Start has run: an Append may write itself
	// lastWrite is when the last group was written, and idle fires
	// ScrubAfter after it (or later) to scrub; idleArmed says it is set
	// to fire (all three under wmu).
	lastWrite time.Time
	idle      *time.Timer
	idleArmed bool
	maxGroup  int64 // the writer's largest group, in bytes: set by Start

	// writer state (under wmu)
	off     int64
	dirty   int64  // the file may hold record bytes before this offset
	written uint64 // last lsn written
	buf     []byte
}

type req struct {
	rec  []byte
	v    any
	lsn  uint64
	done chan error
}

// Record is one record of the epoch Open found.
type Record struct {
	LSN  uint64
	Data []byte
}

// Open opens (creating if needed) the journal at path and returns the
// records of its last epoch, in order. Nothing can be appended until
// Start, which the owner calls once those records are durable elsewhere.
func Open(path string, opts Options) (*Journal, []Record, error) {
	if opts.Size <= 0 {
		opts.Size = DefaultSize
	}
	if opts.ScrubAfter <= 0 {
		opts.ScrubAfter = DefaultScrubAfter
	}
	if opts.SpaceWait <= 0 {
		opts.SpaceWait = DefaultSpaceWait
	}
	opts.Size = max(opts.Size, headerSize+recHeader)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, err
	}
	j := &Journal{f: f, opts: opts, reqs: make(chan *req, 4096), closing: make(chan struct{}), done: make(chan struct{})}
	j.cond = sync.NewCond(&j.mu)
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		f.Close()
		return nil, nil, err
	}
	j.next = binary.LittleEndian.Uint64(b[:])
	recs, err := j.read()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("journal %s: %w", path, err)
	}
	return j, recs, nil
}

// read returns the records of the epoch in the header (none if the header
// is missing or torn: a header is only written once every record before
// it was released).
func (j *Journal) read() ([]Record, error) {
	st, err := j.f.Stat()
	if err != nil {
		return nil, err
	}
	j.size = st.Size()
	if j.size < headerSize {
		return nil, nil
	}
	data := make([]byte, j.size)
	if _, err := io.ReadFull(io.NewSectionReader(j.f, 0, j.size), data); err != nil {
		return nil, err
	}
	// Whatever is not zero after the header is some epoch's records:
	// the first scrub zeroes it.
	j.dirty = headerSize
	for i := j.size - 1; i >= headerSize; i-- {
		if data[i] != 0 {
			j.dirty = i + 1
			break
		}
	}
	if string(data[:8]) != magic || binary.LittleEndian.Uint32(data[16:20]) != crc32.Checksum(data[:16], castagnoli()) {
		return nil, nil
	}
	epoch := binary.LittleEndian.Uint64(data[8:16])
	j.epoch = epoch
	var out []Record
	var last uint64
	for off := int64(headerSize); off+recHeader <= j.size; {
		n := int64(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		lsn := binary.LittleEndian.Uint64(data[off+8:])
		if n == 0 || off+recHeader+n > j.size || (last != 0 && lsn != last+1) {
			break
		}
		payload := data[off+recHeader : off+recHeader+n]
		if recordCRC(epoch, lsn, payload) != sum {
			break
		}
		out = append(out, Record{LSN: lsn, Data: payload})
		last = lsn
		off += recHeader + n
	}
	return out, nil
}

func recordCRC(epoch, lsn uint64, payload []byte) uint32 {
	var h [16]byte
	binary.LittleEndian.PutUint64(h[:8], epoch)
	binary.LittleEndian.PutUint64(h[8:], lsn)
	return crc32.Update(crc32.Checksum(h[:], castagnoli()), castagnoli(), payload)
}

// Epoch is the epoch in the file's header: before Start, the one of the
// records Open returned (0 if the file had no valid header); after Start,
// the new one (NextEpoch).
func (j *Journal) Epoch() uint64 { return j.epoch }

// NextEpoch is the epoch Start will write, so the owner can record it
// (with the records Open returned) before the file says it.
func (j *Journal) NextEpoch() uint64 { return j.next }

// Start begins a new epoch (the records Open returned are dead from now
// on) and starts the writer.
func (j *Journal) Start() error {
	if j.size < j.opts.Size {
		// Preallocate with real zeros (not a hole or an unwritten
		// extent), so the groups' fdatasyncs never have to write the
		// inode or convert extents.
		zeros := make([]byte, 64<<10)
		for off := j.size; off < j.opts.Size; off += int64(len(zeros)) {
			n := min(int64(len(zeros)), j.opts.Size-off)
			if _, err := j.f.WriteAt(zeros[:n], off); err != nil {
				return err
			}
		}
		j.size = j.opts.Size
	}
	j.epoch = j.next
	hdr := make([]byte, 20)
	copy(hdr, magic)
	binary.LittleEndian.PutUint64(hdr[8:], j.epoch)
	binary.LittleEndian.PutUint32(hdr[16:], crc32.Checksum(hdr[:16], castagnoli()))
	if _, err := j.f.WriteAt(hdr, 0); err != nil {
		return err
	}
	if err := j.f.Sync(); err != nil {
		return err
	}
	// Always: Open may have created the file in a run that crashed
	// before its entry reached the directory.
	fsutil.SyncDir(filepath.Dir(j.f.Name()))
	j.off = headerSize
	j.dirty = max(j.dirty, headerSize)
	j.started = true
	j.maxGroup = max((j.size-headerSize)/2, 1)
	j.idle, j.idleArmed = time.NewTimer(j.opts.ScrubAfter), true
	j.running.Store(true)
	go j.writeLoop()
	return nil
}

// Append writes rec and returns its lsn once it is on disk. v is handed
// to Options.Durable with the group.
func (j *Journal) Append(rec []byte, v any) (uint64, error) {
	if len(rec) == 0 {
		return 0, errors.New("journal: empty record")
	}
	r := &req{rec: rec, v: v, done: make(chan error, 1)}
	j.closeMu.RLock()
	if j.closed {
		j.closeMu.RUnlock()
		return 0, ErrClosed
	}
	// A record that finds the journal idle (nothing queued, no group
	// being written) is written by this goroutine: a lone accept does
	// not hand its record to the writer goroutine and wait to be handed
	// the result back. Records that come while a group is being written
	// queue for the writer, which writes them as one group after it.
	if j.running.Load() && len(j.reqs) == 0 && j.wmu.TryLock() {
		if len(j.reqs) == 0 {
			err := j.writeGroup([]*req{r}, int64(recHeader+len(rec)))
			j.wmu.Unlock()
			j.closeMu.RUnlock()
			if err != nil {
				return 0, err
			}
			return r.lsn, nil
		}
		j.wmu.Unlock()
	}
	j.reqs <- r
	j.closeMu.RUnlock()
	if err := <-r.done; err != nil {
		return 0, err
	}
	return r.lsn, nil
}

// Release says every record up to lsn is durable elsewhere: its space may
// be reused.
func (j *Journal) Release(lsn uint64) {
	j.mu.Lock()
	if lsn > j.released {
		j.released = lsn
		j.full = false
		j.cond.Broadcast()
	}
	j.mu.Unlock()
}

// Close writes what was already appended and closes the file. Appends
// after Close fail with ErrClosed.
func (j *Journal) Close() error {
	var err error
	j.once.Do(func() {
		j.closeMu.Lock()
		j.closed = true
		j.closeMu.Unlock()
		close(j.closing)
		if j.started {
			<-j.done
		}
		j.mu.Lock()
		j.failed = ErrClosed
		j.cond.Broadcast() // a writer waiting for space gives up
		j.mu.Unlock()
		err = j.f.Close()
	})
	return err
}

func (j *Journal) writeLoop() {
	defer close(j.done)
	maxGroup := j.maxGroup
	group := make([]*req, 0, 64)
	idle := j.idle
	defer idle.Stop()
	for {
		var first *req
		select {
		case first = <-j.reqs:
		case <-idle.C:
			j.wmu.Lock()
			j.idleArmed = false
			if wait := j.opts.ScrubAfter - time.Since(j.lastWrite); wait > 0 {
				j.armIdle(wait) // a group was written since: not idle yet
			} else if !j.scrub() {
				j.armIdle(j.opts.ScrubAfter) // not all released yet
			}
			j.wmu.Unlock()
			continue
		case <-j.closing:
			select {
			case first = <-j.reqs:
			default:
				j.wmu.Lock()
				j.scrub() // a clean close leaves no released record behind
				j.wmu.Unlock()
				return
			}
		}
		j.wmu.Lock()
		group = append(group[:0], first)
		bytes := int64(recHeader + len(first.rec))
	fill:
		for bytes < maxGroup {
			select {
			case r := <-j.reqs:
				group = append(group, r)
				bytes += int64(recHeader + len(r.rec))
			default:
				break fill
			}
		}
		err := j.writeGroup(group, bytes)
		j.wmu.Unlock()
		for _, r := range group {
			r.done <- err
		}
	}
}

// armIdle sets the idle timer to fire after d (wmu held).
func (j *Journal) armIdle(d time.Duration) {
	j.idle.Reset(d)
	j.idleArmed = true
}

// writeGroup writes a group (wmu held) and hands it to Durable.
func (j *Journal) writeGroup(group []*req, bytes int64) error {
	err := j.write(group, bytes)
	j.lastWrite = time.Now()
	if !j.idleArmed {
		j.armIdle(j.opts.ScrubAfter)
	}
	if err == nil && j.opts.Durable != nil {
		vs := make([]any, len(group))
		for i, r := range group {
			vs[i] = r.v
		}
		j.opts.Durable(vs, j.written)
	}
	return err
}

// scrub zeroes every record in the file once all that were written are
// released (their payloads are message previews and ciphertext, which
// must not outlive their copy elsewhere by more than a moment), and
// starts writing at the start of the file again. It reports false when
// records are still waiting to be released.
func (j *Journal) scrub() bool {
	if j.dirty <= headerSize {
		return true
	}
	j.mu.Lock()
	ok := j.released >= j.written && j.failed == nil
	j.mu.Unlock()
	if !ok {
		return false
	}
	// Zeroes from the header on: a crash part-way leaves released
	// records only (which the owner already has), and reading stops at
	// the first zeroed one.
	zeros := make([]byte, min(j.dirty-headerSize, 64<<10))
	var err error
	for off := int64(headerSize); off < j.dirty && err == nil; off += int64(len(zeros)) {
		_, err = j.f.WriteAt(zeros[:min(int64(len(zeros)), j.dirty-off)], off)
	}
	if err == nil {
		err = fdatasync(j.f)
	}
	if err != nil {
		j.mu.Lock()
		j.failed = fmt.Errorf("journal: %w", err)
		j.mu.Unlock()
		return true
	}
	j.off, j.dirty = headerSize, headerSize
	return true
}

// write puts a group on disk: at the tail if it fits, else at the start
// of the file once every record written so far is released (growing the
// file if the group is larger than it).
func (j *Journal) write(group []*req, n int64) error {
	j.mu.Lock()
	if j.failed != nil {
		err := j.failed
		j.mu.Unlock()
		return err
	}
	// Go back to the start whenever everything written is released and
	// the tail is past the middle, so a steady load rarely has to wait.
	wrap := j.off+n > j.size || (j.off-headerSize > (j.size-headerSize)/2 && j.released >= j.written)
	if wrap {
		if j.released < j.written && !j.full {
			deadline := time.Now().Add(j.opts.SpaceWait)
			wake := time.AfterFunc(j.opts.SpaceWait, func() {
				j.mu.Lock()
				j.cond.Broadcast()
				j.mu.Unlock()
			})
			for j.released < j.written && j.failed == nil && time.Now().Before(deadline) {
				j.cond.Wait()
			}
			wake.Stop()
			j.full = j.released < j.written
		}
		if j.failed != nil {
			err := j.failed
			j.mu.Unlock()
			return err
		}
		if j.released < j.written {
			j.mu.Unlock()
			return ErrFull
		}
		j.off = headerSize
	}
	j.mu.Unlock()
	j.buf = j.buf[:0]
	for _, r := range group {
		j.written++
		r.lsn = j.written
		var h [recHeader]byte
		binary.LittleEndian.PutUint32(h[0:], uint32(len(r.rec)))
		binary.LittleEndian.PutUint32(h[4:], recordCRC(j.epoch, r.lsn, r.rec))
		binary.LittleEndian.PutUint64(h[8:], r.lsn)
		j.buf = append(append(j.buf, h[:]...), r.rec...)
	}
	grew := j.off+n > j.size
	_, err := j.f.WriteAt(j.buf, j.off)
	if err == nil {
		switch {
		case j.opts.Sync != nil:
			err = j.opts.Sync(j.f)
		case grew:
			err = j.f.Sync() // the size changed: fsync the inode too
		default:
			err = fdatasync(j.f)
		}
	}
	if err != nil {
		// After a failed write or sync the page cache cannot be trusted:
		// every later append fails too.
		j.mu.Lock()
		j.failed = fmt.Errorf("journal: %w", err)
		j.mu.Unlock()
		return j.failed
	}
	j.off += n
	j.dirty = max(j.dirty, j.off)
	if grew {
		j.size = j.off
	}
	return nil
}
