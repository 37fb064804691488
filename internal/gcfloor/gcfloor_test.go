package gcfloor

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	for _, c := range []struct {
		live, stacks, headroom uint64
		want                   int
	}{
		{0, 0, 64 * mb, maxPercent},
		{1 * mb, 0, 64 * mb, maxPercent},  // 6400 % clamped
		{16 * mb, 0, 64 * mb, 400},        // goal 80 MB = live + 64
		{12 * mb, 4 * mb, 64 * mb, 400},   // stacks count like heap
		{32 * mb, 0, 64 * mb, 200},        // goal 96 MB
		{64 * mb, 0, 64 * mb, 100},        // both rules agree
		{200 * mb, 0, 64 * mb, 100},       // a large heap keeps GOGC=100
		{30 * mb, 160 * mb, 64 * mb, 100}, // 10,000 idle connections' stacks
		{16 * mb, 0, 0, basePercent},      // no headroom, Go's default
	} {
		if got := Percent(c.live, c.stacks, 0, c.headroom); got != c.want {
			t.Errorf("Percent(%d MB, %d MB stacks, %d MB) = %d, want %d", c.live/mb, c.stacks/mb, c.headroom/mb, got, c.want)
		}
	}
}

// gcPercent reads the current GC percent (SetGCPercent only returns it by
// setting another).
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// TestStartFollowsTheLiveHeap starts the floor with a headroom far above
// this test's live heap and waits, collection by collection, for the
// percent to rise; stop must put back what was there.
func TestStartFollowsTheLiveHeap(t *testing.T) {
	t.Setenv("GOGC", "") // Setenv restores it; unset it for Start below
	unsetGOGC(t)
	before := debug.SetGCPercent(123)
	defer debug.SetGCPercent(before)

	stop := Start(1 << 30)
	deadline := time.Now().Add(10 * time.Second)
	for gcPercent() != maxPercent {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("GC percent %d after collections, want %d", gcPercent(), maxPercent)
		}
		runtime.GC()
		runtime.Gosched()
	}
	stop()
	if p := gcPercent(); p != 123 {
		t.Fatalf("after stop the GC percent is %d, want 123 (restored)", p)
	}
	// A collection after stop changes nothing.
	runtime.GC()
	runtime.GC()
	if p := gcPercent(); p != 123 {
		t.Fatalf("a collection after stop set the GC percent to %d", p)
	}
}

func TestStartRespectsGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	before := debug.SetGCPercent(150)
	defer debug.SetGCPercent(before)
	stop := Start(1 << 30)
	defer stop()
	runtime.GC()
	runtime.GC()
	if p := gcPercent(); p != 150 {
		t.Fatalf("with GOGC set the percent became %d", p)
	}
}

// TestStartNests: overlapping Starts share one tuner; the percent comes
// back only after the last stop.
func TestStartNests(t *testing.T) {
	t.Setenv("GOGC", "")
	unsetGOGC(t)
	before := debug.SetGCPercent(77)
	defer debug.SetGCPercent(before)
	stop1 := Start(1 << 30)
	stop2 := Start(1 << 30)
	stop1()
	stop1() // twice is once
	if p := gcPercent(); p == 77 {
		t.Fatal("the first stop restored the percent while another Start was running")
	}
	stop2()
	if p := gcPercent(); p != 77 {
		t.Fatalf("after the last stop the percent is %d, want 77", p)
	}
}
