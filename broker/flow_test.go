package broker

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/wire"
)

func TestDMQueuedForOfflineRecipientThenDelivered(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")

	a := connect(t, b, alice, false, nil)
	s := dm(t, alice, bob.pub(), "secret-offline-dm")
	s.ClientMessageID = "cm-1"
	ack := a.sendAck(s)
	if ack.Error != nil || ack.MessageID == "" || !ack.Queued || *ack.Online != 0 || *ack.Pending != 1 {
		t.Fatalf("ack %+v", ack)
	}

	// Bob comes online as a presence: the queued DM is pushed.
	bc := connect(t, b, bob, true, nil)
	p := bc.nextPush()
	if p.MessageID != ack.MessageID || p.SenderPubkey != alice.pub() || p.SenderName != "alice" || p.ClientMessageID != "cm-1" {
		t.Fatalf("push %+v", p)
	}
	if got := openPush(t, &p, bob); got != "secret-offline-dm" {
		t.Fatalf("body %q", got)
	}
	bc.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: "a1", MessageIDs: []string{p.MessageID}})
	var acked wire.Acked
	bc.next(&acked, wire.TypeAcked)
	if acked.ReqID != "a1" || len(acked.MessageIDs) != 1 {
		t.Fatalf("acked %+v", acked)
	}

	// Alice's transient connection gets the receipt for its own send.
	var r wire.Receipt
	a.next(&r, wire.TypeReceipt)
	if r.MessageID != ack.MessageID || r.RecipientPubkey != bob.pub() || r.ClientMessageID != "cm-1" || r.DeliveredAt == 0 {
		t.Fatalf("receipt %+v", r)
	}

	// message_status says delivered; a stranger cannot see it.
	var st wire.MessageStatus
	a.request(map[string]any{"type": "message_status", "clientMessageId": "cm-1"}, &st, wire.TypeMessageStatus)
	if len(st.Recipients) != 1 || st.Recipients[0].State != "delivered" || st.Recipients[0].DisplayName != "bob" {
		t.Fatalf("status %+v", st)
	}
	var e wire.Error
	bc.request(map[string]any{"type": "message_status", "messageId": ack.MessageID}, &e, wire.TypeError)
	if e.Code != wire.CodeNotFound {
		t.Fatalf("stranger status: %+v", e)
	}

	// Nothing is redelivered after the ack.
	bc.expectSilence(2 * b.cfg.RedeliverAfter)
}

func TestRedeliveryAndReconnect(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	bc := connect(t, b, bob, true, nil)
	a := connect(t, b, alice, false, nil)
	ack := a.sendAck(dm(t, alice, bob.pub(), "redeliver-me"))
	if *ack.Online != 1 {
		t.Fatalf("online %d", *ack.Online)
	}
	p1 := bc.nextPush()
	// Not acked: pushed again after --redeliver-after.
	p2 := bc.nextPushAgain()
	if p1.MessageID != p2.MessageID {
		t.Fatalf("redelivered a different message")
	}
	// Reconnect: pushed again on the new connection.
	bc.ws.Close()
	bc2 := connect(t, b, bob, true, nil)
	p3 := bc2.nextPush()
	if p3.MessageID != p1.MessageID {
		t.Fatalf("not redelivered on reconnect")
	}
	bc2.ack(p3.MessageID) // once confirmed, it is never pushed again
	bc2.expectSilence(2 * b.cfg.RedeliverAfter)
}

func TestFIFOAndFlowControlWithLargeBacklog(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.Rate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	const n = 300 // more than one window of 256 pushes
	ids := make([]string, 0, n)
	for i := 0; i < n; i++ {
		s := dm(t, alice, bob.pub(), "m")
		a.write(s)
		ids = append(ids, s.ID)
	}
	msgIDs := map[string]string{}
	for len(msgIDs) < n {
		var ack wire.Ack
		a.next(&ack, wire.TypeAck)
		if ack.Error != nil {
			t.Fatalf("ack error %+v", ack.Error)
		}
		msgIDs[ack.ID] = ack.MessageID
	}
	bc := connect(t, b, bob, true, nil)
	seen := map[string]bool{}
	for i := 0; i < n; {
		p := bc.nextPush()
		if seen[p.MessageID] {
			// A redelivery of a push whose ack is on its way (a slow
			// reader): allowed, and not acked again — its ack is coming.
			continue
		}
		seen[p.MessageID] = true
		bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
		if p.MessageID != msgIDs[ids[i]] {
			t.Fatalf("push %d out of order", i)
		}
		i++
	}
	// Once every ack is committed nothing is pending; until then a push
	// still unacked may be redelivered (slow machine), which is allowed —
	// anything else arriving is not.
	waitFor(t, "every ack committed", func() bool { return b.metrics.pending.Value() == 0 })
	deadline := time.Now().Add(2 * b.cfg.RedeliverAfter)
	for {
		data, err := bc.readErr(time.Until(deadline))
		if err == errNoFrame {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var p wire.Push
		if wire.Decode(data, &p) != nil || (p.Subtype != wire.SubtypeSystem && !seen[p.MessageID]) {
			t.Fatalf("unexpected frame after the backlog: %s", data)
		}
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	s := dm(t, alice, bob.pub(), "once")
	s.ClientMessageID = "same"
	first := a.sendAck(s)
	s.ID = "retry-1"
	again := a.sendAck(s)
	if !again.Duplicate || again.MessageID != first.MessageID {
		t.Fatalf("retry: %+v", again)
	}
	other := dm(t, alice, bob.pub(), "different")
	other.ClientMessageID = "same"
	reused := a.sendAck(other)
	if reused.Error == nil || reused.Error.Code != wire.CodeIdempotencyKeyReused {
		t.Fatalf("reuse: %+v", reused)
	}
	bc := connect(t, b, bob, true, nil)
	bc.nextPush()
	bc.expectSilence(b.cfg.RedeliverAfter / 2)
}

func TestBroadcastAndGroupReachOnlyTheirRecipients(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	dave := addMember(t, b, alice, "team", "dave")
	bc := connect(t, b, bob, true, func(h *wire.Hello) { h.Groups = []wire.Group{{Name: "dev/backend"}} })
	cc := connect(t, b, carol, true, nil)
	dc := connect(t, b, dave, true, func(h *wire.Hello) { h.Groups = []wire.Group{{Name: "ops"}} })
	a := connect(t, b, alice, false, nil)

	ack := a.sendAck(multi(t, alice, "*", "hello everyone", bob.pub(), carol.pub(), dave.pub()))
	if *ack.Pending != 3 || *ack.Online != 3 {
		t.Fatalf("broadcast ack %+v", ack)
	}
	for _, rc := range []struct {
		c  *rawConn
		id ident
	}{{bc, bob}, {cc, carol}, {dc, dave}} {
		p := rc.c.nextPush()
		if got := openPush(t, &p, rc.id); got != "hello everyone" {
			t.Fatalf("%s got %q", rc.id.name, got)
		}
		if p.Key == nil || p.Key.To != rc.id.pub() {
			t.Fatalf("%s got someone else's key", rc.id.name)
		}
		rc.c.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}

	// @dev reaches bob (dev/backend is a subgroup) and nobody else, even
	// though alice listed everyone.
	ack = a.sendAck(multi(t, alice, "@dev", "dev only", bob.pub(), carol.pub(), dave.pub()))
	if *ack.Pending != 1 {
		t.Fatalf("group ack %+v", ack)
	}
	p := bc.nextPush()
	if got := openPush(t, &p, bob); got != "dev only" || p.TargetSpec != "@dev" {
		t.Fatalf("bob got %q", got)
	}
	cc.expectSilence(300 * time.Millisecond)
	dc.expectSilence(10 * time.Millisecond)
}

func TestPriorityHolding(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	bc := connect(t, b, bob, true, nil)
	var ok wire.OK
	bc.request(map[string]any{"type": "set_status", "status": "working"}, &ok, wire.TypeOK)
	a := connect(t, b, alice, false, nil)
	held := dm(t, alice, bob.pub(), "held")
	a.sendAck(held)
	bc.expectSilence(200 * time.Millisecond)
	urgent := dm(t, alice, bob.pub(), "urgent")
	urgent.Priority = wire.PriorityNow
	ua := a.sendAck(urgent)
	p := bc.nextPush()
	if p.MessageID != ua.MessageID || p.Priority != "now" {
		t.Fatalf("now did not overtake: %+v", p)
	}
	bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	// Turning idle releases the held message (it may overtake the ok).
	bc.write(map[string]any{"type": "set_status", "status": "idle", "reqId": "idle"})
	var gotOK, gotHeld bool
	for !gotOK || !gotHeld {
		data := bc.read()
		env, _ := wire.Peek(data)
		switch env.Type {
		case wire.TypeOK:
			gotOK = true
		case wire.TypePush:
			var p wire.Push
			wire.Decode(data, &p)
			if openPush(t, &p, bob) != "held" {
				t.Fatalf("unexpected push")
			}
			gotHeld = true
		}
	}
}

func TestPresenceEventsGraceAndReplacement(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	ac := connect(t, b, alice, true, func(h *wire.Hello) { h.SessionID = "daemon"; h.Role = "control-plane" })
	bc := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "s1" })
	var ev wire.Push
	ac.next(&ev, wire.TypePush)
	if ev.Event != wire.EventPeerJoined {
		t.Fatalf("event %+v", ev)
	}
	var peers wire.Peers
	ac.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers)
	if len(peers.Peers) != 2 {
		t.Fatalf("peers %+v", peers.Peers)
	}
	// Same (member, sessionId) again: the old connection is replaced.
	bc2 := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "s1" })
	bc.expectClose(1000, "session_replaced")
	ac.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers)
	if len(peers.Peers) != 2 {
		t.Fatalf("replacement made a ghost: %+v", peers.Peers)
	}
	// Drop without a close frame: listed offline during grace, then left.
	bc2.ws.UnderlyingConn().Close()
	deadline := time.Now().Add(expectWithin)
	for {
		var p wire.Push
		ac.next(&p, wire.TypePush)
		if p.Event == wire.EventPeerLeft {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no peer_left")
		}
	}
	// Coming back after peer_left is peer_returned.
	connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "s1" })
	var p wire.Push
	ac.next(&p, wire.TypePush)
	if p.Event != wire.EventPeerReturned {
		t.Fatalf("event %s", p.Event)
	}
}

func TestSlowConsumerIsCutOffWithoutHurtingOthers(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.SendBuffer = minSendBuffer; c.Rate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	carol := addMember(t, b, alice, "team", "carol")
	// Pushes are flow-controlled (a window much smaller than the buffer),
	// so a reader that stops reading is overflowed by what is not: here,
	// the answers to its own requests. Large presences make each list_peers
	// answer a full page.
	for i := 0; i < 30; i++ {
		connect(t, b, carol, true, func(h *wire.Hello) {
			h.SessionID = fmt.Sprintf("big.%02d", i)
			h.Cwd, h.Hostname = "/"+strings.Repeat("d", 1000), strings.Repeat("h", 250)
		})
	}
	cc := connect(t, b, carol, true, nil)
	slow := dialSilent(t, b, bob)
	for i := 0; i < frameBurst; i++ {
		if err := slow.WriteMessage(websocket.TextMessage, []byte(`{"type":"list_peers","reqId":"p"}`)); err != nil {
			break // already cut off
		}
	}
	waitFor(t, "a slow-consumer disconnect", func() bool { return b.metrics.slowConsumerDrops.Value() > 0 })
	// Reading now finds the close 4008 after whatever was buffered — or a
	// reset: the client never answered the close, and the broker cuts the
	// TCP connection a second later, possibly with unread requests of
	// the client still in its buffer.
	for {
		_, _, err := slow.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != wire.CloseSlowConsumer {
			t.Fatalf("slow consumer closed with %v", err)
		}
		if !errors.As(err, &ce) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("slow consumer: %v", err)
		}
		break
	}
	// Everyone else is unaffected.
	a := connect(t, b, alice, false, nil)
	a.sendAck(dm(t, alice, carol.pub(), "still here"))
	if p := cc.nextPush(); openPush(t, &p, carol) != "still here" {
		t.Fatal("carol's push")
	}
}

func TestRestartKeepsAckedMessages(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	ack := a.sendAck(dm(t, alice, bob.pub(), "survives-restart"))
	b.Close()
	cfg2 := cfg
	b2 := startWith(t, cfg2)
	bc := connect(t, b2, bob, true, nil)
	p := bc.nextPush()
	if p.MessageID != ack.MessageID || openPush(t, &p, bob) != "survives-restart" {
		t.Fatalf("lost across restart")
	}
	// The store file holds no plaintext.
	data, err := os.ReadFile(b2.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "survives-restart") {
		t.Fatal("plaintext in broker.db")
	}
}

func TestQueueTTLExpiresUndelivered(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.QueueTTL = 300 * time.Millisecond })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	ack := a.sendAck(dm(t, alice, bob.pub(), "too late"))
	deadline := time.Now().Add(expectWithin)
	for {
		var st wire.MessageStatus
		a.request(map[string]any{"type": "message_status", "messageId": ack.MessageID}, &st, wire.TypeMessageStatus)
		if len(st.Recipients) == 1 && st.Recipients[0].State == wire.StateExpired {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never expired: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Bob connects and gets nothing.
	bc := connect(t, b, bob, true, nil)
	bc.expectSilence(300 * time.Millisecond)
}

func TestMetricsAreServed(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	a.sendAck(dm(t, alice, bob.pub(), "count me"))
	resp, err := http.Get("http://" + b.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`claudemesh_messages_routed_total{kind="box",priority="next"} 1`,
		"claudemesh_connections_active 2",
		"claudemesh_send_ack_seconds_count 1",
		"claudemesh_deliveries_pending 1",
		"claudemesh_store_commit_seconds_bucket",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// The public port does not serve metrics.
	if r, err := http.Get(b.HTTPURL() + "/metrics"); err == nil && r.StatusCode == 200 {
		t.Error("metrics on the public port")
	}
}

// /health and /health/ready answer with their keys in one order, on every
// request and every node (they were maps, which encoding/json/v2 does not
// sort).
func TestHealthKeysInOneOrder(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.Version = "1.2.3" })
	for path, want := range map[string]string{
		"/health":       `{"status":"ok","version":"1.2.3"}`,
		"/health/ready": `{"status":"ready","version":"1.2.3"}`,
	} {
		for range 20 {
			resp, err := http.Get(b.HTTPURL() + path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got := strings.TrimSpace(string(body)); got != want {
				t.Fatalf("%s: %s, want %s", path, got, want)
			}
		}
	}
}
