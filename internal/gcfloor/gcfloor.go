// Package gcfloor keeps the garbage collector's heap goal at least a fixed
// headroom above the live heap.
//
// Go's default (GOGC=100) sets the next collection at twice the live heap.
// A broker under load keeps a small live heap (13–20 MB in the 100-peer DM
// benchmarks) while allocating a few hundred MB a second, so it collected
// many times a second and spent a quarter of its CPU marking and assisting.
// With the goal at least live+headroom it collects several times less often
// at the cost of that headroom in memory; once the live heap is larger than
// the headroom (thousands of idle connections) the goal is GOGC=100's again,
// so the memory a large broker needs does not grow.
package gcfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// basePercent is the GC percent the floor never goes below (Go's default).
const basePercent = 100

// maxPercent bounds the percent for a nearly empty heap, where
// headroom/live would be huge.
const maxPercent = 1000

// Percent is the GC percent that puts the next heap goal at
// max(GOGC=100's goal, live+headroom), within [basePercent, maxPercent].
// Go sets the goal at live + (live+stacks+globals)×percent/100: the
// goroutine stacks count, so with thousands of idle connections (two
// goroutines each) the percent stays at 100 and the floor adds nothing.
func Percent(live, stacks, globals, headroom uint64) int {
	scan := live + stacks + globals
	if scan == 0 {
		return maxPercent
	}
	p := headroom * 100 / scan
	return int(min(max(p, basePercent), maxPercent))
}

// tuner re-arms itself after every collection through a finalizer: the
// runtime runs it once the collection that found its sentinel unreachable
// has finished, which is when the live heap is known.
type tuner struct {
	headroom uint64
	mu       sync.Mutex
	stopped  bool
	last     int
	sample   []metrics.Sample
}

// sentinel carries a pointer so the tiny allocator never batches it with
// other objects (a batched object's finalizer may never run).
type sentinel struct{ t *tuner }

// Start keeps the heap goal at least headroom bytes above the live heap
// until stop is called, which restores the GC percent in force before.
// When GOGC is set in the environment the operator has chosen, and Start
// does nothing. Calls may overlap (tests run commands in one process):
// the first one's headroom holds until the last stop.
func Start(headroom uint64) (stop func()) {
	if _, set := os.LookupEnv("GOGC"); set || headroom == 0 {
		return func() {}
	}
	running.Lock()
	defer running.Unlock()
	running.refs++
	if running.refs == 1 {
		t := &tuner{headroom: headroom, sample: []metrics.Sample{
			{Name: "/gc/heap/live:bytes"}, {Name: "/gc/scan/stack:bytes"}, {Name: "/gc/scan/globals:bytes"}}}
		running.prev = debug.SetGCPercent(basePercent)
		t.last = basePercent
		t.adjust()
		runtime.SetFinalizer(&sentinel{t: t}, rearm)
		running.t = t
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			running.Lock()
			defer running.Unlock()
			if running.refs--; running.refs > 0 {
				return
			}
			t := running.t
			running.t = nil
			t.mu.Lock()
			t.stopped = true
			debug.SetGCPercent(running.prev)
			t.mu.Unlock()
		})
	}
}

// running is the process's one tuner.
var running struct {
	sync.Mutex
	refs int
	prev int
	t    *tuner
}

func rearm(s *sentinel) {
	if s.t.adjust() {
		runtime.SetFinalizer(s, rearm)
	}
}

// adjust sets the percent for the live heap just measured, reporting
// whether the tuner is still running.
func (t *tuner) adjust() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	metrics.Read(t.sample)
	var v [3]uint64
	for i, s := range t.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return false // a runtime without the metric: leave Go's default
		}
		v[i] = s.Value.Uint64()
	}
	p := Percent(v[0], v[1], v[2], t.headroom)
	// Only a real change is applied: each call takes the heap lock.
	if p != t.last && (p > t.last+t.last/10 || p < t.last-t.last/10 || p == basePercent || p == maxPercent) {
		debug.SetGCPercent(p)
		t.last = p
	}
	return true
}
