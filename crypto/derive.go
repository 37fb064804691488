package crypto

import (
	"encoding/binary"

	"golang.org/x/crypto/blake2b"
)

// DeterministicSealDomain is the message BLAKE2b hashes, keyed with an
// identity's ed25519 seed, to make that identity's deterministic-seal
// secret (docs/crypto.md "Deterministic sealing"). A constant of the
// format: changing it changes every derived nonce, and a retry sealed by
// another version would no longer be byte-identical.
const DeterministicSealDomain = "claudemesh/v1 deterministic-seal"

// detSealSecret is crypto_generichash(32, DeterministicSealDomain,
// key = seed): a secret only this identity can compute, separate from its
// signing and box keys.
func (id *Identity) detSealSecret() [32]byte {
	h, err := blake2b.New256(id.seed[:])
	if err != nil {
		panic("crypto: blake2b refused a 32-byte key") // cannot happen
	}
	h.Write([]byte(DeterministicSealDomain))
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// derive is crypto_generichash(size, lp(label) ‖ lp(field)…, key =
// detSealSecret), where lp(x) is len(x) as 8 bytes little-endian followed
// by x: every field is length-prefixed, so no two different lists of
// fields hash the same bytes.
func (id *Identity) derive(out []byte, label string, fields ...[]byte) {
	s := id.detSealSecret()
	h, err := blake2b.New(len(out), s[:])
	if err != nil {
		panic("crypto: blake2b refused its parameters") // sizes are constants
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(label)))
	h.Write(n[:])
	h.Write([]byte(label))
	for _, f := range fields {
		binary.LittleEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	h.Sum(out[:0])
}

// DeriveNonce is a 24-byte nonce derived from this identity's secret, a
// label and fields (docs/crypto.md "Deterministic sealing"): the same
// inputs give the same nonce, different inputs unrelated ones, and nobody
// without the identity's secret key can predict either. A caller must put
// in the fields everything the nonce encrypts under (the recipient, the
// key) and the plaintext itself, SIV-style, so that one nonce is never
// used for two different messages under one key.
func (id *Identity) DeriveNonce(label string, fields ...[]byte) [24]byte {
	var n [24]byte
	id.derive(n[:], label, fields...)
	return n
}

// DeriveKey is DeriveNonce for a 32-byte symmetric key (a multi message's
// content key).
func (id *Identity) DeriveKey(label string, fields ...[]byte) [32]byte {
	var k [32]byte
	id.derive(k[:], label, fields...)
	return k
}
