package crypto

import "errors"

// Sentinel errors. Functions wrap them (sometimes two at once, for example
// ErrBadKey and ErrBadHex) with %w, so callers map them to wire error codes
// with errors.Is, never with ==.
var (
	// ErrBadHex is returned for hex that is not lowercase or not of the
	// expected length.
	ErrBadHex = errors.New("crypto: malformed hex")
	// ErrBadBase64 is returned for base64 that is not canonical or not of
	// the expected length.
	ErrBadBase64 = errors.New("crypto: malformed base64")
	// ErrBadKey is returned for a key of the wrong length, a non-canonical
	// or undecodable point, a point of small order or outside the
	// prime-order subgroup, an X25519 exchange giving the all-zero secret,
	// or a secret key whose halves disagree.
	ErrBadKey = errors.New("crypto: invalid key")
	// ErrBadSignature is returned for a signature that is malformed or does
	// not verify.
	ErrBadSignature = errors.New("crypto: bad signature")
	// ErrDecrypt is returned for a box or secretbox that does not open.
	ErrDecrypt = errors.New("crypto: decryption failed")
	// ErrBadField is returned for a signed-string field or a name holding
	// '|', a control character or invalid UTF-8, a negative integer, or a
	// name of the wrong length.
	ErrBadField = errors.New("crypto: invalid field")
	// ErrBadInvite is returned for an invite link or token that does not
	// parse, or whose fields or signature are invalid.
	ErrBadInvite = errors.New("crypto: invalid invite")
	// ErrExpired is returned for something signed that is past its expiry.
	ErrExpired = errors.New("crypto: expired")
	// ErrBadRecipients is returned for a multi envelope with no recipients,
	// more than MaxRecipients, or (in SealMultiWith) a duplicate recipient
	// or a nonce list of another length.
	ErrBadRecipients = errors.New("crypto: invalid recipient list")
)
