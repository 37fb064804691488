package broker

import (
	"time"

	"golang.org/x/time/rate"
)

// Failed handshakes per address (--handshake-failure-rate and -burst).
//
// A stranger's connection that gets as far as a WebSocket costs the broker
// the HTTP request, the upgrade, a signed challenge and the first frame
// before it can be refused (bench --adversary: ~150 µs a connection for
// junk written before the hello, against ~10 µs to accept and close one).
// So an address whose handshakes keep failing is, for a while, admitted
// only as far as a 429 (or, past --max-refusals-per-ip, closed as it is
// accepted), like one over --max-conns-per-ip. An honest client fails a
// handshake rarely (a clock far off, a removed key) and retries with
// backoff, well inside the budget. A hello the broker's own per-member
// throttles refuse (rate_limited, capacity) is not counted: it tells a
// member to retry, and is charged to the member (hellobudget.go), so one
// member starting presences too fast cannot lock out the others behind
// its address.

// strikeParts: a failed handshake takes strikeParts tokens of its
// address's budget, a clean close before the hello (a client that only
// checked the broker's signed challenge, as join and mesh create do) one.
// Key checks are honest and come in bursts (everyone behind one NAT
// address joining after a meeting): at the defaults about 150 at once
// (a connection is let in while a whole failure could be paid) and 8 a
// second go through; a stranger closing cleanly in a loop still costs
// the broker a signed challenge each, so a loop is bounded too.
const strikeParts = 8

// maxStrikeEntries bounds the addresses remembered at once: an entry is
// dropped once its budget has refilled, and at this many the refilled
// ones are swept (at most once a second); an address that still finds no
// room is not remembered (the per-address connection caps still hold it).
const maxStrikeEntries = 1 << 16

// newStrikeLimiter is a fresh budget: it refills at the rate up to the
// burst, a failed handshake takes a token, and the address is held back
// while fewer than one is left.
func (a *admission) newStrikeLimiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(a.strikeRate*strikeParts), a.strikeBurst*strikeParts)
}

// strike records a handshake from key that failed (conn.throttled says
// which do not count): strikeParts tokens, or one for a clean close
// before the hello (conn.leftClean).
func (a *admission) strike(key string, parts int) {
	if key == "" || a.strikeRate <= 0 {
		return
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	lim, ok := a.strikes[key]
	if !ok {
		if len(a.strikes) >= maxStrikeEntries && !a.sweepStrikesLocked(now) {
			return
		}
		lim = a.newStrikeLimiter()
		a.strikes[key] = lim
	}
	lim.AllowN(now, parts) // too few left: nothing to take
}

// heldBack is heldBackLocked for a caller without a.mu: a client a
// trusted proxy names (clientaddr.go), whose connection is the proxy's.
func (a *admission) heldBack(key string) bool {
	if key == "" || a.strikeRate <= 0 {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.heldBackLocked(key, time.Now())
}

// heldBackLocked says whether key has used up its budget of failed
// handshakes; it forgets a budget that has refilled.
func (a *admission) heldBackLocked(key string, now time.Time) bool {
	lim, ok := a.strikes[key]
	if !ok {
		return false
	}
	tokens := lim.TokensAt(now)
	if tokens >= float64(a.strikeBurst*strikeParts) {
		delete(a.strikes, key)
		return false
	}
	return tokens < strikeParts
}

// sweepStrikesLocked drops the budgets that have refilled, at most once a
// second (a full map of held-back addresses would otherwise be swept at
// every strike), and says whether there is room now.
func (a *admission) sweepStrikesLocked(now time.Time) bool {
	if now.Sub(a.strikesSwept) >= time.Second {
		a.strikesSwept = now
		for k, lim := range a.strikes {
			if lim.TokensAt(now) >= float64(a.strikeBurst*strikeParts) {
				delete(a.strikes, k)
			}
		}
	}
	return len(a.strikes) < maxStrikeEntries
}
