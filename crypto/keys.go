package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"

	"filippo.io/edwards25519"
)

// PublicKey is an ed25519 public key: a member, session or broker identity.
// Its text form is 64 lowercase hex characters.
type PublicKey [32]byte

// ParsePublicKey decodes 64 lowercase hex characters and validates the
// point (see ValidatePublicKey), so that a parsed key is always safe to use.
func ParsePublicKey(hex64 string) (PublicKey, error) {
	var p PublicKey
	if err := decodeHexInto(p[:], hex64); err != nil {
		return PublicKey{}, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if err := ValidatePublicKey(p); err != nil {
		return PublicKey{}, err
	}
	return p, nil
}

// lMinusOne is the group order L minus one, little-endian. [L]P cannot be
// computed directly because L ≡ 0 as a Scalar, so [L-1]P == -P is tested
// instead. A function, not a package variable, so nothing global can be
// mutated.
func lMinusOne() *edwards25519.Scalar {
	b := [32]byte{
		0xec, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
		0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(b[:])
	if err != nil {
		panic("crypto: L-1 is not a canonical scalar") // a constant: cannot happen
	}
	return s
}

// decodePoint decodes a public key as libsodium's
// crypto_sign_ed25519_pk_to_curve25519 accepts it: canonical encoding, on
// the curve, not of small order, in the prime-order subgroup. The first two
// are what crypto_sign_verify_detached also demands; the subgroup check
// makes one key valid for both signing and box, so a key accepted at join
// can never fail later at its first DM.
func decodePoint(b []byte) (*edwards25519.Point, error) {
	p, err := new(edwards25519.Point).SetBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w: not a point on the curve", ErrBadKey)
	}
	// filippo.io/edwards25519 accepts y ≥ p and a set sign bit on x = 0
	// (ZIP 215 rules); libsodium does not. Re-encoding catches both.
	if !bytes.Equal(p.Bytes(), b) {
		return nil, fmt.Errorf("%w: non-canonical point encoding", ErrBadKey)
	}
	id := edwards25519.NewIdentityPoint()
	if new(edwards25519.Point).MultByCofactor(p).Equal(id) == 1 {
		return nil, fmt.Errorf("%w: point of small order", ErrBadKey)
	}
	// [L-1]P + P == [L]P must be the identity for a point of prime order L.
	q := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(lMinusOne(), p, edwards25519.NewScalar())
	if q.Add(q, p).Equal(id) != 1 {
		return nil, fmt.Errorf("%w: point not in the prime-order subgroup", ErrBadKey)
	}
	return p, nil
}

// ValidatePublicKey reports whether p is a canonical encoding of a point of
// the prime-order subgroup that is not of small order (ErrBadKey if not).
// Keys are checked at join, at hello and before every use; the functions of
// this package that take a PublicKey do so themselves. A key accepted once
// is remembered (validKeys, sharedkeys.go).
func ValidatePublicKey(p PublicKey) error {
	_, err := negatedKey(p)
	return err
}

// negatedKey is -A for a valid key A (what a verification adds), from
// validKeys or decoded, validated and remembered there.
func negatedKey(p PublicKey) (*edwards25519.Point, error) {
	if minusA, ok := validKeys.get(p); ok {
		return minusA, nil
	}
	a, err := decodePoint(p[:])
	if err != nil {
		return nil, err
	}
	minusA := new(edwards25519.Point).Negate(a)
	validKeys.put(p, minusA)
	return minusA, nil
}

// Hex is the wire form: 64 lowercase hex characters.
func (p PublicKey) Hex() string { return hex.EncodeToString(p[:]) }

// String is Hex, so keys print the way the protocol spells them.
func (p PublicKey) String() string { return p.Hex() }

// X25519 converts p to its X25519 public key (the Montgomery u-coordinate),
// byte-identical to libsodium's crypto_sign_ed25519_pk_to_curve25519, after
// validating p.
func (p PublicKey) X25519() ([32]byte, error) {
	pt, err := decodePoint(p[:])
	if err != nil {
		return [32]byte{}, err
	}
	var u [32]byte
	copy(u[:], pt.BytesMontgomery())
	return u, nil
}

// Identity is an ed25519 keypair with its derived X25519 secret: a member
// key, a session key or the broker key. The seed never leaves the value
// except through SecretKeyHex, for the 0600 key files.
type Identity struct {
	seed [32]byte
	pub  PublicKey
	priv ed25519.PrivateKey
	xsec [32]byte
}

// GenerateIdentity creates a new random identity from crypto/rand.
func GenerateIdentity() (*Identity, error) {
	var seed [32]byte
	rand.Read(seed[:]) // cannot fail since Go 1.24
	return IdentityFromSeed(seed[:])
}

// IdentityFromSeed derives the identity of a 32-byte ed25519 seed, as
// libsodium's crypto_sign_seed_keypair does.
func IdentityFromSeed(seed []byte) (*Identity, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed must be %d bytes, got %d", ErrBadKey, ed25519.SeedSize, len(seed))
	}
	id := &Identity{priv: ed25519.NewKeyFromSeed(seed)}
	copy(id.seed[:], seed)
	copy(id.pub[:], id.priv[32:])
	// crypto_sign_ed25519_sk_to_curve25519: the ed25519 signing scalar,
	// i.e. SHA-512(seed)[:32] clamped.
	h := sha512.Sum512(seed)
	copy(id.xsec[:], h[:32])
	id.xsec[0] &= 248
	id.xsec[31] &= 127
	id.xsec[31] |= 64
	return id, nil
}

// ParseSecretKey loads libsodium's 64-byte secret key layout, seed ‖ pubkey,
// from 128 lowercase hex characters. A key file whose public half does not
// derive from its seed is refused: using it would sign as one identity while
// claiming another.
func ParseSecretKey(hex128 string) (*Identity, error) {
	var sk [64]byte
	if err := decodeHexInto(sk[:], hex128); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	id, err := IdentityFromSeed(sk[:32])
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(id.pub[:], sk[32:]) != 1 {
		return nil, fmt.Errorf("%w: public half does not match the seed", ErrBadKey)
	}
	return id, nil
}

// Public is the identity's ed25519 public key.
func (id *Identity) Public() PublicKey { return id.pub }

// PublicHex is the public key as 64 lowercase hex characters.
func (id *Identity) PublicHex() string { return id.pub.Hex() }

// SecretKeyHex is libsodium's secret key layout, seed ‖ pubkey, as 128
// lowercase hex characters: the form stored in key files.
func (id *Identity) SecretKeyHex() string {
	return hex.EncodeToString(id.seed[:]) + id.pub.Hex()
}

// String never shows secret material, so logging an identity is safe.
func (id *Identity) String() string { return "Identity(" + id.pub.Hex() + ")" }

// GoString keeps %#v from printing the seed.
func (id *Identity) GoString() string { return id.String() }

// Sign returns the detached ed25519 signature of msg as 128 lowercase hex
// characters. Ed25519 is deterministic, so it equals libsodium's
// crypto_sign_detached for the same seed and message.
func (id *Identity) Sign(msg string) string {
	return hex.EncodeToString(ed25519.Sign(id.priv, []byte(msg)))
}

// X25519Secret is the identity's X25519 secret key, byte-identical to
// libsodium's crypto_sign_ed25519_sk_to_curve25519.
func (id *Identity) X25519Secret() [32]byte { return id.xsec }

// Verify checks a detached ed25519 signature given as 128 lowercase hex
// characters; any failure wraps ErrBadSignature.
//
// crypto/ed25519 alone accepts a few signatures libsodium refuses: public
// keys of small order and R of small order. The key is therefore validated
// (which is stricter than libsodium's verify: it also demands the
// prime-order subgroup) and R checked, so nothing verifies here that
// libsodium would reject. Non-canonical S is refused, and a non-canonical
// R never equals the recomputed one.
//
// The check is crypto/ed25519's, step for step (verifyEquation), on the
// key's point as validKeys remembers it rather than decoded again for each
// signature, and R's order is checked on the point the check computed
// (equal to R when the signature verifies) rather than on R decoded: two
// point decompressions of the three a verification took, a hello's
// largest cost but the arithmetic itself. TestVerifyMatchesReference
// compares the verdicts and errors with the previous code's.
func Verify(pub PublicKey, msg string, sigHex string) error {
	var sig [64]byte
	if err := decodeHexInto(sig[:], sigHex); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	minusA, err := negatedKey(pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	r := verifyEquation(minusA, pub, msg, &sig)
	if r == nil {
		// Refused either way; the error says why as it always did.
		if r, err := new(edwards25519.Point).SetBytes(sig[:32]); err == nil && smallOrder(r) {
			return fmt.Errorf("%w: R of small order", ErrBadSignature)
		}
		return ErrBadSignature
	}
	if smallOrder(r) {
		return fmt.Errorf("%w: R of small order", ErrBadSignature)
	}
	return nil
}

// smallOrder reports whether [8]p is the identity.
func smallOrder(p *edwards25519.Point) bool {
	return new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
}

// verifyEquation is crypto/ed25519's verification of sig over msg by the
// key pub whose negated point is minusA: S canonical, k = SHA-512(R ‖ A ‖
// msg) mod L, and [k](-A) + [S]B encoding to R. It returns that point
// (equal to R) when the signature verifies, nil when it does not.
func verifyEquation(minusA *edwards25519.Point, pub PublicKey, msg string, sig *[64]byte) *edwards25519.Point {
	if sig[63]&224 != 0 {
		return nil
	}
	h := sha512.New()
	h.Write(sig[:32])
	h.Write(pub[:])
	io.WriteString(h, msg)
	var digest [sha512.Size]byte
	k, err := edwards25519.NewScalar().SetUniformBytes(h.Sum(digest[:0]))
	if err != nil {
		return nil // cannot happen: the digest is 64 bytes
	}
	s, err := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
	if err != nil {
		return nil
	}
	r := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(k, minusA, s)
	if !bytes.Equal(sig[:32], r.Bytes()) {
		return nil
	}
	return r
}
