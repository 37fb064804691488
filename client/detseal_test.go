package client

import (
	"strings"
	"testing"

	"golang.org/x/crypto/nacl/box"
	"golang.org/x/crypto/nacl/secretbox"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// decodeNonceAndCiphertext decodes a sealed frame's nonce (24 bytes) and
// ciphertext from their base64.
func decodeNonceAndCiphertext(t *testing.T, nonceB64, ctB64 string) ([]byte, []byte) {
	t.Helper()
	n, err := cmcrypto.DecodeB64Len(nonceB64, 24)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := cmcrypto.DecodeB64(ctB64)
	if err != nil {
		t.Fatal(err)
	}
	return n, ct
}

// naclOpenBox opens a crypto_box_easy ciphertext with golang.org/x/crypto's
// nacl/box, libsodium's format, independently of this package's Open.
func naclOpenBox(t *testing.T, nonceB64, ctB64 string, from cmcrypto.PublicKey, to *cmcrypto.Identity) []byte {
	t.Helper()
	n, ct := decodeNonceAndCiphertext(t, nonceB64, ctB64)
	px, err := from.X25519()
	if err != nil {
		t.Fatal(err)
	}
	sk := to.X25519Secret()
	pt, ok := box.Open(nil, ct, (*[24]byte)(n), &px, &sk)
	if !ok {
		t.Fatal("nacl/box.Open refused the box")
	}
	return pt
}

func naclOpenSecret(t *testing.T, nonceB64, ctB64 string, key *[32]byte) []byte {
	t.Helper()
	n, ct := decodeNonceAndCiphertext(t, nonceB64, ctB64)
	pt, ok := secretbox.Open(nil, ct, (*[24]byte)(n), key)
	if !ok {
		t.Fatal("nacl/secretbox.Open refused the ciphertext")
	}
	return pt
}

// TestDeterministicSealDM: a direct message sealed deterministically is
// byte-identical for the same sender, mesh, clientMessageId, recipient and
// text (what makes the broker answer a retry as a duplicate), has another
// nonce when any of them differs (no nonce is used for two messages), and
// opens with the ordinary open functions.
func TestDeterministicSealDM(t *testing.T) {
	alice, bob, carol := newID(t), newID(t), newID(t)
	dm := func(mesh string, from *cmcrypto.Identity, to string, id, text string) *wire.Send {
		t.Helper()
		s, err := SealDM(to, []byte(text), from, SendOptions{ClientMessageID: id, Deterministic: true, MeshID: mesh})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	det := func(from *cmcrypto.Identity, to *cmcrypto.Identity, id, text string) *wire.Send {
		t.Helper()
		return dm("m", from, to.PublicHex(), id, text)
	}
	a, b := det(alice, bob, "order-42", "hello bob"), det(alice, bob, "order-42", "hello bob")
	if a.Nonce != b.Nonce || a.Ciphertext != b.Ciphertext || a.TargetSpec != b.TargetSpec || a.Kind != b.Kind {
		t.Fatalf("the same message sealed twice differs:\n%+v\n%+v", a, b)
	}
	if a.ID == b.ID {
		t.Fatal("the frames' request ids must stay fresh")
	}
	if got := naclOpenBox(t, a.Nonce, a.Ciphertext, alice.Public(), bob); string(got) != "hello bob" {
		t.Fatalf("nacl/box opened %q", got)
	}
	body, ok, err := Open(pushOf(a, "m", alice, alice.PublicHex(), nil), "m", bob, nil)
	if err != nil || !ok || body != "hello bob" {
		t.Fatalf("Open: %q %v %v", body, ok, err)
	}
	nonces := map[string]string{a.Nonce: "the original"}
	for what, s := range map[string]*wire.Send{
		"another text":      det(alice, bob, "order-42", "hello bob!"),
		"another id":        det(alice, bob, "order-43", "hello bob"),
		"another recipient": det(alice, carol, "order-42", "hello bob"),
		"another sender":    det(carol, bob, "order-42", "hello bob"),
		// The same key may be a member of two meshes.
		"another mesh": dm("m2", alice, bob.PublicHex(), "order-42", "hello bob"),
		// Length-prefixed fields: a byte moved from the mesh id to the
		// clientMessageId (adjacent fields, so the concatenation is
		// the same) is another input.
		"a shifted field": dm("mo", alice, bob.PublicHex(), "rder-42", "hello bob"),
	} {
		if prev, dup := nonces[s.Nonce]; dup {
			t.Errorf("%s has the nonce of %s", what, prev)
		}
		nonces[s.Nonce] = what
	}

	// The nonce is derived from the recipient's canonical 64 lowercase
	// hex (docs/crypto.md): another spelling of bob's key is refused
	// before anything is derived, so it cannot give another nonce for
	// the same message.
	_, err = SealDM(strings.ToUpper(bob.PublicHex()), []byte("hello bob"), alice, SendOptions{ClientMessageID: "order-42", Deterministic: true, MeshID: "m"})
	wantCode(t, err, wire.CodeInvalidArgument)

	r1, _ := SealDM(bob.PublicHex(), []byte("hello bob"), alice, SendOptions{ClientMessageID: "order-42"})
	r2, _ := SealDM(bob.PublicHex(), []byte("hello bob"), alice, SendOptions{ClientMessageID: "order-42"})
	if r1.Nonce == r2.Nonce || r1.Nonce == a.Nonce {
		t.Fatal("without Deterministic the nonce must be random")
	}
	_, err = SealDM(bob.PublicHex(), []byte("hello bob"), alice, SendOptions{Deterministic: true, MeshID: "m"})
	wantCode(t, err, wire.CodeInvalidArgument)
	_, err = SealDM(bob.PublicHex(), []byte("hello bob"), alice, SendOptions{Deterministic: true, ClientMessageID: "order-42"})
	wantCode(t, err, wire.CodeInvalidArgument)
}

// TestDeterministicSealMulti: the same for @group and *: content key,
// nonce, key boxes and signature repeat exactly, whatever order (or
// repetition) the directory listed the recipients in; any other text, id,
// target or mesh changes the nonce and content key; each recipient opens
// its entry with Open and with nacl/box + nacl/secretbox.
func TestDeterministicSealMulti(t *testing.T) {
	alice, bob, carol, dave := newID(t), newID(t), newID(t), newID(t)
	recips := []string{bob.PublicHex(), carol.PublicHex()}
	det := func(mesh, target, id, text string, to []string) *wire.Send {
		t.Helper()
		s, err := SealMulti(mesh, target, []byte(text), to, alice, SendOptions{ClientMessageID: id, Deterministic: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := det("m", "@ops", "g1", "group hello", recips)
	b := det("m", "@ops", "g1", "group hello", []string{carol.PublicHex(), bob.PublicHex(), carol.PublicHex()})
	if a.Nonce != b.Nonce || a.Ciphertext != b.Ciphertext || a.Signature != b.Signature || len(a.Keys) != 2 || len(b.Keys) != 2 ||
		a.Keys[0] != b.Keys[0] || a.Keys[1] != b.Keys[1] {
		t.Fatalf("the same multi message sealed twice differs:\n%+v\n%+v", a, b)
	}
	if a.Keys[0].To > a.Keys[1].To {
		t.Fatalf("keys not in key order: %s, %s", a.Keys[0].To, a.Keys[1].To)
	}
	for _, r := range []*cmcrypto.Identity{bob, carol} {
		var k *wire.MultiKey
		for i := range a.Keys {
			if a.Keys[i].To == r.PublicHex() {
				k = &a.Keys[i]
			}
		}
		if k == nil {
			t.Fatalf("no key entry for %s", r.PublicHex())
		}
		body, ok, err := Open(pushOf(a, "m", alice, alice.PublicHex(), k), "m", r, nil)
		if err != nil || !ok || body != "group hello" {
			t.Fatalf("Open: %q %v %v", body, ok, err)
		}
		ck := naclOpenBox(t, k.Nonce, k.Box, alice.Public(), r)
		if len(ck) != 32 {
			t.Fatalf("content key of %d bytes", len(ck))
		}
		if got := naclOpenSecret(t, a.Nonce, a.Ciphertext, (*[32]byte)(ck)); string(got) != "group hello" {
			t.Fatalf("nacl/secretbox opened %q", got)
		}
	}
	// The key boxes' nonces differ per recipient.
	if a.Keys[0].Nonce == a.Keys[1].Nonce {
		t.Fatal("two recipients' key boxes share a nonce")
	}
	nonces := map[string]string{a.Nonce: "the original"}
	for what, s := range map[string]*wire.Send{
		"another text":   det("m", "@ops", "g1", "group hello!", recips),
		"another id":     det("m", "@ops", "g2", "group hello", recips),
		"another target": det("m", "*", "g1", "group hello", recips),
		"another mesh":   det("m2", "@ops", "g1", "group hello", recips),
		// A byte moved between adjacent fields (mesh id, clientMessageId).
		"a shifted field": det("mg", "@ops", "1", "group hello", recips),
	} {
		if prev, dup := nonces[s.Nonce]; dup {
			t.Errorf("%s has the nonce of %s", what, prev)
		}
		nonces[s.Nonce] = what
		if s.Keys[0].Nonce == a.Keys[0].Nonce {
			t.Errorf("%s has the key-box nonce of the original", what)
		}
	}
	// Another audience is another set of keys (so the broker refuses it
	// under the same id); the common recipient's entry is the same box of
	// the same content key.
	c := det("m", "@ops", "g1", "group hello", []string{bob.PublicHex(), dave.PublicHex()})
	if c.Ciphertext != a.Ciphertext || len(c.Keys) != 2 || (c.Keys[0] == a.Keys[0] && c.Keys[1] == a.Keys[1]) {
		t.Fatalf("another audience: %+v", c.Keys)
	}
	_, err := SealMulti("m", "*", []byte("x"), recips, alice, SendOptions{Deterministic: true})
	wantCode(t, err, wire.CodeInvalidArgument)
}

// TestDeterministicSealTopic: topic posts, encrypted and plaintext.
func TestDeterministicSealTopic(t *testing.T) {
	alice := newID(t)
	key, key2 := new([32]byte), new([32]byte)
	key[0], key2[0] = 1, 2
	det := func(topic string, gen int, k *[32]byte, id, text string) *wire.Send {
		t.Helper()
		s, err := SealTopicPost("m", topic, gen, k, []byte(text), alice, SendOptions{ClientMessageID: id, Deterministic: true})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := det("T1", 1, key, "p1", "deploy at 5pm"), det("T1", 1, key, "p1", "deploy at 5pm")
	if a.Nonce != b.Nonce || a.Ciphertext != b.Ciphertext || a.Signature != b.Signature || *a.KeyGen != 1 || *b.KeyGen != 1 {
		t.Fatalf("the same post sealed twice differs:\n%+v\n%+v", a, b)
	}
	if got := naclOpenSecret(t, a.Nonce, a.Ciphertext, key); string(got) != "deploy at 5pm" {
		t.Fatalf("nacl/secretbox opened %q", got)
	}
	if got, err := cmcrypto.OpenTopicPost("m", "T1", 1, a.Nonce, a.Ciphertext, a.Signature, key, alice.Public()); err != nil || string(got) != "deploy at 5pm" {
		t.Fatalf("OpenTopicPost: %q %v", got, err)
	}
	nonces := map[string]string{a.Nonce: "the original"}
	for what, s := range map[string]*wire.Send{
		"another text":       det("T1", 1, key, "p1", "deploy at 6pm"),
		"another id":         det("T1", 1, key, "p2", "deploy at 5pm"),
		"another topic":      det("T2", 1, key, "p1", "deploy at 5pm"),
		"another generation": det("T1", 2, key, "p1", "deploy at 5pm"),
		"another key":        det("T1", 1, key2, "p1", "deploy at 5pm"),
		"a plaintext post":   det("T1", 1, nil, "p1", "deploy at 5pm"),
		// A byte moved between adjacent fields (clientMessageId, text).
		"a shifted field": det("T1", 1, key, "p1d", "eploy at 5pm"),
	} {
		if prev, dup := nonces[s.Nonce]; dup {
			t.Errorf("%s has the nonce of %s", what, prev)
		}
		nonces[s.Nonce] = what
	}
	p1, p2 := det("T1", 0, nil, "p1", "plain"), det("T1", 0, nil, "p1", "plain")
	if p1.Nonce != p2.Nonce || p1.Ciphertext != p2.Ciphertext || p1.BodyVersion != wire.BodyPlaintext {
		t.Fatalf("the same plaintext post twice differs: %+v %+v", p1, p2)
	}
	if p3 := det("T1", 0, nil, "p1", "plain!"); p3.Nonce == p1.Nonce {
		t.Fatal("another plaintext post under the id has the same nonce")
	}
	if p4 := det("T1", 0, nil, "p1p", "lain"); p4.Nonce == p1.Nonce {
		t.Fatal("a byte moved from the text to the id gives the same plaintext-post nonce")
	}
	r1, _ := SealTopicPost("m", "T1", 1, key, []byte("x"), alice, SendOptions{ClientMessageID: "p1"})
	r2, _ := SealTopicPost("m", "T1", 1, key, []byte("x"), alice, SendOptions{ClientMessageID: "p1"})
	if r1.Nonce == r2.Nonce {
		t.Fatal("without Deterministic the nonce must be random")
	}
}
