package client

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"claudemesh/wire"

	"github.com/gorilla/websocket"
)

// TestFailoverBackoff: every delay is within [0, step] of 01-protocol §9's
// schedule (capped), and the delays are spread over that range (full
// jitter), not clustered at the step.
func TestFailoverBackoff(t *testing.T) {
	steps := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 30 * time.Second, 30 * time.Second}
	for attempt, step := range steps {
		var low, high int
		for range 400 {
			d := FailoverBackoff(attempt, 0)
			if d < 0 || d > step {
				t.Fatalf("attempt %d: %v outside [0, %v]", attempt, d, step)
			}
			if d < step/4 {
				low++
			}
			if d > step*3/4 {
				high++
			}
		}
		// Uniform: each quarter holds ~100 of 400; zero would mean no jitter.
		if low < 40 || high < 40 {
			t.Fatalf("attempt %d: %d delays under a quarter of %v and %d over three quarters: not full jitter", attempt, low, step, high)
		}
	}
	for attempt := range 10 {
		if d := FailoverBackoff(attempt, 200*time.Millisecond); d < 0 || d > 200*time.Millisecond {
			t.Fatalf("attempt %d with a 200ms cap: %v", attempt, d)
		}
	}
	if d := FailoverBackoff(-1, 0); d < 0 || d > DefaultBackoffMax {
		t.Fatalf("negative attempt: %v", d)
	}
}

func TestAfterDropOrder(t *testing.T) {
	urls := []string{"ws://a/ws", "ws://b/ws", "ws://c/ws", "ws://d/ws"}
	firsts := map[string]bool{}
	for range 200 {
		o := afterDrop(urls, "ws://b/ws")
		if len(o) != 4 || o[3] != "ws://b/ws" {
			t.Fatalf("the dropped URL must come last, once: %v", o)
		}
		seen := map[string]bool{}
		for _, u := range o {
			seen[u] = true
		}
		if len(seen) != 4 {
			t.Fatalf("not a permutation: %v", o)
		}
		firsts[o[0]] = true
	}
	if len(firsts) != 3 || firsts["ws://b/ws"] {
		t.Fatalf("the first URL after a drop should be any of the others: %v", firsts)
	}
	if o := afterDrop([]string{"ws://a/ws"}, "ws://a/ws"); len(o) != 1 {
		t.Fatalf("one URL: %v", o)
	}
	if o := moveFront(urls, "ws://c/ws"); strings.Join(o, " ") != "ws://c/ws ws://a/ws ws://b/ws ws://d/ws" {
		t.Fatalf("moveFront: %v", o)
	}
	if o := moveFront(urls, "ws://x/ws"); strings.Join(o, " ") != strings.Join(urls, " ") {
		t.Fatalf("moveFront of an unknown URL: %v", o)
	}
}

func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "ws://" + addr + "/ws"
}

// sameKey makes f answer as the node of a cluster whose key is of's.
func sameKey(f, of *fakeBroker) { f.set(func(f *fakeBroker) { f.key = of.key }) }

func upgradedSince(f *fakeBroker) int {
	n := 0
	for {
		select {
		case <-f.upgraded:
			n++
		default:
			return n
		}
	}
}

// TestDialFailsOver: a dial tries the mesh's URLs in turn — past a dead
// node and past a server that cannot prove the pinned key — and a later
// dial starts with the URL that worked.
func TestDialFailsOver(t *testing.T) {
	lastGood.Delete("mesh1")
	t.Cleanup(func() { lastGood.Delete("mesh1") })
	good := newFakeBroker(t)
	impostor := newFakeBroker(t) // its own key
	id := good.identity(t)
	id.BrokerURL = deadURL(t)
	id.BrokerURLs = []string{id.BrokerURL, impostor.url, good.url}

	c := mustDial(t, testCtx(t), id, DialOptions{})
	if got := c.Identity().BrokerURL; got != good.url {
		t.Fatalf("connected to %s, want %s", got, good.url)
	}
	if a := recvWithin(t, impostor.answers, "the impostor's answer"); a != "closed" {
		t.Fatalf("the client answered %q to a server without the pinned key", a)
	}
	upgradedSince(impostor)
	c.Close()

	c2 := mustDial(t, testCtx(t), id, DialOptions{})
	if got := c2.Identity().BrokerURL; got != good.url {
		t.Fatalf("second dial on %s", got)
	}
	if n := upgradedSince(impostor); n != 0 {
		t.Fatalf("the second dial went to the impostor first (%d upgrades): the URL that worked must be tried first", n)
	}
}

// TestDialPassErrors: when every URL fails, the error says so, and one
// server without the pinned key among dead nodes is not reported as a key
// mismatch (that would stop a presence for good); a refusal of the member
// itself ends the pass at once.
func TestDialPassErrors(t *testing.T) {
	lastGood.Delete("mesh1")
	t.Cleanup(func() { lastGood.Delete("mesh1") })
	f := newFakeBroker(t)
	impostor := newFakeBroker(t)
	dead := deadURL(t)

	id := f.identity(t)
	id.BrokerURL = impostor.url
	id.BrokerURLs = []string{dead}
	_, err := Dial(testCtx(t), id, DialOptions{})
	e := wantCode(t, err, CodeUnreachable)
	if !strings.Contains(e.Message, "all 2 broker URLs failed") || !strings.Contains(e.Message, impostor.url+": "+CodeBrokerKeyMismatch) {
		t.Fatalf("message %q", e.Message)
	}

	impostor2 := newFakeBroker(t)
	id.BrokerURLs = []string{impostor2.url}
	_, err = Dial(testCtx(t), id, DialOptions{})
	wantCode(t, err, CodeBrokerKeyMismatch)

	other := newFakeBroker(t)
	sameKey(other, f)
	f.set(func(f *fakeBroker) {
		f.refuse = func(int) (*wire.Error, int, string) {
			return &wire.Error{Code: wire.CodeRevoked, Message: "removed"}, wire.CloseBanned, wire.ReasonBanned
		}
	})
	id = f.identity(t)
	id.BrokerURLs = []string{other.url}
	_, err = Dial(testCtx(t), id, DialOptions{})
	wantCode(t, err, wire.CodeRevoked)
	if n := upgradedSince(other); n != 0 {
		t.Fatal("a revoked member was tried on another node")
	}
}

// TestPresenceFailsOver: a presence whose node goes away reconnects to
// another URL, which it learned from hello_ack, without waiting for the
// dead node.
func TestPresenceFailsOver(t *testing.T) {
	lastGood.Delete("mesh1")
	t.Cleanup(func() { lastGood.Delete("mesh1") })
	a := newFakeBroker(t)
	b := newFakeBroker(t)
	sameKey(b, a)
	a.set(func(f *fakeBroker) { f.ackURLs = []string{a.url, b.url} })
	id := a.identity(t) // knows a only: b comes from hello_ack
	p := StartPresence(testCtx(t), id, DialOptions{Presence: true}, PresenceOptions{BackoffMax: 50 * time.Millisecond})
	defer p.Close()
	waitState(t, p, StateOpen)
	fc := a.next(t)
	if got := p.Conn().Identity().BrokerURL; got != a.url {
		t.Fatalf("first connection on %s", got)
	}
	// Node a stops: no new connections, and the open one is closed.
	a.srv.Listener.Close()
	fc.closeWith(websocket.CloseGoingAway, wire.ReasonShutdown)
	b.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		ch := p.Changed()
		if c := p.Conn(); c != nil && c.Identity().BrokerURL == b.url {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			s, err := p.State()
			t.Fatalf("presence never reached %s: %s %v", b.url, s, err)
		}
	}
}

// TestPresenceIgnoresBadAnnouncedURLs: a hello_ack list this client
// cannot use leaves the presence on what it had.
func TestPresenceIgnoresBadAnnouncedURLs(t *testing.T) {
	lastGood.Delete("mesh1")
	t.Cleanup(func() { lastGood.Delete("mesh1") })
	a := newFakeBroker(t)
	a.set(func(f *fakeBroker) { f.ackURLs = []string{"http://x/ws", a.url} })
	p := StartPresence(testCtx(t), a.identity(t), DialOptions{Presence: true}, PresenceOptions{BackoffMax: 50 * time.Millisecond})
	defer p.Close()
	waitState(t, p, StateOpen)
	fc := a.next(t)
	fc.closeWith(websocket.CloseGoingAway, wire.ReasonShutdown)
	a.next(t) // back on a: the bad list was not adopted
	waitState(t, p, StateOpen)
}

// TestDialPassSkipsHungNode: a node that accepts the connection and then
// says nothing (its machine froze) delays a pass by the per-URL bound
// (failoverHandshakeTimeout), not by the whole handshake timeout, when
// another URL is left to try.
func TestDialPassSkipsHungNode(t *testing.T) {
	t.Parallel()
	good := newFakeBroker(t)
	hung := newFakeBroker(t)
	hung.set(func(f *fakeBroker) { f.noChallenge = true })
	id := good.identity(t)
	start := time.Now()
	c, err := dialPass(testCtx(t), id, DialOptions{HandshakeTimeout: 3 * failoverHandshakeTimeout}, []string{hung.url, good.url})
	if err != nil {
		t.Fatalf("dialPass: %v", err)
	}
	defer c.Close()
	took := time.Since(start)
	if c.Identity().BrokerURL != good.url {
		t.Fatalf("connected to %s", c.Identity().BrokerURL)
	}
	// The hung node held the pass for the per-URL bound: at least that,
	// and far less than the 15 s handshake timeout the caller gave.
	if took < failoverHandshakeTimeout || took >= 3*failoverHandshakeTimeout {
		t.Fatalf("the pass took %s with a hung first node (per-URL bound %s, handshake timeout %s)", took, failoverHandshakeTimeout, 3*failoverHandshakeTimeout)
	}
}
