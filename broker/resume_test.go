package broker

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// pushesBeforeReply counts the new pushes r receives before the answer to
// a list_peers it sends now. Whatever the broker's refill pushed at the
// hello went into the writer's queue at once, before this request's
// answer, so a count taken after the first push is everything the
// connection's window let through, without waiting for silence.
func (r *rawConn) pushesBeforeReply() []string {
	r.t.Helper()
	ids, _ := r.pushesUntilReply()
	return ids
}

// pushesUntilReply sends a list_peers and reads until its answer: the ids
// of the new pushes before it, and how many pushes came, re-sent ones
// included.
func (r *rawConn) pushesUntilReply() (fresh []string, all int) {
	r.t.Helper()
	reqID := "count-" + ulid.Make().String()
	r.write(map[string]any{"type": "list_peers", "reqId": reqID})
	for {
		data := r.read()
		env, err := wire.Peek(data)
		if err != nil {
			r.t.Fatalf("bad frame %s: %v", data, err)
		}
		if env.ReqID == reqID {
			return fresh, all
		}
		if env.Type != wire.TypePush {
			continue
		}
		var p wire.Push
		if err := wire.Decode(data, &p); err != nil {
			r.t.Fatal(err)
		}
		if p.Subtype == wire.SubtypeSystem {
			continue
		}
		all++
		if _, seen := r.note(data, env); !seen {
			fresh = append(fresh, p.MessageID)
		}
	}
}

// TestResumeWindowAfterUnackedReconnect: a member that reconnects without
// acking what it was pushed gets one push on its next connection, not its
// whole window again (bench --adversary: 64 KiB self-DMs re-pushed at
// every reconnect of a presence churn, up to 2 MiB each); once it acks,
// the window widens and the rest comes in order. A recipient whose
// backlog was never pushed (back after a day offline) gets the full
// window at once, and --resume-window 0 turns the limit off.
func TestResumeWindowAfterUnackedReconnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		c.Rate = 0
		// No redelivery by timer during the test: only the reconnects
		// re-push.
		c.RedeliverAfter = time.Hour
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	a := connect(t, b, alice, false, nil)
	const n = 10
	var order []string
	for range n {
		ack := a.sendAck(dm(t, alice, bob.pub(), "m"))
		order = append(order, ack.MessageID)
		if ack := a.sendAck(dm(t, alice, carol.pub(), "m")); ack.Error != nil {
			t.Fatalf("ack %+v", ack.Error)
		}
	}

	// Carol's backlog was never pushed: her first connection gets all of
	// it at once.
	cc := connect(t, b, carol, true, nil)
	cc.nextPush()
	if got := 1 + len(cc.pushesBeforeReply()); got != n {
		t.Fatalf("carol's first connection was pushed %d of her %d queued DMs at once, want all", got, n)
	}

	// Bob's first connection: the full window, none acked.
	bc1 := connect(t, b, bob, true, nil)
	bc1.nextPush()
	if got := 1 + len(bc1.pushesBeforeReply()); got != n {
		t.Fatalf("bob's first connection was pushed %d of %d, want all", got, n)
	}
	tripped := counterValue(t, b, "claudemesh_limits_tripped_total", "resume_window")
	bc1.ws.Close()

	// Bob again, nothing acked: one push, not his ten again.
	bc2 := connect(t, b, bob, true, nil)
	first := bc2.nextPush()
	if more := bc2.pushesBeforeReply(); len(more) != 0 {
		t.Fatalf("bob reconnected without acking and was pushed %d more at once, want 1 in all", 1+len(more))
	}
	if first.MessageID != order[0] {
		t.Fatalf("resumed with %s, want the oldest %s", first.MessageID, order[0])
	}
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "resume_window"); got != tripped+1 {
		t.Fatalf("limits_tripped{resume_window} %v, want %v", got, tripped+1)
	}

	// Acking widens the window: everything comes, in order.
	got := []string{first.MessageID}
	bc2.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{first.MessageID}})
	for len(got) < n {
		p := bc2.nextPush()
		got = append(got, p.MessageID)
		bc2.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}
	for i := range order {
		if got[i] != order[i] {
			t.Fatalf("push %d is %s, want %s (FIFO)", i, got[i], order[i])
		}
	}
}

// TestResumeWindowSiblingAndDisabled: a second presence of a member whose
// other connection holds pushes unacked starts with the resumed window
// too (else a member could open presence after presence, each pushed the
// same backlog), and --resume-window 0 gives every connection the full
// window.
func TestResumeWindowSiblingAndDisabled(t *testing.T) {
	t.Parallel()
	for _, window := range []int{1, 0} {
		b := startBroker(t, func(c *Config) {
			c.Rate = 0
			c.RedeliverAfter = time.Hour
			c.ResumeWindow = window
		})
		alice := createMesh(t, b, "team", "alice")
		bob := addMember(t, b, alice, "team", "bob")
		a := connect(t, b, alice, false, nil)
		const n = 5
		for range n {
			if ack := a.sendAck(dm(t, alice, bob.pub(), "m")); ack.Error != nil {
				t.Fatalf("ack %+v", ack.Error)
			}
		}
		s1 := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "one" })
		s1.nextPush()
		if got := 1 + len(s1.pushesBeforeReply()); got != n {
			t.Fatalf("first presence pushed %d, want %d", got, n)
		}
		s2 := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "two" })
		s2.nextPush()
		got := 1 + len(s2.pushesBeforeReply())
		want := 1
		if window == 0 {
			want = n
		}
		if got != want {
			t.Fatalf("--resume-window %d: second presence beside unacked pushes was pushed %d at once, want %d", window, got, want)
		}
		checkInflightCounts(t, b, bob.meshID)
		s1.closeClean()
		waitFor(t, "the first presence to be detached", func() bool {
			ms := b.hub.mesh(bob.meshID)
			ms.mu.Lock()
			defer ms.mu.Unlock()
			return len(ms.conns[bob.pub()]) == 1
		})
		checkInflightCounts(t, b, bob.meshID)
	}
}

// pushesAgainBeforeReply counts the pushes r receives before the answer
// to a list_peers it sends now, re-sent ones included.
func (r *rawConn) pushesAgainBeforeReply() int {
	r.t.Helper()
	_, all := r.pushesUntilReply()
	return all
}

// TestRedeliveryWindowForAConnectionThatNeverAcks: a live connection that
// acked nothing of what it was pushed is re-sent one push at
// --redeliver-after, not its whole window (up to 2 MiB every 30 s for as
// long as it stays open), and new messages still reach it; once it acks,
// the next round re-sends together all that expired. A connection that
// acked since its pushes went out is re-sent all of them.
func TestRedeliveryWindowForAConnectionThatNeverAcks(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		c.Rate = 0
		c.RedeliverAfter = 2 * time.Second
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	a := connect(t, b, alice, false, nil)
	bc := connect(t, b, bob, true, nil)
	cc := connect(t, b, carol, true, nil)
	const n = 10
	// sendAll pipelines n DMs to one recipient, so its pushes go out
	// together, well within --redeliver-after of each other.
	sendAll := func(to ident, n int) []string {
		var sends []wire.Send
		for range n {
			sends = append(sends, dm(t, alice, to.pub(), "m"))
		}
		for _, s := range sends {
			a.write(s)
		}
		var ids []string
		for len(ids) < len(sends) {
			var ack wire.Ack
			if a.next(&ack, wire.TypeAck, wire.TypeReceipt).Type == wire.TypeReceipt {
				continue // of carol's ack
			}
			if ack.Error != nil {
				t.Fatalf("ack %+v", ack.Error)
			}
			ids = append(ids, ack.MessageID)
		}
		return ids
	}
	// Carol acks her first push, then nothing: she is alive.
	sendAll(carol, n)
	first := cc.nextPush()
	cc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{first.MessageID}})
	for range n - 1 {
		cc.nextPush()
	}
	order := sendAll(bob, n)
	for range n {
		bc.nextPush()
	}

	// Bob acked nothing: the redelivery re-sends him one.
	tripped := counterValue(t, b, "claudemesh_limits_tripped_total", "redeliver_window")
	again := bc.nextPushAgain()
	if got := 1 + bc.pushesAgainBeforeReply(); got > n/2 {
		t.Fatalf("bob acked nothing and was re-pushed %d of his %d at once, want 1 (one per --redeliver-after)", got, n)
	}
	if again.MessageID != order[0] {
		t.Fatalf("re-pushed %s first, want the oldest %s", again.MessageID, order[0])
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "redeliver_window") <= tripped {
		t.Fatal("limits_tripped{redeliver_window} not counted")
	}
	// A new message still reaches him at once.
	fresh := sendAll(bob, 1)[0]
	if p := bc.nextPush(); p.MessageID != fresh {
		t.Fatalf("pushed %s, want the new %s", p.MessageID, fresh)
	}
	// Once bob acks, a round re-sends together every push that expired
	// (how many depends on how many single rounds went out meanwhile,
	// one per tick of --redeliver-after/4 on a loaded machine). The ack
	// is confirmed first (reqId): pushes read after the confirmation
	// came from rounds after it, but one whose expiry ran just before
	// the ack (a single push) may still come. Before, the test waited
	// for a round of n-1 with no bound: when single rounds had re-sent
	// some of them within the last --redeliver-after, the round after
	// the ack was smaller, every later round was single again (bob acks
	// nothing more), and the loop read one push per tick until the
	// package's 10-minute timeout.
	bc.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: "ack-again", MessageIDs: []string{again.MessageID}})
	var confirmed wire.Acked
	bc.next(&confirmed, wire.TypeAcked)
	for singles := 0; ; singles++ {
		p := bc.nextPushAgain()
		if p.MessageID == again.MessageID {
			t.Fatalf("%s re-pushed after its ack", p.MessageID)
		}
		if got := 1 + bc.pushesAgainBeforeReply(); got > 1 {
			break // the window is lifted
		}
		if singles == 1 {
			t.Fatal("bob acked and was still re-pushed one push per round, after the round that expired before the ack")
		}
	}

	// Carol, who acked, is re-pushed the rest of her window at once (her
	// round's pushes wait in the connection's buffer meanwhile).
	cc.nextPushAgain()
	if got := 1 + cc.pushesAgainBeforeReply(); got < n-1 {
		t.Fatalf("carol acked and was re-pushed %d of her %d unacked at once, want all", got, n-1)
	}
}

// TestResumedWindowLoadsOnlyWhatItPushes: a connection whose resumed
// window is one push loads one queued message, not a second one to find
// the window full. A member whose presence churns without acking (bench
// --adversary) otherwise cost an extra load of her oldest unacked 64 KiB
// self-DM (an 88 KB copy, under the mesh lock) at every reconnect.
func TestResumedWindowLoadsOnlyWhatItPushes(t *testing.T) {
	t.Parallel()
	var loads atomic.Int64
	b := startBroker(t, func(c *Config) {
		c.Rate = 0
		c.RedeliverAfter = time.Hour
		c.testHookRefillLoad = func() { loads.Add(1) }
	})
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	const n = 3
	for range n {
		if ack := a.sendAck(dm(t, alice, bob.pub(), "m")); ack.Error != nil {
			t.Fatalf("ack %+v", ack.Error)
		}
	}
	bc1 := connect(t, b, bob, true, nil)
	bc1.nextPush()
	if got := 1 + len(bc1.pushesBeforeReply()); got != n {
		t.Fatalf("bob's first connection was pushed %d of %d, want all", got, n)
	}
	open := counterValue(t, b, "claudemesh_connections_active", "")
	bc1.ws.Close()
	waitFor(t, "bob's first connection to be gone", func() bool {
		return counterValue(t, b, "claudemesh_connections_active", "") == open-1
	})

	loads.Store(0)
	bc2 := connect(t, b, bob, true, nil)
	bc2.nextPush()
	// The answer comes after the refill that pushed this one let go of
	// the mesh lock, loads and all.
	if more := bc2.pushesBeforeReply(); len(more) != 0 {
		t.Fatalf("resumed connection was pushed %d at once, want 1", 1+len(more))
	}
	if got := loads.Load(); got != 1 {
		t.Fatalf("the resumed connection's refill loaded %d messages to push one", got)
	}
}

// TestWindowedRedeliveryOncePerRound: a live connection that acked
// nothing since its expired pushes went out was re-sent one of them at
// every check of the redelivery loop (every --redeliver-after/4, at most
// 5 s: six in a --redeliver-after at the defaults), where the docs say one
// per --redeliver-after. It is one per --redeliver-after, per connection,
// also when what expired fits in --resume-window (two pushes in flight:
// the second was re-sent at the check after the first, a review found).
func TestWindowedRedeliveryOncePerRound(t *testing.T) {
	t.Parallel()
	for _, n := range []int{5, 2} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, func(c *Config) {
				c.Rate = 0
				c.RedeliverAfter = time.Hour // the loop itself expires nothing here
			})
			alice := createMesh(t, b, "team", "alice")
			bob := addMember(t, b, alice, "team", "bob")
			a := connect(t, b, alice, false, nil)
			bc := connect(t, b, bob, true, nil)
			for i := range n {
				if ack := a.sendAck(dm(t, alice, bob.pub(), fmt.Sprintf("m%d", i))); ack.Error != nil {
					t.Fatalf("ack %+v", ack.Error)
				}
			}
			for range n {
				bc.nextPush() // never acked
			}
			ms := b.hub.mesh(alice.meshID)
			ms.mu.Lock()
			defer ms.mu.Unlock()
			var c *conn
			for x := range ms.conns[bob.pub()] {
				c = x
			}
			if c == nil || len(c.inflight) != n {
				t.Fatalf("bob's connection: %+v", c)
			}
			after := b.cfg.RedeliverAfter
			tick := clamp(after/4, 10*time.Millisecond, 5*time.Second)
			t0 := time.Now().Add(after)
			var got []int
			for _, at := range []time.Time{t0, t0.Add(tick), t0.Add(2 * tick), t0.Add(after), t0.Add(after + tick)} {
				got = append(got, c.expireInflightLocked(at))
			}
			if want := []int{1, 0, 0, 1, 0}; !slices.Equal(got, want) {
				t.Fatalf("re-sent per check %v, want %v (one per --redeliver-after)", got, want)
			}
		})
	}
}
