package mcp

import (
	"strconv"
	"testing"
	"time"
)

// TestPushBudget: one sender's notifications fit its burst whole (content
// and the rest: meta and overhead), then one is cut to what is left (at
// least minCutChars), then they are held until the budget refills; the
// session is told at most once a heldNoticeInterval, and the next push
// says how many were held. Another sender has its own budget.
func TestPushBudget(t *testing.T) {
	b := newPushBudget()
	now := time.Unix(1_800_000_000, 0)
	const rest = 400
	if fit, held, notice := b.admit("mallory", 40000, rest, now); fit != 40000 || held != 0 || notice {
		t.Fatalf("first 40,000 characters: fit %d held %d notice %v, want all of it", fit, held, notice)
	}
	if fit, _, _ := b.admit("mallory", 40000, rest, now); fit != pushBurstChars-40000-2*rest {
		t.Fatalf("second: fit %d, want the %d left after its own rest", fit, pushBurstChars-40000-2*rest)
	}
	if fit, _, notice := b.admit("mallory", 5, rest, now); fit != 0 || !notice {
		t.Fatalf("third: fit %d notice %v, want held, and the session told", fit, notice)
	}
	// While the budget is spent every message is held, and the notice is
	// not repeated.
	for i := range 10 {
		if fit, _, notice := b.admit("mallory", 5, rest, now); fit != 0 || notice {
			t.Fatalf("held message %d: fit %d notice %v, want held without a new notice", i, fit, notice)
		}
	}
	if fit, _, _ := b.admit("bob", 5, rest, now); fit != 5 {
		t.Fatalf("another sender: fit %d, want its own budget", fit)
	}
	// After minCutChars+rest have refilled, a short one passes and says
	// eleven were held.
	later := now.Add(time.Duration(float64(minCutChars+rest) / pushRefillPerMinute * float64(time.Minute)))
	if fit, held, notice := b.admit("mallory", 5, rest, later); fit != 5 || held != 11 || notice {
		t.Fatalf("after the refill: fit %d held %d notice %v, want it pushed with 11 held before", fit, held, notice)
	}
}

// TestPushBudgetNoticeAtMostOnceAMinute: a sender that alternates a tiny
// message that fits with one that does not gets no new notice each time
// it is held again, only once heldNoticeInterval has passed.
func TestPushBudgetNoticeAtMostOnceAMinute(t *testing.T) {
	b := newPushBudget()
	t0 := time.Unix(1_800_000_000, 0)
	b.admit("m", pushBurstChars, 400, t0) // cut to the burst: nothing left
	if _, _, notice := b.admit("m", 5, 400, t0); !notice {
		t.Fatal("no notice when first held")
	}
	t1 := t0.Add(2 * time.Second) // ~1,066 characters refilled
	if fit, _, _ := b.admit("m", 5, 400, t1); fit != 5 {
		t.Fatalf("a tiny message after a refill: fit %d, want it pushed", fit)
	}
	if fit, _, notice := b.admit("m", 60000, 400, t1); fit != 0 || notice {
		t.Fatalf("held again within the minute: fit %d notice %v, want held without a notice", fit, notice)
	}
	if fit, _, notice := b.admit("m", 60000, 60000, t0.Add(heldNoticeInterval+time.Second)); fit != 0 || !notice {
		t.Fatalf("held a minute after the notice: fit %d notice %v, want held with a new notice", fit, notice)
	}
}

// TestPushBudgetCountsEveryNotification: a flood of one-character messages
// is bounded by what each notification costs, not by its text.
func TestPushBudgetCountsEveryNotification(t *testing.T) {
	b := newPushBudget()
	now := time.Unix(1_800_000_000, 0)
	meta := map[string]string{"from_pubkey": string(make([]byte, 64)), "message_id": "01ABCDEFGHJKMNPQRSTVWXYZ00"}
	rest := metaCost(meta) + pushOverheadChars
	pushed := 0
	for range 10000 {
		if fit, _, _ := b.admit("mallory", 4, rest, now); fit > 0 {
			pushed++
		}
	}
	if max := pushBurstChars / (4 + rest); pushed > max {
		t.Fatalf("%d one-character messages pushed at once, want at most %d", pushed, max)
	}
}

// TestPushBudgetForgetsFullSenders: the map of senders stays bounded.
func TestPushBudgetForgetsFullSenders(t *testing.T) {
	b := newPushBudget()
	now := time.Unix(1_800_000_000, 0)
	for i := range maxBudgetSenders * 3 {
		b.admit(strconv.Itoa(i), 2, 100, now.Add(time.Duration(i)*time.Second))
	}
	if len(b.senders) > maxBudgetSenders {
		t.Fatalf("%d senders remembered, want at most %d", len(b.senders), maxBudgetSenders)
	}
}
