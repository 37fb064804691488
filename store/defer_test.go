package store

import (
	"fmt"
	"sync"
	"testing"
	"time"
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
				if err := s.Submit(putRaw(k, "1"), note(k)); err != nil {
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
