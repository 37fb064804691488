package client

import (
	"claudemesh/client/config"
	"context"
	"crypto/rand"
	"strconv"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// Topic requests of 01-protocol §5. A topic is named by its id or its name
// wherever a request takes `topic`.

// TopicCreateOptions describe a new topic.
type TopicCreateOptions struct {
	Name        string
	Description string
	Private     bool
	// Plaintext makes an unencrypted topic (bodyVersion 1), for bots that
	// post over REST without keys; the broker can read it.
	Plaintext bool
}

// TopicCreate creates a topic. For an encrypted topic (the default) it
// generates the first key (T_1) on this machine, seals it to this member and
// returns it with the topic: the broker never sees it.
func (c *Conn) TopicCreate(ctx context.Context, o TopicCreateOptions) (*wire.TopicInfo, *[32]byte, error) {
	req := &wire.TopicCreate{Type: wire.TypeTopicCreate, ID: NewID(), Name: o.Name, Description: o.Description,
		Visibility: wire.VisibilityPublic}
	if o.Private {
		req.Visibility = wire.VisibilityPrivate
	}
	var key *[32]byte
	if o.Plaintext {
		f := false
		req.Encrypted = &f
	} else {
		key = NewTopicKey()
		me := c.id.Member
		blob, nonce, sig, err := cmcrypto.SealTopicKey(c.id.MeshID, req.ID, 1, key, me.Public(), me)
		if err != nil {
			return nil, nil, wrapError(wire.CodeInvalidArgument, err, "sealing the topic key")
		}
		req.Seal = &wire.TopicSealIn{RecipientPubkey: me.PublicHex(), KeyGen: 1, Blob: blob, Nonce: nonce, Signature: sig}
	}
	r, err := roundTrip[wire.TopicReply](ctx, c, req, wire.TypeTopic)
	if err != nil {
		return nil, nil, err
	}
	return &r.Topic, key, nil
}

// NewTopicKey draws a fresh 32-byte topic key.
func NewTopicKey() *[32]byte {
	var k [32]byte
	rand.Read(k[:])
	return &k
}

// TopicList lists the topics this member can see.
func (c *Conn) TopicList(ctx context.Context) ([]wire.TopicInfo, error) {
	r, err := roundTrip[wire.Topics](ctx, c, &wire.Request{Type: wire.TypeTopicList}, wire.TypeTopics)
	if err != nil {
		return nil, err
	}
	return r.Topics, nil
}

func (c *Conn) topicOK(ctx context.Context, r *wire.TopicRequest) error {
	return c.expectOK(ctx, r)
}

// TopicJoin joins a public topic.
func (c *Conn) TopicJoin(ctx context.Context, topic string) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicJoin, Topic: topic})
}

// TopicLeave leaves a topic (its key is then rotated).
func (c *Conn) TopicLeave(ctx context.Context, topic string) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicLeave, Topic: topic})
}

// FindTopicMember finds in a topic's members the one ref names as
// topic_add does (pubkey, memberId or display name).
func FindTopicMember(list []wire.TopicMemberInfo, ref string) (wire.TopicMemberInfo, bool) {
	for _, tm := range list {
		if tm.Pubkey == ref || tm.MemberID == ref {
			return tm, true
		}
	}
	for _, tm := range list {
		if cmcrypto.NameKey(tm.DisplayName) == cmcrypto.NameKey(ref) {
			return tm, true
		}
	}
	return wire.TopicMemberInfo{}, false
}

// TopicAdd adds a member (pubkey, memberId or display name) to a topic with
// a role (lead, member, observer; "" = member). A lead's request.
func (c *Conn) TopicAdd(ctx context.Context, topic, member, role string) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicAdd, Topic: topic, Member: member, Role: role})
}

// TopicRemove removes a member from a topic (its key is then rotated).
func (c *Conn) TopicRemove(ctx context.Context, topic, member string) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicRemove, Topic: topic, Member: member})
}

// TopicMembers lists a topic's members.
func (c *Conn) TopicMembers(ctx context.Context, topic string) ([]wire.TopicMemberInfo, error) {
	r, err := roundTrip[wire.TopicMembers](ctx, c, &wire.TopicRequest{Type: wire.TypeTopicMembers, Topic: topic}, wire.TypeTopicMembers)
	if err != nil {
		return nil, err
	}
	return r.Members, nil
}

// HistoryPage selects a page of topic_history: newest first before a
// message id (or from the newest), or oldest first after one.
type HistoryPage struct {
	Limit  int
	Before string
	After  string
}

// TopicPage is one page of history: the pushes as the broker stored them.
type TopicPage struct {
	Messages []RawPush
	More     bool
}

// TopicHistory reads a page of a topic's history.
func (c *Conn) TopicHistory(ctx context.Context, topic string, p HistoryPage) (*TopicPage, error) {
	r, err := roundTrip[wire.TopicHistory](ctx, c, &wire.TopicRequest{Type: wire.TypeTopicHistory, Topic: topic,
		Limit: p.Limit, Before: p.Before, After: p.After}, wire.TypeTopicHistory)
	if err != nil {
		return nil, err
	}
	out := &TopicPage{More: r.More, Messages: make([]RawPush, 0, len(r.Messages))}
	for _, m := range r.Messages {
		rp := RawPush{Raw: []byte(m)}
		var push wire.Push
		if err := wire.Decode(m, &push); err != nil {
			rp.Err = wrapError(CodeProtocol, err, "history message")
		} else {
			rp.Push = &push
		}
		out.Messages = append(out.Messages, rp)
	}
	return out, nil
}

// TopicKeys fetches this member's own seals of a topic, every generation.
func (c *Conn) TopicKeys(ctx context.Context, topic string) (*wire.TopicKeys, error) {
	return roundTrip[wire.TopicKeys](ctx, c, &wire.TopicRequest{Type: wire.TypeTopicKeys, Topic: topic}, wire.TypeTopicKeys)
}

// TopicPendingSeals lists the members waiting for a seal of the current
// generation.
func (c *Conn) TopicPendingSeals(ctx context.Context, topic string) (*wire.TopicPendingSeals, error) {
	return roundTrip[wire.TopicPendingSeals](ctx, c, &wire.TopicRequest{Type: wire.TypeTopicPendingSeals, Topic: topic}, wire.TypeTopicPendingSeals)
}

// TopicSeal uploads seals made by this member.
func (c *Conn) TopicSeal(ctx context.Context, topic string, seals []wire.TopicSealIn) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicSeal, Topic: topic, Seals: seals})
}

// TopicRotate moves a topic to keyGen with seals of the new key.
func (c *Conn) TopicRotate(ctx context.Context, topic string, keyGen int, seals []wire.TopicSealIn) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicRotate, Topic: topic, KeyGen: keyGen, Seals: seals})
}

// TopicMarkRead moves this member's read marker to upTo ("" = the newest).
func (c *Conn) TopicMarkRead(ctx context.Context, topic, upTo string) error {
	return c.topicOK(ctx, &wire.TopicRequest{Type: wire.TypeTopicMarkRead, Topic: topic, UpTo: upTo})
}

// NotificationsList lists this member's mentions after since (Unix ms).
func (c *Conn) NotificationsList(ctx context.Context, since int64, unread bool) ([]wire.Notification, error) {
	r, err := roundTrip[wire.Notifications](ctx, c, &wire.NotificationsListRequest{Type: wire.TypeNotificationsList, Since: since, Unread: unread}, wire.TypeNotifications)
	if err != nil {
		return nil, err
	}
	return r.Notifications, nil
}

// NotificationsRead marks notifications read.
func (c *Conn) NotificationsRead(ctx context.Context, ids []string) error {
	return c.expectOK(ctx, &wire.NotificationsReadRequest{Type: wire.TypeNotificationsRead, IDs: ids})
}

// APIKeyCreate creates an API key acting as this member; the answer holds
// the secret, which is never shown again.
func (c *Conn) APIKeyCreate(ctx context.Context, req wire.APIKeyCreate) (*wire.APIKeyReply, error) {
	req.Type = wire.TypeAPIKeyCreate
	return roundTrip[wire.APIKeyReply](ctx, c, &req, wire.TypeAPIKey)
}

// APIKeyList lists this member's keys (every key for the owner and admins).
func (c *Conn) APIKeyList(ctx context.Context) ([]wire.APIKeyInfo, error) {
	r, err := roundTrip[wire.APIKeys](ctx, c, &wire.Request{Type: wire.TypeAPIKeyList}, wire.TypeAPIKeys)
	if err != nil {
		return nil, err
	}
	return r.Keys, nil
}

// APIKeyRevoke revokes a key by id.
func (c *Conn) APIKeyRevoke(ctx context.Context, id string) error {
	return c.expectOK(ctx, &wire.APIKeyRevoke{Type: wire.TypeAPIKeyRevoke, ID: id})
}

// SealTopicPost encrypts and signs a post to topicID under generation
// keyGen's key (02-crypto "Topic message"), as the key from (member or
// session). A nil key makes a plaintext post (bodyVersion 1), for topics
// created unencrypted.
func SealTopicPost(meshID, topicID string, keyGen int, key *[32]byte, plaintext []byte, from *cmcrypto.Identity, o SendOptions) (*wire.Send, error) {
	if err := checkPlaintext(plaintext); err != nil {
		return nil, err
	}
	det, err := o.deterministic()
	if err != nil {
		return nil, err
	}
	s := &wire.Send{TargetSpec: "#" + topicID, Kind: wire.KindTopic}
	if key == nil {
		var nonce [24]byte
		if det {
			nonce = from.DeriveNonce(detPlainTopicNonce, []byte(meshID), []byte(topicID), []byte(o.ClientMessageID), plaintext)
		} else {
			rand.Read(nonce[:])
		}
		s.BodyVersion, s.Nonce, s.Ciphertext = wire.BodyPlaintext, cmcrypto.EncodeB64(nonce[:]), cmcrypto.EncodeB64(plaintext)
	} else {
		var nonce, ct, sig string
		if det {
			n := from.DeriveNonce(detTopicNonce, []byte(meshID), []byte(topicID), []byte(strconv.Itoa(keyGen)), key[:],
				[]byte(o.ClientMessageID), plaintext)
			nonce, ct, sig, err = cmcrypto.SealTopicPostWithNonce(meshID, topicID, keyGen, plaintext, n, key, from)
		} else {
			nonce, ct, sig, err = cmcrypto.SealTopicPost(meshID, topicID, keyGen, plaintext, key, from)
		}
		if err != nil {
			return nil, wrapError(wire.CodeInvalidArgument, err, "sealing the post")
		}
		g := keyGen
		s.BodyVersion, s.Nonce, s.Ciphertext, s.Signature, s.KeyGen = wire.BodyEncrypted, nonce, ct, sig, &g
	}
	o.apply(s)
	return s, nil
}

// ObserverRefusal is what an observer's post to a topic is told, before
// anything is sent (the daemon at accept, the direct path before the
// broker would refuse it).
func ObserverRefusal(topic string) string {
	return "not posted: you are an observer of #" + topic + ", who reads but does not post"
}

// NobodyHoldsKeyRefusal is what a post to an encrypted topic is told when
// the poster lacks its current key and no member of the topic holds it
// (everyone who did left): no one can share it, so waiting is useless.
func NobodyHoldsKeyRefusal(topic string) string {
	return "not posted: you do not hold the key of #" + topic + ", and no member of it does (everyone who held it left), so nobody can share it with you"
}

// NobodyHoldsKeyHint is the way out of NobodyHoldsKeyRefusal.
func NobodyHoldsKeyHint(topic string) string {
	return "claudemesh topic rotate " + config.ShellQuote(topic) + " makes a new key and seals it to every member (posts from before it stay unreadable), then post again"
}

// HoldersOfCurrentKey counts the members of a topic who hold its current
// key (topic_members' hasCurrentKey).
func HoldersOfCurrentKey(members []wire.TopicMemberInfo) int {
	n := 0
	for _, m := range members {
		if m.HasCurrentKey {
			n++
		}
	}
	return n
}

// ObserverHint is the way to post: a lead (or the mesh's owner or an
// admin) makes the member called name a member of the topic.
func ObserverHint(topic, name string) string {
	return "ask a lead of #" + topic + " (or the mesh owner or an admin) to make you a member: claudemesh topic add " +
		config.ShellQuote(topic) + " " + config.ShellQuote(name) + " --role member"
}
