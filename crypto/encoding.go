package crypto

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
)

// DecodeHex decodes exactly nBytes bytes from lowercase hex. Uppercase is
// refused so that every key and signature has one spelling: the broker
// compares and indexes them as strings.
func DecodeHex(s string, nBytes int) ([]byte, error) {
	if nBytes <= 0 || !IsLowerHex(s, 2*nBytes) {
		return nil, fmt.Errorf("%w: want %d lowercase hex characters", ErrBadHex, 2*nBytes)
	}
	b, err := hex.DecodeString(s)
	if err != nil { // unreachable after IsLowerHex; kept so a future edit cannot skip the check
		return nil, fmt.Errorf("%w: %v", ErrBadHex, err)
	}
	return b, nil
}

// decodeHexInto is DecodeHex for fixed-size destinations, avoiding a copy
// at every call site.
func decodeHexInto(dst []byte, s string) error {
	if !IsLowerHex(s, 2*len(dst)) {
		return fmt.Errorf("%w: want %d lowercase hex characters", ErrBadHex, 2*len(dst))
	}
	if _, err := hex.Decode(dst, []byte(s)); err != nil {
		return fmt.Errorf("%w: %v", ErrBadHex, err)
	}
	return nil
}

// IsLowerHex reports whether s is exactly nChars characters of [0-9a-f]
// (nChars > 0).
func IsLowerHex(s string, nChars int) bool {
	if nChars <= 0 || len(s) != nChars {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// EncodeB64 is standard base64 with padding (RFC 4648 §4), the encoding of
// every nonce, ciphertext and sealed blob.
func EncodeB64(b []byte) string {
	return base64.StdEncoding.EncodeToString(b)
}

// DecodeB64 decodes canonical standard base64 with padding, as libsodium's
// sodium_base642bin(…, sodium_base64_VARIANT_ORIGINAL) does with no ignore
// set: no CR/LF, no missing padding, no non-zero padding bits. Go's decoder
// silently skips '\r' and '\n', so they are refused here first; without that
// two different strings would carry the same ciphertext, and the
// (senderPubkey, nonce) replay check compares strings.
func DecodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("%w: contains CR or LF", ErrBadBase64)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBase64, err)
	}
	return b, nil
}

// DecodedB64Len checks s as DecodeB64 does and returns how many bytes it
// decodes to, without keeping them: a 64 KiB ciphertext is decoded a few
// KiB at a time into a buffer on the stack instead of into a fresh 64 KiB
// allocation (the broker checks every send's ciphertext this way and needs
// only its length).
func DecodedB64Len(s string) (int, error) {
	if strings.ContainsAny(s, "\r\n") {
		return 0, fmt.Errorf("%w: contains CR or LF", ErrBadBase64)
	}
	const chunk = 4 << 10 // base64 characters: a whole number of quanta
	var src [chunk]byte
	var dst [chunk / 4 * 3]byte
	enc := base64.StdEncoding.Strict()
	n := 0
	for len(s) > 0 {
		k := copy(src[:], s)
		s = s[k:]
		m, err := enc.Decode(dst[:], src[:k])
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrBadBase64, err)
		}
		if len(s) > 0 && m != k/4*3 {
			// Padding before the end: one string decoding to what two
			// would.
			return 0, fmt.Errorf("%w: padding before the end", ErrBadBase64)
		}
		n += m
	}
	return n, nil
}

// DecodeB64Len is DecodeB64 that also requires exactly n decoded bytes.
func DecodeB64Len(s string, n int) ([]byte, error) {
	// Checking the encoded length first keeps a hostile megabyte string
	// from being decoded just to be refused.
	if n < 0 || len(s) != base64.StdEncoding.EncodedLen(n) {
		return nil, fmt.Errorf("%w: want %d bytes", ErrBadBase64, n)
	}
	b, err := DecodeB64(s)
	if err != nil {
		return nil, err
	}
	if len(b) != n {
		return nil, fmt.Errorf("%w: want %d bytes, got %d", ErrBadBase64, n, len(b))
	}
	return b, nil
}

// decodeNonce decodes a 24-byte nonce in standard base64.
func decodeNonce(s string) (*[24]byte, error) {
	b, err := DecodeB64Len(s, 24)
	if err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	var n [24]byte
	copy(n[:], b)
	return &n, nil
}

// encodeB64URL is base64url without padding (RFC 4648 §5): invite tokens,
// API keys and the operator token, which travel in URLs and shell commands.
func encodeB64URL(b []byte) string {
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeB64URL is the strict inverse of encodeB64URL: only the url-safe
// alphabet (so no padding, CR/LF or other skipped characters) and zero
// padding bits, so a token has exactly one spelling.
func decodeB64URL(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return nil, fmt.Errorf("%w: character %q at %d is not base64url without padding", ErrBadBase64, c, i)
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadBase64, err)
	}
	return b, nil
}

// SHA256Hex is lowercase hex SHA-256, the hash format of signed strings,
// API key storage and the audit chain.
func SHA256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// RandomToken returns base64url without padding of 32 random bytes (the
// operator token). crypto/rand.Read cannot fail since Go 1.24 (it aborts the
// program instead), which is why no error is returned.
func RandomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return encodeB64URL(b[:])
}

// RandomHex32 returns 32 random bytes as 64 lowercase hex characters (the
// broker's challenge nonce).
func RandomHex32() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// randomNonce returns 24 random bytes for box and secretbox. Random nonces
// are safe for XSalsa20 (192 bits), which is why the formats use them.
func randomNonce() [24]byte {
	var n [24]byte
	rand.Read(n[:])
	return n
}
