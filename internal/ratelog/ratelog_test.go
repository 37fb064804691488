package ratelog

import (
	"fmt"
	"testing"
	"time"
)

func TestOneLinePerIntervalPerKey(t *testing.T) {
	l := Limiter{Every: time.Hour}
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("the first line of a key was held")
	}
	for range 5 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("a repeat within the interval went out")
		}
	}
	l.Age("a", time.Hour)
	if ok, n := l.Allow("a"); !ok || n != 5 {
		t.Fatalf("after the interval: ok %v, left out %d, want true and 5", ok, n)
	}
}

// With Burst, that many lines of a key go out in one interval; the next
// one after it says how many were left out.
func TestBurstLinesPerInterval(t *testing.T) {
	l := Limiter{Every: time.Hour, Burst: 3}
	for i := range 3 {
		if ok, n := l.Allow("a"); !ok || n != 0 {
			t.Fatalf("line %d of the burst: ok %v, left out %d", i+1, ok, n)
		}
	}
	for range 4 {
		if ok, _ := l.Allow("a"); ok {
			t.Fatal("a line past the burst went out")
		}
	}
	l.Age("a", time.Hour)
	if ok, n := l.Allow("a"); !ok || n != 4 {
		t.Fatalf("after the interval: ok %v, left out %d, want true and 4", ok, n)
	}
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("the new interval has a burst of its own")
	}
}

// A flood of distinct keys (a line per source host, many hosts) once
// emptied the memory at 257 keys, so keys used in turn were never limited.
func TestDistinctKeysBeyondTheMemoryAreStillLimited(t *testing.T) {
	l := Limiter{Every: time.Hour}
	lines := 0
	for round := range 5 {
		for i := range 4 * maxKeys {
			if ok, _ := l.Allow(fmt.Sprintf("host-%d", i)); ok {
				lines++
			}
		}
		if want := maxKeys + 1; lines > want { // one more: the overflow key
			t.Fatalf("round %d: %d lines for %d distinct keys used in turn, want at most %d", round, lines, 4*maxKeys, want)
		}
	}
	if len(l.seen) > maxKeys+1 {
		t.Fatalf("%d keys remembered, want at most %d", len(l.seen), maxKeys+1)
	}
}
