package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/wire"
)

// strikeTokens is what is left of key's budget of failed handshakes
// (-1: none recorded).
func (a *admission) strikeTokens(key string) float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if lim, ok := a.strikes[key]; ok {
		return lim.TokensAt(time.Now()) / strikeParts // in failed handshakes
	}
	return -1
}

// TestFailedHandshakesHoldAnAddressBack: an address whose WebSocket
// handshakes the broker refused more than --handshake-failure-burst times
// is answered 429 (no upgrade, no signed challenge) until its budget
// refills. A stranger writing junk before the hello used to cost the
// broker an upgrade, a signature and a frame read at every connection
// (bench --adversary: ~150 µs each, 2,000 a run). With the budget off the
// same third connection is upgraded: the control.
func TestFailedHandshakesHoldAnAddressBack(t *testing.T) {
	t.Parallel()
	for _, rate := range []float64{0, 0.001} {
		b := startBroker(t, func(c *Config) {
			noExemption(c)
			c.HandshakeFailureRate = rate
			c.HandshakeFailureBurst = 2
		})
		// Two handshakes refused: a frame other than the hello, and junk.
		r := dial(t, b)
		r.write(`{"type":"list_peers","reqId":"x"}`)
		r.expectClose(1008, wire.CodeNoHello)
		r = dial(t, b)
		r.write(`{not json`)
		r.expectRefusal(wire.CodeMalformed, 1008, wire.CodeMalformed)
		if rate == 0 {
			if got := b.admit.strikeTokens("127.0.0.1"); got != -1 {
				t.Fatalf("budget off, yet %v strikes recorded", got)
			}
			dial(t, b) // upgraded, challenged
			continue
		}
		waitFor(t, "both refusals to count", func() bool {
			tokens := b.admit.strikeTokens("127.0.0.1")
			return tokens >= 0 && tokens < 1
		})
		ws, resp, err := websocket.DefaultDialer.Dial(b.URL(), nil)
		if err == nil {
			ws.Close()
			t.Fatal("a third handshake from the address was upgraded")
		}
		if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("third handshake: %v %+v", err, resp)
		}
		body, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(body), wire.CodeRateLimited) || !strings.Contains(string(body), "failed handshakes") {
			t.Fatalf("429 body %s", body)
		}
		if got := counterValue(t, b, "claudemesh_limits_tripped_total", "handshake_failures_per_ip"); got != 1 {
			t.Fatalf("metric %v", got)
		}
	}
}

// TestStrikeBudgetRefillsAndIsForgotten: the budget refills at the rate
// and a full one is forgotten, so the map holds only addresses that failed
// recently (it is keyed by what strangers choose).
func TestStrikeBudgetRefillsAndIsForgotten(t *testing.T) {
	a := newAdmission(Config{HandshakeFailureRate: 10, HandshakeFailureBurst: 2}, nil)
	a.strike("192.0.2.1", strikeParts)
	a.strike("192.0.2.1", strikeParts)
	now := time.Now()
	a.mu.Lock()
	held := a.heldBackLocked("192.0.2.1", now)
	a.mu.Unlock()
	if !held {
		t.Fatal("an address past its burst is not held back")
	}
	a.mu.Lock()
	held = a.heldBackLocked("192.0.2.1", now.Add(150*time.Millisecond))
	a.mu.Unlock()
	if held {
		t.Fatal("still held back after a token refilled")
	}
	a.mu.Lock()
	a.heldBackLocked("192.0.2.1", now.Add(time.Second))
	n := len(a.strikes)
	a.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d budgets remembered after refilling, want 0", n)
	}
	// The sweep makes room among full budgets; held-back ones stay.
	a.strikes["198.51.100.1"] = a.newStrikeLimiter()
	spent := a.newStrikeLimiter()
	spent.AllowN(now, 2)
	a.strikes["198.51.100.2"] = spent
	a.mu.Lock()
	a.sweepStrikesLocked(now)
	_, full := a.strikes["198.51.100.1"]
	_, held2 := a.strikes["198.51.100.2"]
	a.mu.Unlock()
	if full || !held2 {
		t.Fatalf("sweep kept the full budget (%v) or dropped the held one (%v)", full, !held2)
	}
}

// TestThrottledHellosAreNoStrikes: a hello the broker refuses with one of
// its own per-member throttles (here rate_limited, for presences started
// faster than --presence-rate) tells a member to retry later; it is
// charged to the member, not to its address, so another member behind the
// same address is not locked out (it was: three throttled hellos past a
// burst of 3 earned every client of the address a 429). A stranger's
// broken WebSocket framing after the upgrade, on the other hand, counts
// (it did not: only timeouts, junk and refused frames did).
func TestThrottledHellosAreNoStrikes(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		noExemption(c)
		c.HandshakeFailureRate = 0.001
		c.HandshakeFailureBurst = 3
		c.PresenceRate = 0.001
		c.PresenceBurst = 1
	})
	bob := createMesh(t, b, "team", "bob")
	alice := addMember(t, b, bob, "team", "alice")
	connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "first" })
	presence := true
	for i := range 3 {
		r := dial(t, b)
		r.write(r.helloFrame(bob, func(h *wire.Hello) { h.Presence = &presence; h.SessionID = fmt.Sprintf("more%d", i) }))
		r.expectRefusal(wire.CodeRateLimited, 1008, wire.CodeRateLimited)
	}
	if got := b.admit.strikeTokens("127.0.0.1"); got != -1 && got < 3 {
		t.Fatalf("throttled hellos struck the address: %v of 3 left", got)
	}
	connect(t, b, alice, false, nil) // not held back

	// Bad framing right after the challenge: struck.
	for range 3 {
		r := dial(t, b)
		// A frame with an unknown opcode (0xf) and the reserved bits set.
		r.ws.UnderlyingConn().Write([]byte{0xff, 0x80, 0, 0, 0, 0})
		for {
			if _, err := r.readErr(expectWithin); err != nil {
				break
			}
		}
	}
	wantHeldBack(t, b, "three connections of broken framing")
}

// TestCleanCloseBeforeHelloIsAnEighthOfAStrike: a client that reads the
// signed challenge and closes cleanly (1000) without a hello, as join and
// mesh create do to check the broker key an invite pins, has not failed a
// handshake. It was struck whole: more people than the burst joining from
// one address in the same seconds got 429 and join failed. Not struck at
// all, a stranger could have the broker sign challenges in a loop at any
// rate: it counts as an eighth of a failure.
func TestCleanCloseBeforeHelloIsAnEighthOfAStrike(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		noExemption(c)
		c.HandshakeFailureRate = 0.001
		c.HandshakeFailureBurst = 2
	})
	// leave reads the challenge, closes cleanly and waits until the
	// broker has closed the TCP connection, which it does after it
	// counted the handshake.
	leave := func() {
		t.Helper()
		r := dial(t, b)
		r.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(expectWithin))
		waitClosedByBroker(t, r)
	}
	// Five key checks: more than the two failures the budget allows, each
	// an eighth of one.
	for range 5 {
		leave()
	}
	if got := b.admit.strikeTokens("127.0.0.1"); got < 1.3 || got > 1.4 {
		t.Fatalf("after five clean closes before the hello, %v of 2 failures left, want 2 - 5/8", got)
	}
	dial(t, b) // upgraded, challenged

	// A loop of them is bounded all the same: each has the broker sign a
	// challenge. A connection is let in while a whole failure could be
	// paid, so the burst of 2 failures lets 2×8 − 8 + 1 = 9 in all.
	for range 2*strikeParts - strikeParts + 1 - 5 {
		leave()
	}
	wantHeldBack(t, b, "nine clean closes before the hello")
}

// A connection gone without a clean close before its hello is a whole
// failed handshake, as before.
func TestGoneBeforeHelloIsAStrike(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		noExemption(c)
		c.HandshakeFailureRate = 0.001
		c.HandshakeFailureBurst = 2
	})
	for range 2 {
		r := dial(t, b)
		r.ws.UnderlyingConn().(interface{ CloseWrite() error }).CloseWrite()
		waitClosedByBroker(t, r)
	}
	wantHeldBack(t, b, "two connections gone without a close")
}

// waitClosedByBroker reads until the broker has closed r's TCP connection,
// which it does after it counted (or not) the handshake as failed.
func waitClosedByBroker(t *testing.T, r *rawConn) {
	t.Helper()
	for {
		if _, err := r.readErr(expectWithin); err != nil {
			if errors.Is(err, errNoFrame) {
				t.Fatal("the broker did not close the connection")
			}
			break
		}
	}
	r.ws.UnderlyingConn().SetReadDeadline(time.Now().Add(expectWithin))
	if _, err := io.Copy(io.Discard, r.ws.UnderlyingConn()); err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("waiting for the broker to close: %v", err)
	}
}

// wantHeldBack waits until what has used up 127.0.0.1's budget of failed
// handshakes, then checks that its next connection is answered 429.
func wantHeldBack(t *testing.T, b *Broker, what string) {
	t.Helper()
	waitFor(t, what+" to use the budget up", func() bool {
		tokens := b.admit.strikeTokens("127.0.0.1")
		return tokens >= 0 && tokens < 1
	})
	if _, resp, err := websocket.DefaultDialer.Dial(b.URL(), nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after %s: %v", what, err)
	}
}
