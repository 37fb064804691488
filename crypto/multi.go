package crypto

import (
	"crypto/rand"
	"fmt"
)

// MaxRecipients is the most recipients one multi envelope may list
// (02-crypto "Multi-recipient message").
const MaxRecipients = 1000

// MultiKey is one recipient's entry of a multi envelope: the content key
// boxed to that recipient.
type MultiKey struct {
	To    string `json:"to"`    // recipient pubkey, 64 lowercase hex
	Nonce string `json:"nonce"` // base64, 24 bytes
	Box   string `json:"box"`   // base64 crypto_box_easy of the content key
}

// MultiEnvelope is a message encrypted once for several recipients (target
// "*" or "@group"): a secretbox under a random content key, the content key
// boxed to each recipient, and the sender's signature over the ciphertext.
type MultiEnvelope struct {
	Nonce      string     `json:"nonce"`      // base64, 24 bytes
	Ciphertext string     `json:"ciphertext"` // base64 crypto_secretbox_easy
	Signature  string     `json:"signature"`  // 128 hex, over MultiString
	Keys       []MultiKey `json:"keys"`
}

// SealMulti encrypts plaintext for recipients with fresh random keys and
// nonces and signs it with from. Duplicate recipients are boxed to once;
// more than MaxRecipients distinct ones (or none) is an error rather than a
// silent truncation, since a dropped recipient would never know.
func SealMulti(meshID, targetSpec string, plaintext []byte, recipients []PublicKey, from *Identity) (*MultiEnvelope, error) {
	seen := make(map[PublicKey]struct{}, len(recipients))
	uniq := make([]PublicKey, 0, len(recipients))
	for _, r := range recipients {
		if _, dup := seen[r]; dup {
			continue
		}
		seen[r] = struct{}{}
		uniq = append(uniq, r)
	}
	if len(uniq) == 0 || len(uniq) > MaxRecipients {
		return nil, fmt.Errorf("%w: %d distinct recipients (want 1..%d)", ErrBadRecipients, len(uniq), MaxRecipients)
	}
	var k [32]byte
	rand.Read(k[:])
	nonces := make([][24]byte, len(uniq))
	for i := range nonces {
		nonces[i] = randomNonce()
	}
	return SealMultiWith(meshID, targetSpec, plaintext, k, randomNonce(), uniq, nonces, from)
}

// SealMultiWith is SealMulti with caller-chosen content key and nonces, for
// test vectors; recipientNonces[i] is the nonce of recipients[i]'s key box.
// Unlike SealMulti it refuses duplicate recipients, since it cannot know
// which nonce the caller meant.
func SealMultiWith(meshID, targetSpec string, plaintext []byte, contentKey [32]byte, nonce [24]byte, recipients []PublicKey, recipientNonces [][24]byte, from *Identity) (*MultiEnvelope, error) {
	if len(recipients) == 0 || len(recipients) > MaxRecipients {
		return nil, fmt.Errorf("%w: %d recipients (want 1..%d)", ErrBadRecipients, len(recipients), MaxRecipients)
	}
	if len(recipientNonces) != len(recipients) {
		return nil, fmt.Errorf("%w: %d nonces for %d recipients", ErrBadRecipients, len(recipientNonces), len(recipients))
	}
	keys := make([]MultiKey, len(recipients))
	seen := make(map[PublicKey]struct{}, len(recipients))
	for i, r := range recipients {
		if _, dup := seen[r]; dup {
			return nil, fmt.Errorf("%w: duplicate recipient %s", ErrBadRecipients, r.Hex())
		}
		seen[r] = struct{}{}
		box, err := SealBoxWithNonce(contentKey[:], recipientNonces[i], r, from)
		if err != nil {
			return nil, fmt.Errorf("recipient %s: %w", r.Hex(), err)
		}
		keys[i] = MultiKey{To: r.Hex(), Nonce: EncodeB64(recipientNonces[i][:]), Box: box}
	}
	ct := secretboxSeal(plaintext, &nonce, &contentKey)
	nonceB64 := EncodeB64(nonce[:])
	s, err := MultiString(meshID, targetSpec, nonceB64, ct)
	if err != nil {
		return nil, err
	}
	return &MultiEnvelope{Nonce: nonceB64, Ciphertext: EncodeB64(ct), Signature: from.Sign(s), Keys: keys}, nil
}

// OpenMulti opens the multi envelope entry addressed to the identity to.
// The sender's signature is checked first (ErrBadSignature): a recipient
// knows the content key, so without the signature anyone could pair new
// ciphertext with the sender's key boxes. Only then is the content key
// opened and the message decrypted (ErrDecrypt).
func OpenMulti(meshID, targetSpec, nonceB64, ciphertextB64, signatureHex string, key MultiKey, from PublicKey, to *Identity) ([]byte, error) {
	nonce, err := decodeNonce(nonceB64)
	if err != nil {
		return nil, err
	}
	ct, err := DecodeB64(ciphertextB64)
	if err != nil {
		return nil, fmt.Errorf("ciphertext: %w", err)
	}
	s, err := MultiString(meshID, targetSpec, nonceB64, ct)
	if err != nil {
		return nil, err
	}
	if err := Verify(from, s, signatureHex); err != nil {
		return nil, err
	}
	if key.To != to.PublicHex() {
		return nil, fmt.Errorf("%w: key entry is addressed to %q, not to this identity", ErrDecrypt, key.To)
	}
	k, err := OpenBox(key.Nonce, key.Box, from, to)
	if err != nil {
		return nil, fmt.Errorf("content key: %w", err)
	}
	if len(k) != 32 {
		return nil, fmt.Errorf("%w: content key is %d bytes", ErrDecrypt, len(k))
	}
	return secretOpenBytes(ct, nonce, (*[32]byte)(k))
}
