package broker

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"claudemesh/wire"
)

// A member whose hellos keep being refused after their signature verified
// (here: each would take it over --max-groups) spends its budget of
// refused hellos, and its next hellos are refused before any signature is
// checked: rate_limited with retryAfterMs, even one with a bad signature,
// which would otherwise cost a verification to refuse. Forged hellos in
// another member's name spend nothing of that member's budget, so they
// cannot lock it out.
func TestHelloRefusalBudget(t *testing.T) {
	t.Parallel()
	if def := DefaultConfig(); def.HelloRefusalRate <= 0 || def.HelloRefusalBurst <= 0 {
		t.Fatalf("default --hello-refusal-rate %v, --hello-refusal-burst %d: want a budget by default", def.HelloRefusalRate, def.HelloRefusalBurst)
	}
	const burst = 3
	b := startBroker(t, func(c *Config) {
		c.MaxGroups = 2
		c.HelloRefusalRate = 0.001 // no refill within the test
		c.HelloRefusalBurst = burst
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	groups := func(names ...string) func(*wire.Hello) {
		return func(h *wire.Hello) {
			for _, n := range names {
				h.Groups = append(h.Groups, wire.Group{Name: n})
			}
		}
	}
	badSignature := func(h *wire.Hello) { h.Signature = strings.Repeat("0", 128) }

	// Forged hellos in bob's name: refused for their signature, and bob
	// is not locked out by them.
	for range 2 * burst {
		r := dial(t, b)
		r.write(r.helloFrame(bob, badSignature))
		r.expectRefusal(wire.CodeBadSignature, wire.ClosePolicy, wire.CodeBadSignature)
	}
	connect(t, b, bob, false, nil).closeClean()

	// alice holds the 2 groups the cap allows; each hello adding another
	// is refused after its signature verified, and spends her budget.
	connect(t, b, alice, false, groups("a", "b")).closeClean()
	for i := range burst {
		r := dial(t, b)
		r.write(r.helloFrame(alice, groups("c"+strconv.Itoa(i))))
		r.expectRefusal(wire.CodeInvalidArgument, wire.ClosePolicy, wire.CodeInvalidArgument)
	}
	// Spent: her next hellos, valid or not, are refused before any
	// signature check.
	for _, mutate := range []func(*wire.Hello){nil, badSignature} {
		r := dial(t, b)
		r.write(r.helloFrame(alice, mutate))
		var e wire.Error
		r.next(&e, wire.TypeError)
		if e.Code != wire.CodeRateLimited || e.RetryAfterMs <= 0 || !strings.Contains(e.Message, "--hello-refusal-rate") {
			t.Fatalf("alice's hello after her budget was spent: %+v; want rate_limited with retryAfterMs naming --hello-refusal-rate", e)
		}
		r.expectClose(wire.ClosePolicy, wire.CodeRateLimited)
	}
	if n := counterValue(t, b, "claudemesh_limits_tripped_total", "hello_refusals"); n != 2 {
		t.Fatalf("limits_tripped{hello_refusals} = %v, want 2", n)
	}
	// bob's budget is his own.
	connect(t, b, bob, false, nil).closeClean()
}

// A connection closed for ignoring rate_limited spends its member's
// budget of refusals like a refused hello: reconnecting at once would
// otherwise buy fresh per-connection limits (bench --adversary's ack
// flood reconnected 95 times in a run).
func TestRateLimitCloseSpendsTheHelloBudget(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		c.AckRate, c.refusalBurst, c.refusalRate = 2, 3, 0.001 // as TestIgnoringRateLimitsClosesTheConnection
		c.HelloRefusalRate = 0.001
		c.HelloRefusalBurst = 1
	})
	alice := createMesh(t, b, "team", "alice")
	ac := connect(t, b, alice, true, nil)
	ids := junkIDs(1)
	for i := range 20 {
		if err := ac.ws.WriteJSON(wire.ClientAck{Type: wire.TypeClientAck, ReqID: fmt.Sprintf("f%d", i), MessageIDs: ids}); err != nil {
			break
		}
	}
	waitFor(t, "the flooding connection to be closed", func() bool {
		return counterValue(t, b, "claudemesh_limits_tripped_total", "refusals") == 1
	})
	r := dial(t, b)
	r.write(r.helloFrame(alice, nil))
	var e wire.Error
	r.next(&e, wire.TypeError)
	if e.Code != wire.CodeRateLimited || !strings.Contains(e.Message, "--hello-refusal-rate") {
		t.Fatalf("alice's hello after her connection was closed for ignoring rate_limited: %+v", e)
	}
}
