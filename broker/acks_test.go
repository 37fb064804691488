package broker

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// ackBurst pipelines frames client_ack frames of ids and reads their
// answers, returning how many were acked and how many refused rate_limited.
func ackBurst(t *testing.T, c *rawConn, frames int, ids []string) (acked, limited int) {
	t.Helper()
	for i := range frames { // pipelined: the limits are per second, not per round trip
		c.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: fmt.Sprintf("k%d", i), MessageIDs: ids})
	}
	answered := map[string]bool{}
	for i := range frames {
		data := c.read()
		env, _ := wire.Peek(data)
		// Every frame's answer, acked or refused, carries its reqId: a
		// client waiting for one (client.ClientAck) otherwise waits for
		// ever.
		if !strings.HasPrefix(env.ReqID, "k") || answered[env.ReqID] {
			t.Fatalf("answer %d: reqId %q, want one of k0..k%d not answered before: %s", i, env.ReqID, frames-1, data)
		}
		answered[env.ReqID] = true
		switch env.Type {
		case wire.TypeAcked:
			acked++
		case wire.TypeError:
			var e wire.Error
			wire.Decode(data, &e)
			if e.Code != wire.CodeRateLimited {
				t.Fatalf("ack %d: %+v", i, e)
			}
			limited++
		default:
			t.Fatalf("ack %d answered %s", i, data)
		}
	}
	return acked, limited
}

func junkIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = ulid.Make().String()
	}
	return out
}

// TestRefusedConnectionIsReadAtItsRetry: once a frame is refused
// rate_limited, the broker reads the connection's next frame only after
// the retryAfterMs it gave: a client that floods regardless is read at
// the limit's rate (its frames wait in the socket), not answered as fast
// as it writes, and stays connected; one that waits loses nothing.
func TestRefusedConnectionIsReadAtItsRetry(t *testing.T) {
	t.Parallel()
	const ackRate = 4 // a burst of 4, then one frame every 250 ms
	b := startBroker(t, func(c *Config) { c.AckRate = ackRate })
	alice := createMesh(t, b, "team", "alice")
	ac := connect(t, b, alice, true, nil)
	ids := junkIDs(1)
	const flood = 40
	start := time.Now()
	for i := range flood {
		ac.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: fmt.Sprintf("f%d", i), MessageIDs: ids})
	}
	answered, refused := 0, 0
	var last time.Time
	for time.Since(start) < time.Second {
		data, err := ac.readErr(time.Second)
		if err != nil {
			break
		}
		last = time.Now()
		answered++
		if env, _ := wire.Peek(data); env.Type == wire.TypeError {
			var e wire.Error
			wire.Decode(data, &e)
			if e.Code != wire.CodeRateLimited || e.RetryAfterMs <= 0 {
				t.Fatalf("refusal %+v: want rate_limited with retryAfterMs", e)
			}
			refused++
		}
	}
	// The burst, then per retry (250 ms) one refusal and the frame read
	// after it, for as long as this took however slow the machine was;
	// without pacing all 40 are answered at once.
	if allowed := ackRate + 1 + 2*int(last.Sub(start)/(time.Second/ackRate)) + 2; refused == 0 || answered > allowed {
		t.Fatalf("%d of %d flooded frames answered (%d refused) in %v; want at most %d", answered, flood, refused, last.Sub(start), allowed)
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "read_paused") == 0 {
		t.Fatal("read_paused not counted")
	}
	// Still connected, and the rest of the flood is read in time.
	for answered < flood {
		if _, err := ac.readErr(expectWithin); err != nil {
			t.Fatalf("after %d answers: %v", answered, err)
		}
		answered++
	}
}

// TestUnknownAcksNeverReachTheCommitter: client_ack frames full of ids that
// settle nothing (a member of another mesh flooding them used to stall
// every mesh's sends, one commit per frame) are answered without a write,
// and past the member's lookup budget refused; another mesh's traffic is
// undisturbed, and a real ack still settles its message.
func TestUnknownAcksNeverReachTheCommitter(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate = 10 }) // lookups: 50 ids/s, burst 500 (one full frame)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	mallory := createMesh(t, b, "other", "mallory")
	mc := connect(t, b, mallory, true, nil)
	bc := connect(t, b, bob, true, nil)
	ac := connect(t, b, alice, false, nil)

	commits := counterValue(t, b, "claudemesh_store_commit_seconds_count", "")
	// Within the budget: answered, no write.
	if acked, limited := ackBurst(t, mc, 2, junkIDs(50)); acked != 2 || limited != 0 {
		t.Fatalf("2 small acks: %d acked, %d refused", acked, limited)
	}
	// A flood: frames of 500 invented ids, past what is left of the
	// budget (at most one, once it refilled while the others waited).
	if acked, _ := ackBurst(t, mc, 5, junkIDs(maxAckIDs)); acked > 1 {
		t.Fatalf("%d frames of 500 unknown ids were looked up", acked)
	}
	if got := counterValue(t, b, "claudemesh_store_commit_seconds_count", ""); got != commits {
		t.Fatalf("acks of unknown ids made %v commits", got-commits)
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "unknown_acks") < 1 {
		t.Fatal("unknown_acks not counted")
	}

	// The other mesh is unaffected, and a real ack still settles.
	if ack := ac.sendAck(dm(t, alice, bob.pub(), "through")); ack.Error != nil {
		t.Fatal(ack.Error)
	}
	p := bc.nextPush()
	var acked wire.Acked
	bc.request(map[string]any{"type": "client_ack", "messageIds": append([]string{p.MessageID}, junkIDs(10)...)}, &acked, wire.TypeAcked)
	if counterValue(t, b, "claudemesh_deliveries_pending", "") != 0 {
		t.Fatal("the real ack did not settle the delivery")
	}
}

// TestAckFramesAreLimited: --ack-rate bounds client_ack frames per
// connection (they used to be exempt from every frame limit).
func TestAckFramesAreLimited(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate = 2 })
	alice := createMesh(t, b, "team", "alice")
	ac := connect(t, b, alice, true, nil)
	if _, limited := ackBurst(t, ac, 20, junkIDs(1)); limited == 0 {
		t.Fatal("20 pipelined ack frames at --ack-rate 2: none refused")
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "ack_rate") < 1 {
		t.Fatal("ack_rate not counted")
	}
}

// TestIgnoringRateLimitsClosesTheConnection: a connection that keeps
// sending ack frames after being answered rate_limited (past a burst of
// refusals) is closed with 1008 rate_limited; parsing and answering a
// flood costs every mesh's CPU even when each frame is refused. Its reads
// are paced (pacing.go): one refusal per retry at most, so the test
// makes the member's budget of refusals three.
func TestIgnoringRateLimitsClosesTheConnection(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate, c.refusalBurst, c.refusalRate = 2, 3, 0.001 })
	alice := createMesh(t, b, "team", "alice")
	ac := connect(t, b, alice, true, nil)
	ids := junkIDs(1)
	for i := range 20 {
		if err := ac.ws.WriteJSON(wire.ClientAck{Type: wire.TypeClientAck, ReqID: fmt.Sprintf("f%d", i), MessageIDs: ids}); err != nil {
			break // closed while writing: what this test expects
		}
	}
	for {
		_, err := ac.readErr(expectWithin)
		if err == errNoFrame {
			t.Fatal("the flooding connection is still open")
		}
		if err == nil {
			continue
		}
		// The close frame, or a reset when the broker cut the socket
		// with frames of the flood still unread in it.
		var ce *websocket.CloseError
		if errors.As(err, &ce) && (ce.Code != wire.ClosePolicy || ce.Text != wire.CodeRateLimited) {
			t.Fatalf("closed with %v, want 1008 %s", err, wire.CodeRateLimited)
		}
		if !errors.As(err, &ce) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("connection ended with %v", err)
		}
		break
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "refusals") != 1 {
		t.Fatal("refusals not counted")
	}
	// An honest connection of the same member is untouched.
	if _, limited := ackBurst(t, connect(t, b, alice, true, nil), 2, junkIDs(1)); limited != 0 {
		t.Fatal("a new connection starts with its own budget")
	}
}

// TestUnknownAcksRefusedBeforeDecoding: once a member's lookup budget has
// fewer ids left than an ack frame carries, and nothing is in flight to
// the connection's key, the frame is refused rate_limited before it is
// parsed: an ill-shaped one (an id that is a number) gets rate_limited,
// not invalid_argument, which only a parse can find. A connection of the
// same member with pushes in flight still has its acks parsed and
// settled.
func TestUnknownAcksRefusedBeforeDecoding(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate = 10 }) // lookups: 50 ids/s, burst 500 (one full frame)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	flood := connect(t, b, bob, false, nil)

	ids := junkIDs(maxAckIDs)
	spendLookups(t, flood)
	wantAckRefusedUnparsed(t, flood, ids, "nothing in flight")
	var e wire.Error
	// The same frame within the budget is parsed: refused for its shape.
	small := []byte(`{"type":"client_ack","reqId":"early-2","messageIds":["` + ids[0] + `",7]}`)
	flood.write(small)
	flood.next(&e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument || e.ReqID != "early-2" {
		t.Fatalf("an ill-shaped 2-id ack within the budget: %+v, want invalid_argument", e)
	}

	// Bob's presence with a push in flight: its ack, 500 ids with the real
	// one among them, is parsed and settles the push.
	bc := connect(t, b, bob, true, nil)
	ac := connect(t, b, alice, false, nil)
	if ack := ac.sendAck(dm(t, alice, bob.pub(), "through")); ack.Error != nil {
		t.Fatal(ack.Error)
	}
	p := bc.nextPush()
	var acked wire.Acked
	bc.request(map[string]any{"type": "client_ack", "messageIds": []string{p.MessageID}}, &acked, wire.TypeAcked)
	if counterValue(t, b, "claudemesh_deliveries_pending", "") != 0 {
		t.Fatal("the real ack did not settle the delivery")
	}
}

// TestUnknownAcksRefusedBeforeDecodingWithPushesInFlight: pushes in flight
// to the key spare only as many ids as there are pushes; a 500-id frame
// past the lookup budget is still refused before it is parsed (an
// ill-shaped one gets rate_limited, not invalid_argument), and the ack of
// the push in flight still settles it.
func TestUnknownAcksRefusedBeforeDecodingWithPushesInFlight(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate = 10 }) // lookups: 50 ids/s, burst 500 (one full frame)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	bc := connect(t, b, bob, true, nil)
	ac := connect(t, b, alice, false, nil)
	if ack := ac.sendAck(dm(t, alice, bob.pub(), "in flight")); ack.Error != nil {
		t.Fatal(ack.Error)
	}
	p := bc.nextPush()

	spendLookups(t, bc)
	wantAckRefusedUnparsed(t, bc, junkIDs(maxAckIDs), "one push in flight")
	var acked wire.Acked
	bc.request(map[string]any{"type": "client_ack", "messageIds": []string{p.MessageID}}, &acked, wire.TypeAcked)
	if counterValue(t, b, "claudemesh_deliveries_pending", "") != 0 {
		t.Fatal("the ack of the push in flight did not settle it")
	}
}

// spendLookups spends the member's lookup budget (one full frame at
// --ack-rate 10) with an ack of 500 ids nobody was pushed.
func spendLookups(t *testing.T, r *rawConn) {
	t.Helper()
	if acked, limited := ackBurst(t, r, 1, junkIDs(maxAckIDs)); acked != 1 || limited != 0 {
		t.Fatalf("a full frame within the lookup budget: %d acked, %d refused", acked, limited)
	}
}

// wantAckRefusedUnparsed writes a client_ack of ids whose last one is a
// number, which only a parse can find ill-shaped, and wants it refused
// rate_limited (so before it was parsed), naming its reqId.
func wantAckRefusedUnparsed(t *testing.T, r *rawConn, ids []string, why string) {
	t.Helper()
	illShaped := []byte(`{"type":"client_ack","reqId":"early-1","messageIds":["` + strings.Join(ids[:len(ids)-1], `","`) + `",7]}`)
	r.write(illShaped)
	var e wire.Error
	r.next(&e, wire.TypeError)
	if e.Code != wire.CodeRateLimited || e.ReqID != "early-1" {
		t.Fatalf("an ill-shaped %d-id ack past the lookup budget, %s: %+v, want rate_limited before it is parsed", len(ids), why, e)
	}
}

func TestAckIDsAtLeast(t *testing.T) {
	for _, c := range []struct {
		frame any
		want  int
	}{
		{wire.ClientAck{Type: wire.TypeClientAck, MessageID: junkIDs(1)[0]}, 1},
		{wire.ClientAck{Type: wire.TypeClientAck, ReqID: "r", MessageIDs: junkIDs(1)}, 1},
		{wire.ClientAck{Type: wire.TypeClientAck, ReqID: "r", MessageIDs: junkIDs(500)}, 499},
		{wire.ClientAck{Type: wire.TypeClientAck, ReqID: "r", MessageIDs: junkIDs(3), MessageID: junkIDs(1)[0]}, 4},
	} {
		data := wire.MustEncode(c.frame)
		var a wire.ClientAck
		wire.Decode(data, &a)
		n := len(a.MessageIDs)
		if a.MessageID != "" {
			n++
		}
		if got := ackIDsAtLeast(data); got != c.want || got > n {
			t.Errorf("%s: %d, want %d (at most the %d it carries)", data, got, c.want, n)
		}
	}
}

// TestReceiptAckedFromAFetchSettles: a receipt read with fetch_queued (or
// pushed on a connection that dropped before its ack) is acked on a
// connection it is not in flight on; the ack settles it like a pushed
// one's, so it is neither fetched nor pushed again.
func TestReceiptAckedFromAFetchSettles(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	bc := connect(t, b, bob, true, nil)
	ac := connect(t, b, alice, false, nil) // transient: nothing is pushed to it
	s := dm(t, alice, bob.pub(), "receipt, please")
	if ack := ac.sendAck(s); ack.Error != nil {
		t.Fatalf("send: %+v", ack.Error)
	}
	ac.ws.Close()
	p := bc.nextPush()
	bc.ack(p.MessageID)

	fetch := func(c *rawConn) []wire.Receipt {
		var q wire.Queued
		c.request(map[string]any{"type": "fetch_queued"}, &q, wire.TypeQueued)
		return q.Receipts
	}
	// The receipt is queued once bob's ack committed (it was answered).
	ac2 := connect(t, b, alice, false, nil)
	rs := fetch(ac2)
	if len(rs) != 1 || rs[0].MessageID != p.MessageID {
		t.Fatalf("fetch_queued receipts %+v; want the one of %s", rs, p.MessageID)
	}
	ac2.ack(rs[0].ReceiptID)
	// The queue is what every push and fetch reads: gone from it, the
	// receipt is never redelivered.
	if rs := fetch(ac2); len(rs) != 0 {
		t.Fatalf("fetched again after its ack was answered: %+v", rs)
	}
}
