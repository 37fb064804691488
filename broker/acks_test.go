package broker

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

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
	for i := range frames {
		data := c.read()
		env, _ := wire.Peek(data)
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

// TestUnknownAcksNeverReachTheCommitter: client_ack frames full of ids that
// settle nothing (a member of another mesh flooding them used to stall
// every mesh's sends, one commit per frame) are answered without a write,
// and past the member's lookup budget refused; another mesh's traffic is
// undisturbed, and a real ack still settles its message.
func TestUnknownAcksNeverReachTheCommitter(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate = 10 }) // lookups: 50 ids/s, burst 200
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
	// A flood: frames of 500 invented ids, each past the whole budget.
	if acked, _ := ackBurst(t, mc, 5, junkIDs(maxAckIDs)); acked != 0 {
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
// flood costs every mesh's CPU even when each frame is refused.
func TestIgnoringRateLimitsClosesTheConnection(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.AckRate = 2 })
	alice := createMesh(t, b, "team", "alice")
	ac := connect(t, b, alice, true, nil)
	ids := junkIDs(1)
	for i := range refusalBurst + 100 {
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
