package mcp

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPushBudget: one sender's notifications fit its burst whole, then one
// is cut to what is left (at least minCutChars), then they are held until
// the budget refills, the first held one of a run flagged once, and the
// next push says how many were held. Another sender has its own budget.
func TestPushBudget(t *testing.T) {
	b := newPushBudget()
	now := time.Unix(1_800_000_000, 0)
	big := strings.Repeat("x", 20000)
	if cut, held, first := b.admit("mallory", big, now); cut != 20000 || held != 0 || first {
		t.Fatalf("first 20,000 characters: cut %d held %d first %v, want all of it", cut, held, first)
	}
	if cut, _, _ := b.admit("mallory", big, now); cut != pushBurstChars-20000 {
		t.Fatalf("second: cut %d, want the %d left", cut, pushBurstChars-20000)
	}
	if cut, _, first := b.admit("mallory", "short", now); cut != 0 || !first {
		t.Fatalf("third: cut %d first %v, want held, and flagged as the first held", cut, first)
	}
	if cut, _, first := b.admit("mallory", "short", now); cut != 0 || first {
		t.Fatalf("fourth: cut %d first %v, want held, not flagged again", cut, first)
	}
	if cut, _, _ := b.admit("bob", "hello", now); cut != 5 {
		t.Fatalf("another sender: cut %d, want its own budget", cut)
	}
	// minCutChars refill at pushRefillPerMinute: then a short one passes
	// and says two were held.
	later := now.Add(time.Duration(float64(minCutChars) / pushRefillPerMinute * float64(time.Minute)))
	if cut, held, first := b.admit("mallory", "short", later); cut != 5 || held != 2 || first {
		t.Fatalf("after the refill: cut %d held %d first %v, want it pushed with 2 held before", cut, held, first)
	}
	if cut, _, _ := b.admit("mallory", strings.Repeat("é", 100), later.Add(time.Hour)); cut != 100 {
		t.Fatalf("after an hour: cut %d, want the whole message (runes, not bytes)", cut)
	}
	if got := cutRunes("héllo", 2); got != "hé" {
		t.Fatalf("cutRunes = %q", got)
	}
}

// TestPushBudgetForgetsFullSenders: the map of senders stays bounded.
func TestPushBudgetForgetsFullSenders(t *testing.T) {
	b := newPushBudget()
	now := time.Unix(1_800_000_000, 0)
	for i := range maxBudgetSenders * 3 {
		b.admit(strconv.Itoa(i), "hi", now.Add(time.Duration(i)*time.Second))
	}
	if len(b.senders) > maxBudgetSenders {
		t.Fatalf("%d senders remembered, want at most %d", len(b.senders), maxBudgetSenders)
	}
}
