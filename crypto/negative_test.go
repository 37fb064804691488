package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/edwards25519"
)

// flipB64 returns s (standard base64) with one bit of decoded byte i flipped.
func flipB64(t testing.TB, s string, i int) string {
	t.Helper()
	b := unb64(t, s)
	b[i%len(b)] ^= 0x01
	return EncodeB64(b)
}

// flipHex returns s (hex) with one bit of decoded byte i flipped.
func flipHex(t testing.TB, s string, i int) string {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	b[i%len(b)] ^= 0x01
	return hex.EncodeToString(b)
}

func TestTamperedSignature(t *testing.T) {
	v := loadVectors(t)
	h := v.Signed.Hello
	alice := v.pub(t, "alice")
	for _, i := range []int{0, 31, 32, 63} {
		if err := Verify(alice, h.String, flipHex(t, h.Signature, i)); !errors.Is(err, ErrBadSignature) {
			t.Errorf("flipped byte %d: %v", i, err)
		}
	}
	for _, bad := range []string{"", strings.ToUpper(h.Signature), h.Signature[:126], h.Signature + "00"} {
		err := Verify(alice, h.String, bad)
		if !errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrBadHex) {
			t.Errorf("Verify(%.20q…): %v", bad, err)
		}
	}
}

// TestVerifyLibsodiumEdgeCases covers signatures crypto/ed25519 alone would
// treat differently from libsodium.
func TestVerifyLibsodiumEdgeCases(t *testing.T) {
	alice, err := IdentityFromSeed(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	msg := "claudemesh/test"
	sig, _ := hex.DecodeString(alice.Sign(msg))

	// S + L: the same signature with a non-canonical S.
	s, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		t.Fatal(err)
	}
	var sPlusL [32]byte
	copy(sPlusL[:], s.Bytes())
	lb := append(lMinusOne().Bytes(), 0)[:32]
	lb[0]++ // L itself
	var carry uint16
	for i := range sPlusL {
		sum := uint16(sPlusL[i]) + uint16(lb[i]) + carry
		sPlusL[i], carry = byte(sum), sum>>8
	}
	mall := append(append([]byte{}, sig[:32]...), sPlusL[:]...)
	if err := Verify(alice.Public(), msg, hex.EncodeToString(mall)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("non-canonical S accepted: %v", err)
	}

	// R of small order: the key's owner can make R the identity by taking
	// S = k·a, since then [S]B − [k]A is the identity too. crypto/ed25519
	// accepts that signature; libsodium refuses small-order R, and so must we.
	rID := edwards25519.NewIdentityPoint().Bytes()
	h := sha512.New()
	h.Write(rID)
	h.Write(alice.pub[:])
	h.Write([]byte(msg))
	k, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
	if err != nil {
		t.Fatal(err)
	}
	ah := sha512.Sum512(alice.seed[:])
	a, err := edwards25519.NewScalar().SetBytesWithClamping(ah[:32])
	if err != nil {
		t.Fatal(err)
	}
	smallR := append(append([]byte{}, rID...), edwards25519.NewScalar().Multiply(k, a).Bytes()...)
	if !ed25519.Verify(alice.pub[:], []byte(msg), smallR) {
		t.Fatal("test is wrong: crypto/ed25519 should accept the small-order-R signature")
	}
	if err := Verify(alice.Public(), msg, hex.EncodeToString(smallR)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("small-order R accepted: %v", err)
	}

	// A of small order (the identity): [k]A vanishes, so R = [S]B
	// "verifies" any message for crypto/ed25519. libsodium refuses A.
	var idKey PublicKey
	copy(idKey[:], rID)
	one := [32]byte{1}
	forged := append(edwards25519.NewGeneratorPoint().Bytes(), one[:]...)
	if !ed25519.Verify(idKey[:], []byte(msg), forged) {
		t.Fatal("test is wrong: crypto/ed25519 should accept the small-order-A signature")
	}
	if err := Verify(idKey, msg, hex.EncodeToString(forged)); !errors.Is(err, ErrBadSignature) || !errors.Is(err, ErrBadKey) {
		t.Errorf("small-order A accepted: %v", err)
	}
}

// TestMixedOrderKey: a canonical point that is neither of small order nor
// in the prime-order subgroup (alice's point plus the point of order 2).
// Only the [L]P check catches it; libsodium's pk_to_curve25519 refuses it.
func TestMixedOrderKey(t *testing.T) {
	alice, _ := IdentityFromSeed(bytes.Repeat([]byte{1}, 32))
	a, err := new(edwards25519.Point).SetBytes(alice.pub[:])
	if err != nil {
		t.Fatal(err)
	}
	t2b, _ := hex.DecodeString("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
	t2, err := new(edwards25519.Point).SetBytes(t2b)
	if err != nil {
		t.Fatal(err)
	}
	var p PublicKey
	copy(p[:], new(edwards25519.Point).Add(a, t2).Bytes())
	err = ValidatePublicKey(p)
	if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), "subgroup") {
		t.Errorf("mixed-order key: %v", err)
	}
	if _, err := p.X25519(); !errors.Is(err, ErrBadKey) {
		t.Errorf("X25519 of mixed-order key: %v", err)
	}
}

func TestTamperedCiphertexts(t *testing.T) {
	v := loadVectors(t)
	alice, bob := v.identity(t, "alice"), v.identity(t, "bob")

	vb := v.Box
	for _, i := range []int{0, 15, 16, 1000} {
		if _, err := OpenBox(vb.Nonce, flipB64(t, vb.Ciphertext, i), alice.Public(), bob); !errors.Is(err, ErrDecrypt) {
			t.Errorf("box byte %d: %v", i, err)
		}
	}
	if _, err := OpenBox(flipB64(t, vb.Nonce, 3), vb.Ciphertext, alice.Public(), bob); !errors.Is(err, ErrDecrypt) {
		t.Errorf("box nonce: %v", err)
	}
	if _, err := OpenBox(vb.Nonce, EncodeB64(make([]byte, 15)), alice.Public(), bob); !errors.Is(err, ErrDecrypt) {
		t.Errorf("short box: %v", err)
	}
	if _, err := OpenBox(vb.Nonce, "", alice.Public(), bob); !errors.Is(err, ErrDecrypt) {
		t.Errorf("empty box: %v", err)
	}

	vs := v.Secretbox
	key := unhex32(t, vs.Key)
	if _, err := SecretOpen(vs.Nonce, flipB64(t, vs.Ciphertext, 20), &key); !errors.Is(err, ErrDecrypt) {
		t.Errorf("secretbox: %v", err)
	}
	wrong := key
	wrong[0] ^= 1
	if _, err := SecretOpen(vs.Nonce, vs.Ciphertext, &wrong); !errors.Is(err, ErrDecrypt) {
		t.Errorf("secretbox wrong key: %v", err)
	}

	tp := v.Signed.TopicPost
	topicID := signedField(t, tp.String, 2)
	tk := unhex32(t, tp.TopicKey)
	open := func(g int, nonce, ct, sig string, k *[32]byte, from PublicKey) error {
		_, err := OpenTopicPost(v.MeshID, topicID, g, nonce, ct, sig, k, from)
		return err
	}
	for name, err := range map[string]error{
		"ciphertext": open(tp.KeyGen, tp.Nonce, flipB64(t, tp.Ciphertext, 17), tp.Signature, &tk, alice.Public()),
		"nonce":      open(tp.KeyGen, flipB64(t, tp.Nonce, 0), tp.Ciphertext, tp.Signature, &tk, alice.Public()),
		"signature":  open(tp.KeyGen, tp.Nonce, tp.Ciphertext, flipHex(t, tp.Signature, 5), &tk, alice.Public()),
		"keyGen":     open(tp.KeyGen+1, tp.Nonce, tp.Ciphertext, tp.Signature, &tk, alice.Public()),
		"sender":     open(tp.KeyGen, tp.Nonce, tp.Ciphertext, tp.Signature, &tk, bob.Public()),
	} {
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("topic post with tampered %s: %v", name, err)
		}
	}
	if err := open(tp.KeyGen, tp.Nonce, tp.Ciphertext, tp.Signature, &wrong, alice.Public()); !errors.Is(err, ErrDecrypt) {
		t.Errorf("topic post under the wrong key: %v", err)
	}

	ts := v.Signed.TopicSeal
	seal := func(blob, nonce, sig string) error {
		_, err := OpenTopicSeal(v.MeshID, topicID, tp.KeyGen, blob, nonce, sig, alice.Public(), bob)
		return err
	}
	if err := seal(flipB64(t, ts.Blob, 40), ts.Nonce, ts.Signature); !errors.Is(err, ErrBadSignature) {
		t.Errorf("seal blob: %v", err)
	}
	if err := seal(ts.Blob, ts.Nonce, flipHex(t, ts.Signature, 9)); !errors.Is(err, ErrBadSignature) {
		t.Errorf("seal signature: %v", err)
	}
	if err := seal(EncodeB64(unb64(t, ts.Blob)[:79]), ts.Nonce, ts.Signature); !errors.Is(err, ErrBadBase64) {
		t.Errorf("short seal blob: %v", err)
	}
}

func TestTamperedMulti(t *testing.T) {
	v := loadVectors(t)
	vm := v.Multi
	alice, bob := v.identity(t, "alice"), v.identity(t, "bob")
	open := func(meshID, target, nonce, ct, sig string, key MultiKey, from PublicKey) error {
		_, err := OpenMulti(meshID, target, nonce, ct, sig, key, from, bob)
		return err
	}
	k := vm.Keys[0]
	for name, err := range map[string]error{
		"signature":  open(vm.MeshID, vm.TargetSpec, vm.Nonce, vm.Ciphertext, flipHex(t, vm.Signature, 1), k, alice.Public()),
		"ciphertext": open(vm.MeshID, vm.TargetSpec, vm.Nonce, flipB64(t, vm.Ciphertext, 30), vm.Signature, k, alice.Public()),
		"nonce":      open(vm.MeshID, vm.TargetSpec, flipB64(t, vm.Nonce, 1), vm.Ciphertext, vm.Signature, k, alice.Public()),
		"meshId":     open("01JDQM9S346Q3D25VT4F5V37E4", vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, k, alice.Public()),
		"targetSpec": open(vm.MeshID, "@ops", vm.Nonce, vm.Ciphertext, vm.Signature, k, alice.Public()),
		"sender":     open(vm.MeshID, vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, k, v.pub(t, "carol")),
	} {
		if !errors.Is(err, ErrBadSignature) {
			t.Errorf("multi with tampered %s: %v", name, err)
		}
	}
	// An entry addressed to someone else is refused even when it opens:
	// the broker hands each recipient only its own entry.
	other := k
	other.To = v.pub(t, "carol").Hex()
	if err := open(vm.MeshID, vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, other, alice.Public()); !errors.Is(err, ErrDecrypt) {
		t.Errorf("entry addressed to carol opened by bob: %v", err)
	}
	// The key box is not covered by the signature, but a tampered one
	// still fails to open.
	bad := k
	bad.Box = flipB64(t, k.Box, 20)
	if err := open(vm.MeshID, vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, bad, alice.Public()); !errors.Is(err, ErrDecrypt) {
		t.Errorf("tampered key box: %v", err)
	}

	// The attack the signature exists for: carol, a legitimate recipient,
	// knows K and pairs her own ciphertext with alice's key box for bob.
	K := unhex32(t, vm.ContentKey)
	forgedNonce, forgedCT := SecretSeal([]byte("forged"), &K)
	if err := open(vm.MeshID, vm.TargetSpec, forgedNonce, forgedCT, vm.Signature, k, alice.Public()); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged ciphertext under alice's key box: %v", err)
	}
}

func TestMultiRoundTrip(t *testing.T) {
	alice, _ := GenerateIdentity()
	recips := make([]*Identity, 3)
	pubs := make([]PublicKey, 0, 4)
	for i := range recips {
		recips[i], _ = GenerateIdentity()
		pubs = append(pubs, recips[i].Public())
	}
	pubs = append(pubs, recips[0].Public()) // a duplicate is boxed to once
	env, err := SealMulti("m", "@ops/db", []byte("hi all"), pubs, alice)
	if err != nil {
		t.Fatal(err)
	}
	if len(env.Keys) != 3 {
		t.Fatalf("%d keys, want 3 after de-duplication", len(env.Keys))
	}
	for i, r := range recips {
		pt, err := OpenMulti("m", "@ops/db", env.Nonce, env.Ciphertext, env.Signature, env.Keys[i], alice.Public(), r)
		if err != nil || string(pt) != "hi all" {
			t.Errorf("recipient %d: %q, %v", i, pt, err)
		}
	}
	// Empty plaintext round-trips as empty, not nil.
	env, err = SealMulti("m", "*", nil, pubs[:1], alice)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := OpenMulti("m", "*", env.Nonce, env.Ciphertext, env.Signature, env.Keys[0], alice.Public(), recips[0])
	if err != nil || pt == nil || len(pt) != 0 {
		t.Errorf("empty plaintext: %#v, %v", pt, err)
	}
}

func TestMultiRecipientLimits(t *testing.T) {
	alice, _ := GenerateIdentity()
	bob, _ := GenerateIdentity()
	if _, err := SealMulti("m", "*", []byte("x"), nil, alice); !errors.Is(err, ErrBadRecipients) {
		t.Errorf("no recipients: %v", err)
	}
	many := make([]PublicKey, MaxRecipients+1)
	for i := range many {
		id, _ := IdentityFromSeed(bytes.Repeat([]byte{byte(i), byte(i >> 8), 7, 9}, 8))
		many[i] = id.Public()
	}
	if _, err := SealMulti("m", "*", []byte("x"), many, alice); !errors.Is(err, ErrBadRecipients) {
		t.Errorf("%d recipients: %v", len(many), err)
	}
	// Duplicates do not count towards the limit.
	dups := append(append([]PublicKey{}, many[:MaxRecipients]...), many[0])
	if _, err := SealMultiWith("m", "*", []byte("x"), [32]byte{}, [24]byte{}, dups, make([][24]byte, len(dups)), alice); !errors.Is(err, ErrBadRecipients) {
		t.Errorf("SealMultiWith with a duplicate: %v", err)
	}
	if testing.Short() {
		t.Log("skipping the 1000-recipient seal in -short mode")
	} else if env, err := SealMulti("m", "*", []byte("x"), dups, alice); err != nil || len(env.Keys) != MaxRecipients {
		t.Errorf("1000 distinct + 1 duplicate: %v", err)
	}
	if _, err := SealMultiWith("m", "*", []byte("x"), [32]byte{}, [24]byte{}, []PublicKey{bob.Public()}, nil, alice); !errors.Is(err, ErrBadRecipients) {
		t.Errorf("missing nonces: %v", err)
	}
	if _, err := SealMulti("m|x", "*", []byte("x"), []PublicKey{bob.Public()}, alice); !errors.Is(err, ErrBadField) {
		t.Errorf("meshId with '|': %v", err)
	}
	var small PublicKey
	small[0] = 1 // the identity point
	if _, err := SealMulti("m", "*", []byte("x"), []PublicKey{bob.Public(), small}, alice); !errors.Is(err, ErrBadKey) {
		t.Errorf("small-order recipient: %v", err)
	}
}

func TestBoxRoundTrip(t *testing.T) {
	a, _ := GenerateIdentity()
	b, _ := GenerateIdentity()
	n1, c1, err := SealBox([]byte("hello"), b.Public(), a)
	if err != nil {
		t.Fatal(err)
	}
	n2, c2, _ := SealBox([]byte("hello"), b.Public(), a)
	if n1 == n2 || c1 == c2 {
		t.Error("two seals reused a nonce")
	}
	pt, err := OpenBox(n1, c1, a.Public(), b)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("OpenBox: %q, %v", pt, err)
	}
	k, err := Precompute(b.Public(), a)
	if err != nil {
		t.Fatal(err)
	}
	n, c := k.Seal([]byte("fast"))
	pt, err = OpenBox(n, c, a.Public(), b)
	if err != nil || string(pt) != "fast" {
		t.Fatalf("SharedKey.Seal then OpenBox: %q, %v", pt, err)
	}
	sk := [32]byte{9}
	n, c = SecretSeal([]byte("s"), &sk)
	if pt, err := SecretOpen(n, c, &sk); err != nil || string(pt) != "s" {
		t.Fatalf("SecretSeal: %q, %v", pt, err)
	}
}

// TestBoxSmallOrder: a box from (or to) a key of small order fails, both at
// the Edwards level (ValidatePublicKey) and at the X25519 level, where
// curve25519.X25519 refuses the all-zero shared secret as libsodium does.
func TestBoxSmallOrder(t *testing.T) {
	v := loadVectors(t)
	bob := v.identity(t, "bob")
	for _, r := range v.RejectPubkeys {
		var p PublicKey
		copy(p[:], unhexN(t, r.Pubkey))
		if _, err := OpenBox(v.Box.Nonce, v.Box.Ciphertext, p, bob); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: %v", r.Label, err)
		}
		if _, err := Precompute(p, bob); !errors.Is(err, ErrBadKey) {
			t.Errorf("Precompute %s: %v", r.Label, err)
		}
	}
	// Montgomery u = 0 and u = 1 are of small order.
	for _, u := range [][32]byte{{0}, {1}} {
		if _, err := boxKey(&bob.xsec, u[:]); !errors.Is(err, ErrBadKey) {
			t.Errorf("boxKey(u=%d): %v", u[0], err)
		}
	}

	// A topic seal whose ephemeral key has small order, correctly signed
	// (so only the X25519 check stands in the way), is refused.
	alice := v.identity(t, "alice")
	tp := v.Signed.TopicPost
	topicID := signedField(t, tp.String, 2)
	blob := make([]byte, sealBlobLen)
	copy(blob[32:], unb64(t, v.Signed.TopicSeal.Blob)[32:])
	s, err := TopicSealString(v.MeshID, topicID, tp.KeyGen, bob.PublicHex(), v.Signed.TopicSeal.Nonce, blob)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTopicSeal(v.MeshID, topicID, tp.KeyGen, EncodeB64(blob), v.Signed.TopicSeal.Nonce, alice.Sign(s), alice.Public(), bob); !errors.Is(err, ErrDecrypt) || !errors.Is(err, ErrBadKey) {
		t.Errorf("small-order ephemeral key: %v", err)
	}
}

func unhexN(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignedStringFields(t *testing.T) {
	pk := strings.Repeat("ab", 32)
	for _, bad := range []string{"a|b", "a\nb", "\r", "a\tb", "\x00", "\x7f", "a\u0085b", "\u009f", "\xff"} {
		for name, fn := range map[string]func() (string, error){
			"challenge":     func() (string, error) { return ChallengeString(bad, 1) },
			"hello":         func() (string, error) { return HelloString("m", bad, pk, pk, 1, pk) },
			"sessionAttest": func() (string, error) { return SessionAttestString("m", pk, bad, 1) },
			"sessionHello":  func() (string, error) { return SessionHelloString("m", pk, pk, pk, 1, bad) },
			"enroll":        func() (string, error) { return EnrollString("m", "i", pk, bad, 1) },
			"multi":         func() (string, error) { return MultiString("m", bad, "n", nil) },
			"topicPost":     func() (string, error) { return TopicPostString(bad, "t", 1, "n", nil) },
			"topicSeal":     func() (string, error) { return TopicSealString("m", "t", 1, bad, "n", nil) },
			"auditHead":     func() (string, error) { return AuditHeadString("m", 1, bad) },
			"invite": func() (string, error) {
				inv := Invite{MeshID: "m", MeshName: bad, ExpiresAt: 1, MaxUses: 1}
				return inv.SignedString()
			},
		} {
			if s, err := fn(); !errors.Is(err, ErrBadField) {
				t.Errorf("%s with %q: %q, %v", name, bad, s, err)
			}
		}
	}
	// Negative integers have no place in a signed string; key generations
	// start at 1.
	for name, fn := range map[string]func() (string, error){
		"challenge": func() (string, error) { return ChallengeString(pk, -1) },
		"hello":     func() (string, error) { return HelloString("m", "i", pk, pk, -5, pk) },
		"attest":    func() (string, error) { return SessionAttestString("m", pk, pk, -1) },
		"enroll":    func() (string, error) { return EnrollString("m", "i", pk, "n", -1) },
		"topicPost": func() (string, error) { return TopicPostString("m", "t", 0, "n", nil) },
		"topicSeal": func() (string, error) { return TopicSealString("m", "t", -1, pk, "n", nil) },
		"invite": func() (string, error) {
			inv := Invite{MeshID: "m", ExpiresAt: 1, MaxUses: -1}
			return inv.SignedString()
		},
	} {
		if s, err := fn(); !errors.Is(err, ErrBadField) {
			t.Errorf("%s: %q, %v", name, s, err)
		}
	}
	// Non-ASCII that is not a control character is fine.
	if s, err := EnrollString("m", "i", pk, "Zoë 🚀", 0); err != nil || !strings.HasSuffix(s, "|Zoë 🚀|0") {
		t.Errorf("unicode display name: %q, %v", s, err)
	}
}

func TestHexDecoding(t *testing.T) {
	good := strings.Repeat("0f", 32)
	if b, err := DecodeHex(good, 32); err != nil || len(b) != 32 || b[0] != 0x0f {
		t.Fatalf("DecodeHex: %x, %v", b, err)
	}
	for _, c := range []struct {
		s string
		n int
	}{
		{good[:62], 32}, {good + "00", 32}, {"", 0}, {"", 1}, {strings.Repeat("0F", 32), 32},
		{strings.Repeat("g0", 32), 32}, {" " + good[1:], 32}, {good, 0}, {good, -1},
	} {
		if _, err := DecodeHex(c.s, c.n); !errors.Is(err, ErrBadHex) {
			t.Errorf("DecodeHex(%q, %d): %v", c.s, c.n, err)
		}
	}
	if IsLowerHex("", 0) || IsLowerHex("abc", 4) || IsLowerHex("ABC", 3) || !IsLowerHex("abc", 3) {
		t.Error("IsLowerHex")
	}
	for _, s := range []string{strings.Repeat("ab", 31), strings.Repeat("ab", 33)} {
		if _, err := ParsePublicKey(s); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParsePublicKey(%d chars): %v", len(s), err)
		}
	}
	alice, _ := IdentityFromSeed(bytes.Repeat([]byte{1}, 32))
	for _, s := range []string{alice.SecretKeyHex()[:126], strings.ToUpper(alice.SecretKeyHex()), alice.SecretKeyHex()[:64]} {
		if _, err := ParseSecretKey(s); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParseSecretKey(%d chars): %v", len(s), err)
		}
	}
	if _, err := IdentityFromSeed(make([]byte, 31)); !errors.Is(err, ErrBadKey) {
		t.Errorf("31-byte seed: %v", err)
	}
}

func TestBase64Decoding(t *testing.T) {
	for _, ok := range []string{"", "AAAA", "AA==", "AAA=", "+/+/"} {
		b, err := DecodeB64(ok)
		if err != nil || EncodeB64(b) != ok {
			t.Errorf("DecodeB64(%q): %x, %v", ok, b, err)
		}
	}
	for _, bad := range []string{"AB==", "AAB=", "AA", "AAA", "AA=A", "AAAA\n", "AA\rAA", " AAAA", "AA-_", "AAAA====", "A===", "AA==AA=="} {
		if b, err := DecodeB64(bad); !errors.Is(err, ErrBadBase64) {
			t.Errorf("DecodeB64(%q) = %x, %v", bad, b, err)
		}
	}
	n := EncodeB64(make([]byte, 24))
	if _, err := DecodeB64Len(n, 24); err != nil {
		t.Error(err)
	}
	for _, c := range []struct {
		s string
		n int
	}{{n, 23}, {n, 25}, {EncodeB64(make([]byte, 23)), 24}, {n, -1}} {
		if _, err := DecodeB64Len(c.s, c.n); !errors.Is(err, ErrBadBase64) {
			t.Errorf("DecodeB64Len(%q, %d): %v", c.s, c.n, err)
		}
	}
	// Unpadded url-safe decoding, for invite tokens.
	for _, bad := range []string{"AA==", "AB", "A", "AA\n", "AA+/"} {
		if _, err := decodeB64URL(bad); !errors.Is(err, ErrBadBase64) {
			t.Errorf("decodeB64URL(%q): %v", bad, err)
		}
	}
}

func TestRandom(t *testing.T) {
	a, b := RandomToken(), RandomToken()
	if a == b || len(a) != 43 {
		t.Errorf("RandomToken: %q %q", a, b)
	}
	if raw, err := decodeB64URL(a); err != nil || len(raw) != 32 {
		t.Errorf("RandomToken decodes to %d bytes, %v", len(raw), err)
	}
	h1, h2 := RandomHex32(), RandomHex32()
	if h1 == h2 || !IsLowerHex(h1, 64) {
		t.Errorf("RandomHex32: %q %q", h1, h2)
	}
	if SHA256Hex([]byte("abc")) != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Error("SHA256Hex")
	}
	i1, _ := GenerateIdentity()
	i2, _ := GenerateIdentity()
	if i1.Public() == i2.Public() {
		t.Error("GenerateIdentity repeated a key")
	}
	if err := Verify(i1.Public(), "m", i1.Sign("m")); err != nil {
		t.Error(err)
	}
	if err := ValidatePublicKey(i1.Public()); err != nil {
		t.Error(err)
	}
	if got := fmt.Sprintf("%v %+v %#v %s", i1, i1, i1, i1); strings.Contains(got, i1.SecretKeyHex()[:64]) {
		t.Errorf("formatting leaks the seed: %s", got)
	}
}

// signInvite signs inv without validating it, to build invites that only
// Verify's field checks can refuse.
func signInvite(t testing.TB, inv *Invite, issuer *Identity) {
	t.Helper()
	s, err := inv.SignedString()
	if err != nil {
		t.Fatal(err)
	}
	inv.Signature = issuer.Sign(s)
}

func tokenOf(t testing.TB, js string) string {
	t.Helper()
	return encodeB64URL([]byte(js))
}

func TestInviteNegative(t *testing.T) {
	v := loadVectors(t)
	vi := v.Signed.Invite
	alice := v.identity(t, "alice")
	base := inviteFromJSON(t, vi.TokenJSON)

	// Tampered: change meshName, re-encode, keep the signature.
	tampered := *base
	tampered.MeshName = "Evil Team"
	if err := tampered.Verify(); !errors.Is(err, ErrBadInvite) || !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered Verify: %v", err)
	}
	tok, err := tampered.Token()
	if err != nil {
		t.Fatal(err)
	}
	parsed, _, err := ParseInvite(tok)
	if err != nil {
		t.Fatalf("tampered but well-formed token: %v", err)
	}
	if err := parsed.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("tampered ParseInvite then Verify: %v", err)
	}

	// Each field check, on an invite that is otherwise correctly signed.
	for name, mutate := range map[string]func(*Invite){
		"v=2":                 func(i *Invite) { i.V = 2 },
		"v=0":                 func(i *Invite) { i.V = 0 },
		"role owner":          func(i *Invite) { i.Role = "owner" },
		"maxUses 0":           func(i *Invite) { i.MaxUses = 0 },
		"maxUses 10001":       func(i *Invite) { i.MaxUses = 10001 },
		"lowercase ULID":      func(i *Invite) { i.InviteID = strings.ToLower(i.InviteID) },
		"not a ULID":          func(i *Invite) { i.InviteID = "invite-1" },
		"uppercase pubkey":    func(i *Invite) { i.BrokerPubkey = strings.ToUpper(i.BrokerPubkey) },
		"small-order broker":  func(i *Invite) { i.BrokerPubkey = "01" + strings.Repeat("00", 31) },
		"bad slug":            func(i *Invite) { i.MeshSlug = "Team" },
		"untrimmed name":      func(i *Invite) { i.MeshName = " Team" },
		"empty meshId":        func(i *Invite) { i.MeshID = "" },
		"broker URL scheme":   func(i *Invite) { i.BrokerURL = "ftp://example.com/ws" },
		"broker URL relative": func(i *Invite) { i.BrokerURL = "/ws" },
		"expiresAt 0":         func(i *Invite) { i.ExpiresAt = 0 },
	} {
		inv := *base
		mutate(&inv)
		signInvite(t, &inv, alice)
		if err := inv.Verify(); !errors.Is(err, ErrBadInvite) {
			t.Errorf("%s: Verify = %v", name, err)
		}
		if err := inv.Sign(alice); !errors.Is(err, ErrBadInvite) {
			t.Errorf("%s: Sign = %v", name, err)
		}
	}
	// Signed by someone other than the issuer it names.
	inv := *base
	signInvite(t, &inv, v.identity(t, "bob"))
	if err := inv.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Errorf("signed by bob: %v", err)
	}
	if err := inv.Sign(v.identity(t, "bob")); !errors.Is(err, ErrBadInvite) {
		t.Errorf("Sign with a key other than issuerPubkey: %v", err)
	}
	unsigned := *base
	unsigned.Signature = ""
	if _, err := unsigned.Token(); !errors.Is(err, ErrBadInvite) {
		t.Errorf("Token of an unsigned invite: %v", err)
	}

	good := vi.TokenJSON
	dup := strings.Replace(good, `"role":"member"`, `"role":"admin","role":"member"`, 1)
	padded := base64.URLEncoding.EncodeToString([]byte(good + " ")) // 1 extra byte forces padding
	if !strings.HasSuffix(padded, "=") {
		t.Fatal("test token is not padded")
	}
	for name, in := range map[string]string{
		"duplicate key":      tokenOf(t, dup),
		"padded token":       padded,
		"padded vector":      vi.Token + "==",
		"std alphabet":       strings.NewReplacer("-", "+", "_", "/").Replace(tokenOf(t, good+"\n\n\n??>>")),
		"unknown key":        tokenOf(t, strings.Replace(good, `{"v":1,`, `{"v":1,"admin":true,`, 1)),
		"array":              tokenOf(t, "["+good+"]"),
		"trailing data":      tokenOf(t, good+"{}"),
		"invalid UTF-8":      tokenOf(t, strings.Replace(good, `"Team"`, "\"Te\xffam\"", 1)),
		"case-folded key":    tokenOf(t, strings.Replace(good, `"meshName"`, `"MeshName"`, 1)),
		"string v":           tokenOf(t, strings.Replace(good, `"v":1`, `"v":"1"`, 1)),
		"fractional maxUses": tokenOf(t, strings.Replace(good, `"maxUses":5`, `"maxUses":5.5`, 1)),
		"empty":              "",
		"empty link":         "ic://join/",
		"other path":         "https://example.com/invite/" + vi.Token,
		"query":              "https://example.com/join/" + vi.Token + "?x=1",
		"fragment":           "https://example.com/join/" + vi.Token + "#x",
		"trailing slash":     "https://example.com/join/" + vi.Token + "/",
		"escaped":            "https://example.com/join/%65" + vi.Token[1:],
		"CRLF inside":        vi.Token[:20] + "\r\n" + vi.Token[20:],
		"too long":           strings.Repeat("A", maxInviteToken+1),
		"other scheme":       "ftp://example.com/join/" + vi.Token,
	} {
		got, _, err := ParseInvite(in)
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, ErrBadInvite) {
			t.Errorf("%s: ParseInvite = %+v, %v", name, got, err)
		}
	}
}

func TestInviteExpiry(t *testing.T) {
	inv := Invite{ExpiresAt: 1764698400000}
	if err := inv.CheckExpiry(time.UnixMilli(inv.ExpiresAt - 1)); err != nil {
		t.Error(err)
	}
	if err := inv.CheckExpiry(time.UnixMilli(inv.ExpiresAt)); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v", err)
	}
}

func TestInviteSignRoundTrip(t *testing.T) {
	issuer, _ := GenerateIdentity()
	broker, _ := GenerateIdentity()
	inv := &Invite{
		V: 1, MeshID: "01JDQM9S346Q3D25VT4F5V37E3", MeshSlug: "équipe-1"[2:], MeshName: "Équipe <&> \u2028 Ω",
		BrokerURL: "wss://mesh.example.com/ws", BrokerPubkey: broker.PublicHex(),
		InviteID: "01JDQXXQKFBF5KZNWJ47TAN9ZT", Role: "admin", ExpiresAt: 1 << 42, MaxUses: 10000,
	}
	if err := inv.Sign(issuer); err != nil {
		t.Fatal(err)
	}
	link, err := inv.Link()
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := inv.Token()
	raw, _ := decodeB64URL(tok)
	// Like JSON.stringify: no HTML escaping, non-ASCII and U+2028 raw.
	if !bytes.Contains(raw, []byte(`"meshName":"Équipe <&> `+"\u2028"+` Ω"`)) {
		t.Errorf("token JSON differs from JSON.stringify's: %s", raw)
	}
	got, gotTok, err := ParseInvite(link)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, inv) || gotTok != tok {
		t.Errorf("round trip: %+v", got)
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{
		"  Alice  ":             "Alice",
		"e\u0301clair":          "\u00e9clair", // NFC
		strings.Repeat("é", 64): strings.Repeat("é", 64),
		"\u3000Ω\u00a0":         "Ω", // Unicode spaces are trimmed too
		"Zoë 🚀":                 "Zoë 🚀",
	} {
		got, err := NormalizeName(in)
		if err != nil || got != want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "   ", strings.Repeat("a", 65), "a|b", "a\nb", "a\u0085b", "a\x7fb", "\xff", "tab\there"} {
		if got, err := NormalizeName(bad); !errors.Is(err, ErrBadField) {
			t.Errorf("NormalizeName(%q) = %q, %v", bad, got, err)
		}
	}
	for _, pair := range [][2]string{{"Alice", "alice"}, {"STRASSE", "straße"}, {"e\u0301", "É"}} {
		if NameKey(pair[0]) != NameKey(pair[1]) {
			t.Errorf("NameKey(%q) != NameKey(%q)", pair[0], pair[1])
		}
	}
	if NameKey("alice") == NameKey("alicia") {
		t.Error("NameKey collides distinct names")
	}
	for s, ok := range map[string]bool{"team": true, "0": true, "a-b-c": true, strings.Repeat("a", 32): true,
		strings.Repeat("a", 33): false, "-team": false, "Team": false, "te_am": false, "": false, "team\n": false,
		"team-": true, "a--b": true, "9-": true, "té": false, "a|b": false, "a b": false} {
		if ValidSlug(s) != ok {
			t.Errorf("ValidSlug(%q) != %v", s, ok)
		}
		if want := regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`).MatchString(s); want != ok {
			t.Errorf("test table: %q against the spec's pattern is %v", s, want)
		}
	}
}
