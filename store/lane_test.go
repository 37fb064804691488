package store

import (
	"fmt"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestLargeLane: twelve 64 KiB writes of one sender are spread over
// commits of at most LargeBudget bytes; a small write of another sender
// submitted after them commits with the first of those commits, not after
// the last; a small write of the same sender commits after all of its
// large ones, and after-callbacks run in commit order. Close commits what
// the lane still holds.
func TestLargeLane(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{})
	createTestBucket(t, s)
	release := blockCommitter(t, s)

	var mu sync.Mutex
	txOf := map[string]int{} // write → the transaction that committed it
	var order []string       // after-callbacks, in the order they ran
	var wg sync.WaitGroup
	submit := func(name string, size int, key string) {
		t.Helper()
		wg.Add(1)
		err := s.SubmitSized(func(tx *bolt.Tx) error {
			mu.Lock()
			txOf[name] = tx.ID()
			mu.Unlock()
			return tx.Bucket(testBucket).Put([]byte(name), make([]byte, size))
		}, func(err error) {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			wg.Done()
		}, size, key)
		if err != nil {
			t.Fatalf("SubmitSized %s: %v", name, err)
		}
	}
	const large, n = 64 << 10, 12
	for i := range n {
		submit(fmt.Sprintf("large%02d", i), large, "mallory")
	}
	submit("bob", 300, "bob")
	submit("mallory-small", 300, "mallory")
	release()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	perTx := map[int]int{}
	for i := range n {
		perTx[txOf[fmt.Sprintf("large%02d", i)]]++
	}
	for tx, k := range perTx {
		if k*large > DefaultLargeBudget {
			t.Errorf("transaction %d took %d large writes (%d KiB), over the %d KiB budget", tx, k, k*large>>10, DefaultLargeBudget>>10)
		}
	}
	first, last := txOf["large00"], txOf[fmt.Sprintf("large%02d", n-1)]
	if txOf["bob"] > first {
		t.Errorf("another sender's small write committed in transaction %d, after the first large one's %d (the last: %d)", txOf["bob"], first, last)
	}
	if txOf["mallory-small"] < last {
		t.Errorf("the sender's small write committed in transaction %d, before its last large one's %d", txOf["mallory-small"], last)
	}
	pos := map[string]int{}
	for i, name := range order {
		pos[name] = i
	}
	for i := 1; i < n; i++ {
		if pos[fmt.Sprintf("large%02d", i)] < pos[fmt.Sprintf("large%02d", i-1)] {
			t.Errorf("large%02d's callback ran before large%02d's", i, i-1)
		}
	}
	if pos["mallory-small"] < pos[fmt.Sprintf("large%02d", n-1)] {
		t.Errorf("the sender's small write's callback ran before its last large one's")
	}
}

// TestLargeLaneCloseCommitsAll: Close commits every write the lane holds.
func TestLargeLaneCloseCommitsAll(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{})
	createTestBucket(t, s)
	release := blockCommitter(t, s)
	const n = 20
	for i := range n {
		k := fmt.Sprintf("k%02d", i)
		if err := s.SubmitSized(putRaw(k, "v"), nil, 64<<10, "mallory"); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	release()
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	s = openAt(t, path, Options{})
	for i := range n {
		if got := getRaw(t, s, fmt.Sprintf("k%02d", i)); got != "v" {
			t.Errorf("k%02d = %q after Close, want v", i, got)
		}
	}
}
