package broker

import (
	"time"

	"golang.org/x/time/rate"

	"claudemesh/wire"
)

// A member's budget of refused hellos (--hello-refusal-rate,
// --hello-refusal-burst). Every hello costs the broker a signed
// challenge, and one that gets as far as its signature a verification
// (two, for a session_hello) and the mesh lock; a member whose hellos
// keep being refused after that (over the group cap, over the presence
// rate, revoked, its sessions' keys or names in conflict) could make the
// broker do that work as fast as it can send them; and a member whose
// connections are closed for ignoring rate_limited could reconnect at
// once, each connection with fresh per-connection limits, so such a close
// is charged the same way. Once its budget is
// spent, its next hellos are refused before any signature is checked,
// until the budget refills.
//
// Only a refusal after the hello's signature verified spends the budget:
// nobody without the member's key (or, for a session_hello, a session key
// the member attested) can spend it, so a stranger forging hellos in a
// member's name cannot lock that member out. A refusal that is not the
// member's doing (the mesh at --max-connections-per-mesh) spends nothing
// either.

// newHelloRefusals is a member's budget, nil when --hello-refusal-rate is 0.
func newHelloRefusals(cfg Config) *rate.Limiter {
	if cfg.HelloRefusalRate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(cfg.HelloRefusalRate), max(cfg.HelloRefusalBurst, 1))
}

// checkHelloBudget refuses, before its signature is verified, a hello in
// the name of a member whose budget of refused hellos is spent. It spends
// nothing; an unknown mesh or key passes (the hello is refused later, as
// before).
func (b *Broker) checkHelloBudget(meshID, memberPubkey string) *handshakeError {
	ms := b.hub.mesh(meshID)
	if ms == nil {
		return nil
	}
	ms.mu.Lock()
	mem := ms.members[memberPubkey]
	var d time.Duration
	if mem != nil && mem.helloRefusals != nil {
		now := time.Now()
		if mem.helloRefusals.TokensAt(now) < 1 {
			r := mem.helloRefusals.ReserveN(now, 1)
			d = r.DelayFrom(now)
			r.CancelAt(now)
		}
	}
	ms.mu.Unlock()
	if d <= 0 {
		return nil
	}
	b.metrics.limitTripped.WithLabelValues("hello_refusals").Inc()
	e := refuse(wire.CodeRateLimited, "this member's hellos were refused too often (--hello-refusal-rate); retry in %s", d.Round(time.Millisecond))
	e.retryAfterMs = max(d.Milliseconds(), 1)
	return e
}

// spendHelloRefusal charges a verified hello's refusal (or the close of a
// connection that ignored rate_limited: route.go) to its member.
func spendHelloRefusal(mem *member, e *handshakeError) *handshakeError {
	if mem.helloRefusals != nil {
		mem.helloRefusals.Allow()
	}
	return e
}
