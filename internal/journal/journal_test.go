package journal

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, path string, opts Options) (*Journal, [][]byte) {
	t.Helper()
	j, recs, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = r.Data
	}
	return j, out
}

func rec(i int) []byte {
	return []byte(fmt.Sprintf("record %05d %s", i, bytes.Repeat([]byte{'x'}, i%97)))
}

func expect(t *testing.T, got [][]byte, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("%d records, want %d (%d..%d)", len(got), to-from, from, to-1)
	}
	for i, r := range got {
		if !bytes.Equal(r, rec(from+i)) {
			t.Fatalf("record %d = %q, want %q", i, r, rec(from+i))
		}
	}
}

// TestReplayUnreleased: what was appended and not released comes back
// after a crash (the file as the process left it), in order; after the
// next Start it is gone.
func TestReplayUnreleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, recs := open(t, path, Options{})
	if len(recs) != 0 {
		t.Fatalf("a new journal has %d records", len(recs))
	}
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	lsns := map[uint64]int{}
	for i := range 200 {
		wg.Go(func() {
			lsn, err := j.Append(rec(i), nil)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			lsns[lsn] = i
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(lsns) != 200 {
		t.Fatalf("%d distinct lsns", len(lsns))
	}
	// No Close: a kill -9 leaves the file as it is.
	j2, got := open(t, path, Options{})
	if len(got) != 200 {
		t.Fatalf("replayed %d records, want 200", len(got))
	}
	for lsn := uint64(1); lsn <= 200; lsn++ {
		if !bytes.Equal(got[lsn-1], rec(lsns[lsn])) {
			t.Fatalf("lsn %d: %q, want %q", lsn, got[lsn-1], rec(lsns[lsn]))
		}
	}
	if err := j2.Start(); err != nil {
		t.Fatal(err)
	}
	j2.Close()
	j.Close()
	_, got = open(t, path, Options{})
	if len(got) != 0 {
		t.Fatalf("after a new epoch, %d old records came back", len(got))
	}
}

// TestWrapKeepsUnreleased: a small journal is reused many times over
// while an applier releases what it copied, lagging behind; at the
// "crash", every record not yet released is replayed, in order, and no
// stale record of an earlier lap is.
func TestWrapKeepsUnreleased(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	durable := make(chan uint64, 2048)
	j, _ := open(t, path, Options{Size: 8192, Durable: func(_ []any, last uint64) { durable <- last }})
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	applied := make(chan struct{})
	go func() { // the applier: releases each group a moment after it is durable
		defer close(applied)
		for l := range durable {
			if l%3 == 0 {
				time.Sleep(50 * time.Microsecond)
			}
			j.Release(l)
			if l == 1000 {
				return
			}
		}
	}()
	for i := range 1000 {
		lsn, err := j.Append(rec(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if lsn != uint64(i+1) {
			t.Fatalf("lsn %d for append %d", lsn, i)
		}
	}
	<-applied // everything up to 1000 released; what follows is not
	for i := 1000; i < 1005; i++ {
		if _, err := j.Append(rec(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := os.Stat(path)
	if st.Size() != 8192 {
		t.Fatalf("the file grew to %d bytes", st.Size())
	}
	_, got := open(t, path, Options{Size: 8192})
	if len(got) < 5 || len(got) > 300 {
		t.Fatalf("replayed %d records", len(got))
	}
	expect(t, got, 1005-len(got), 1005)
	j.Close()
}

// TestTornTail: a record cut short (the crash came before its fdatasync)
// ends the replay; the records before it are kept.
func TestTornTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _ := open(t, path, Options{})
	j.Start()
	for i := range 10 {
		if _, err := j.Append(rec(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	// Corrupt the last record's last byte.
	data, _ := os.ReadFile(path)
	end := headerSize
	for range 10 {
		n := int(data[end]) | int(data[end+1])<<8
		end += recHeader + n
	}
	data[end-1] ^= 0xff
	os.WriteFile(path, data, 0o600)
	_, got := open(t, path, Options{})
	expect(t, got, 0, 9)
}

// TestGroupLargerThanFile: a group that does not fit the file grows it;
// once released, its space is reused from the start.
func TestGroupLargerThanFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _ := open(t, path, Options{Size: 4096 + 64})
	j.Start()
	big := bytes.Repeat([]byte("y"), 10000)
	if _, err := j.Append(big, nil); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Size() < 4096+10000 {
		t.Fatalf("the file is %d bytes", st.Size())
	}
	_, got := open(t, path, Options{})
	if len(got) != 1 || !bytes.Equal(got[0], big) {
		t.Fatalf("replayed %d records", len(got))
	}
	j.Release(1)
	for i := range 2 {
		if _, err := j.Append(rec(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	_, got = open(t, path, Options{})
	expect(t, got, 0, 2)
	j.Close()
	if _, err := j.Append(rec(2), nil); err != ErrClosed {
		t.Fatalf("append after close: %v", err)
	}
}

// TestDurableInOrder: Durable sees every value once, in lsn order, before
// its Append returns.
func TestDurableInOrder(t *testing.T) {
	var mu sync.Mutex
	var seen []any
	var last uint64
	j, _ := open(t, filepath.Join(t.TempDir(), "j"), Options{Durable: func(vs []any, l uint64) {
		mu.Lock()
		defer mu.Unlock()
		if l != last+uint64(len(vs)) {
			t.Errorf("group ending at %d after %d has %d values", l, last, len(vs))
		}
		last = l
		seen = append(seen, vs...)
	}})
	j.Start()
	defer j.Close()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			lsn, err := j.Append(rec(i), i)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if lsn > uint64(len(seen)) || seen[lsn-1] != i {
				t.Errorf("append %d returned lsn %d before Durable saw it", i, lsn)
			}
		})
	}
	wg.Wait()
	if len(seen) != 100 {
		t.Fatalf("Durable saw %d values", len(seen))
	}
}

// BenchmarkAppendParallel16: 16 concurrent appenders of 400-byte records
// (an accepted outbox row's size), released as soon as they are durable.
func BenchmarkAppendParallel16(b *testing.B) {
	var j *Journal
	ready := make(chan struct{})
	j, _, err := Open(filepath.Join(b.TempDir(), "j"), Options{Durable: func(_ []any, l uint64) {
		<-ready
		j.Release(l)
	}})
	if err != nil {
		b.Fatal(err)
	}
	close(ready)
	if err := j.Start(); err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	r := bytes.Repeat([]byte("z"), 400)
	b.SetParallelism(8) // × GOMAXPROCS 2
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := j.Append(r, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// recordBytes counts the non-zero bytes after the header: what is left of
// records, released or not.
func recordBytes(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range data[headerSize:] {
		if b != 0 {
			n++
		}
	}
	return n
}

// TestReleasedRecordsAreScrubbed: once every record is released and the
// writer is idle, the records are zeroed on disk (not left until a lap
// overwrites them); appends go on from the start of the file, and a crash
// after them replays just them, with their lsns.
func TestReleasedRecordsAreScrubbed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _ := open(t, path, Options{ScrubAfter: 5 * time.Millisecond})
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var last uint64
	for i := range 5 {
		last, _ = j.Append(rec(i), nil)
	}
	time.Sleep(20 * time.Millisecond) // longer than ScrubAfter: unreleased records stay
	if recordBytes(t, path) == 0 {
		t.Fatal("records were zeroed before they were released")
	}
	j.Release(last)
	deadline := time.Now().Add(30 * time.Second)
	for recordBytes(t, path) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("released records still on disk after 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := 5; i < 8; i++ {
		if _, err := j.Append(rec(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	// No Close: a kill -9 now.
	j2, recs, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if len(recs) != 3 || recs[0].LSN != 6 || recs[2].LSN != 8 || j2.Epoch() != j.Epoch() {
		t.Fatalf("replayed %d records (first lsn %v), epoch %x want %x", len(recs), recs, j2.Epoch(), j.Epoch())
	}
	for i, r := range recs {
		if !bytes.Equal(r.Data, rec(5+i)) {
			t.Fatalf("record %d = %q", i, r.Data)
		}
	}
}

// TestCleanCloseScrubs: a clean Close with everything released leaves no
// record on disk, even stale ones of an older epoch further along the
// file; with records unreleased it leaves them for the next Open.
func TestCleanCloseScrubs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	never := Options{ScrubAfter: time.Hour}
	j, _ := open(t, path, never)
	j.Start()
	for i := range 50 {
		j.Append(rec(i), nil)
	}
	j.Close() // nothing released: the records stay
	j, got := open(t, path, never)
	expect(t, got, 0, 50)
	j.Start() // the owner has them: a new epoch, the 50 are stale
	last, _ := j.Append(rec(100), nil)
	j.Release(last)
	j.Close()
	if n := recordBytes(t, path); n != 0 {
		t.Fatalf("%d record bytes left after a clean close with everything released", n)
	}
	_, got = open(t, path, never)
	if len(got) != 0 {
		t.Fatalf("%d records after a clean close", len(got))
	}
}

// TestFullJournalFailsBounded: when nothing is released, an Append that
// needs room fails with ErrFull after SpaceWait (and the next at once),
// instead of blocking; once records are released, Appends go on.
func TestFullJournalFailsBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, _ := open(t, path, Options{Size: 8192, SpaceWait: 20 * time.Millisecond})
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var last uint64
	var err error
	n := 0
	for ; n < 1000; n++ {
		var lsn uint64
		if lsn, err = j.Append(rec(n), nil); err != nil {
			break
		}
		last = lsn
	}
	if !errors.Is(err, ErrFull) || n == 0 {
		t.Fatalf("after %d appends: %v, want ErrFull", n, err)
	}
	if _, err := j.Append(rec(n), nil); !errors.Is(err, ErrFull) {
		t.Fatalf("the next append: %v, want ErrFull", err)
	}
	j.Release(last)
	lsn, err := j.Append(rec(n), nil)
	if err != nil || lsn != last+1 {
		t.Fatalf("after the release: lsn %d, %v; want %d", lsn, err, last+1)
	}
}

// TestLoneAppendWritesItself: an Append that finds the journal idle
// writes and syncs its record on its own goroutine (a lone accept does
// not wait for the writer goroutine to be scheduled, twice), and Durable
// has seen the record when it returns; Appends that come while a group is
// being written are written by the writer goroutine, after it.
func TestLoneAppendWritesItself(t *testing.T) {
	var mu sync.Mutex
	var syncers []string // who called Sync, in order
	hold := make(chan struct{})
	held := make(chan struct{}, 1)
	var durable []any
	j, _ := open(t, filepath.Join(t.TempDir(), "j"), Options{
		Durable: func(vs []any, _ uint64) {
			mu.Lock()
			durable = append(durable, vs...)
			mu.Unlock()
		},
		Sync: func(f *os.File) error {
			buf := make([]byte, 64<<10)
			stack := string(buf[:runtime.Stack(buf, false)])
			who := "writer"
			if strings.Contains(stack, "journal.(*Journal).Append") {
				who = "append"
			}
			mu.Lock()
			syncers = append(syncers, who)
			first := len(syncers) == 2
			mu.Unlock()
			if first {
				held <- struct{}{}
				<-hold // the second lone append's sync: others queue meanwhile
			}
			return f.Sync()
		},
	})
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if lsn, err := j.Append(rec(0), 0); err != nil || lsn != 1 {
		t.Fatalf("append: lsn %d, %v", lsn, err)
	}
	mu.Lock()
	if len(syncers) != 1 || syncers[0] != "append" || len(durable) != 1 {
		t.Fatalf("a lone append on an idle journal: synced by %v, Durable saw %v; want the append itself, before it returned", syncers, durable)
	}
	mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() { j.Append(rec(1), 1) }) // lone: it syncs itself, held
	<-held
	for i := 2; i < 6; i++ {
		wg.Go(func() { j.Append(rec(i), i) })
	}
	// The four queue for the writer behind the held group (nothing else
	// writes while it is held): the writer takes the first and waits,
	// three wait in the queue. Then let the held one go.
	released := false
	defer func() {
		if !released {
			close(hold) // a failure must not leave Close waiting for it
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for len(j.reqs) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d appends queued behind the held one after 30 s, want 3 (and one with the writer)", len(j.reqs))
		}
		time.Sleep(time.Millisecond)
	}
	released = true
	close(hold)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(syncers) != 3 || syncers[1] != "append" || syncers[2] != "writer" {
		t.Fatalf("syncs by %v, want append, append, then the writer's one group of the four that queued", syncers)
	}
	if len(durable) != 6 {
		t.Fatalf("Durable saw %d records, want 6", len(durable))
	}
}

// TestAppendsWrittenInlineKeepTheJournalBusy: records that Appends write
// themselves count as writes for the scrub, which waits until nothing has
// been written for ScrubAfter; and once the journal is idle again the
// scrub still comes, though the writer goroutine wrote none of them.
func TestAppendsWrittenInlineKeepTheJournalBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	const scrubAfter = 300 * time.Millisecond
	j, _ := open(t, path, Options{ScrubAfter: scrubAfter})
	if err := j.Start(); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	// Appends (each released at once) for three times ScrubAfter, never
	// more than a fraction of it apart: the file is never scrubbed
	// meanwhile, so the records' offsets only grow.
	start := time.Now()
	prevOff := int64(0)
	for i := 0; time.Since(start) < 3*scrubAfter; i++ {
		lsn, err := j.Append(rec(i), nil)
		if err != nil {
			t.Fatal(err)
		}
		j.Release(lsn)
		j.wmu.Lock()
		off := j.off
		j.wmu.Unlock()
		if off <= prevOff {
			t.Fatalf("append %d at %v: the journal was scrubbed while records kept coming (offset %d after %d)", i, time.Since(start), off, prevOff)
		}
		prevOff = off
		time.Sleep(2 * time.Millisecond)
	}
	if recordBytes(t, path) == 0 {
		t.Fatal("no records on disk")
	}
	deadline := time.Now().Add(30 * time.Second)
	for recordBytes(t, path) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("released records still on disk 30 s after the last append")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
