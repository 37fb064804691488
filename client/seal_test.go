package client

import (
	"strings"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

func newID(t *testing.T) *cmcrypto.Identity {
	t.Helper()
	id, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// pushOf is what the broker would push for a send from sender (member
// memberPub), with key the recipient's multi entry.
func pushOf(s *wire.Send, meshID string, sender *cmcrypto.Identity, memberPub string, key *wire.MultiKey) *wire.Push {
	return &wire.Push{Type: wire.TypePush, MessageID: "01X", MeshID: meshID, Kind: s.Kind, TargetSpec: s.TargetSpec,
		SenderPubkey: sender.PublicHex(), SenderMemberPubkey: memberPub, SenderName: "alice",
		Nonce: s.Nonce, Ciphertext: s.Ciphertext, Signature: s.Signature, Key: key, CreatedAt: time.Now().UnixMilli()}
}

func attest(t *testing.T, meshID string, member, session *cmcrypto.Identity, exp time.Time) *wire.Attestation {
	t.Helper()
	s, err := cmcrypto.SessionAttestString(meshID, member.PublicHex(), session.PublicHex(), exp.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return &wire.Attestation{SessionPubkey: session.PublicHex(), ParentPubkey: member.PublicHex(), ExpiresAt: exp.UnixMilli(), Signature: member.Sign(s)}
}

func flipHex(s string) string {
	c := byte('0')
	if s[0] == '0' {
		c = '1'
	}
	return string(c) + s[1:]
}

func TestOpenDM(t *testing.T) {
	alice, bob, bobSession := newID(t), newID(t), newID(t)
	s, err := SealDM(bob.PublicHex(), []byte("hi bob"), alice, SendOptions{Priority: wire.PriorityNow, ClientMessageID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != wire.TypeSend || s.Kind != wire.KindBox || !wire.ValidULID(s.ID) || s.Priority != "now" || s.ClientMessageID != "c1" || s.Receipts != nil {
		t.Fatalf("send frame: %+v", s)
	}
	body, ok, err := Open(pushOf(s, "m", alice, alice.PublicHex(), nil), "m", bob, bobSession)
	if err != nil || !ok || body != "hi bob" {
		t.Fatalf("member DM: %q %v %v", body, ok, err)
	}

	// Addressed to the session key: opened with it, not the member key.
	s, _ = SealDM(bobSession.PublicHex(), []byte("hi session"), alice, SendOptions{NoReceipts: true})
	if s.Receipts == nil || *s.Receipts {
		t.Fatal("NoReceipts must send receipts:false")
	}
	body, ok, err = Open(pushOf(s, "m", alice, alice.PublicHex(), nil), "m", bob, bobSession)
	if err != nil || !ok || body != "hi session" {
		t.Fatalf("session DM: %q %v %v", body, ok, err)
	}
	// ... and a member connection cannot open it.
	_, _, err = Open(pushOf(s, "m", alice, alice.PublicHex(), nil), "m", bob, nil)
	wantCode(t, err, CodeNotForUs)

	// Tampered ciphertext never turns into text.
	s, _ = SealDM(bob.PublicHex(), []byte("hi bob"), alice, SendOptions{})
	p := pushOf(s, "m", alice, alice.PublicHex(), nil)
	ct, _ := cmcrypto.DecodeB64(p.Ciphertext)
	ct[len(ct)-1] ^= 1
	p.Ciphertext = cmcrypto.EncodeB64(ct)
	body, ok, err = Open(p, "m", bob, nil)
	wantCode(t, err, CodeDecryptFailed)
	if body != "" || ok {
		t.Fatalf("tampered box gave %q verified=%v", body, ok)
	}
	// A forged sender key (the broker claims someone else sent it) fails
	// too: the box authenticates the sender.
	p = pushOf(s, "m", newID(t), "", nil)
	_, _, err = Open(p, "m", bob, nil)
	wantCode(t, err, CodeDecryptFailed)
}

func TestOpenSessionSenderAttestation(t *testing.T) {
	alice, aliceSession, bob := newID(t), newID(t), newID(t)
	s, _ := SealDM(bob.PublicHex(), []byte("from a session"), aliceSession, SendOptions{})

	p := pushOf(s, "m", aliceSession, alice.PublicHex(), nil)
	p.SenderAttestation = attest(t, "m", alice, aliceSession, time.Now().Add(time.Hour))
	body, ok, err := Open(p, "m", bob, nil)
	if err != nil || !ok || body != "from a session" {
		t.Fatalf("attested session sender: %q %v %v", body, ok, err)
	}

	// The broker claims the session belongs to bob's member key: the
	// attestation (signed by alice) does not support that claim.
	p.SenderMemberPubkey = bob.PublicHex()
	if _, ok, err := Open(p, "m", bob, nil); err != nil || ok {
		t.Fatalf("mis-attributed session must decrypt but be unverified: ok=%v err=%v", ok, err)
	}
	// No attestation at all.
	p = pushOf(s, "m", aliceSession, alice.PublicHex(), nil)
	if _, ok, _ := Open(p, "m", bob, nil); ok {
		t.Fatal("a session sender without attestation must be unverified")
	}
	// An attestation for another mesh.
	p.SenderAttestation = attest(t, "other-mesh", alice, aliceSession, time.Now().Add(time.Hour))
	if _, ok, _ := Open(p, "m", bob, nil); ok {
		t.Fatal("an attestation of another mesh must not verify")
	}
	// Expired before the message was accepted.
	p.SenderAttestation = attest(t, "m", alice, aliceSession, time.Now().Add(-time.Hour))
	if _, ok, _ := Open(p, "m", bob, nil); ok {
		t.Fatal("an attestation expired at createdAt must not verify")
	}
}

func TestOpenMulti(t *testing.T) {
	alice, bob, carol := newID(t), newID(t), newID(t)
	s, err := SealMulti("m", "@ops", []byte("deploy at 5"), []string{bob.PublicHex(), carol.PublicHex()}, alice, SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind != wire.KindMulti || len(s.Keys) != 2 || s.Signature == "" || s.TargetSpec != "@ops" {
		t.Fatalf("multi send: %+v", s)
	}
	keyFor := func(who *cmcrypto.Identity) *wire.MultiKey {
		for _, k := range s.Keys {
			if k.To == who.PublicHex() {
				k := k
				return &k
			}
		}
		t.Fatalf("no key for %s", who.PublicHex())
		return nil
	}
	for _, who := range []*cmcrypto.Identity{bob, carol} {
		body, ok, err := Open(pushOf(s, "m", alice, alice.PublicHex(), keyFor(who)), "m", who, nil)
		if err != nil || !ok || body != "deploy at 5" {
			t.Fatalf("multi open: %q %v %v", body, ok, err)
		}
	}

	t.Run("tampered signature", func(t *testing.T) {
		p := pushOf(s, "m", alice, alice.PublicHex(), keyFor(bob))
		p.Signature = flipHex(p.Signature)
		body, ok, err := Open(p, "m", bob, nil)
		wantCode(t, err, CodeUnverified)
		if ok || body != "" {
			t.Fatalf("tampered multi shown as %q verified=%v", body, ok)
		}
	})
	t.Run("new ciphertext under the same key", func(t *testing.T) {
		// Bob knows the content key; he re-encrypts other text and
		// forwards it with alice's key box to carol. The signature covers
		// the ciphertext, so carol refuses it.
		other, _ := SealMulti("m", "@ops", []byte("wire money"), []string{carol.PublicHex()}, bob, SendOptions{})
		p := pushOf(s, "m", alice, alice.PublicHex(), keyFor(carol))
		p.Nonce, p.Ciphertext = other.Nonce, other.Ciphertext
		_, ok, err := Open(p, "m", carol, nil)
		wantCode(t, err, CodeUnverified)
		if ok {
			t.Fatal("verified")
		}
	})
	t.Run("replayed to another audience", func(t *testing.T) {
		p := pushOf(s, "m", alice, alice.PublicHex(), keyFor(bob))
		p.TargetSpec = "*"
		_, _, err := Open(p, "m", bob, nil)
		wantCode(t, err, CodeUnverified)
	})
	t.Run("replayed to another mesh", func(t *testing.T) {
		p := pushOf(s, "", alice, alice.PublicHex(), keyFor(bob))
		_, _, err := Open(p, "other", bob, nil)
		wantCode(t, err, CodeUnverified)
	})
	t.Run("someone else's key entry", func(t *testing.T) {
		_, _, err := Open(pushOf(s, "m", alice, alice.PublicHex(), keyFor(carol)), "m", bob, nil)
		wantCode(t, err, CodeNotForUs)
		_, _, err = Open(pushOf(s, "m", alice, alice.PublicHex(), nil), "m", bob, nil)
		wantCode(t, err, CodeNotForUs)
	})
}

func TestOpenRefusesOtherKinds(t *testing.T) {
	alice, bob := newID(t), newID(t)
	p := &wire.Push{Kind: wire.KindTopic, SenderPubkey: alice.PublicHex(), SenderMemberPubkey: alice.PublicHex(), Topic: &wire.TopicRef{ID: "t", Name: "general"}}
	_, _, err := Open(p, "m", bob, nil)
	wantCode(t, err, CodeUnsupported)
	p.Kind = "carrier-pigeon"
	_, _, err = Open(p, "m", bob, nil)
	wantCode(t, err, CodeUnsupported)
	p.SenderPubkey = strings.ToUpper(alice.PublicHex())
	_, _, err = Open(p, "m", bob, nil)
	wantCode(t, err, wire.CodeMalformed)
	p = &wire.Push{Kind: wire.KindBox, MeshID: "other", SenderPubkey: alice.PublicHex()}
	_, _, err = Open(p, "m", bob, nil)
	wantCode(t, err, CodeNotForUs)
}

func TestSealLimits(t *testing.T) {
	alice, bob := newID(t), newID(t)
	big := []byte(strings.Repeat("x", MaxPlaintext+1))
	_, err := SealDM(bob.PublicHex(), big, alice, SendOptions{})
	wantCode(t, err, wire.CodePayloadTooLarge)
	if _, err := SealDM(bob.PublicHex(), big[:MaxPlaintext], alice, SendOptions{}); err != nil {
		t.Fatalf("64 KiB exactly must be allowed: %v", err)
	}
	_, err = SealDM(bob.PublicHex(), []byte{0xff}, alice, SendOptions{})
	wantCode(t, err, wire.CodeInvalidArgument)
	_, err = SealDM("bob", []byte("x"), alice, SendOptions{})
	wantCode(t, err, wire.CodeInvalidArgument)
	for _, target := range []string{"#general", "@", "@Ops", bob.PublicHex()} {
		_, err = SealMulti("m", target, []byte("x"), []string{bob.PublicHex()}, alice, SendOptions{})
		wantCode(t, err, wire.CodeInvalidArgument)
	}
	_, err = SealMulti("m", "*", []byte("x"), nil, alice, SendOptions{})
	wantCode(t, err, wire.CodeInvalidArgument)
}

// FuzzOpen feeds arbitrary pushes to Open: it must never panic and never
// return text together with an error.
func FuzzOpen(f *testing.F) {
	alice, _ := cmcrypto.GenerateIdentity()
	bob, _ := cmcrypto.GenerateIdentity()
	s, _ := SealMulti("m", "*", []byte("hello"), []string{bob.PublicHex()}, alice, SendOptions{})
	good := pushOf(s, "m", alice, alice.PublicHex(), &s.Keys[0])
	f.Add(string(wire.MustEncode(good)))
	d, _ := SealDM(bob.PublicHex(), []byte("hey"), alice, SendOptions{})
	f.Add(string(wire.MustEncode(pushOf(d, "m", alice, alice.PublicHex(), nil))))
	f.Add(`{"type":"push","kind":"box","senderPubkey":"00"}`)
	f.Fuzz(func(t *testing.T, frame string) {
		var p wire.Push
		if wire.Decode([]byte(frame), &p) != nil {
			return
		}
		body, _, err := Open(&p, "m", bob, nil)
		if err != nil && body != "" {
			t.Fatalf("text %q returned with error %v", body, err)
		}
	})
}

func BenchmarkSealOpenDM(b *testing.B) {
	alice, _ := cmcrypto.GenerateIdentity()
	bob, _ := cmcrypto.GenerateIdentity()
	msg := []byte(strings.Repeat("x", 256))
	for b.Loop() {
		s, err := SealDM(bob.PublicHex(), msg, alice, SendOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := Open(pushOf(s, "m", alice, alice.PublicHex(), nil), "m", bob, nil); err != nil {
			b.Fatal(err)
		}
	}
}
