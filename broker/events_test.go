package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/wire"
)

// TestPresenceEventsCoalescePerReceiver drives a mesh's event log by hand:
// a lone event goes out at once; a burst within the interval waits for the
// flush, which hands each receiver one peers_changed counting the events
// it would have got (not its own, not a hidden presence of another
// member); a small burst goes out event by event; a receiver that asked
// for list_peers meanwhile has its share already.
func TestPresenceEventsCoalescePerReceiver(t *testing.T) {
	b := startBroker(t, nil)
	ms := &meshState{presences: map[string]*presence{}}
	alice, bob := &member{}, &member{}
	newReceiver := func(key string, m *member) (*presence, *conn) {
		c := &conn{b: b, ms: ms, wake: make(chan struct{}, 1)}
		c.writing.Store(true) // no writer: the test reads the queue itself
		p := &presence{key: key, member: m, conn: c}
		c.pres = p
		ms.presences[key] = p
		return p, c
	}
	pa, ca := newReceiver("a", alice)
	_, cb := newReceiver("b", bob)
	queued := func(c *conn) []wire.Push {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		var out []wire.Push
		for _, f := range c.queue {
			var p wire.Push
			if err := wire.Decode(f.b, &p); err != nil {
				t.Fatal(err)
			}
			out = append(out, p)
		}
		c.queue, c.qbytes = nil, 0
		return out
	}
	event := func(i int) []byte {
		return wire.MustEncode(wire.Push{Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: wire.EventPeerJoined,
			MessageID: newID(), EventData: wire.PeerEvent{Pubkey: fmt.Sprint(i)}})
	}
	other := &presence{key: "x", member: bob}
	flush := func() { flushNow(ms) }
	summary := func(q []wire.Push) int {
		t.Helper()
		if len(q) != 1 || q[0].Event != wire.EventPeersChanged || q[0].Subtype != wire.SubtypeSystem {
			t.Fatalf("want one peers_changed, got %+v", q)
		}
		var ev wire.PeersChangedEvent
		if err := decodeInto(q[0].EventData, &ev); err != nil {
			t.Fatal(err)
		}
		return ev.Events
	}

	ms.mu.Lock()
	ms.logEventLocked(event(0), other, nil)
	ms.mu.Unlock()
	if qa, qb := queued(ca), queued(cb); len(qa) != 1 || len(qb) != 1 {
		t.Fatalf("a lone event: %d and %d frames", len(qa), len(qb))
	}
	// A burst: eventBatch+10 public events, 2 about alice's presence, 3
	// of a hidden presence of bob's.
	const burst = eventBatch + 10
	ms.mu.Lock()
	for i := 1; i <= burst; i++ {
		ms.logEventLocked(event(i), other, nil)
	}
	ms.logEventLocked(event(burst+1), pa, nil)
	ms.logEventLocked(event(burst+2), pa, nil)
	for i := burst + 3; i < burst+6; i++ {
		ms.logEventLocked(event(i), other, bob)
	}
	ms.mu.Unlock()
	if qa := queued(ca); len(qa) != 0 {
		t.Fatalf("a burst went out before the flush: %d frames", len(qa))
	}
	flush()
	if n := summary(queued(ca)); n != burst {
		t.Fatalf("alice's peers_changed counts %d, want %d (not her own 2, not bob's hidden 3)", n, burst)
	}
	if n := summary(queued(cb)); n != burst+5 {
		t.Fatalf("bob's peers_changed counts %d, want %d", n, burst+5)
	}
	// A small burst goes out as it is; a list_peers answer releases the
	// asker's share early, and the flush does not repeat it.
	ms.mu.Lock()
	for i := burst + 6; i < burst+9; i++ {
		ms.logEventLocked(event(i), other, nil)
	}
	ca.releaseEventsLocked()
	ms.mu.Unlock()
	if qa := queued(ca); len(qa) != 3 || qa[0].Event != wire.EventPeerJoined {
		t.Fatalf("released early: %+v", qa)
	}
	flush()
	if qa, qb := queued(ca), queued(cb); len(qa) != 0 || len(qb) != 3 {
		t.Fatalf("after the flush: alice %d frames (want 0), bob %d (want 3)", len(qa), len(qb))
	}
}

// logEventLocked logs a presence event frame about subject (never a start
// that a peer_left could cancel). Caller holds ms.mu.
func (ms *meshState) logEventLocked(frame []byte, subject *presence, onlyFor *member) {
	ms.logLocked(loggedEvent{frame: frame, subject: subject, onlyFor: onlyFor})
}

// flushNow runs the mesh's pending flush of presence events at once.
func flushNow(ms *meshState) {
	ms.mu.Lock()
	if ms.eventLog.timer != nil {
		ms.eventLog.timer.Stop()
		ms.eventLog.timer = nil
	}
	ms.flushEventsLocked(time.Now())
	ms.mu.Unlock()
}

func decodeInto(data any, v any) error {
	return wire.Decode(wire.MustEncode(data), v)
}

// TestPresenceStormReachesEveryReceiverComplete: many presences joining at
// once reach a receiver as individual events and peers_changed counts that
// add up to exactly the number of joins, in fewer frames than events.
func TestPresenceStormReachesEveryReceiverComplete(t *testing.T) {
	b := startBroker(t, func(c *Config) { c.PresenceRate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	ac := connect(t, b, alice, true, nil)
	const n = eventBatch + 16
	for i := 0; i < n; i++ {
		connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = fmt.Sprintf("storm.%02d", i) })
	}
	events, frames := 0, 0
	deadline := time.Now().Add(30 * time.Second)
	for events < n {
		data, err := ac.readErr(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d events in %d frames: %v", events, frames, err)
		}
		var p wire.Push
		if wire.Decode(data, &p) != nil || p.Subtype != wire.SubtypeSystem {
			continue
		}
		frames++
		switch p.Event {
		case wire.EventPeerJoined:
			events++
		case wire.EventPeersChanged:
			var ev wire.PeersChangedEvent
			if err := decodeInto(p.EventData, &ev); err != nil || ev.Events < 1 {
				t.Fatalf("peers_changed %+v", p.EventData)
			}
			events += ev.Events
		}
	}
	if events != n {
		t.Fatalf("%d events announced for %d joins", events, n)
	}
	t.Logf("%d joins in %d frames", n, frames)
	// And the directory is complete.
	var peers wire.Peers
	ac.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers)
	if len(peers.Peers) != n+1 {
		t.Fatalf("list_peers has %d presences, want %d", len(peers.Peers), n+1)
	}
}

// TestMemberDMTargetsFollowTheControlPlane: a DM to a member goes to its
// control-plane presence while one is connected, and to its other member
// presences once that one is gone — the target rule of 01-protocol §4,
// which the broker decides with a count rather than a walk of the
// member's presences.
func TestMemberDMTargetsFollowTheControlPlane(t *testing.T) {
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	cli1 := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "cli-1" })
	cli2 := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "cli-2" })
	daemon := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "daemon"; h.Role = wire.RoleControlPlane })
	a := connect(t, b, alice, false, nil)
	ack := a.sendAck(dm(t, alice, bob.pub(), "to the daemon"))
	if p := daemon.nextPush(); p.MessageID != ack.MessageID {
		t.Fatalf("daemon got %s", p.MessageID)
	}
	cli1.expectSilence(200 * time.Millisecond)
	// The daemon goes (cleanly, unacked): the CLI presences are targets now
	// and get what is still queued.
	daemon.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	for _, c := range []*rawConn{cli1, cli2} {
		if p := c.nextPush(); p.MessageID != ack.MessageID {
			t.Fatalf("cli got %s", p.MessageID)
		}
	}
	// A second control-plane presence takes over again.
	daemon2 := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "daemon"; h.Role = wire.RoleControlPlane })
	ack2 := a.sendAck(dm(t, alice, bob.pub(), "back to the daemon"))
	for {
		p := daemon2.nextPush()
		if p.MessageID == ack2.MessageID {
			break
		}
		// The first DM, which the CLIs were pushed and did not ack:
		// daemon2 starts with the resumed window (deliver.go) and gets
		// the next push once it acks this one, as a daemon does.
		daemon2.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: []string{p.MessageID}})
	}
	ms := b.hub.mesh(alice.meshID)
	ms.mu.Lock()
	n := ms.controlPlanes[bob.pub()]
	ms.mu.Unlock()
	if n != 1 {
		t.Fatalf("bob counts %d connected control-plane presences, want 1", n)
	}
}

// TestTransientPresenceIsNotAnnounced: a presence that starts and ends
// between two flushes, before any receiver was handed its start, is
// announced to no one; one whose start went out (at once, or early to a
// receiver that asked for list_peers) has its end announced too.
func TestTransientPresenceIsNotAnnounced(t *testing.T) {
	b := startBroker(t, nil)
	ms := &meshState{presences: map[string]*presence{}}
	alice, bob, mallory := &member{}, &member{}, &member{}
	receiver := func(key string, m *member) *conn {
		c := &conn{b: b, ms: ms, wake: make(chan struct{}, 1)}
		c.writing.Store(true) // no writer: the test reads the queue itself
		p := &presence{key: key, member: m, conn: c}
		c.pres = p
		ms.presences[key] = p
		return c
	}
	ca, cb := receiver("a", alice), receiver("b", bob)
	events := func(c *conn) []string {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		var out []string
		for _, f := range c.queue {
			var p wire.Push
			if err := wire.Decode(f.b, &p); err != nil {
				t.Fatal(err)
			}
			var ev wire.PeerEvent
			if err := decodeInto(p.EventData, &ev); err != nil {
				t.Fatal(err)
			}
			out = append(out, p.Event+" "+ev.SessionID)
		}
		c.queue, c.qbytes = nil, 0
		return out
	}
	flush := func() { flushNow(ms) }
	presenceOf := func(session string) *presence {
		return &presence{key: "m/" + session, member: mallory, pubkey: "m", sessionID: session}
	}
	want := func(c *conn, who string, exp ...string) {
		t.Helper()
		if got := events(c); fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Fatalf("%s was handed %q, want %q", who, got, exp)
		}
	}

	// A lone start goes out at once, so its end is announced.
	p1 := presenceOf("one")
	ms.mu.Lock()
	ms.broadcastSystem(wire.EventPeerJoined, p1)
	ms.mu.Unlock()
	want(ca, "alice", "peer_joined one")
	want(cb, "bob", "peer_joined one")
	ms.mu.Lock()
	ms.broadcastSystem(wire.EventPeerLeft, p1) // within the interval: waits for the flush
	p2 := presenceOf("two")
	ms.broadcastSystem(wire.EventPeerReturned, p2)
	ms.broadcastSystem(wire.EventPeerLeft, p2) // came and went unseen
	p3 := presenceOf("three")
	ms.broadcastSystem(wire.EventPeerJoined, p3)
	ms.mu.Unlock()
	flush()
	want(ca, "alice", "peer_left one", "peer_joined three")
	want(cb, "bob", "peer_left one", "peer_joined three")

	// A start one receiver was handed early (list_peers) is not taken back.
	ms.mu.Lock()
	ms.broadcastSystem(wire.EventPeerLeft, p3)
	p4 := presenceOf("four")
	ms.broadcastSystem(wire.EventPeerJoined, p4)
	ca.releaseEventsLocked()
	ms.broadcastSystem(wire.EventPeerLeft, p4)
	ms.mu.Unlock()
	want(ca, "alice", "peer_left three", "peer_joined four")
	flush()
	want(ca, "alice", "peer_left four")
	want(cb, "bob", "peer_left three", "peer_joined four", "peer_left four")
}

// TestPresenceEventEncodedWhenHandedOut: an event is encoded when a
// receiver is first handed it, once for all receivers, and a start that
// its end cancels before any flush is never encoded (a presence churn's
// starts were each encoded under the mesh lock only to be dropped).
func TestPresenceEventEncodedWhenHandedOut(t *testing.T) {
	b := startBroker(t, nil)
	ms := &meshState{presences: map[string]*presence{}}
	var conns []*conn
	for _, key := range []string{"a", "b"} {
		c := &conn{b: b, ms: ms, wake: make(chan struct{}, 1)}
		c.writing.Store(true) // no writer: the test reads the queue itself
		p := &presence{key: key, member: &member{}, conn: c}
		c.pres = p
		ms.presences[key] = p
		conns = append(conns, c)
	}
	queued := func(c *conn) [][]byte {
		c.wmu.Lock()
		defer c.wmu.Unlock()
		var q [][]byte
		for _, f := range c.queue {
			q = append(q, f.b)
		}
		c.queue, c.qbytes = nil, 0
		return q
	}
	subject := &presence{key: "x", member: &member{}}
	push := func(event string) *wire.Push {
		return &wire.Push{Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: event, MessageID: newID(),
			CreatedAt: 1, EventData: wire.PeerEvent{Pubkey: "x"}}
	}
	lone := push(wire.EventPeerJoined)
	ms.mu.Lock()
	ms.logLocked(loggedEvent{push: lone, subject: subject, starts: true})
	ms.mu.Unlock()
	qa, qb := queued(conns[0]), queued(conns[1])
	if len(qa) != 1 || len(qb) != 1 || string(qa[0]) != string(wire.MustEncode(lone)) || &qa[0][0] != &qb[0][0] {
		t.Fatalf("a lone event: %q and %q, want one encoding of it shared", qa, qb)
	}
	// Within the interval: logged, not encoded; its end cancels it.
	ms.mu.Lock()
	ms.eventLog.lastFlush = time.Now().Add(time.Minute) // the next flush is the timer's, however slow the machine
	ms.logLocked(loggedEvent{push: push(wire.EventPeerJoined), subject: subject, starts: true})
	if n := len(ms.eventLog.events); n != 1 || ms.eventLog.events[0].frame != nil {
		t.Fatalf("a start waiting for the flush: %d events, encoded %v", n, n > 0 && ms.eventLog.events[0].frame != nil)
	}
	if !ms.eventLog.cancelStartLocked(subject) {
		t.Fatal("the start was not cancelled")
	}
	ms.mu.Unlock()
	flushNow(ms)
	if qa, qb := queued(conns[0]), queued(conns[1]); len(qa)+len(qb) != 0 {
		t.Fatalf("a cancelled start was sent: %q %q", qa, qb)
	}
}
