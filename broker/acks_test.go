package broker

import (
	"fmt"
	"testing"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// TestUnknownAcksNeverReachTheCommitter: client_ack frames full of ids that
// settle nothing (a member of another mesh flooding them used to stall
// every mesh's sends, one commit per frame) are answered without a write,
// limited per connection, and do not disturb another mesh's traffic; a
// real ack still settles its message.
func TestUnknownAcksNeverReachTheCommitter(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.AckRate = 2 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	mallory := createMesh(t, b, "other", "mallory")
	mc := connect(t, b, mallory, true, nil)
	bc := connect(t, b, bob, true, nil)
	ac := connect(t, b, alice, false, nil)

	junk := make([]string, maxAckIDs)
	for i := range junk {
		junk[i] = ulid.Make().String()
	}
	commits := counterValue(t, b, "claudemesh_store_commit_seconds_count", "")
	const frames = 20
	for i := range frames { // pipelined: the limit is per second, not per round trip
		mc.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: fmt.Sprintf("k%d", i), MessageIDs: junk})
	}
	limited := 0
	for i := range frames {
		data := mc.read()
		env, _ := wire.Peek(data)
		switch env.Type {
		case wire.TypeAcked:
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
	if got := counterValue(t, b, "claudemesh_store_commit_seconds_count", ""); got != commits {
		t.Fatalf("acks of unknown ids made %v commits", got-commits)
	}
	if limited == 0 || counterValue(t, b, "claudemesh_limits_tripped_total", "ack_rate") < 1 {
		t.Fatalf("%d pipelined ack frames at --ack-rate 2: %d refused", frames, limited)
	}

	// The other mesh is unaffected, and a real ack still settles.
	ack := ac.sendAck(dm(t, alice, bob.pub(), "through"))
	if ack.Error != nil {
		t.Fatal(ack.Error)
	}
	p := bc.nextPush()
	var acked wire.Acked
	bc.request(map[string]any{"type": "client_ack", "messageIds": append([]string{p.MessageID}, junk[:10]...)}, &acked, wire.TypeAcked)
	if counterValue(t, b, "claudemesh_deliveries_pending", "") != 0 {
		t.Fatal("the real ack did not settle the delivery")
	}
}
