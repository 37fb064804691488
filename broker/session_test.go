package broker

import (
	"strings"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// sessionHello builds a session_hello for a new session key of member m.
func (r *rawConn) sessionHello(m ident, sess *cmcrypto.Identity, mutate func(*wire.SessionHello)) wire.SessionHello {
	r.t.Helper()
	expires := time.Now().Add(12 * time.Hour).UnixMilli()
	as, err := cmcrypto.SessionAttestString(m.meshID, m.pub(), sess.PublicHex(), expires)
	if err != nil {
		r.t.Fatal(err)
	}
	h := wire.SessionHello{
		Type: wire.TypeSessionHello, Protocol: 1, MeshID: m.meshID, ParentMemberID: m.memberID,
		ParentPubkey: m.pub(), SessionPubkey: sess.PublicHex(),
		Attestation: &wire.Attestation{SessionPubkey: sess.PublicHex(), ParentPubkey: m.pub(), ExpiresAt: expires, Signature: m.key.Sign(as)},
		Timestamp:   time.Now().UnixMilli(), Challenge: r.challenge.Nonce, SessionID: "sess-1",
		DisplayName: "worker", PeerType: wire.PeerAI,
	}
	if mutate != nil {
		mutate(&h)
	}
	if h.Signature == "" {
		s, err := cmcrypto.SessionHelloString(h.MeshID, h.ParentPubkey, h.SessionPubkey, r.b.PublicKey(), h.Timestamp, h.Challenge)
		if err != nil {
			r.t.Fatal(err)
		}
		h.Signature = sess.Sign(s)
	}
	return h
}

// resign re-signs an attestation after a test changed its fields.
func resign(m ident, a *wire.Attestation) {
	s, _ := cmcrypto.SessionAttestString(m.meshID, a.ParentPubkey, a.SessionPubkey, a.ExpiresAt)
	a.Signature = m.key.Sign(s)
}

func TestSessionHelloChecks(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	by := connect(t, b, bob, true, nil)
	other, _ := cmcrypto.GenerateIdentity()
	cases := []struct {
		name   string
		mutate func(*wire.SessionHello)
		code   string
	}{
		{"attestation for another key", func(h *wire.SessionHello) {
			h.Attestation.SessionPubkey = other.PublicHex()
			resign(alice, h.Attestation)
		}, wire.CodeAttestationMismatch},
		{"expired attestation", func(h *wire.SessionHello) {
			h.Attestation.ExpiresAt = time.Now().Add(-time.Minute).UnixMilli()
			resign(alice, h.Attestation)
		}, wire.CodeExpired},
		{"attestation over 24h", func(h *wire.SessionHello) {
			h.Attestation.ExpiresAt = time.Now().Add(25 * time.Hour).UnixMilli()
			resign(alice, h.Attestation)
		}, wire.CodeTTLTooLong},
		{"attestation not by the parent", func(h *wire.SessionHello) {
			s, _ := cmcrypto.SessionAttestString(alice.meshID, h.ParentPubkey, h.SessionPubkey, h.Attestation.ExpiresAt)
			h.Attestation.Signature = bob.key.Sign(s)
		}, wire.CodeBadAttestation},
		{"hello not by the session key", func(h *wire.SessionHello) {
			h.Signature = strings.Repeat("0", 128)
		}, wire.CodeBadSignature},
		{"parent memberId mismatch", func(h *wire.SessionHello) {
			h.ParentMemberID = bob.memberID
		}, wire.CodeMemberIDMismatch},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sess, _ := cmcrypto.GenerateIdentity()
			r := dial(t, b)
			r.write(r.sessionHello(alice, sess, tc.mutate))
			r.expectRefusal(tc.code, 1008, tc.code)
			bystanderCheck(t, by)
		})
	}

	t.Run("accepted, listed with its attestation, replaced by its own restart", func(t *testing.T) {
		sess, _ := cmcrypto.GenerateIdentity()
		r := dial(t, b)
		r.write(r.sessionHello(alice, sess, nil))
		var ack wire.HelloAck
		r.next(&ack, wire.TypeHelloAck)
		if ack.PresenceID == "" || ack.DisplayName != "worker" || ack.MemberRole != "owner" {
			t.Fatalf("hello_ack %+v", ack)
		}
		var peers wire.Peers
		by.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers)
		var found *wire.Peer
		for i := range peers.Peers {
			if peers.Peers[i].Pubkey == sess.PublicHex() {
				found = &peers.Peers[i]
			}
		}
		if found == nil || found.Role != wire.RoleSession || found.MemberPubkey != alice.pub() || found.Attestation == nil {
			t.Fatalf("session peer %+v", found)
		}
		// A DM to the session key is pushed to the session, with the
		// sender's attestation when the sender is a session too.
		bc := connect(t, b, bob, false, nil)
		ack2 := bc.sendAck(dm(t, bob, sess.PublicHex(), "to the session"))
		if *ack2.Online != 1 {
			t.Fatalf("ack %+v", ack2)
		}
		p := r.nextPush()
		if got := openPush(t, &p, ident{key: sess}); got != "to the session" {
			t.Fatalf("got %q", got)
		}
		// The same session key again: the old connection is replaced.
		r2 := dial(t, b)
		r2.write(r2.sessionHello(alice, sess, nil))
		r2.next(&ack, wire.TypeHelloAck)
		r.expectClose(1000, "session_replaced")
	})
}
