package mcp

import (
	"time"
	"unicode/utf8"
)

// Every channel notification goes into the agent's context mid-turn, so a
// member sending at the broker's rate (up to 1 MiB a second, --byte-rate,
// or 200 small messages a second) could fill an agent session's context
// within seconds and bill its user for it. The push budget bounds what one sender puts there:
// a burst of pushBurstChars characters, refilled at pushRefillPerMinute,
// where a notification costs its content, every meta attribute (name and
// value: they become attributes of the block in the context) and
// pushOverheadChars for the block itself, so that many tiny messages cost
// what they take. A sender is a member and all its sessions together;
// every unverified sender (a plaintext topic's posts, a message that could
// not be opened) shares one budget, so that new keys buy nothing. The
// session's own member (its user's CLI and sibling sessions) is not
// limited.
//
// A message that does not fit whole is cut to what is left if its text
// keeps at least minCutChars (the whole text is in `claudemesh inbox`);
// with less left it is not pushed and stays unread (the prompt hook brings
// it in, within Claude Code's budget, and `claudemesh inbox --unread`
// shows it), and the session is told that the sender is held back, at
// most once every heldNoticeInterval per sender. Ordinary conversation (a
// hundred short messages at once) stays under it.
const (
	pushBurstChars      = 64000
	pushRefillPerMinute = 32000
	pushOverheadChars   = 64
	minCutChars         = 2000
	heldNoticeInterval  = time.Minute
	// unverifiedSender is the one budget every unverified sender shares.
	unverifiedSender = "unverified"
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
	chars    float64   // characters it may still push
	at       time.Time // when chars was last brought up to date
	held     int       // messages held unread since its last push
	noticeAt time.Time // when the session was last told it is held back
}

func newPushBudget() *pushBudget { return &pushBudget{senders: map[string]*senderBudget{}} }

// metaCost is what a notification's attributes cost: each name and value,
// and the few characters around them.
func metaCost(meta map[string]string) int {
	n := 0
	for k, v := range meta {
		n += len(k) + utf8.RuneCountInString(v) + 4
	}
	return n
}

// admit decides how much of a notification from sender may be pushed at
// now, given the characters of its content and the cost of the rest
// (meta, overhead): whole (fit == content), at most fit characters of
// content (then fit ≥ minCutChars: the caller cuts the text), or nothing
// (fit == 0: hold the message unread). heldBefore is how many of the
// sender's messages were held since its last push, which this push should
// mention; notice reports that the session should be told now that the
// sender is held back.
func (b *pushBudget) admit(sender string, content, rest int, now time.Time) (fit, heldBefore int, notice bool) {
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
	switch left := s.chars - float64(rest); {
	case float64(content) <= left:
		fit = content
	case left >= minCutChars:
		fit = int(left)
	default:
		s.held++
		if s.noticeAt.IsZero() || now.Sub(s.noticeAt) >= heldNoticeInterval {
			s.noticeAt = now
			return 0, 0, true
		}
		return 0, 0, false
	}
	s.chars -= float64(rest + fit)
	heldBefore, s.held = s.held, 0
	return fit, heldBefore, false
}

// spend charges sender n characters more: what a push adds around the
// text it was admitted for (the cut's note, the count of held messages).
// The budget may go below zero; it refills from there.
func (b *pushBudget) spend(sender string, n int) {
	if s := b.senders[sender]; s != nil {
		s.chars -= float64(n)
	}
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
