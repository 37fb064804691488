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

// Keys that left out a line once stayed remembered for good: a flood of
// 256 distinct keys, each used twice, sent every later key's lines to the
// shared overflow key forever (an hour later a new key's first line was
// still held). A key whose interval ended two intervals ago makes room,
// and what it left out is reported by the overflow key's next line.
func TestKeysThatLeftLinesOutMakeRoomLater(t *testing.T) {
	l := Limiter{Every: time.Second}
	for i := range maxKeys {
		for range 2 {
			l.Allow(fmt.Sprintf("junk-%d", i))
		}
	}
	for i := range maxKeys {
		l.Age(fmt.Sprintf("junk-%d", i), time.Hour)
	}
	ok, n := l.Allow("bob")
	if !ok || n != 0 {
		t.Fatalf("a new key an hour after the flood: ok %v, left out %d; want its line written", ok, n)
	}
	if ok, _ := l.Allow("carol"); !ok {
		t.Fatal("a second new key after the flood was held")
	}
	if _, ok := l.seen[overflowKey]; !ok {
		t.Fatal("the flood's left-out lines were not handed to the overflow key")
	}
	if got := l.seen[overflowKey].n; got != maxKeys {
		t.Fatalf("the overflow key holds %d left-out lines, want the flood's %d", got, maxKeys)
	}
	// Fill the table with fresh keys: the first one past it shares the
	// overflow key, whose line reports the flood's left-out lines.
	reported := 0
	for i := range maxKeys {
		if ok, n := l.Allow(fmt.Sprintf("fresh-%d", i)); ok {
			reported += n
		}
	}
	if reported != maxKeys {
		t.Fatalf("the lines written reported %d left out, want the flood's %d", reported, maxKeys)
	}
}
