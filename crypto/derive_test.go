package crypto

import (
	"bytes"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/blake2b"
)

// TestDeriveIsTheDocumentedConstruction recomputes DeriveNonce and
// DeriveKey as docs/crypto.md "Deterministic sealing" writes them, with
// BLAKE2b (crypto_generichash) and nothing of derive.go: an independent
// client that follows the document gets the same bytes.
func TestDeriveIsTheDocumentedConstruction(t *testing.T) {
	seed := bytes.Repeat([]byte{0x01}, 32)
	id, err := IdentityFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	secret := func() []byte {
		h, _ := blake2b.New(32, seed)
		h.Write([]byte("claudemesh/v1 deterministic-seal"))
		return h.Sum(nil)
	}()
	lp := func(b []byte) []byte {
		n := uint64(len(b))
		return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24), byte(n >> 32), byte(n >> 40), byte(n >> 48), byte(n >> 56)}, b...)
	}
	want := func(size int, label string, fields ...[]byte) string {
		h, _ := blake2b.New(size, secret)
		h.Write(lp([]byte(label)))
		for _, f := range fields {
			h.Write(lp(f))
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	n := id.DeriveNonce("box nonce", []byte("order-42"), []byte("ab"), []byte("hello"))
	if got := hex.EncodeToString(n[:]); got != want(24, "box nonce", []byte("order-42"), []byte("ab"), []byte("hello")) {
		t.Fatalf("DeriveNonce = %s", got)
	}
	k := id.DeriveKey("multi content key", []byte("m"), nil)
	if got := hex.EncodeToString(k[:]); got != want(32, "multi content key", []byte("m"), nil) {
		t.Fatalf("DeriveKey = %s", got)
	}
	// Length prefixes: fields that concatenate alike are different inputs,
	// and so is a label moved into a field.
	distinct := map[[24]byte]string{}
	for what, n := range map[string][24]byte{
		"ab|c":     id.DeriveNonce("l", []byte("ab"), []byte("c")),
		"a|bc":     id.DeriveNonce("l", []byte("a"), []byte("bc")),
		"abc":      id.DeriveNonce("l", []byte("abc")),
		"abc|":     id.DeriveNonce("l", []byte("abc"), nil),
		"label":    id.DeriveNonce("la", []byte("bc")),
		"identity": mustIdentity(t).DeriveNonce("l", []byte("ab"), []byte("c")),
	} {
		if prev, dup := distinct[n]; dup {
			t.Errorf("%s derives the nonce of %s", what, prev)
		}
		distinct[n] = what
	}
}

func mustIdentity(t *testing.T) *Identity {
	t.Helper()
	id, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}
