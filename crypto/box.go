package crypto

import (
	"fmt"

	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/nacl/secretbox"
	"golang.org/x/crypto/salsa20/salsa"
)

// boxOverhead is the Poly1305 tag that crypto_box_easy and
// crypto_secretbox_easy put before the ciphertext.
const boxOverhead = secretbox.Overhead

// SharedKey is the precomputed key of a box between two identities
// (crypto_box_beforenm). It is symmetric: the same for (alice, bob) and
// (bob, alice).
type SharedKey [32]byte

// boxKey is crypto_box_beforenm: HSalsa20 of the X25519 shared secret.
// curve25519.X25519 refuses an all-zero shared secret, as libsodium's
// crypto_scalarmult does; nacl/box.Precompute would not, which is why it is
// not used.
func boxKey(sk *[32]byte, peerX25519 []byte) (*SharedKey, error) {
	shared, err := curve25519.X25519(sk[:], peerX25519)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	var s [32]byte
	copy(s[:], shared)
	var zero [16]byte
	k := new(SharedKey)
	salsa.HSalsa20((*[32]byte)(k), &zero, &s, &salsa.Sigma)
	return k, nil
}

// Precompute derives the box key between self and peer (crypto_box_beforenm),
// once per pair for the process (sharedkeys.go); the returned key is shared
// and must not be modified. peer is validated first.
func Precompute(peer PublicKey, self *Identity) (*SharedKey, error) {
	var id [64]byte
	copy(id[:32], self.pub[:])
	copy(id[32:], peer[:])
	if k, ok := sharedKeys.get(id); ok {
		return k, nil
	}
	px, err := peer.X25519()
	if err != nil {
		return nil, err
	}
	k, err := boxKey(&self.xsec, px[:])
	if err != nil {
		return nil, err
	}
	sharedKeys.put(id, k)
	return k, nil
}

// Seal boxes plaintext under k with a fresh random nonce.
func (k *SharedKey) Seal(plaintext []byte) (nonceB64, ciphertextB64 string) {
	n := randomNonce()
	return EncodeB64(n[:]), k.sealWithNonce(plaintext, &n)
}

func (k *SharedKey) sealWithNonce(plaintext []byte, nonce *[24]byte) string {
	return EncodeB64(secretbox.Seal(nil, plaintext, nonce, (*[32]byte)(k)))
}

// Open opens a box made under k; any failure wraps ErrDecrypt, or
// ErrBadBase64 for malformed input.
func (k *SharedKey) Open(nonceB64, ciphertextB64 string) ([]byte, error) {
	return secretOpen(nonceB64, ciphertextB64, (*[32]byte)(k))
}

// SealBox is crypto_box_easy(plaintext, nonce, to_x25519, from_x25519_sk)
// with a fresh random nonce: the body of a direct message.
func SealBox(plaintext []byte, to PublicKey, from *Identity) (nonceB64, ciphertextB64 string, err error) {
	n := randomNonce()
	ct, err := SealBoxWithNonce(plaintext, n, to, from)
	if err != nil {
		return "", "", err
	}
	return EncodeB64(n[:]), ct, nil
}

// SealBoxWithNonce is SealBox with a caller-chosen nonce, for test vectors.
// Never reuse a nonce with the same pair of keys.
func SealBoxWithNonce(plaintext []byte, nonce [24]byte, to PublicKey, from *Identity) (ciphertextB64 string, err error) {
	k, err := Precompute(to, from)
	if err != nil {
		return "", err
	}
	return k.sealWithNonce(plaintext, &nonce), nil
}

// OpenBox opens a direct message boxed by from to the identity to.
func OpenBox(nonceB64, ciphertextB64 string, from PublicKey, to *Identity) ([]byte, error) {
	k, err := Precompute(from, to)
	if err != nil {
		return nil, err
	}
	return k.Open(nonceB64, ciphertextB64)
}

// SecretSeal is crypto_secretbox_easy with a fresh random nonce.
func SecretSeal(plaintext []byte, key *[32]byte) (nonceB64, ciphertextB64 string) {
	n := randomNonce()
	return EncodeB64(n[:]), SecretSealWithNonce(plaintext, n, key)
}

// SecretSealWithNonce is SecretSeal with a caller-chosen nonce, for test
// vectors. Never reuse a nonce with the same key.
func SecretSealWithNonce(plaintext []byte, nonce [24]byte, key *[32]byte) string {
	return EncodeB64(secretbox.Seal(nil, plaintext, &nonce, key))
}

// SecretOpen opens crypto_secretbox_easy output; any failure wraps
// ErrDecrypt, or ErrBadBase64 for malformed input.
func SecretOpen(nonceB64, ciphertextB64 string, key *[32]byte) ([]byte, error) {
	return secretOpen(nonceB64, ciphertextB64, key)
}

func secretOpen(nonceB64, ciphertextB64 string, key *[32]byte) ([]byte, error) {
	n, err := decodeNonce(nonceB64)
	if err != nil {
		return nil, err
	}
	ct, err := DecodeB64(ciphertextB64)
	if err != nil {
		return nil, fmt.Errorf("ciphertext: %w", err)
	}
	return secretOpenBytes(ct, n, key)
}

func secretOpenBytes(ct []byte, nonce *[24]byte, key *[32]byte) ([]byte, error) {
	if len(ct) < boxOverhead {
		return nil, fmt.Errorf("%w: ciphertext shorter than its tag", ErrDecrypt)
	}
	pt, ok := secretbox.Open(nil, ct, nonce, key)
	if !ok {
		return nil, ErrDecrypt
	}
	if pt == nil { // an empty plaintext opens as nil; callers get a non-nil empty slice
		pt = []byte{}
	}
	return pt, nil
}

func secretboxSeal(plaintext []byte, nonce *[24]byte, key *[32]byte) []byte {
	return secretbox.Seal(nil, plaintext, nonce, key)
}
