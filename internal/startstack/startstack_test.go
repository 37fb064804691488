package startstack

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestGrowGrowsTheStack: calling grow on a goroutine with a small stack
// moves it to a larger stack (64 KiB; its frame is 60 KiB), which the
// compiler could defeat by shrinking grow's frame.
//
// StackInuse counts stack spans, not one goroutine's stack: the old stack
// may share a span that stays in use, the race detector starts goroutines
// on larger stacks (the growth then shows as 32 KiB, not 64), and another
// goroutine's stack freed meanwhile hides some of it. So the growth across
// grow is compared with the growth across a call with a small frame, in
// fresh goroutines, up to ten times: one try where grow's is at least
// 32 KiB more is enough. A grow that no longer grows the stack fails every
// try.
func TestGrowGrowsTheStack(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no stack shrinking meanwhile
	growth := func(f func()) int64 {
		var before, after runtime.MemStats
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.ReadMemStats(&before)
			f()
			runtime.ReadMemStats(&after)
		}()
		<-done
		return int64(after.StackInuse) - int64(before.StackInuse)
	}
	var withGrow, without int64
	for range 10 {
		withGrow, without = growth(func() { grow(0) }), growth(func() { small(0) })
		if withGrow-without >= 32<<10 {
			return
		}
	}
	t.Fatalf("stack spans in use grew by %d bytes across grow and %d across a small call in the last of ten tries: grow did not move the goroutine to a larger stack",
		withGrow, without)
}

// small is grow with a small frame.
//
//go:noinline
func small(n int) byte {
	if n > 0 {
		var buf [64]byte
		buf[n%64] = byte(n)
		return buf[n/2%64]
	}
	return 0
}
