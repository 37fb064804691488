// Package startstack grows the main goroutine's stack to 64 KiB before any
// other package initialiser runs. main imports it for that side effect.
//
// The main goroutine starts with a few KiB of stack. The initialisers of
// the ~150 packages a claudemesh binary links (regular expressions, JSON
// schemas, tables) and then the command itself reach deeper, and the
// runtime grows the stack by doubling: 4–5 times per process, each time
// allocating a new stack and copying the old one while it adjusts every
// frame's pointers from the stack maps in the binary's pclntab. In a 40 MB
// binary that was ~0.3 ms and ~35 page faults of every process,
// `claudemesh --version` and a warm `send` included (BENCHMARKS.md,
// "Process start", ninth session). Calling grow, whose frame is 60 KiB,
// makes the runtime grow the stack once, straight to 64 KiB, while it holds
// only a few frames; the frame itself is never written, so its pages are
// not touched. A long-running process (broker, daemon) gives the space back
// when the garbage collector shrinks stacks it finds mostly unused.
//
// It runs first because Go initialises, among the packages whose imports
// are initialised, the one whose import path sorts first (the spec's
// "Package initialization"): this package imports nothing, and
// "claudemesh/internal/startstack" sorts before every package the binary
// links except a few ("bufio", "bytes", "archive/...") that import packages
// sorting after it. TestInitialisedFirst (package main) checks the order,
// TestGrowGrowsTheStack that grow still grows the stack.
package startstack

// frame is grow's frame size: the stack then doubles once, to 64 KiB, with
// room for the frames below it.
const frame = 60 << 10

func init() { grow(0) }

// grow has a frame of frame bytes, which the stack check in its prologue
// makes room for; n is 0, so the frame is never written.
//
//go:noinline
func grow(n int) byte {
	if n > 0 {
		var buf [frame]byte
		buf[n%frame] = byte(n)
		return buf[n/2%frame]
	}
	return 0
}
