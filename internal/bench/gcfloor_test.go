package bench

import (
	"os"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// TestCommandKeepsAHeapFloor: while `claudemesh bench` runs, the load
// generator's GC percent is raised above Go's default 100 (its next
// collection at least gcHeadroom above the live heap), so it does not
// collect every few broadcasts in the middle of the pushes it times.
func TestCommandKeepsAHeapFloor(t *testing.T) {
	if _, set := os.LookupEnv("GOGC"); set {
		t.Skip("GOGC is set: the floor is off by design")
	}
	gogc := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	var highest atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if p := gogc(); p > highest.Load() {
				highest.Store(p)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	benchJSON(t, "--broadcast", "--peers", "3", "--messages", "20", "--payload", "32")
	close(stop)
	<-done
	if p := highest.Load(); p <= 100 {
		t.Errorf("GC percent at most %d while the bench ran, want a floor above 100", p)
	}
	if p := gogc(); p != 100 {
		t.Errorf("GC percent %d after the run, want 100 restored", p)
	}
}
