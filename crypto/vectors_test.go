package crypto

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

// The reference vectors, produced by libsodium (testdata/gen-vectors.mjs).
// Parsed with encoding/json so a typo in a field name leaves a zero value
// that the tests then fail on.

type vecIdentity struct {
	Seed, Pubkey, SecretKey, X25519Pubkey, X25519Secret string
}

type vecSigned struct {
	Signer, String, Signature string
}

type vectors struct {
	Identities           map[string]vecIdentity
	MeshID               string
	MemberID             string
	TimestampMs          int64
	ChallengeNonce       string
	AttestationExpiresAt int64
	Box                  struct {
		Sender, Recipient, Plaintext, Nonce, Ciphertext string
	}
	Secretbox struct {
		Key, Nonce, Plaintext, Ciphertext string
	}
	Multi struct {
		Sender, MeshID, TargetSpec, ContentKey, Plaintext, Nonce, Ciphertext string
		Keys                                                                 []MultiKey
		SignedString, Signature                                              string
	}
	Signed struct {
		Challenge, Hello, SessionAttest, SessionHello, Enroll, AuditHead vecSigned
		Invite                                                           struct {
			vecSigned
			TokenJSON string `json:"tokenJson"`
			Token     string
			Link      string
		}
		TopicPost struct {
			vecSigned
			TopicKey   string
			KeyGen     int
			Plaintext  string
			Nonce      string
			Ciphertext string
		}
		TopicSeal struct {
			vecSigned
			Recipient       string
			EphemeralSeed   string
			EphemeralPubkey string
			Nonce           string
			Blob            string
		}
	}
	Safety struct {
		A, B, Number string
	}
	RejectPubkeys []struct {
		Label            string
		Pubkey           string
		LibsodiumAccepts bool
	}
	MalformedInputs []struct {
		Label, Value, Field string
	}
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile("../testdata/crypto-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	v := new(vectors)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
	if len(v.Identities) == 0 || v.MeshID == "" || len(v.RejectPubkeys) == 0 {
		t.Fatal("vector file did not parse into the expected shape")
	}
	return v
}

func (v *vectors) identity(t testing.TB, name string) *Identity {
	t.Helper()
	vi, ok := v.Identities[name]
	if !ok {
		t.Fatalf("no identity %q in vectors", name)
	}
	seed, err := DecodeHex(vi.Seed, 32)
	if err != nil {
		t.Fatal(err)
	}
	id, err := IdentityFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (v *vectors) pub(t testing.TB, name string) PublicKey {
	t.Helper()
	p, err := ParsePublicKey(v.Identities[name].Pubkey)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

func unhex32(t testing.TB, s string) [32]byte {
	t.Helper()
	b, err := DecodeHex(s, 32)
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(b)
}

func unb64Nonce(t testing.TB, s string) [24]byte {
	t.Helper()
	b, err := DecodeB64Len(s, 24)
	if err != nil {
		t.Fatal(err)
	}
	return [24]byte(b)
}

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := DecodeB64(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func eq(t testing.TB, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func TestVectorIdentities(t *testing.T) {
	v := loadVectors(t)
	for _, name := range []string{"alice", "bob", "carol", "broker", "aliceSession"} {
		t.Run(name, func(t *testing.T) {
			vi := v.Identities[name]
			id := v.identity(t, name)
			eq(t, "pubkey", id.PublicHex(), vi.Pubkey)
			eq(t, "secretKey", id.SecretKeyHex(), vi.SecretKey)
			xs := id.X25519Secret()
			eq(t, "x25519Secret", hex.EncodeToString(xs[:]), vi.X25519Secret)
			xp, err := id.Public().X25519()
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "x25519Pubkey", hex.EncodeToString(xp[:]), vi.X25519Pubkey)

			loaded, err := ParseSecretKey(vi.SecretKey)
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "ParseSecretKey pubkey", loaded.PublicHex(), vi.Pubkey)
			p, err := ParsePublicKey(vi.Pubkey)
			if err != nil || p != id.Public() {
				t.Errorf("ParsePublicKey(%s) = %v, %v", vi.Pubkey, p, err)
			}
			if s := id.String(); strings.Contains(s, vi.Seed) || strings.Contains(s, vi.Seed[:16]) {
				t.Errorf("String() leaks the seed: %s", s)
			}
		})
	}
}

func TestVectorBox(t *testing.T) {
	v := loadVectors(t)
	vb := v.Box
	from, to := v.identity(t, vb.Sender), v.identity(t, vb.Recipient)
	ct, err := SealBoxWithNonce([]byte(vb.Plaintext), unb64Nonce(t, vb.Nonce), to.Public(), from)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "box ciphertext", ct, vb.Ciphertext)

	pt, err := OpenBox(vb.Nonce, vb.Ciphertext, from.Public(), to)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "box plaintext", string(pt), vb.Plaintext)

	// The precomputed key is the same object from both ends.
	k1, err := Precompute(to.Public(), from)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := Precompute(from.Public(), to)
	if err != nil {
		t.Fatal(err)
	}
	if *k1 != *k2 {
		t.Error("Precompute is not symmetric")
	}
	pt, err = k2.Open(vb.Nonce, vb.Ciphertext)
	if err != nil || string(pt) != vb.Plaintext {
		t.Errorf("SharedKey.Open = %q, %v", pt, err)
	}
	// The box is keyed to the pair: a third party cannot open it.
	if _, err := OpenBox(vb.Nonce, vb.Ciphertext, from.Public(), v.identity(t, "carol")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("carol opened alice's box to bob: %v", err)
	}
}

func TestVectorSecretbox(t *testing.T) {
	v := loadVectors(t)
	vs := v.Secretbox
	key := unhex32(t, vs.Key)
	eq(t, "secretbox ciphertext", SecretSealWithNonce([]byte(vs.Plaintext), unb64Nonce(t, vs.Nonce), &key), vs.Ciphertext)
	pt, err := SecretOpen(vs.Nonce, vs.Ciphertext, &key)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "secretbox plaintext", string(pt), vs.Plaintext)
}

func TestVectorMulti(t *testing.T) {
	v := loadVectors(t)
	vm := v.Multi
	from := v.identity(t, vm.Sender)
	recipients := []PublicKey{v.pub(t, "bob"), v.pub(t, "carol")}
	if len(vm.Keys) != len(recipients) {
		t.Fatalf("vectors have %d keys, want %d", len(vm.Keys), len(recipients))
	}
	nonces := make([][24]byte, len(vm.Keys))
	for i, k := range vm.Keys {
		eq(t, "key order", k.To, recipients[i].Hex())
		nonces[i] = unb64Nonce(t, k.Nonce)
	}
	env, err := SealMultiWith(vm.MeshID, vm.TargetSpec, []byte(vm.Plaintext), unhex32(t, vm.ContentKey),
		unb64Nonce(t, vm.Nonce), recipients, nonces, from)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "multi nonce", env.Nonce, vm.Nonce)
	eq(t, "multi ciphertext", env.Ciphertext, vm.Ciphertext)
	eq(t, "multi signature", env.Signature, vm.Signature)
	for i := range vm.Keys {
		if env.Keys[i] != vm.Keys[i] {
			t.Errorf("key %d:\n got  %+v\n want %+v", i, env.Keys[i], vm.Keys[i])
		}
	}
	s, err := MultiString(vm.MeshID, vm.TargetSpec, vm.Nonce, unb64(t, vm.Ciphertext))
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "multi signedString", s, vm.SignedString)
	if err := Verify(from.Public(), vm.SignedString, vm.Signature); err != nil {
		t.Error(err)
	}

	for i, name := range []string{"bob", "carol"} {
		pt, err := OpenMulti(vm.MeshID, vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, vm.Keys[i], from.Public(), v.identity(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		eq(t, name+" multi plaintext", string(pt), vm.Plaintext)
	}
	// bob's entry handed to carol is refused, not mis-decrypted.
	if _, err := OpenMulti(vm.MeshID, vm.TargetSpec, vm.Nonce, vm.Ciphertext, vm.Signature, vm.Keys[0], from.Public(), v.identity(t, "carol")); !errors.Is(err, ErrDecrypt) {
		t.Errorf("carol with bob's key entry: %v", err)
	}
}

// TestVectorSigned rebuilds every signed string from its fields with the
// package's builders, re-signs it with the named signer's seed (ed25519 is
// deterministic, so the signature must match libsodium's byte for byte) and
// verifies the vector's signature.
func TestVectorSigned(t *testing.T) {
	v := loadVectors(t)
	alice, aliceSession, broker, bob := v.Identities["alice"], v.Identities["aliceSession"], v.Identities["broker"], v.Identities["bob"]
	vs := v.Signed
	inv := vs.Invite
	invite := inviteFromJSON(t, inv.TokenJSON)
	tp, ts := vs.TopicPost, vs.TopicSeal
	topicID := signedField(t, tp.String, 2)

	build := map[string]struct {
		vec vecSigned
		fn  func() (string, error)
	}{
		"challenge": {vs.Challenge, func() (string, error) {
			return ChallengeString(v.ChallengeNonce, v.TimestampMs)
		}},
		"hello": {vs.Hello, func() (string, error) {
			return HelloString(v.MeshID, v.MemberID, alice.Pubkey, broker.Pubkey, v.TimestampMs, v.ChallengeNonce)
		}},
		"sessionAttest": {vs.SessionAttest, func() (string, error) {
			return SessionAttestString(v.MeshID, alice.Pubkey, aliceSession.Pubkey, v.AttestationExpiresAt)
		}},
		"sessionHello": {vs.SessionHello, func() (string, error) {
			return SessionHelloString(v.MeshID, alice.Pubkey, aliceSession.Pubkey, broker.Pubkey, v.TimestampMs, v.ChallengeNonce)
		}},
		"invite": {inv.vecSigned, invite.SignedString},
		"enroll": {vs.Enroll, func() (string, error) {
			return EnrollString(v.MeshID, invite.InviteID, bob.Pubkey, "bob", v.TimestampMs)
		}},
		"topicPost": {tp.vecSigned, func() (string, error) {
			return TopicPostString(v.MeshID, topicID, tp.KeyGen, tp.Nonce, unb64(t, tp.Ciphertext))
		}},
		"topicSeal": {ts.vecSigned, func() (string, error) {
			return TopicSealString(v.MeshID, topicID, tp.KeyGen, v.Identities[ts.Recipient].Pubkey, ts.Nonce, unb64(t, ts.Blob))
		}},
		"auditHead": {vs.AuditHead, func() (string, error) {
			return AuditHeadString(v.MeshID, 42, strings.Repeat("cd", 32))
		}},
	}
	for name, c := range build {
		t.Run(name, func(t *testing.T) {
			if c.vec.String == "" || c.vec.Signer == "" {
				t.Fatal("vector missing")
			}
			s, err := c.fn()
			if err != nil {
				t.Fatal(err)
			}
			eq(t, "string", s, c.vec.String)
			signer := v.identity(t, c.vec.Signer)
			eq(t, "signature", signer.Sign(s), c.vec.Signature)
			if err := Verify(signer.Public(), c.vec.String, c.vec.Signature); err != nil {
				t.Error(err)
			}
			// The same signature under any other key or string fails.
			if err := Verify(v.pub(t, "carol"), c.vec.String, c.vec.Signature); !errors.Is(err, ErrBadSignature) {
				t.Errorf("verified under carol's key: %v", err)
			}
			if err := Verify(signer.Public(), c.vec.String+"x", c.vec.Signature); !errors.Is(err, ErrBadSignature) {
				t.Errorf("verified a longer string: %v", err)
			}
		})
	}
}

// signedField returns field i of a '|'-joined signed string (0 = prefix).
func signedField(t testing.TB, s string, i int) string {
	t.Helper()
	f := strings.Split(s, "|")
	if i >= len(f) {
		t.Fatalf("%q has no field %d", s, i)
	}
	return f[i]
}

func inviteFromJSON(t testing.TB, js string) *Invite {
	t.Helper()
	inv := new(Invite)
	if err := json.Unmarshal([]byte(js), inv); err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestVectorInvite(t *testing.T) {
	v := loadVectors(t)
	vi := v.Signed.Invite
	alice := v.identity(t, "alice")

	want := inviteFromJSON(t, vi.TokenJSON)
	fresh := *want
	fresh.Signature, fresh.IssuerPubkey = "", ""
	if err := fresh.Sign(alice); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fresh, *want) {
		t.Errorf("Sign:\n got  %+v\n want %+v", fresh, *want)
	}
	if err := fresh.Verify(); err != nil {
		t.Fatal(err)
	}
	tok, err := fresh.Token()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := decodeB64URL(tok)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "tokenJson", string(raw), vi.TokenJSON)
	eq(t, "token", tok, vi.Token)
	link, err := fresh.Link()
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "link", link, vi.Link)

	for _, in := range []string{
		vi.Link,
		vi.Token,
		"  " + vi.Link + "\n",
		"https://broker.example.com/join/" + vi.Token,
		"http://127.0.0.1:7900/join/" + vi.Token,
		"https://example.com/claudemesh/join/" + vi.Token,
	} {
		got, gotTok, err := ParseInvite(in)
		if err != nil {
			t.Fatalf("ParseInvite(%.40q…): %v", in, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("ParseInvite round trip:\n got  %+v\n want %+v", *got, *want)
		}
		if err := got.Verify(); err != nil {
			t.Errorf("Verify after ParseInvite: %v", err)
		}
		eq(t, "returned token", gotTok, vi.Token)
	}

	// Keys in another order parse to the same invite, and the token is
	// returned as presented (not re-encoded).
	reordered := `{"signature":"` + want.Signature + `","maxUses":5,"v":1,"meshSlug":"team","meshId":"01JDQM9S346Q3D25VT4F5V37E3","meshName":"Team","brokerUrl":"ws://127.0.0.1:7900/ws","brokerPubkey":"` + want.BrokerPubkey + `","inviteId":"01JDQXXQKFBF5KZNWJ47TAN9ZT","role":"member","expiresAt":1764698400000,"issuerPubkey":"` + want.IssuerPubkey + `"}`
	rtok := encodeB64URL([]byte(reordered))
	got, gotTok, err := ParseInvite(rtok)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) || gotTok != rtok {
		t.Errorf("reordered keys: %+v %q", *got, gotTok)
	}
}

func TestVectorTopic(t *testing.T) {
	v := loadVectors(t)
	tp, ts := v.Signed.TopicPost, v.Signed.TopicSeal
	topicID := signedField(t, tp.String, 2)
	alice, bob := v.identity(t, tp.Signer), v.identity(t, ts.Recipient)
	key := unhex32(t, tp.TopicKey)

	n, ct, sig, err := SealTopicPostWithNonce(v.MeshID, topicID, tp.KeyGen, []byte(tp.Plaintext), unb64Nonce(t, tp.Nonce), &key, alice)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "topicPost nonce", n, tp.Nonce)
	eq(t, "topicPost ciphertext", ct, tp.Ciphertext)
	eq(t, "topicPost signature", sig, tp.Signature)
	pt, err := OpenTopicPost(v.MeshID, topicID, tp.KeyGen, tp.Nonce, tp.Ciphertext, tp.Signature, &key, alice.Public())
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "topicPost plaintext", string(pt), tp.Plaintext)

	seed := unhex32(t, ts.EphemeralSeed)
	_, epub, err := ephemeralKeypair(&seed)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "ephemeralPubkey", hex.EncodeToString(epub[:]), ts.EphemeralPubkey)
	blob, n, sig, err := SealTopicKeyWith(v.MeshID, topicID, tp.KeyGen, &key, bob.Public(), seed, unb64Nonce(t, ts.Nonce), alice)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "topicSeal blob", blob, ts.Blob)
	eq(t, "topicSeal nonce", n, ts.Nonce)
	eq(t, "topicSeal signature", sig, ts.Signature)
	eq(t, "blob prefix", hex.EncodeToString(unb64(t, ts.Blob)[:32]), ts.EphemeralPubkey)
	got, err := OpenTopicSeal(v.MeshID, topicID, tp.KeyGen, ts.Blob, ts.Nonce, ts.Signature, alice.Public(), bob)
	if err != nil {
		t.Fatal(err)
	}
	if *got != key {
		t.Errorf("opened topic key %x, want %x", *got, key)
	}
	// A seal for bob does not open for carol: the signed string names bob.
	if _, err := OpenTopicSeal(v.MeshID, topicID, tp.KeyGen, ts.Blob, ts.Nonce, ts.Signature, alice.Public(), v.identity(t, "carol")); !errors.Is(err, ErrBadSignature) {
		t.Errorf("carol opened bob's seal: %v", err)
	}
}

func TestVectorSafetyNumber(t *testing.T) {
	v := loadVectors(t)
	a, b := v.pub(t, v.Safety.A), v.pub(t, v.Safety.B)
	eq(t, "safety number", SafetyNumber(a, b), v.Safety.Number)
	eq(t, "safety number (swapped)", SafetyNumber(b, a), v.Safety.Number)
	if SafetyNumber(a, v.pub(t, "carol")) == v.Safety.Number {
		t.Error("safety number does not depend on the keys")
	}
}

func TestVectorRejectPubkeys(t *testing.T) {
	v := loadVectors(t)
	alice := v.identity(t, "alice")
	for _, r := range v.RejectPubkeys {
		t.Run(r.Label, func(t *testing.T) {
			if r.LibsodiumAccepts {
				t.Fatal("vector file lists a key libsodium accepts as a reject vector")
			}
			if _, err := ParsePublicKey(r.Pubkey); !errors.Is(err, ErrBadKey) {
				t.Errorf("ParsePublicKey: %v", err)
			}
			var p PublicKey
			if err := decodeHexInto(p[:], r.Pubkey); err != nil {
				t.Fatal(err)
			}
			if err := ValidatePublicKey(p); !errors.Is(err, ErrBadKey) {
				t.Errorf("ValidatePublicKey: %v", err)
			}
			if _, err := p.X25519(); !errors.Is(err, ErrBadKey) {
				t.Errorf("X25519: %v", err)
			}
			if _, err := SealBoxWithNonce([]byte("x"), [24]byte{}, p, alice); !errors.Is(err, ErrBadKey) {
				t.Errorf("SealBox to it: %v", err)
			}
			if _, err := OpenBox(v.Box.Nonce, v.Box.Ciphertext, p, alice); !errors.Is(err, ErrBadKey) {
				t.Errorf("OpenBox from it: %v", err)
			}
			if err := Verify(p, "m", strings.Repeat("00", 64)); !errors.Is(err, ErrBadSignature) {
				t.Errorf("Verify under it: %v", err)
			}
		})
	}
}

func TestVectorMalformedInputs(t *testing.T) {
	v := loadVectors(t)
	fields := map[string]bool{}
	for _, m := range v.MalformedInputs {
		fields[m.Field] = true
		t.Run(m.Label, func(t *testing.T) {
			switch m.Field {
			case "pubkey":
				if _, err := ParsePublicKey(m.Value); !errors.Is(err, ErrBadKey) || !errors.Is(err, ErrBadHex) {
					t.Errorf("ParsePublicKey: %v", err)
				}
				if _, err := DecodeHex(m.Value, 32); !errors.Is(err, ErrBadHex) {
					t.Errorf("DecodeHex: %v", err)
				}
				// The same key in lowercase is fine: only the spelling is wrong.
				if _, err := ParsePublicKey(strings.ToLower(m.Value)); err != nil {
					t.Errorf("lowercase: %v", err)
				}
			case "nonce":
				if _, err := DecodeB64(m.Value); !errors.Is(err, ErrBadBase64) {
					t.Errorf("DecodeB64: %v", err)
				}
				if _, err := DecodeB64Len(m.Value, 24); !errors.Is(err, ErrBadBase64) {
					t.Errorf("DecodeB64Len: %v", err)
				}
				key := unhex32(t, v.Secretbox.Key)
				if _, err := SecretOpen(m.Value, v.Secretbox.Ciphertext, &key); !errors.Is(err, ErrBadBase64) {
					t.Errorf("SecretOpen: %v", err)
				}
			case "secretKey":
				if _, err := ParseSecretKey(m.Value); !errors.Is(err, ErrBadKey) {
					t.Errorf("ParseSecretKey: %v", err)
				}
			default:
				t.Fatalf("no decoder for field %q", m.Field)
			}
		})
	}
	for _, f := range []string{"pubkey", "nonce", "secretKey"} {
		if !fields[f] {
			t.Errorf("no malformed vector for %s", f)
		}
	}
}
