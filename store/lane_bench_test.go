package store

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BenchmarkSmallBesideLarge: one sender's burst of 24 large writes (~88 KB
// each, the frame of a 64 KiB DM; eight in flight, as a client's window)
// while eight other senders each commit small writes one after another,
// as a mesh's DMs do. An op is one burst. Reported: the large bytes in
// the commits that small writes shared (shared-KB/small: per small write,
// on average; max-shared-KB: the most in one such commit), and the small
// writes' submit→durable wait (small-p50-µs, small-p99-µs; wall clock,
// the disk's). Each small write waits for every page of its commit and
// their fsync, so the large bytes it shares are what it pays for another
// member's bulk.
func BenchmarkSmallBesideLarge(b *testing.B) {
	s := openAt(b, dbPath(b), Options{})
	createTestBucket(b, s)
	large, small := make([]byte, 88<<10), make([]byte, 300)
	var mu sync.Mutex
	largeIn, smallIn := map[int]int{}, map[int]int{}
	var waits []time.Duration
	submit := func(k, v []byte, key string, m map[int]int, n int, after func(error)) {
		err := s.SubmitSized(func(tx *bolt.Tx) error {
			mu.Lock()
			m[tx.ID()] += n
			mu.Unlock()
			return tx.Bucket(testBucket).Put(k, v)
		}, after, len(v), key)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := range b.N {
		var stop atomic.Bool
		var wg sync.WaitGroup
		for p := range 8 {
			wg.Go(func() {
				for j := 0; !stop.Load(); j++ {
					done := make(chan struct{})
					t0 := time.Now()
					submit(fmt.Appendf(nil, "s%d-%d-%d", i, p, j), small, fmt.Sprint("peer", p), smallIn, 1, func(error) {
						d := time.Since(t0)
						mu.Lock()
						waits = append(waits, d)
						mu.Unlock()
						close(done)
					})
					<-done
				}
			})
		}
		window := make(chan struct{}, 8)
		var burst sync.WaitGroup
		for j := range 24 {
			window <- struct{}{}
			burst.Add(1)
			submit(fmt.Appendf(nil, "l%d-%d", i, j), large, "mallory", largeIn, len(large), func(error) {
				<-window
				burst.Done()
			})
		}
		burst.Wait()
		stop.Store(true)
		wg.Wait()
	}
	b.StopTimer()
	var shared, most, n int
	for tx, k := range smallIn {
		shared += largeIn[tx] * k
		n += k
		most = max(most, largeIn[tx])
	}
	slices.Sort(waits)
	b.ReportMetric(float64(shared)/float64(max(n, 1))/1024, "shared-KB/small")
	b.ReportMetric(float64(most)/1024, "max-shared-KB")
	b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "small-p50-µs")
	b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds()), "small-p99-µs")
}
