package broker

import (
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// connectSession opens an agent session of member m with a new key.
func connectSession(t testing.TB, b *Broker, m ident, sessionID string) (*rawConn, *cmcrypto.Identity) {
	t.Helper()
	sess, _ := cmcrypto.GenerateIdentity()
	r := dial(t, b)
	r.write(r.sessionHello(m, sess, func(h *wire.SessionHello) { h.SessionID = sessionID; h.DisplayName = sessionID }))
	var ack wire.HelloAck
	r.next(&ack, wire.TypeHelloAck)
	return r, sess
}

// closeClean ends a connection with 1000, which ends its presence at once,
// and waits for the broker's echo.
func (r *rawConn) closeClean() {
	r.t.Helper()
	r.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	for {
		if _, err := r.readErr(3 * time.Second); err != nil {
			return
		}
	}
}

// TestPresenceChurnIsRateLimitedPerMember: each new presence is an event to
// every presence of the mesh, so a member that starts them faster than
// --presence-rate is refused (rate_limited with retryAfterMs); re-attaching
// an existing presence is not an event and is never refused.
func TestPresenceChurnIsRateLimitedPerMember(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.PresenceRate, c.PresenceBurst = 0.01, 3 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	ac := connect(t, b, alice, true, nil)
	var first *rawConn
	for i := range 3 {
		c := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = fmt.Sprintf("s%d", i) })
		if first == nil {
			first = c
		}
	}
	r := dial(t, b)
	r.write(r.helloFrame(bob, func(h *wire.Hello) { h.SessionID = "s3"; h.Presence = ptr(true) }))
	var e wire.Error
	r.next(&e, wire.TypeError)
	if e.Code != wire.CodeRateLimited || e.RetryAfterMs <= 0 {
		t.Fatalf("fourth presence: %+v", e)
	}
	r.expectClose(1008, wire.CodeRateLimited)
	// Sessions count against their member too.
	r = dial(t, b)
	sess, _ := cmcrypto.GenerateIdentity()
	r.write(r.sessionHello(bob, sess, nil))
	r.expectRefusal(wire.CodeRateLimited, 1008, wire.CodeRateLimited)
	// The same identity again re-attaches: no event, no refusal.
	connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "s0" })
	first.expectClose(1000, wire.ReasonReplaced)
	// Transient connections are not presences.
	connect(t, b, bob, false, nil)

	// Frames to alice are in order: count the events before the answer to
	// a request sent after all of the above.
	ac.write(map[string]any{"type": "list_peers", "reqId": "after"})
	joined := 0
	for {
		data := ac.read()
		env, _ := wire.Peek(data)
		if env.Type == wire.TypePeers {
			break
		}
		var p wire.Push
		if wire.Decode(data, &p) == nil && p.Event == wire.EventPeerJoined {
			joined++
		}
	}
	if joined != 3 {
		t.Fatalf("alice saw %d peer_joined, want 3", joined)
	}
	if counterValue(t, b, "claudemesh_limits_tripped_total", "presence_rate") < 2 {
		t.Fatal("presence_rate not counted")
	}
}

// TestSessionKeysAreBounded: a member's known session keys stay under
// --max-sessions-per-member; the least recently connected absent one is
// forgotten with what was queued for it, so DMs to it become
// unknown_recipient, and it stays forgotten across a restart.
func TestSessionKeysAreBounded(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxSessionsPerMember = 3
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	var keys []string
	for i := range 3 {
		r, sess := connectSession(t, b, bob, fmt.Sprintf("s%d", i))
		r.closeClean()
		keys = append(keys, sess.PublicHex())
		// "Least recently connected" is the order in which the broker
		// detached them (the close echo comes before that, and a loaded
		// machine can run s0's detach after s1's), to the millisecond
		// (LastSeenAt): wait for this one to be detached and stamped in a
		// millisecond that has passed before the next connects.
		waitFor(t, fmt.Sprintf("s%d detached", i), func() bool {
			ms := b.hub.mesh(bob.meshID)
			ms.mu.Lock()
			defer ms.mu.Unlock()
			s := ms.sessions[keys[i]]
			return ms.conns[keys[i]] == nil && s != nil && s.LastSeenAt < time.Now().UnixMilli()
		})
	}
	ac := connect(t, b, alice, false, nil)
	if ack := ac.sendAck(dm(t, alice, keys[0], "queued for s0")); ack.Error != nil {
		t.Fatalf("DM to a known session: %+v", ack.Error)
	}
	live, _ := connectSession(t, b, bob, "s3") // a fourth key: s0 goes
	waitFor(t, "s0's queue to be dropped", func() bool {
		return counterValue(t, b, "claudemesh_deliveries_expired_total", "") == 1
	})
	if ack := ac.sendAck(dm(t, alice, keys[0], "to a forgotten session")); ack.Error == nil || ack.Error.Code != wire.CodeUnknownRecipient {
		t.Fatalf("DM to the evicted session: %+v", ack)
	}
	if ack := ac.sendAck(dm(t, alice, keys[1], "to s1")); ack.Error != nil {
		t.Fatalf("DM to a kept session: %+v", ack.Error)
	}
	_ = live
	checkSessionIndex(t, b, bob.meshID)

	b.Close()
	b2 := startWith(t, cfg)
	checkSessionIndex(t, b2, bob.meshID)
	ac2 := connect(t, b2, alice, false, nil)
	if ack := ac2.sendAck(dm(t, alice, keys[0], "after restart")); ack.Error == nil || ack.Error.Code != wire.CodeUnknownRecipient {
		t.Fatalf("evicted session known again after a restart: %+v", ack)
	}
}

// TestSessionRecordsExpire: a session key not connected for --queue-ttl is
// forgotten (what was queued for it has expired by then anyway).
func TestSessionRecordsExpire(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.QueueTTL = 300 * time.Millisecond })
	alice := createMesh(t, b, "team", "alice")
	r, sess := connectSession(t, b, alice, "s0")
	r.closeClean()
	ac := connect(t, b, alice, false, nil)
	waitFor(t, "the session record to expire", func() bool {
		ack := ac.sendAck(dm(t, alice, sess.PublicHex(), "x"))
		return ack.Error != nil && ack.Error.Code == wire.CodeUnknownRecipient
	})
}

// TestPresenceHistoryIsBounded: the memory of ended presences (for
// peer_returned) is pruned by age and by count.
func TestPresenceHistoryIsBounded(t *testing.T) {
	t.Parallel()
	ms := (&hub{}).newMeshState(storeMesh("m"))
	now := time.Now()
	old := now.Add(-historyTTL - time.Minute).UnixMilli()
	ms.history["gone"] = old
	ms.presences["here"] = &presence{key: "here"}
	ms.history["here"] = old
	ms.history["recent"] = now.UnixMilli()
	ms.pruneHistory(now)
	if _, ok := ms.history["gone"]; ok {
		t.Fatal("an old ended presence is still remembered")
	}
	if _, ok := ms.history["here"]; !ok {
		t.Fatal("a present presence was forgotten")
	}
	for i := range maxHistory + 10 {
		ms.history[fmt.Sprint(i)] = now.UnixMilli() - int64(maxHistory+10-i)
	}
	ms.pruneHistory(now)
	if len(ms.history) > maxHistory {
		t.Fatalf("history holds %d entries", len(ms.history))
	}
	if _, ok := ms.history["0"]; ok {
		t.Fatal("pruned the newest instead of the oldest")
	}
	if _, ok := ms.history["here"]; !ok {
		t.Fatal("a present presence was forgotten")
	}
}

func storeMesh(id string) store.Mesh { return store.Mesh{ID: id, Slug: id, Name: id} }
