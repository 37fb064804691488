package broker

import (
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"claudemesh/wire"
)

// A send buffer below the 8 MiB default must not break delivery: the
// replay window and a fetch_queued reply are clamped to fit in it, so a
// recipient with a large backlog is never cut off with 4008 (issue #12
// item 13).
func TestSmallSendBufferStillDeliversBacklog(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.SendBuffer = 512 << 10; c.Rate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	big := strings.Repeat("x", 30000) // ~40 KB frames: 40 of them are 1.6 MB
	const n = 40
	want := map[string]bool{}
	for i := 0; i < n; i++ {
		ack := a.sendAck(dm(t, alice, bob.pub(), big))
		if ack.Error != nil {
			t.Fatalf("ack %+v", ack.Error)
		}
		want[ack.MessageID] = true
	}
	// A cold reader's fetch_queued: one reply, within the buffer, and the
	// connection stays open.
	cold := connect(t, b, bob, false, nil)
	var q wire.Queued
	cold.request(map[string]any{"type": "fetch_queued", "limit": 500}, &q, wire.TypeQueued)
	if len(q.Messages) == 0 || len(q.Messages) == n || !q.More {
		t.Fatalf("fetch_queued: %d messages, more=%v; want a partial page", len(q.Messages), q.More)
	}
	var peers wire.Peers
	cold.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers) // still open
	// A presence gets the whole backlog, acking as it reads.
	bc := connect(t, b, bob, true, nil)
	got := map[string]bool{}
	for len(got) < n {
		p := bc.nextPush()
		if !want[p.MessageID] {
			t.Fatalf("unexpected push %s", p.MessageID)
		}
		got[p.MessageID] = true
		bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}
	if n := b.metrics.slowConsumerDrops.Value(); n != 0 {
		t.Fatalf("%v slow-consumer disconnects", n)
	}
}

// --max-pending is checked and counted atomically: a burst of pipelined
// sends to an offline recipient queues exactly the cap (issue #12 item 14).
func TestMaxPendingHoldsUnderABurst(t *testing.T) {
	t.Parallel()
	const limit = 50
	b := startBroker(t, func(c *Config) { c.MaxPending = limit; c.Rate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	a := connect(t, b, alice, false, nil)
	c := connect(t, b, carol, false, nil)
	const burst = 135
	aliceSent := map[string]wire.Send{}
	for i := 0; i < burst; i++ {
		s := dm(t, alice, bob.pub(), "a")
		aliceSent[s.ID] = s
		a.write(s)
		c.write(dm(t, carol, bob.pub(), "c"))
	}
	ok, full := 0, 0
	var aliceRefused *wire.Send // her first refused send
	for _, r := range []*rawConn{a, c} {
		for i := 0; i < burst; i++ {
			var ack wire.Ack
			r.next(&ack, wire.TypeAck)
			switch {
			case ack.Error == nil:
				ok++
			case ack.Error.Code == wire.CodeRecipientQueueFull:
				full++
				if s, mine := aliceSent[ack.ID]; mine && aliceRefused == nil {
					aliceRefused = &s
				}
			default:
				t.Fatalf("ack %+v", ack.Error)
			}
		}
	}
	if ok != limit || full != 2*burst-limit {
		t.Fatalf("queued %d and refused %d of %d; want exactly %d queued", ok, full, 2*burst, limit)
	}
	// Delivering frees the count again.
	bc := connect(t, b, bob, true, nil)
	pushed := map[string]bool{}
	for acked := 0; acked < limit || len(pushed) < limit; {
		data := bc.read()
		env, _ := wire.Peek(data)
		switch {
		case env.Type == wire.TypeAcked:
			acked++
		case env.Type == wire.TypePush && !strings.Contains(string(data), `"subtype":"system"`):
			var p wire.Push
			if err := wire.Decode(data, &p); err != nil {
				t.Fatal(err)
			}
			if pushed[p.MessageID] = true; len(pushed) > limit {
				t.Fatalf("more than %d messages queued", limit)
			}
			bc.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: "k" + p.MessageID, MessageIDs: []string{p.MessageID}})
		}
	}
	// Alice's first refused send, sent again (her refusals held her later
	// sends to bob behind it, broker/sendorder.go).
	if aliceRefused == nil {
		t.Fatal("none of alice's sends was refused")
	}
	if ack := a.sendAck(*aliceRefused); ack.Error != nil {
		t.Fatalf("after delivery: %+v", ack.Error)
	}
}

// dialSilent authenticates a presence with its handshake read by hand and
// returns the bare connection, which nothing reads afterwards: a client
// that has stopped reading, as the harness's pumped rawConn cannot be.
func dialSilent(t *testing.T, b *Broker, id ident) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(b.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	r := &rawConn{t: t, ws: ws, b: b}
	_, data, err := ws.ReadMessage()
	if err != nil || wire.Decode(data, &r.challenge) != nil {
		t.Fatalf("challenge: %v %s", err, data)
	}
	if err := ws.WriteMessage(websocket.TextMessage, wire.MustEncode(r.helloFrame(id, nil))); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if env, _ := wire.Peek(data); env.Type == wire.TypeHelloAck {
			return ws
		}
	}
}
