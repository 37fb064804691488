package client

import (
	"errors"
	"slices"
	"unicode/utf8"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// MaxPlaintext is the largest message body (02-crypto "Message bodies").
// Clients refuse more before encrypting, rather than learning it from the
// broker's payload_too_large after the work is done.
const MaxPlaintext = 64 << 10

// SendOptions are the unauthenticated routing fields of a send (02-crypto
// lists them as alterable by the broker).
type SendOptions struct {
	// ID is the send's id; a fresh ULID when empty.
	ID string
	// ClientMessageID is the idempotency key; the broker uses ID when empty.
	ClientMessageID string
	Priority        string // now|next|low; broker default next
	ReplyToID       string
	Mentions        []string
	Subtype         string
	// NoReceipts asks the broker not to send receipts for this message.
	NoReceipts bool
	// Deterministic seals from ClientMessageID (which must be set)
	// instead of at random: nonces, and a multi message's content key,
	// are derived from the sender's secret key, the clientMessageId, the
	// target and the plaintext (docs/crypto.md "Deterministic sealing").
	// A retry of the same message then carries the same bytes, which the
	// broker answers as a duplicate; a different message under the same
	// id gets other nonces, and the broker refuses it
	// (idempotency_key_reused). The direct path (no daemon outbox to
	// keep the sealed bytes) seals this way.
	Deterministic bool
	// MeshID is the mesh a deterministic DM is sent in, which its nonce
	// is derived from (SealDM refuses a deterministic seal without it):
	// a key that is a member of two meshes sealing the same id and text
	// to the same recipient in both gets two nonces. SealMulti and
	// SealTopicPost take the mesh as an argument (their signatures bind
	// it) and ignore this field.
	MeshID string
}

// Labels of the deterministic seal's derivations (docs/crypto.md
// "Deterministic sealing"); part of the format.
const (
	detBoxNonce        = "box nonce"
	detMultiKey        = "multi content key"
	detMultiNonce      = "multi nonce"
	detMultiKeyNonce   = "multi key nonce"
	detTopicNonce      = "topic nonce"
	detPlainTopicNonce = "plaintext topic nonce"
)

func (o SendOptions) deterministic() (bool, error) {
	if !o.Deterministic {
		return false, nil
	}
	if o.ClientMessageID == "" {
		return false, newError(wire.CodeInvalidArgument, "a deterministic seal needs a clientMessageId")
	}
	return true, nil
}

func (o SendOptions) apply(s *wire.Send) {
	s.Type = wire.TypeSend
	s.ID = o.ID
	if s.ID == "" {
		s.ID = NewID()
	}
	s.ClientMessageID = o.ClientMessageID
	s.Priority = o.Priority
	s.ReplyToID = o.ReplyToID
	s.Mentions = o.Mentions
	s.Subtype = o.Subtype
	if o.NoReceipts {
		f := false
		s.Receipts = &f
	}
}

func checkPlaintext(plaintext []byte) error {
	if len(plaintext) > MaxPlaintext {
		return newError(wire.CodePayloadTooLarge, "message is %d bytes, at most %d allowed", len(plaintext), MaxPlaintext)
	}
	if !utf8.Valid(plaintext) {
		return newError(wire.CodeInvalidArgument, "message is not valid UTF-8")
	}
	return nil
}

// SealDM encrypts a direct message (kind box) to one pubkey — a member's or
// a session's — with the sender's key (the session key when a session
// sends, else the member key).
func SealDM(to string, plaintext []byte, from *cmcrypto.Identity, o SendOptions) (*wire.Send, error) {
	if err := checkPlaintext(plaintext); err != nil {
		return nil, err
	}
	pub, err := cmcrypto.ParsePublicKey(to)
	if err != nil {
		return nil, wrapError(wire.CodeInvalidArgument, err, "recipient")
	}
	det, err := o.deterministic()
	if err != nil {
		return nil, err
	}
	if det && o.MeshID == "" {
		return nil, newError(wire.CodeInvalidArgument, "a deterministic direct message needs its mesh id")
	}
	var nonce, ct string
	if det {
		// The recipient as its canonical 64 lowercase hex (the parsed
		// key's), not the caller's string, whatever spellings the
		// parser accepts: one recipient, one nonce.
		n := from.DeriveNonce(detBoxNonce, []byte(o.MeshID), []byte(o.ClientMessageID), []byte(pub.Hex()), plaintext)
		nonce = cmcrypto.EncodeB64(n[:])
		ct, err = cmcrypto.SealBoxWithNonce(plaintext, n, pub, from)
	} else {
		nonce, ct, err = cmcrypto.SealBox(plaintext, pub, from)
	}
	if err != nil {
		return nil, wrapError(wire.CodeInvalidArgument, err, "sealing")
	}
	s := &wire.Send{TargetSpec: to, Kind: wire.KindBox, Nonce: nonce, Ciphertext: ct}
	o.apply(s)
	return s, nil
}

// SealMulti encrypts one message for several recipients (kind multi,
// target "*" or "@group"): the recipients are the pubkeys that matched the
// target at send time. The signature binds meshID and targetSpec, so the
// envelope cannot be replayed to another mesh or audience. A deterministic
// seal (o.Deterministic) lists each recipient once, in the order of their
// keys, so that a retry whose directory listed them in another order
// still carries the same keys.
func SealMulti(meshID, targetSpec string, plaintext []byte, recipients []string, from *cmcrypto.Identity, o SendOptions) (*wire.Send, error) {
	if err := checkPlaintext(plaintext); err != nil {
		return nil, err
	}
	if targetSpec != "*" && (len(targetSpec) < 2 || targetSpec[0] != '@' || !wire.ValidGroup(targetSpec[1:])) {
		return nil, newError(wire.CodeInvalidArgument, "multi target must be * or @group, not %q", targetSpec)
	}
	pubs := make([]cmcrypto.PublicKey, 0, len(recipients))
	for _, r := range recipients {
		pub, err := cmcrypto.ParsePublicKey(r)
		if err != nil {
			return nil, wrapError(wire.CodeInvalidArgument, err, "recipient %q", r)
		}
		pubs = append(pubs, pub)
	}
	det, err := o.deterministic()
	if err != nil {
		return nil, err
	}
	var env *cmcrypto.MultiEnvelope
	if det {
		env, err = sealMultiDeterministic(meshID, targetSpec, plaintext, pubs, from, o.ClientMessageID)
	} else {
		env, err = cmcrypto.SealMulti(meshID, targetSpec, plaintext, pubs, from)
	}
	if err != nil {
		return nil, wrapError(wire.CodeInvalidArgument, err, "sealing")
	}
	s := &wire.Send{TargetSpec: targetSpec, Kind: wire.KindMulti, Nonce: env.Nonce,
		Ciphertext: env.Ciphertext, Signature: env.Signature, Keys: make([]wire.MultiKey, len(env.Keys))}
	for i, k := range env.Keys {
		s.Keys[i] = wire.MultiKey{To: k.To, Nonce: k.Nonce, Box: k.Box}
	}
	o.apply(s)
	return s, nil
}

// sealMultiDeterministic is SealMulti's deterministic seal: the content
// key K and the nonce from (meshId, clientMessageId, targetSpec,
// plaintext), each recipient's key-box nonce from the same and the
// recipient's key, the recipients deduplicated and sorted.
func sealMultiDeterministic(meshID, targetSpec string, plaintext []byte, pubs []cmcrypto.PublicKey, from *cmcrypto.Identity, cmid string) (*cmcrypto.MultiEnvelope, error) {
	pubs = slices.Clone(pubs)
	slices.SortFunc(pubs, func(a, b cmcrypto.PublicKey) int { return slices.Compare(a[:], b[:]) })
	pubs = slices.Compact(pubs)
	common := [][]byte{[]byte(meshID), []byte(cmid), []byte(targetSpec), plaintext}
	k := from.DeriveKey(detMultiKey, common...)
	nonce := from.DeriveNonce(detMultiNonce, common...)
	nonces := make([][24]byte, len(pubs))
	for i, p := range pubs {
		nonces[i] = from.DeriveNonce(detMultiKeyNonce, append(slices.Clip(common), []byte(p.Hex()))...)
	}
	return cmcrypto.SealMultiWith(meshID, targetSpec, plaintext, k, nonce, pubs, nonces, from)
}

// Open decrypts a message push for this identity. member is the member key;
// session is the session key of a session connection (nil otherwise), used
// when the push is addressed to it.
//
// verified reports whether the sender is proven: the box or multi signature
// authenticates senderPubkey, and a session sender's attestation proves it
// belongs to senderMemberPubkey. A message that decrypts but whose
// attestation does not verify is returned with verified=false and a nil
// error: show it as unverified, never under the claimed member's name.
// Anything that cannot be opened or whose signature fails returns a *Error
// (decrypt_failed, unverified, not_for_us, unsupported, malformed) and no
// text, so garbage is never shown as a message.
func Open(p *wire.Push, meshID string, member, session *cmcrypto.Identity) (body string, verified bool, err error) {
	if p == nil {
		return "", false, newError(wire.CodeInvalidArgument, "nil push")
	}
	if p.MeshID != "" && p.MeshID != meshID {
		return "", false, newError(CodeNotForUs, "message is for mesh %s, not %s", p.MeshID, meshID)
	}
	sender, err := cmcrypto.ParsePublicKey(p.SenderPubkey)
	if err != nil {
		return "", false, wrapError(wire.CodeMalformed, err, "sender key")
	}
	var plain []byte
	switch p.Kind {
	case wire.KindBox:
		to := member
		if session != nil && p.TargetSpec == session.PublicHex() {
			to = session
		} else if member == nil || p.TargetSpec != member.PublicHex() {
			return "", false, newError(CodeNotForUs, "direct message addressed to %s", p.TargetSpec)
		}
		plain, err = cmcrypto.OpenBox(p.Nonce, p.Ciphertext, sender, to)
		if err != nil {
			return "", false, cryptoError(err, "direct message")
		}
	case wire.KindMulti:
		if p.Key == nil {
			return "", false, newError(CodeNotForUs, "multi message carries no key entry")
		}
		to := member
		if session != nil && p.Key.To == session.PublicHex() {
			to = session
		} else if member == nil || p.Key.To != member.PublicHex() {
			return "", false, newError(CodeNotForUs, "multi key entry is addressed to %s", p.Key.To)
		}
		k := cmcrypto.MultiKey{To: p.Key.To, Nonce: p.Key.Nonce, Box: p.Key.Box}
		plain, err = cmcrypto.OpenMulti(meshID, p.TargetSpec, p.Nonce, p.Ciphertext, p.Signature, k, sender, to)
		if err != nil {
			return "", false, cryptoError(err, "multi message")
		}
	case wire.KindTopic:
		// A topic post opens with its topic's key, not a member key:
		// OpenTopicPush, with a TopicKeyring.
		return "", false, newError(CodeUnsupported, "a topic post opens with its topic's key (OpenTopicPush)")
	default:
		return "", false, newError(CodeUnsupported, "unknown message kind %q", p.Kind)
	}
	if !utf8.Valid(plain) {
		return "", false, newError(CodeDecryptFailed, "decrypted body is not UTF-8 text")
	}
	return string(plain), senderVouched(p, meshID), nil
}

// senderVouched checks the link from the sending key to the member it
// claims: trivially true for a member sender, the attestation for a session
// sender. The attestation must have been valid when the broker accepted
// the message (createdAt), since queued messages outlive attestations.
func senderVouched(p *wire.Push, meshID string) bool {
	if p.SenderPubkey == p.SenderMemberPubkey {
		return true
	}
	a := p.SenderAttestation
	if a == nil || a.SessionPubkey != p.SenderPubkey || a.ParentPubkey != p.SenderMemberPubkey {
		return false
	}
	if p.CreatedAt > 0 && a.ExpiresAt < p.CreatedAt {
		return false
	}
	return VerifyAttestation(meshID, a) == nil
}

// VerifyAttestation checks a session attestation's signature by its parent
// (member) key; callers listing peers use it to show which member a session
// belongs to without trusting the broker.
func VerifyAttestation(meshID string, a *wire.Attestation) error {
	parent, err := cmcrypto.ParsePublicKey(a.ParentPubkey)
	if err != nil {
		return wrapError(CodeUnverified, err, "attestation parent key")
	}
	s, err := cmcrypto.SessionAttestString(meshID, a.ParentPubkey, a.SessionPubkey, a.ExpiresAt)
	if err != nil {
		return wrapError(CodeUnverified, err, "attestation")
	}
	if err := cmcrypto.Verify(parent, s, a.Signature); err != nil {
		return wrapError(CodeUnverified, err, "attestation")
	}
	return nil
}

func cryptoError(err error, what string) *Error {
	switch {
	case errors.Is(err, cmcrypto.ErrBadSignature):
		return wrapError(CodeUnverified, err, "%s: signature does not verify", what)
	case errors.Is(err, cmcrypto.ErrDecrypt):
		return wrapError(CodeDecryptFailed, err, "%s", what)
	default:
		return wrapError(wire.CodeMalformed, err, "%s", what)
	}
}

// Open decrypts a push received on this connection with its own keys.
func (c *Conn) Open(p *wire.Push) (body string, verified bool, err error) {
	var session *cmcrypto.Identity
	if c.id.Session != nil {
		session = c.id.Session.Key
	}
	return Open(p, c.id.MeshID, c.id.Member, session)
}
