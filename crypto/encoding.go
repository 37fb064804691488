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
// decodes to, without decoding it: the broker checks every send's
// ciphertext this way and needs only its length. It looks each character
// up in a table, eight at a time, and checks the last quantum's padding
// and padding bits, which is what Strict() decoding refuses; decoding a
// 64 KiB ciphertext into a buffer on the stack, as it did before, took
// ~0.25 ms of the broker's ~1.5 ms for such a send (bench --adversary's
// 64 KiB self-DMs, two dozen of them at once at the byte budget's burst).
func DecodedB64Len(s string) (int, error) {
	if len(s)%4 != 0 {
		// Also a CR or LF Go's decoder would skip: they are refused
		// below, wherever they are.
		return 0, b64Corrupt(len(s) / 4 * 4)
	}
	if len(s) == 0 {
		return 0, nil
	}
	body, last := s[:len(s)-4], s[len(s)-4:]
	i := 0
	for ; i+8 <= len(body); i += 8 {
		if b64Val[body[i]]|b64Val[body[i+1]]|b64Val[body[i+2]]|b64Val[body[i+3]]|
			b64Val[body[i+4]]|b64Val[body[i+5]]|b64Val[body[i+6]]|b64Val[body[i+7]] == b64Bad {
			break
		}
	}
	for ; i < len(body); i++ {
		if b64Val[body[i]] == b64Bad {
			return 0, b64Corrupt(i)
		}
	}
	at := len(body)
	c0, c1, c2, c3 := b64Val[last[0]], b64Val[last[1]], b64Val[last[2]], b64Val[last[3]]
	switch {
	case c0 == b64Bad:
		return 0, b64Corrupt(at)
	case c1 == b64Bad:
		return 0, b64Corrupt(at + 1)
	case last[2] == '=' && last[3] == '=':
		if c1&0x0f != 0 { // the second character's low four bits are padding
			return 0, b64Corrupt(at + 1)
		}
		return len(body)/4*3 + 1, nil
	case c2 == b64Bad:
		return 0, b64Corrupt(at + 2)
	case last[3] == '=':
		if c2&0x03 != 0 { // the third character's low two bits are padding
			return 0, b64Corrupt(at + 2)
		}
		return len(body)/4*3 + 2, nil
	case c3 == b64Bad:
		return 0, b64Corrupt(at + 3)
	}
	return len(body)/4*3 + 3, nil
}

// b64Bad marks a byte outside the standard alphabet in b64Val; every
// character's value has its top bit clear, so an OR of several lookups
// is b64Bad exactly when one of them is.
const b64Bad = 0xff

// b64Val is each byte's 6-bit value in the standard alphabet, b64Bad for
// every other byte ('=', CR and LF included: DecodedB64Len handles the
// padding itself, and refuses line breaks as DecodeB64 does).
var b64Val = func() (t [256]uint8) {
	for i := range t {
		t[i] = b64Bad
	}
	for i, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = uint8(i)
	}
	return t
}()

// b64Corrupt is DecodedB64Len's error, worded as the decoder's.
func b64Corrupt(at int) error {
	return fmt.Errorf("%w: %v", ErrBadBase64, base64.CorruptInputError(at))
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
