package mcp

import (
	"time"
	"unicode/utf8"
)

// Every channel notification goes into the agent's context mid-turn, so a
// member sending at the broker's rate (200 messages a second, up to
// 64 KiB each) could fill an agent session's context within seconds and
// bill its user for it. The push budget bounds what one sender (a member
// and all its sessions together) puts there: a burst of pushBurstChars
// characters of notification content, refilled at pushRefillPerMinute.
// A message that does not fit whole is cut to what is left if that is at
// least minCutChars (the rest is in `claudemesh inbox`); with less left,
// it is not pushed and stays unread (the prompt hook, `claudemesh inbox
// --unread` and the next start of this server show it), and the session
// is told once that the sender is being held back. Ordinary conversation
// (hundreds of short messages) never reaches the budget.
const (
	pushBurstChars      = 32000
	pushRefillPerMinute = 16000
	minCutChars         = 2000
	// maxBudgetSenders bounds the map: past it, senders whose budget is
	// full again (nothing to remember) are forgotten.
	maxBudgetSenders = 1024
)

// pushBudget is the per-sender budget. It is used by the one goroutine
// that follows the event stream.
type pushBudget struct {
	senders map[string]*senderBudget
}

type senderBudget struct {
	chars float64   // characters it may still push
	at    time.Time // when chars was last brought up to date
	held  int       // messages held unread since its last push
}

func newPushBudget() *pushBudget { return &pushBudget{senders: map[string]*senderBudget{}} }

// admit decides how much of a notification of content from sender may be
// pushed at now: whole (cut == len in runes), its first cut runes (then
// cut ≥ minCutChars), or nothing (cut == 0: hold the message unread).
// heldBefore is how many of the sender's messages were held since its
// last push, which this push should mention; firstHeld reports that this
// message is the first held of a run (tell the session once).
func (b *pushBudget) admit(sender, content string, now time.Time) (cut, heldBefore int, firstHeld bool) {
	s := b.senders[sender]
	if s == nil {
		if len(b.senders) >= maxBudgetSenders {
			b.prune(now)
		}
		s = &senderBudget{chars: pushBurstChars, at: now}
		b.senders[sender] = s
	}
	s.chars = min(pushBurstChars, s.chars+now.Sub(s.at).Seconds()*pushRefillPerMinute/60)
	s.at = now
	n := utf8.RuneCountInString(content)
	switch {
	case float64(n) <= s.chars:
		cut = n
	case s.chars >= minCutChars:
		cut = int(s.chars)
	default:
		s.held++
		return 0, 0, s.held == 1
	}
	s.chars -= float64(cut)
	heldBefore, s.held = s.held, 0
	return cut, heldBefore, false
}

// prune forgets the senders whose budget has refilled and who have nothing
// held.
func (b *pushBudget) prune(now time.Time) {
	for k, s := range b.senders {
		if s.held == 0 && s.chars+now.Sub(s.at).Seconds()*pushRefillPerMinute/60 >= pushBurstChars {
			delete(b.senders, k)
		}
	}
}

// cutRunes is the first n runes of s.
func cutRunes(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}
