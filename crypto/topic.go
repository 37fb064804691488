package crypto

import (
	"crypto/rand"
	"crypto/sha512"
	"fmt"

	"golang.org/x/crypto/curve25519"
)

// SealTopicPost encrypts a topic message under generation keyGen's topic
// key with a fresh nonce, and signs it with from: the shared key only
// proves "some member", the signature proves which one.
func SealTopicPost(meshID, topicID string, keyGen int, plaintext []byte, topicKey *[32]byte, from *Identity) (nonceB64, ciphertextB64, signatureHex string, err error) {
	return SealTopicPostWithNonce(meshID, topicID, keyGen, plaintext, randomNonce(), topicKey, from)
}

// SealTopicPostWithNonce is SealTopicPost with a caller-chosen nonce: for
// test vectors, and for a deterministic seal (Identity.DeriveNonce). Never
// use one nonce for two different posts under the same topic key.
func SealTopicPostWithNonce(meshID, topicID string, keyGen int, plaintext []byte, nonce [24]byte, topicKey *[32]byte, from *Identity) (nonceB64, ciphertextB64, signatureHex string, err error) {
	nonceB64 = EncodeB64(nonce[:])
	ct := secretboxSeal(plaintext, &nonce, topicKey)
	s, err := TopicPostString(meshID, topicID, keyGen, nonceB64, ct)
	if err != nil {
		return "", "", "", err
	}
	return nonceB64, EncodeB64(ct), from.Sign(s), nil
}

// OpenTopicPost verifies from's signature (ErrBadSignature) and only then
// decrypts (ErrDecrypt).
func OpenTopicPost(meshID, topicID string, keyGen int, nonceB64, ciphertextB64, signatureHex string, topicKey *[32]byte, from PublicKey) ([]byte, error) {
	nonce, err := decodeNonce(nonceB64)
	if err != nil {
		return nil, err
	}
	ct, err := DecodeB64(ciphertextB64)
	if err != nil {
		return nil, fmt.Errorf("ciphertext: %w", err)
	}
	s, err := TopicPostString(meshID, topicID, keyGen, nonceB64, ct)
	if err != nil {
		return nil, err
	}
	if err := Verify(from, s, signatureHex); err != nil {
		return nil, err
	}
	return secretOpenBytes(ct, nonce, topicKey)
}

// sealBlobLen is E_pub (32) ‖ crypto_box_easy of a 32-byte key (48).
const sealBlobLen = 32 + 32 + boxOverhead

// ephemeralKeypair is libsodium's crypto_box_seed_keypair: the secret is
// SHA-512(seed)[:32] (clamped when used), the public its X25519 base
// multiple. The vectors' ephemeralPubkey is derived this way, not by
// using the seed itself as the scalar.
func ephemeralKeypair(seed *[32]byte) (sec, pub [32]byte, err error) {
	h := sha512.Sum512(seed[:])
	copy(sec[:], h[:32])
	p, err := curve25519.X25519(sec[:], curve25519.Basepoint)
	if err != nil {
		return sec, pub, err
	}
	copy(pub[:], p)
	return sec, pub, nil
}

// SealTopicKey seals topicKey (generation keyGen) for recipient under a
// fresh ephemeral X25519 key and nonce, signed by the sealer's member key.
// The signature is what stops the broker from handing a joiner a topic key
// of its own choosing.
func SealTopicKey(meshID, topicID string, keyGen int, topicKey *[32]byte, recipient PublicKey, sealer *Identity) (blobB64, nonceB64, signatureHex string, err error) {
	var seed [32]byte
	rand.Read(seed[:])
	return SealTopicKeyWith(meshID, topicID, keyGen, topicKey, recipient, seed, randomNonce(), sealer)
}

// SealTopicKeyWith is SealTopicKey with a caller-chosen ephemeral seed and
// nonce, for test vectors. The ephemeral keypair is
// crypto_box_seed_keypair(ephemeralSeed). Never reuse either.
func SealTopicKeyWith(meshID, topicID string, keyGen int, topicKey *[32]byte, recipient PublicKey, ephemeralSeed [32]byte, nonce [24]byte, sealer *Identity) (blobB64, nonceB64, signatureHex string, err error) {
	rx, err := recipient.X25519()
	if err != nil {
		return "", "", "", err
	}
	esec, epub, err := ephemeralKeypair(&ephemeralSeed)
	if err != nil {
		return "", "", "", fmt.Errorf("%w: ephemeral key: %v", ErrBadKey, err)
	}
	k, err := boxKey(&esec, rx[:])
	if err != nil {
		return "", "", "", err
	}
	blob := make([]byte, 0, sealBlobLen)
	blob = append(blob, epub[:]...)
	blob = append(blob, secretboxSeal(topicKey[:], &nonce, (*[32]byte)(k))...)
	nonceB64 = EncodeB64(nonce[:])
	s, err := TopicSealString(meshID, topicID, keyGen, recipient.Hex(), nonceB64, blob)
	if err != nil {
		return "", "", "", err
	}
	return EncodeB64(blob), nonceB64, sealer.Sign(s), nil
}

// OpenTopicSeal verifies that sealer signed this seal for me
// (ErrBadSignature), then opens the topic key (ErrDecrypt). Whether the
// sealer is a current member of the mesh is the caller's check.
func OpenTopicSeal(meshID, topicID string, keyGen int, blobB64, nonceB64, signatureHex string, sealer PublicKey, me *Identity) (*[32]byte, error) {
	nonce, err := decodeNonce(nonceB64)
	if err != nil {
		return nil, err
	}
	blob, err := DecodeB64Len(blobB64, sealBlobLen)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	s, err := TopicSealString(meshID, topicID, keyGen, me.PublicHex(), nonceB64, blob)
	if err != nil {
		return nil, err
	}
	if err := Verify(sealer, s, signatureHex); err != nil {
		return nil, err
	}
	// X25519 refuses an ephemeral key of small order (all-zero secret).
	k, err := boxKey(&me.xsec, blob[:32])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	pt, err := secretOpenBytes(blob[32:], nonce, (*[32]byte)(k))
	if err != nil {
		return nil, err
	}
	var tk [32]byte
	copy(tk[:], pt)
	return &tk, nil
}
