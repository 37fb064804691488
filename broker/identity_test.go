package broker

// Who a session may claim to be (issue 12, items 2 and 3): its name may not
// pass for another member's, its key may not be a member key (current or
// revoked) or another member's session key, and a ban ends the banned
// member's sessions and every route to its keys.

import (
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// sessionConnect opens an accepted session presence of parent with key
// sess and display name.
func sessionConnect(t *testing.T, b *Broker, parent ident, sess *cmcrypto.Identity, name string) *rawConn {
	t.Helper()
	r := dial(t, b)
	r.write(r.sessionHello(parent, sess, func(h *wire.SessionHello) { h.DisplayName = name }))
	var ack wire.HelloAck
	r.next(&ack, wire.TypeHelloAck)
	return r
}

func TestSessionNameMayNotPassForAnotherMember(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	addMember(t, b, alice, "team", "bob")
	for _, name := range []string{"bob", "Bob", "b\u043eb"} {
		sess, _ := cmcrypto.GenerateIdentity()
		r := dial(t, b)
		r.write(r.sessionHello(alice, sess, func(h *wire.SessionHello) { h.DisplayName = name }))
		r.expectRefusal(wire.CodeNameTaken, 1008, wire.CodeNameTaken)
	}
	// An invisible code point is refused in any name, before the
	// comparison (issue 12 item 11).
	sess, _ := cmcrypto.GenerateIdentity()
	r := dial(t, b)
	r.write(r.sessionHello(alice, sess, func(h *wire.SessionHello) { h.DisplayName = "BOB\u200b" }))
	r.expectRefusal(wire.CodeMalformed, 1008, wire.CodeMalformed)
	// Its own member's name, and a name of nobody, are fine.
	for _, name := range []string{"alice", "Alice", "reviewer"} {
		sess, _ := cmcrypto.GenerateIdentity()
		sessionConnect(t, b, alice, sess, name)
	}
}

func TestSessionKeyMayNotBeAMemberKey(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	r := dial(t, b)
	r.write(r.sessionHello(alice, bob.key, func(h *wire.SessionHello) { h.DisplayName = "helper" }))
	r.expectRefusal(wire.CodeSessionKeyConflict, 1008, wire.CodeSessionKeyConflict)

	// A session key another member attested is not up for grabs either.
	sess, _ := cmcrypto.GenerateIdentity()
	sessionConnect(t, b, bob, sess, "bob-worker")
	r2 := dial(t, b)
	r2.write(r2.sessionHello(alice, sess, func(h *wire.SessionHello) { h.DisplayName = "helper" }))
	r2.expectRefusal(wire.CodeSessionKeyConflict, 1008, wire.CodeSessionKeyConflict)
}

func TestSessionAttestationForAnotherMesh(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	other := createMesh(t, b, "other", "alice2")
	_ = other
	sess, _ := cmcrypto.GenerateIdentity()
	r := dial(t, b)
	r.write(r.sessionHello(alice, sess, func(h *wire.SessionHello) {
		// Signed by alice's key, but for the other mesh.
		s, _ := cmcrypto.SessionAttestString(other.meshID, alice.pub(), sess.PublicHex(), h.Attestation.ExpiresAt)
		h.Attestation.Signature = alice.key.Sign(s)
	}))
	r.expectRefusal(wire.CodeBadAttestation, 1008, wire.CodeBadAttestation)
}

// TestBanEndsEveryRouteToTheBannedKeys is issue 12 item 3: mallory cannot
// bring banned bob back as her session, DMs to bob's keys are refused, bob's
// own session ends with the ban, and unban by bob's full key is not
// ambiguous even if a session record claims bob's key.
func TestBanEndsEveryRouteToTheBannedKeys(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	mallory := addMember(t, b, alice, "team", "mallory")
	bobSessKey, _ := cmcrypto.GenerateIdentity()
	bobSess := sessionConnect(t, b, bob, bobSessKey, "bob-worker")
	admin := connect(t, b, alice, true, nil)

	var res wire.AdminResult
	admin.request(map[string]any{"type": wire.TypeBan, "target": "bob"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 || res.Affected[0].Pubkey != bob.pub() {
		t.Fatalf("ban: %+v", res)
	}
	bobSess.expectRefusal(wire.CodeRevoked, wire.CloseBanned, wire.ReasonBanned)

	// The banned member key as mallory's session: refused.
	r := dial(t, b)
	r.write(r.sessionHello(mallory, bob.key, func(h *wire.SessionHello) { h.DisplayName = "helper" }))
	r.expectRefusal(wire.CodeRevoked, 1008, wire.CodeRevoked)
	// Bob's own session key, re-attested by bob: refused (parent revoked).
	r2 := dial(t, b)
	r2.write(r2.sessionHello(bob, bobSessKey, func(h *wire.SessionHello) { h.DisplayName = "bob-worker" }))
	r2.expectRefusal(wire.CodeRevoked, wire.CloseBanned, wire.ReasonBanned)

	checkSessionIndex(t, b, alice.meshID) // the ban forgot bob's session
	// A session record holding bob's key (as a broker before this fix
	// could have stored) must neither route nor make unban ambiguous.
	ms := b.hub.mesh(alice.meshID)
	ms.mu.Lock()
	ms.putSessionLocked(bob.pub(), &store.Session{Pubkey: bob.pub(), ParentMemberID: mallory.memberID, ParentPubkey: mallory.pub(),
		SessionID: "sess-x", DisplayName: "helper", LastSeenAt: time.Now().UnixMilli()})
	ms.mu.Unlock()

	sender := connect(t, b, alice, false, nil)
	for _, key := range []string{bob.pub(), bobSessKey.PublicHex()} {
		ack := sender.sendAck(dm(t, alice, key, "are you there?"))
		if ack.Error == nil || ack.Error.Code != wire.CodeUnknownRecipient {
			t.Fatalf("DM to a banned key %s: %+v", key[:8], ack)
		}
	}
	var peers wire.Peers
	admin.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers)
	for _, p := range peers.Peers {
		if p.MemberPubkey == bob.pub() || p.Pubkey == bob.pub() {
			t.Fatalf("banned bob still listed: %+v", p)
		}
	}

	admin.request(map[string]any{"type": wire.TypeUnban, "target": bob.pub()}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 || res.Affected[0].Pubkey != bob.pub() || res.Affected[0].DisplayName != "bob" {
		t.Fatalf("unban by full key: %+v", res)
	}
}
