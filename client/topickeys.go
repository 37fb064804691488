package client

import (
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// TopicKeyring holds the topic keys a member could open, by topic and
// generation. Old generations stay: they are what reads old history. It is
// memory only; the seals on the broker are where keys come back from.
type TopicKeyring struct {
	mu   sync.Mutex
	keys map[string]map[int]*[32]byte
}

// NewTopicKeyring returns an empty keyring.
func NewTopicKeyring() *TopicKeyring { return &TopicKeyring{keys: map[string]map[int]*[32]byte{}} }

// Put stores a key.
func (k *TopicKeyring) Put(topicID string, gen int, key *[32]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys[topicID] == nil {
		k.keys[topicID] = map[int]*[32]byte{}
	}
	k.keys[topicID][gen] = key
}

// Get returns generation gen's key of a topic, or nil.
func (k *TopicKeyring) Get(topicID string, gen int) *[32]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[topicID][gen]
}

// Newest returns the newest generation of a topic the keyring holds (0
// for none): the topic's current one as far as this member knows, when a
// cached list of topics may be older than a rotation.
func (k *TopicKeyring) Newest(topicID string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	n := 0
	for g := range k.keys[topicID] {
		n = max(n, g)
	}
	return n
}

// Has reports whether the keyring holds generation gen of a topic.
func (k *TopicKeyring) Has(topicID string, gen int) bool { return k.Get(topicID, gen) != nil }

// RejectedSeal is a seal the keyring refused, and why.
type RejectedSeal struct {
	KeyGen int
	Sealer string
	Reason string
}

func (r RejectedSeal) String() string {
	return fmt.Sprintf("seal of generation %d by %.8s: %s", r.KeyGen, r.Sealer, r.Reason)
}

// OpenSeals verifies and opens this member's seals of a topic (the answer
// of topic_keys). A seal is used only if its signature verifies for this
// mesh, topic, generation and recipient (so the broker cannot hand over a
// key of its own, nor one sealed for another topic or generation) and its
// sealer is a current member of the mesh (isMember); any other is refused
// and reported, and a valid seal of the same generation by another sealer
// is still used. It returns the generations it opened.
func (k *TopicKeyring) OpenSeals(meshID, topicID string, seals []wire.TopicSealOut, me *cmcrypto.Identity, isMember func(pubkey string) bool) (opened []int, rejected []RejectedSeal) {
	for _, s := range seals {
		if k.Has(topicID, s.KeyGen) {
			continue
		}
		reject := func(why string) {
			rejected = append(rejected, RejectedSeal{KeyGen: s.KeyGen, Sealer: s.SealerPubkey, Reason: why})
		}
		sealer, err := cmcrypto.ParsePublicKey(s.SealerPubkey)
		if err != nil {
			reject("the sealer key is invalid")
			continue
		}
		if !isMember(s.SealerPubkey) {
			reject("the sealer is not a current member of the mesh")
			continue
		}
		key, err := cmcrypto.OpenTopicSeal(meshID, topicID, s.KeyGen, s.Blob, s.Nonce, s.Signature, sealer, me)
		switch {
		case errors.Is(err, cmcrypto.ErrBadSignature):
			reject("its signature does not verify for this topic, generation and recipient")
			continue
		case err != nil:
			reject("it does not open: " + err.Error())
			continue
		}
		k.Put(topicID, s.KeyGen, key)
		opened = append(opened, s.KeyGen)
	}
	return opened, rejected
}

// TopicMessage is a topic post as a reader sees it.
type TopicMessage struct {
	ID                 string
	TopicID            string
	Topic              string
	ClientMessageID    string
	SenderPubkey       string
	SenderMemberPubkey string
	// SenderName is empty unless Verified (or the topic is plaintext, where
	// the broker's word is all there is; Plaintext says so).
	SenderName string
	Body       string
	KeyGen     int
	// Verified: the post's signature verifies over this topic and
	// generation under SenderPubkey, and a session sender's attestation
	// ties it to SenderMemberPubkey. An unverified post is never shown as
	// from its claimed sender.
	Verified  bool
	Plaintext bool
	CreatedAt int64
	ReplyToID string
	Mentions  []string
	Priority  string
	Nonce     string
	// KeyMissing: this reader has no key for the post's generation (yet).
	KeyMissing   bool
	DecryptError string
}

// OpenTopicPush decrypts and verifies a topic post for the topic topicID
// the reader asked about (not the one the push claims: a post the broker
// replays into another topic then fails verification). key returns a
// generation's key or nil.
func OpenTopicPush(p *wire.Push, meshID, topicID string, key func(gen int) *[32]byte) TopicMessage {
	m := TopicMessage{ID: p.MessageID, TopicID: topicID, ClientMessageID: p.ClientMessageID, SenderPubkey: p.SenderPubkey,
		SenderMemberPubkey: p.SenderMemberPubkey, CreatedAt: p.CreatedAt, ReplyToID: wire.ShownReplyToID(p.ReplyToID), Mentions: p.Mentions,
		Priority: p.Priority, Nonce: p.Nonce}
	if p.Topic != nil {
		m.Topic = p.Topic.Name
	}
	if p.KeyGen != nil {
		m.KeyGen = *p.KeyGen
	}
	if p.Kind != wire.KindTopic {
		m.DecryptError = "not a topic message"
		return m
	}
	if p.MeshID != "" && p.MeshID != meshID {
		m.DecryptError = "the message belongs to another mesh"
		return m
	}
	if p.BodyVersion == wire.BodyPlaintext {
		body, err := cmcrypto.DecodeB64(p.Ciphertext)
		if err != nil || !utf8.Valid(body) {
			m.DecryptError = "the plaintext body is not base64 of UTF-8 text"
			return m
		}
		m.Body, m.Plaintext, m.SenderName = string(body), true, p.SenderName
		return m
	}
	if p.KeyGen == nil || *p.KeyGen < 1 {
		m.DecryptError = "the post names no key generation"
		return m
	}
	k := key(m.KeyGen)
	if k == nil {
		m.KeyMissing = true
		m.DecryptError = fmt.Sprintf("no key for generation %d of this topic yet", m.KeyGen)
		return m
	}
	ct, err := cmcrypto.DecodeB64(p.Ciphertext)
	if err != nil {
		m.DecryptError = "the ciphertext is not canonical base64"
		return m
	}
	sigOK := false
	if sender, err := cmcrypto.ParsePublicKey(p.SenderPubkey); err == nil {
		if s, err := cmcrypto.TopicPostString(meshID, topicID, m.KeyGen, p.Nonce, ct); err == nil {
			sigOK = cmcrypto.Verify(sender, s, p.Signature) == nil
		}
	}
	plain, err := cmcrypto.SecretOpen(p.Nonce, p.Ciphertext, k)
	if err != nil {
		m.DecryptError = "the post does not open under the topic key of its generation"
		return m
	}
	if !utf8.Valid(plain) {
		m.DecryptError = "the decrypted body is not UTF-8 text"
		return m
	}
	m.Body = string(plain)
	m.Verified = sigOK && senderVouched(p, meshID)
	if m.Verified {
		m.SenderName = p.SenderName
	}
	return m
}
