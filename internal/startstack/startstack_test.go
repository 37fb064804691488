package startstack

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestGrowGrowsTheStack: calling grow on a goroutine with a small stack
// moves it to a stack of at least 64 KiB (the runtime's stack spans grow
// by that much), which the compiler could defeat by shrinking grow's frame.
func TestGrowGrowsTheStack(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no stack shrinking meanwhile
	var before, after runtime.MemStats
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.ReadMemStats(&before)
		grow(0)
		runtime.ReadMemStats(&after)
	}()
	<-done
	if grew := after.StackInuse - before.StackInuse; after.StackInuse < before.StackInuse || grew < 64<<10 {
		t.Fatalf("stack spans in use %d → %d bytes: grow did not move the goroutine to a 64 KiB stack",
			before.StackInuse, after.StackInuse)
	}
}
