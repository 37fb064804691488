package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// afterChan is an after callback that reports its outcome on a channel.
func afterChan() (func(error), chan error) {
	ch := make(chan error, 1)
	return func(err error) { ch <- err }, ch
}

// submitDeferred submits n deferrable puts (k0, k1, …) and returns the
// channels their callbacks report on.
func submitDeferred(t *testing.T, s *Store, n int) []chan error {
	t.Helper()
	var chans []chan error
	for i := range n {
		after, ch := afterChan()
		chans = append(chans, ch)
		if err := s.SubmitDeferred(putRaw(fmt.Sprintf("k%d", i), "v"), after); err != nil {
			t.Fatal(err)
		}
	}
	return chans
}

func waitAfter(t *testing.T, ch chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: never committed", what)
	}
}

// A deferrable write waits for company; the first write that is not
// deferrable ends the wait and both commit in one transaction.
func TestDeferredWriteJoinsTheNextWrite(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, DeferFor: time.Hour})
	createTestBucket(t, s)
	before := len(log.snapshot())
	after, ch := afterChan()
	if err := s.SubmitDeferred(putRaw("acked", "1"), after); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(putRaw("sent", "1")); err != nil {
		t.Fatal(err)
	}
	waitAfter(t, ch, "the deferred write")
	if got := log.snapshot()[before:]; len(got) != 1 || got[0] != 2 {
		t.Fatalf("commits after the deferred write: %v, want one of 2 writes", got)
	}
	if getRaw(t, s, "acked") != "1" || getRaw(t, s, "sent") != "1" {
		t.Fatal("a write of the shared commit is missing")
	}
}

// Deferrable writes alone commit once DeferFor has passed, all together.
func TestDeferredWritesCommitAfterDeferFor(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, DeferFor: 50 * time.Millisecond})
	createTestBucket(t, s)
	release := blockCommitter(t, s)
	before := len(log.snapshot())
	chans := submitDeferred(t, s, 5)
	release()
	for i, ch := range chans {
		waitAfter(t, ch, fmt.Sprintf("deferred write %d", i))
	}
	// The blocker's commit, then one for the five.
	if got := log.snapshot()[before:]; len(got) != 2 || got[1] != 5 {
		t.Fatalf("commits: %v, want the blocker's then one of 5", got)
	}
}

// A full batch of deferrable writes does not wait.
func TestDeferredWritesCommitWhenTheBatchIsFull(t *testing.T) {
	s := openAt(t, dbPath(t), Options{DeferFor: time.Hour, MaxBatch: 4})
	createTestBucket(t, s)
	for i, ch := range submitDeferred(t, s, 4) {
		waitAfter(t, ch, fmt.Sprintf("deferred write %d", i))
	}
}

// Close commits a deferred write at once, and it is in the file.
func TestCloseCommitsDeferredWrites(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{DeferFor: time.Hour})
	createTestBucket(t, s)
	after, ch := afterChan()
	if err := s.SubmitDeferred(putRaw("acked", "1"), after); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitAfter(t, ch, "the deferred write")
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for DeferFor")
	}
	s = openAt(t, path, Options{})
	if getRaw(t, s, "acked") != "1" {
		t.Fatal("the deferred write is not in the file after Close")
	}
}

// A batch holding SplitDeferred deferrable writes and another write
// commits the other write first, in a transaction of its own, and the
// deferrable ones right after; with fewer, all share one commit.
func TestSplitDeferredCommitsTheOthersFirst(t *testing.T) {
	for _, tc := range []struct {
		deferred int
		want     []int
	}{
		{deferred: 4, want: []int{6}},
		{deferred: 5, want: []int{2, 5}},
	} {
		t.Run(fmt.Sprint(tc.deferred), func(t *testing.T) {
			var log commitLog
			s := openAt(t, dbPath(t), Options{OnCommit: log.observe, DeferFor: time.Hour, SplitDeferred: 5})
			createTestBucket(t, s)
			release := blockCommitter(t, s)
			before := len(log.snapshot())
			var order []string
			var mu sync.Mutex
			var wg sync.WaitGroup
			note := func(what string) func(error) {
				wg.Add(1)
				return func(err error) {
					defer wg.Done()
					if err != nil {
						t.Errorf("%s: %v", what, err)
					}
					mu.Lock()
					order = append(order, what)
					mu.Unlock()
				}
			}
			// A deferrable write first, then the two others, then the rest.
			if err := s.SubmitDeferred(putRaw("acked0", "1"), note("acked0")); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"sent1", "sent2"} {
				if err := s.SubmitSized(putRaw(k, "1"), note(k), 1, ""); err != nil {
					t.Fatal(err)
				}
			}
			for i := 1; i < tc.deferred; i++ {
				if err := s.SubmitDeferred(putRaw(fmt.Sprintf("acked%d", i), "1"), note(fmt.Sprintf("acked%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			release()
			wg.Wait()
			got := log.snapshot()[before+1:] // after the blocker's
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("commits %v, want %v", got, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(tc.want) == 2 && (order[0] != "sent1" || order[1] != "sent2" || order[2] != "acked0") {
				t.Fatalf("callbacks ran in the order %v, want the sends first", order)
			}
			for i := range tc.deferred {
				if getRaw(t, s, fmt.Sprintf("acked%d", i)) != "1" {
					t.Fatalf("deferred write %d is missing", i)
				}
			}
		})
	}
}

// orderLog records the callbacks' order.
type orderLog struct {
	mu    sync.Mutex
	order []string
	wg    sync.WaitGroup
}

func (o *orderLog) note(t *testing.T, what string, wantErr bool) func(error) {
	o.wg.Add(1)
	return func(err error) {
		defer o.wg.Done()
		if (err != nil) != wantErr {
			t.Errorf("%s: err = %v, want an error: %v", what, err, wantErr)
		}
		o.mu.Lock()
		o.order = append(o.order, what)
		o.mu.Unlock()
	}
}

func (o *orderLog) wait(t *testing.T) []string {
	t.Helper()
	done := make(chan struct{})
	go func() { o.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("callbacks never ran")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.order...)
}

// interruptAt submits ten deferrable puts (acked0…acked9) behind a blocked
// committer and returns once the committer is applying acked2, which waits
// until the returned function is called: a write submitted meanwhile
// arrives while the batch's deferrable writes are being applied.
func interruptAt(t *testing.T, s *Store, o *orderLog) (resume func()) {
	t.Helper()
	release := blockCommitter(t, s)
	reached, gate := make(chan struct{}), make(chan struct{})
	for i := range 10 {
		k := fmt.Sprintf("acked%d", i)
		fn := putRaw(k, "1")
		if i == 2 {
			put := fn
			var once sync.Once
			fn = func(tx *bolt.Tx) error {
				once.Do(func() { close(reached); <-gate })
				return put(tx)
			}
		}
		if err := s.SubmitDeferred(fn, o.note(t, k, false)); err != nil {
			t.Fatal(err)
		}
	}
	release()
	select {
	case <-reached:
	case <-time.After(10 * time.Second):
		t.Fatal("the committer never applied acked2")
	}
	return func() { close(gate) }
}

// A write someone waits for, submitted while a batch's deferrable writes
// are being applied, does not wait for the rest of them: it commits with
// those already applied, its callback first, and the rest
// commit next, in their order. (Before, it waited for all ten, then its
// own commit.)
func TestWaitedWriteDoesNotWaitForDeferredOnes(t *testing.T) {
	var log commitLog
	var o orderLog
	// AfterBatch (the broker's fan-out) runs after each round of
	// callbacks: the waited-on write's, then the deferrable ones'.
	afterBatch := func() {
		o.mu.Lock()
		o.order = append(o.order, "|")
		o.mu.Unlock()
	}
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, PreemptDeferred: true, SplitDeferred: 5, AfterBatch: afterBatch})
	createTestBucket(t, s)
	before := len(log.snapshot())
	resume := interruptAt(t, s, &o)
	if err := s.SubmitSized(putRaw("sent", "1"), o.note(t, "sent", false), 1, ""); err != nil {
		t.Fatal(err)
	}
	resume()
	order := o.wait(t)
	if got := log.snapshot()[before+1:]; fmt.Sprint(got) != "[4 7]" {
		t.Fatalf("commits after the blocker's: %v, want [4 7] (acked0-2 with sent, then acked3-9)", got)
	}
	var callbacks []string
	flushedAfterSent := false
	for i, what := range order {
		if what != "|" {
			callbacks = append(callbacks, what)
		} else if i > 0 && order[i-1] == "sent" {
			flushedAfterSent = true
		}
	}
	want := []string{"sent", "acked0", "acked1", "acked2", "acked3", "acked4", "acked5", "acked6", "acked7", "acked8", "acked9"}
	if fmt.Sprint(callbacks) != fmt.Sprint(want) {
		t.Fatalf("callbacks ran in the order %v, want %v", callbacks, want)
	}
	if !flushedAfterSent {
		t.Fatalf("AfterBatch did not run between the waited-on write's callback and the deferrable ones' (%v)", order)
	}
	for i := range 10 {
		if k := fmt.Sprintf("acked%d", i); getRaw(t, s, k) != "1" {
			t.Fatalf("%s is missing", k)
		}
	}
}

// A deferrable write submitted meanwhile joins the batch being applied.
func TestDeferredWriteJoinsTheBatchBeingApplied(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, PreemptDeferred: true, SplitDeferred: 5})
	createTestBucket(t, s)
	before := len(log.snapshot())
	var o orderLog
	resume := interruptAt(t, s, &o)
	if err := s.SubmitDeferred(putRaw("late", "1"), o.note(t, "late", false)); err != nil {
		t.Fatal(err)
	}
	resume()
	order := o.wait(t)
	if got := log.snapshot()[before+1:]; fmt.Sprint(got) != "[11]" {
		t.Fatalf("commits after the blocker's: %v, want one of 11", got)
	}
	if order[len(order)-1] != "late" {
		t.Fatalf("callbacks ran in the order %v, want the late write last", order)
	}
}

// When the waited-on write that interrupted the deferrable ones fails, it
// alone gets the error: the writes applied with it are each retried alone
// and committed, and the rest commit next.
func TestFailedInterruptingWriteHarmsNoDeferredOne(t *testing.T) {
	s := openAt(t, dbPath(t), Options{PreemptDeferred: true, SplitDeferred: 5})
	createTestBucket(t, s)
	var o orderLog
	resume := interruptAt(t, s, &o)
	bad := func(tx *bolt.Tx) error { return errors.New("refused") }
	if err := s.SubmitSized(bad, o.note(t, "bad", true), 1, ""); err != nil {
		t.Fatal(err)
	}
	resume()
	o.wait(t)
	for i := range 10 {
		if getRaw(t, s, fmt.Sprintf("acked%d", i)) != "1" {
			t.Fatalf("acked%d is missing", i)
		}
	}
}

// Without PreemptDeferred (the daemon's store) a waited-on write waits
// for the batch being applied, as before: the callbacks of one commit run
// in the order its writes were applied.
func TestWithoutPreemptDeferredTheBatchIsWhole(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe})
	createTestBucket(t, s)
	before := len(log.snapshot())
	var o orderLog
	resume := interruptAt(t, s, &o)
	if err := s.SubmitSized(putRaw("sent", "1"), o.note(t, "sent", false), 1, ""); err != nil {
		t.Fatal(err)
	}
	resume()
	o.wait(t)
	if got := log.snapshot()[before+1:]; fmt.Sprint(got) != "[10 1]" {
		t.Fatalf("commits after the blocker's: %v, want [10 1]", got)
	}
}

// A stream of waited-on writes does not starve deferrable ones: the
// writes a commit put off are applied by the next one whatever arrives
// meanwhile, and a wave smaller than SplitDeferred is not preempted.
// (Each waited-on write used to cut the carried writes again after one
// of them: in bench --peers 100 the acks piled up by the thousand and
// every send took two commits, ~10× the broker's CPU.)
func TestCarriedDeferredWritesAreNotPutOffAgain(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, PreemptDeferred: true, SplitDeferred: 5})
	createTestBucket(t, s)
	before := len(log.snapshot())
	var o orderLog
	// acked3, the first write put off, waits while the committer applies
	// it, so sent2 arrives during the next commit.
	release := blockCommitter(t, s)
	at2, go2 := make(chan struct{}), make(chan struct{})
	at3, go3 := make(chan struct{}), make(chan struct{})
	for i := range 10 {
		k := fmt.Sprintf("acked%d", i)
		fn := putRaw(k, "1")
		for _, h := range []struct {
			i        int
			at, gate chan struct{}
		}{{2, at2, go2}, {3, at3, go3}} {
			if i == h.i {
				put, h := fn, h
				var once sync.Once
				fn = func(tx *bolt.Tx) error {
					once.Do(func() { close(h.at); <-h.gate })
					return put(tx)
				}
			}
		}
		if err := s.SubmitDeferred(fn, o.note(t, k, false)); err != nil {
			t.Fatal(err)
		}
	}
	release()
	waitClosed(t, at2, "acked2")
	if err := s.SubmitSized(putRaw("sent1", "1"), o.note(t, "sent1", false), 1, ""); err != nil {
		t.Fatal(err)
	}
	close(go2)
	waitClosed(t, at3, "acked3")
	if err := s.SubmitSized(putRaw("sent2", "1"), o.note(t, "sent2", false), 1, ""); err != nil {
		t.Fatal(err)
	}
	close(go3)
	o.wait(t)
	if got := log.snapshot()[before+1:]; fmt.Sprint(got) != "[4 7 1]" {
		t.Fatalf("commits after the blocker's: %v, want [4 7 1] (acked0-2 with sent1, acked3-9, sent2)", got)
	}
}

func waitClosed(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("the committer never applied %s", what)
	}
}

// Fewer deferrable writes left than SplitDeferred are not preempted: a
// busy mesh's batch of DMs keeps its acks in one commit, as before.
func TestSmallWaveIsNotPreempted(t *testing.T) {
	var log commitLog
	s := openAt(t, dbPath(t), Options{OnCommit: log.observe, PreemptDeferred: true, SplitDeferred: 128})
	createTestBucket(t, s)
	before := len(log.snapshot())
	var o orderLog
	resume := interruptAt(t, s, &o)
	if err := s.SubmitSized(putRaw("sent", "1"), o.note(t, "sent", false), 1, ""); err != nil {
		t.Fatal(err)
	}
	resume()
	o.wait(t)
	if got := log.snapshot()[before+1:]; fmt.Sprint(got) != "[10 1]" {
		t.Fatalf("commits after the blocker's: %v, want [10 1]", got)
	}
}

// sweepAfter is a write that records, when it is applied, which of keys
// were not written yet (the writes it must follow).
func sweepAfter(missing *[]string, mu *sync.Mutex, keys ...string) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error {
		mu.Lock()
		defer mu.Unlock()
		*missing = (*missing)[:0]
		for _, k := range keys {
			if tx.Bucket(testBucket).Get([]byte(k)) == nil {
				*missing = append(*missing, k)
			}
		}
		return tx.Bucket(testBucket).Put([]byte("sweep"), []byte("1"))
	}
}

// A write that is not a send (a sweep, a forget, a ban: Submit, Update)
// is applied after the deferrable writes submitted before it, also where
// a send goes first: the split of a batch holding a wave of them, and
// the preemption of the wave's application. Applied first, a sweep or a
// forget left an earlier ack nothing to settle (no receipt, and an
// expired delivery of a message its recipient had acked).
func TestOnlySendsOvertakeDeferredWrites(t *testing.T) {
	acks := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("acked%d", i))
		}
		return out
	}
	t.Run("Split", func(t *testing.T) {
		var mu sync.Mutex
		var missing []string
		s := openAt(t, dbPath(t), Options{DeferFor: time.Hour, SplitDeferred: 5})
		createTestBucket(t, s)
		release := blockCommitter(t, s)
		var o orderLog
		for _, k := range acks(6) {
			if err := s.SubmitDeferred(putRaw(k, "1"), o.note(t, k, false)); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SubmitSized(putRaw("sent", "1"), o.note(t, "sent", false), 1, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.Submit(sweepAfter(&missing, &mu, acks(6)...), o.note(t, "sweep", false)); err != nil {
			t.Fatal(err)
		}
		release()
		o.wait(t)
		mu.Lock()
		defer mu.Unlock()
		if len(missing) > 0 {
			t.Fatalf("the sweep was applied before %v, submitted before it", missing)
		}
	})
	t.Run("Preempt", func(t *testing.T) {
		var mu sync.Mutex
		var missing []string
		s := openAt(t, dbPath(t), Options{PreemptDeferred: true, SplitDeferred: 5})
		createTestBucket(t, s)
		var o orderLog
		resume := interruptAt(t, s, &o)
		if err := s.Submit(sweepAfter(&missing, &mu, acks(10)...), o.note(t, "sweep", false)); err != nil {
			t.Fatal(err)
		}
		if err := s.SubmitSized(putRaw("sent", "1"), o.note(t, "sent", false), 1, ""); err != nil {
			t.Fatal(err)
		}
		resume()
		o.wait(t)
		mu.Lock()
		defer mu.Unlock()
		if len(missing) > 0 {
			t.Fatalf("the sweep was applied before %v, submitted before it", missing)
		}
		if getRaw(t, s, "sent") != "1" {
			t.Fatal("the send is missing")
		}
	})
}
