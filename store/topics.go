package store

import (
	"bytes"
	"encoding/binary"
	"errors"

	"github.com/oklog/ulid/v2"

	"claudemesh/internal/binrec"
	"claudemesh/wire"
)

// Topics (01-protocol §5) live in buckets of their own inside each mesh's
// bucket, apart from the message queue: a topic post has no per-recipient
// delivery record, only a place in its topic's history.
//
//	topics         topicId → Topic (JSON)
//	topic_names    name → topicId
//	topic_members  topicId ‖ raw member pubkey → TopicMember (JSON)
//	member_topics  raw member pubkey ‖ topicId → nil (a member's topics)
//	topic_seals    topicId ‖ raw recipient ‖ u64 keyGen ‖ raw sealer → TopicSeal
//	topic_msgs     one nested bucket per topic: u64 seq → TopicPost
//	               (binary); the nested bucket's sequence numbers the posts
//	               in commit order, so history newest-first is a cursor
//	               walk backwards and catching up is one forwards
//	topic_msgidx   messageId → topicId ‖ u64 seq
//	topic_idem     raw sender ‖ clientMessageId → messageId
//	notifications  raw member pubkey ‖ notificationId → Notification (JSON)
//
// Topic ids are ULIDs (26 bytes), so they make fixed-length key prefixes.
var (
	bTopics       = []byte("topics")
	bTopicNames   = []byte("topic_names")
	bTopicMembers = []byte("topic_members")
	bMemberTopics = []byte("member_topics")
	bTopicSeals   = []byte("topic_seals")
	bTopicMsgs    = []byte("topic_msgs")
	bTopicMsgIdx  = []byte("topic_msgidx")
	bTopicIdem    = []byte("topic_idem")
	bNotifs       = []byte("notifications")
	topicBuckets  = [][]byte{bTopics, bTopicNames, bTopicMembers, bMemberTopics, bTopicSeals, bTopicMsgs, bTopicMsgIdx, bTopicIdem, bNotifs}
)

// ErrTopicExists means a topic with that name or id already exists.
var ErrTopicExists = errors.New("store: topic exists")

const topicIDLen = 26

// Topic is one topic of a mesh.
type Topic struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Visibility  string `json:"visibility"`
	Encrypted   bool   `json:"encrypted"`
	// KeyGen is the current key generation; 0 means no key yet (the
	// reserved general topic before its first rotation).
	KeyGen      int    `json:"keyGen"`
	RekeyNeeded bool   `json:"rekeyNeeded,omitzero"`
	CreatedAt   int64  `json:"createdAt"`
	CreatedBy   string `json:"createdBy,omitempty"` // member pubkey; "" for general
	// General marks the reserved topic: every active member of the mesh
	// is a member of it, without a membership record.
	General bool `json:"general,omitzero"`
}

// TopicMember is a member's place in a topic: its role, when it joined and
// how far it has read (the seq of the newest post it marked read).
type TopicMember struct {
	MemberID string `json:"memberId"`
	Pubkey   string `json:"pubkey"`
	Role     string `json:"role"`
	JoinedAt int64  `json:"joinedAt"`
	ReadSeq  uint64 `json:"readSeq,omitzero"`
}

// TopicSeal is one sealed copy of a topic key generation for a recipient,
// made and signed by a sealer (02-crypto "Topic key seals"). The broker
// cannot open it.
type TopicSeal struct {
	Recipient string `json:"recipient"`
	KeyGen    int    `json:"keyGen"`
	Sealer    string `json:"sealer"`
	Blob      string `json:"blob"`
	Nonce     string `json:"nonce"`
	Signature string `json:"signature"`
	CreatedAt int64  `json:"createdAt"`
}

// TopicPost is one stored topic message: its encoded push frame (exactly
// what live delivery and history send) and what idempotency and retention
// need without decoding the frame.
type TopicPost struct {
	Seq             uint64
	ID              string
	TopicID         string
	SenderPubkey    string
	SenderMember    string
	ClientMessageID string
	Fingerprint     string
	CreatedAt       int64
	Push            []byte
}

// Notification is a mention of a member in a topic post.
type Notification struct {
	ID           string `json:"id"`
	TopicID      string `json:"topicId"`
	Topic        string `json:"topic"`
	MessageID    string `json:"messageId"`
	SenderPubkey string `json:"senderPubkey"`
	SenderName   string `json:"senderName"`
	CreatedAt    int64  `json:"createdAt"`
	ReadAt       int64  `json:"readAt,omitzero"`
}

func topicSub(tx *Tx, meshID string, name []byte) (*Bucket, error) {
	b, err := sub(tx, meshID, name)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, ErrNotFound
	}
	return b, nil
}

// initTopics creates a mesh's topic buckets and its reserved general topic
// (no key yet: the first owner or admin client to see keyGen 0 rotates it to
// generation 1). It runs when a mesh is created and, by migration, for
// meshes created before topics existed.
func initTopics(tx *Tx, mb *Bucket, createdAt int64) error {
	for _, name := range topicBuckets {
		if _, err := mb.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	names := mb.Bucket(bTopicNames)
	if names.Get([]byte(wire.GeneralTopic)) != nil {
		return nil
	}
	t := &Topic{ID: ulid.Make().String(), Name: wire.GeneralTopic, Visibility: wire.VisibilityPublic,
		Encrypted: true, CreatedAt: createdAt, General: true}
	return putNewTopic(mb, t)
}

func putNewTopic(mb *Bucket, t *Topic) error {
	names, topics := mb.Bucket(bTopicNames), mb.Bucket(bTopics)
	if names.Get([]byte(t.Name)) != nil || topics.Get([]byte(t.ID)) != nil {
		return ErrTopicExists
	}
	if _, err := mb.Bucket(bTopicMsgs).CreateBucket([]byte(t.ID)); err != nil {
		return err
	}
	if err := names.Put([]byte(t.Name), []byte(t.ID)); err != nil {
		return err
	}
	return topics.Put([]byte(t.ID), enc(t))
}

// CreateTopic stores a new topic with its creator as lead and, for an
// encrypted topic, the creator's own seal of generation 1. A name or id in
// use is ErrTopicExists.
func CreateTopic(tx *Tx, meshID string, t *Topic, creator *TopicMember, seal *TopicSeal) error {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return ErrNotFound
	}
	if err := putNewTopic(mb, t); err != nil {
		return err
	}
	if err := PutTopicMember(tx, meshID, t.ID, creator); err != nil {
		return err
	}
	if seal != nil {
		return PutTopicSeal(tx, meshID, t.ID, seal)
	}
	return nil
}

// PutTopic rewrites a topic's record (key generation, rekey flag).
func PutTopic(tx *Tx, meshID string, t *Topic) error {
	b, err := topicSub(tx, meshID, bTopics)
	if err != nil {
		return err
	}
	return b.Put([]byte(t.ID), enc(t))
}

// GetTopic loads a topic by id.
func GetTopic(tx *Tx, meshID, topicID string) (*Topic, error) {
	b, err := topicSub(tx, meshID, bTopics)
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(topicID))
	if v == nil {
		return nil, ErrNotFound
	}
	var t Topic
	return &t, dec(v, &t)
}

// TopicByName loads a topic by name.
func TopicByName(tx *Tx, meshID, name string) (*Topic, error) {
	b, err := topicSub(tx, meshID, bTopicNames)
	if err != nil {
		return nil, err
	}
	id := b.Get([]byte(name))
	if id == nil {
		return nil, ErrNotFound
	}
	return GetTopic(tx, meshID, string(id))
}

// ListTopics returns every topic of a mesh, in id (creation) order.
func ListTopics(tx *Tx, meshID string) ([]Topic, error) {
	b, err := topicSub(tx, meshID, bTopics)
	if err != nil {
		return nil, err
	}
	var out []Topic
	err = b.ForEach(func(_, v []byte) error {
		var t Topic
		if err := dec(v, &t); err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

func tmKey(topicID, pubkey string) []byte { return cat([]byte(topicID), pk(pubkey)) }

// PutTopicMember inserts or updates a membership record.
func PutTopicMember(tx *Tx, meshID, topicID string, m *TopicMember) error {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return ErrNotFound
	}
	if err := mb.Bucket(bMemberTopics).Put(cat(pk(m.Pubkey), []byte(topicID)), nil); err != nil {
		return err
	}
	return mb.Bucket(bTopicMembers).Put(tmKey(topicID, m.Pubkey), enc(m))
}

// GetTopicMember loads a membership record (ErrNotFound when the member has
// none: not a member, or general's implicit membership before any read
// marker was stored).
func GetTopicMember(tx *Tx, meshID, topicID, pubkey string) (*TopicMember, error) {
	b, err := topicSub(tx, meshID, bTopicMembers)
	if err != nil {
		return nil, err
	}
	v := b.Get(tmKey(topicID, pubkey))
	if v == nil {
		return nil, ErrNotFound
	}
	var m TopicMember
	return &m, dec(v, &m)
}

// RemoveTopicMember deletes a membership; false when there was none.
func RemoveTopicMember(tx *Tx, meshID, topicID, pubkey string) (bool, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return false, ErrNotFound
	}
	k := tmKey(topicID, pubkey)
	if mb.Bucket(bTopicMembers).Get(k) == nil {
		return false, nil
	}
	if err := mb.Bucket(bMemberTopics).Delete(cat(pk(pubkey), []byte(topicID))); err != nil {
		return false, err
	}
	return true, mb.Bucket(bTopicMembers).Delete(k)
}

// TopicMembers returns a topic's membership records (for general: the
// read markers stored so far, not the membership).
func TopicMembers(tx *Tx, meshID, topicID string) ([]TopicMember, error) {
	b, err := topicSub(tx, meshID, bTopicMembers)
	if err != nil {
		return nil, err
	}
	var out []TopicMember
	prefix := []byte(topicID)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var m TopicMember
		if err := dec(v, &m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// MemberTopicIDs returns the ids of the topics a member has a record in.
func MemberTopicIDs(tx *Tx, meshID, pubkey string) ([]string, error) {
	b, err := topicSub(tx, meshID, bMemberTopics)
	if err != nil {
		return nil, err
	}
	var out []string
	prefix := pk(pubkey)
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out, nil
}

func sealKey(topicID, recipient string, keyGen int, sealer string) []byte {
	return cat([]byte(topicID), pk(recipient), u64(uint64(keyGen)), pk(sealer))
}

// PutTopicSeal stores a seal, replacing an earlier one by the same sealer
// for the same recipient and generation. Seals by different sealers are
// kept side by side, so a recipient handed one it must refuse can still use
// another.
func PutTopicSeal(tx *Tx, meshID, topicID string, s *TopicSeal) error {
	b, err := topicSub(tx, meshID, bTopicSeals)
	if err != nil {
		return err
	}
	return b.Put(sealKey(topicID, s.Recipient, s.KeyGen, s.Sealer), enc(s))
}

// SealsFor returns every seal stored for a recipient in a topic, oldest
// generation first.
func SealsFor(tx *Tx, meshID, topicID, recipient string) ([]TopicSeal, error) {
	b, err := topicSub(tx, meshID, bTopicSeals)
	if err != nil {
		return nil, err
	}
	var out []TopicSeal
	prefix := cat([]byte(topicID), pk(recipient))
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var s TopicSeal
		if err := dec(v, &s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Sealers returns who sealed generation keyGen for recipient.
func Sealers(tx *Tx, meshID, topicID, recipient string, keyGen int) ([]string, error) {
	b, err := topicSub(tx, meshID, bTopicSeals)
	if err != nil {
		return nil, err
	}
	var out []string
	prefix := cat([]byte(topicID), pk(recipient), u64(uint64(keyGen)))
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, hexKey(k[len(prefix):]))
	}
	return out, nil
}

// ---- posts ----

// Layout of a TopicPost (binary, see records.go): recBinary, flags (0),
// varint createdAt, str id, senderPubkey, senderMember, clientMessageId,
// fingerprint, bytes push. The seq is the key; the topic id is the nested
// bucket's name.
func encodeTopicPost(p *TopicPost) []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(p.Push)+binary.MaxVarintLen64+
		binrec.SizeOf(p.ID, p.SenderPubkey, p.SenderMember, p.ClientMessageID, p.Fingerprint))
	b = append(b, recBinary, 0)
	b = binary.AppendVarint(b, p.CreatedAt)
	for _, s := range [...]string{p.ID, p.SenderPubkey, p.SenderMember, p.ClientMessageID, p.Fingerprint} {
		b = binrec.AppendStr(b, s)
	}
	return binrec.AppendBytes(b, p.Push)
}

func decodeTopicPost(v []byte, p *TopicPost) error {
	r := binrec.NewReader(v)
	r.Header()
	p.CreatedAt = r.Varint()
	for _, s := range [...]*string{&p.ID, &p.SenderPubkey, &p.SenderMember, &p.ClientMessageID, &p.Fingerprint} {
		*s = r.Str()
	}
	p.Push = r.Bytes()
	return recordErr(r.Done("topic post"))
}

// postCreatedAt reads only a post's timestamp (retention walks).
func postCreatedAt(v []byte) (int64, error) {
	if len(v) < 3 || v[0] != recBinary {
		return 0, recordErr(errors.New("corrupt topic post record"))
	}
	t, n := binary.Varint(v[2:])
	if n <= 0 {
		return 0, recordErr(errors.New("corrupt topic post record"))
	}
	return t, nil
}

func topicMsgs(tx *Tx, meshID, topicID string) (*Bucket, error) {
	b, err := topicSub(tx, meshID, bTopicMsgs)
	if err != nil {
		return nil, err
	}
	tb := b.Bucket([]byte(topicID))
	if tb == nil {
		return nil, ErrNotFound
	}
	return tb, nil
}

// AppendTopicPost stores a post at the end of its topic's history with its
// idempotency record, and returns its seq (its place in commit order,
// without gaps).
func AppendTopicPost(tx *Tx, meshID string, p *TopicPost) (uint64, error) {
	tb, err := topicMsgs(tx, meshID, p.TopicID)
	if err != nil {
		return 0, err
	}
	seq, err := tb.NextSequence()
	if err != nil {
		return 0, err
	}
	p.Seq = seq
	if err := tb.Put(u64(seq), encodeTopicPost(p)); err != nil {
		return 0, err
	}
	mb := meshBucket(tx, meshID)
	if err := mb.Bucket(bTopicMsgIdx).Put([]byte(p.ID), cat([]byte(p.TopicID), u64(seq))); err != nil {
		return 0, err
	}
	if err := mb.Bucket(bTopicIdem).Put(cat(pk(p.SenderPubkey), []byte(p.ClientMessageID)), []byte(p.ID)); err != nil {
		return 0, err
	}
	return seq, nil
}

// TopicPostLocation finds a post by message id: its topic and seq.
func TopicPostLocation(tx *Tx, meshID, messageID string) (topicID string, seq uint64, err error) {
	b, err := topicSub(tx, meshID, bTopicMsgIdx)
	if err != nil {
		return "", 0, err
	}
	v := b.Get([]byte(messageID))
	if len(v) != topicIDLen+8 {
		return "", 0, ErrNotFound
	}
	return string(v[:topicIDLen]), be64(v[topicIDLen:]), nil
}

// GetTopicPost loads one post by topic and seq.
func GetTopicPost(tx *Tx, meshID, topicID string, seq uint64) (*TopicPost, error) {
	tb, err := topicMsgs(tx, meshID, topicID)
	if err != nil {
		return nil, err
	}
	v := tb.Get(u64(seq))
	if v == nil {
		return nil, ErrNotFound
	}
	p := &TopicPost{Seq: seq, TopicID: topicID}
	return p, decodeTopicPost(v, p)
}

// LookupTopicIdempotent returns the post a sender already made under a
// clientMessageId, or ErrNotFound.
func LookupTopicIdempotent(tx *Tx, meshID, sender, clientMessageID string) (*TopicPost, error) {
	b, err := topicSub(tx, meshID, bTopicIdem)
	if err != nil {
		return nil, err
	}
	id := b.Get(cat(pk(sender), []byte(clientMessageID)))
	if id == nil {
		return nil, ErrNotFound
	}
	topicID, seq, err := TopicPostLocation(tx, meshID, string(id))
	if err != nil {
		return nil, err
	}
	return GetTopicPost(tx, meshID, topicID, seq)
}

// TopicLastSeq is the seq of the newest post ever made in a topic (posts
// removed by retention included), 0 for none.
func TopicLastSeq(tx *Tx, meshID, topicID string) uint64 {
	tb, err := topicMsgs(tx, meshID, topicID)
	if err != nil {
		return 0
	}
	return tb.Sequence()
}

// TopicFirstSeq is the seq of the oldest post still stored, 0 for none.
func TopicFirstSeq(tx *Tx, meshID, topicID string) uint64 {
	tb, err := topicMsgs(tx, meshID, topicID)
	if err != nil {
		return 0
	}
	k, _ := tb.Cursor().First()
	if k == nil {
		return 0
	}
	return be64(k)
}

// TopicPostsBefore returns up to limit posts older than seq before (0: from
// the newest), newest first, and whether older ones remain.
func TopicPostsBefore(tx *Tx, meshID, topicID string, before uint64, limit int) ([]TopicPost, bool, error) {
	tb, err := topicMsgs(tx, meshID, topicID)
	if err != nil {
		return nil, false, err
	}
	c := tb.Cursor()
	var k, v []byte
	if before == 0 {
		k, v = c.Last()
	} else {
		k, v = c.Seek(u64(before))
		if k == nil {
			k, v = c.Last()
		}
		for k != nil && be64(k) >= before {
			k, v = c.Prev()
		}
	}
	var out []TopicPost
	for ; k != nil; k, v = c.Prev() {
		if len(out) == limit {
			return out, true, nil
		}
		p := TopicPost{Seq: be64(k), TopicID: topicID}
		if err := decodeTopicPost(v, &p); err != nil {
			return nil, false, err
		}
		out = append(out, p)
	}
	return out, false, nil
}

// TopicPostsAfter returns up to limit posts newer than seq after, oldest
// first, and whether newer ones remain.
func TopicPostsAfter(tx *Tx, meshID, topicID string, after uint64, limit int) ([]TopicPost, bool, error) {
	tb, err := topicMsgs(tx, meshID, topicID)
	if err != nil {
		return nil, false, err
	}
	c := tb.Cursor()
	var out []TopicPost
	for k, v := c.Seek(u64(after + 1)); k != nil; k, v = c.Next() {
		if len(out) == limit {
			return out, true, nil
		}
		p := TopicPost{Seq: be64(k), TopicID: topicID}
		if err := decodeTopicPost(v, &p); err != nil {
			return nil, false, err
		}
		out = append(out, p)
	}
	return out, false, nil
}

// PurgeTopicPosts deletes up to max of a topic's posts made before cutoff
// (Unix ms), oldest first, with their index and idempotency records; more
// reports whether older posts remain.
func PurgeTopicPosts(tx *Tx, meshID, topicID string, cutoff int64, max int) (n int, more bool, err error) {
	tb, err := topicMsgs(tx, meshID, topicID)
	if err != nil {
		return 0, false, err
	}
	mb := meshBucket(tx, meshID)
	idx, idem := mb.Bucket(bTopicMsgIdx), mb.Bucket(bTopicIdem)
	c := tb.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		at, err := postCreatedAt(v)
		if err != nil {
			return n, false, err
		}
		if at >= cutoff {
			return n, false, nil
		}
		if n == max {
			return n, true, nil
		}
		var p TopicPost
		if err := decodeTopicPost(v, &p); err != nil {
			return n, false, err
		}
		if err := idx.Delete([]byte(p.ID)); err != nil {
			return n, false, err
		}
		if err := idem.Delete(cat(pk(p.SenderPubkey), []byte(p.ClientMessageID))); err != nil {
			return n, false, err
		}
		if err := c.Delete(); err != nil {
			return n, false, err
		}
		n++
	}
	return n, false, nil
}

// ---- notifications ----

func notifKey(member, id string) []byte { return cat(pk(member), []byte(id)) }

// MaxNotifications is how many notifications a member keeps: the oldest go
// when a new one would pass it, so mentions cannot grow a member's record
// without bound.
const MaxNotifications = 1000

// AddNotification stores a mention for member, dropping its oldest past
// MaxNotifications.
func AddNotification(tx *Tx, meshID, member string, n *Notification) error {
	b, err := topicSub(tx, meshID, bNotifs)
	if err != nil {
		return err
	}
	if err := b.Put(notifKey(member, n.ID), enc(n)); err != nil {
		return err
	}
	prefix := pk(member)
	c := b.Cursor()
	count := 0
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		count++
	}
	for k, _ := c.Seek(prefix); count > MaxNotifications && k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
		count--
	}
	return nil
}

// ListNotifications returns a member's notifications newer than since
// (Unix ms), oldest first, at most limit.
func ListNotifications(tx *Tx, meshID, member string, since int64, unreadOnly bool, limit int) ([]Notification, error) {
	b, err := topicSub(tx, meshID, bNotifs)
	if err != nil {
		return nil, err
	}
	out := []Notification{}
	prefix := pk(member)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var n Notification
		if err := dec(v, &n); err != nil {
			return nil, err
		}
		if n.CreatedAt <= since || (unreadOnly && n.ReadAt != 0) {
			continue
		}
		out = append(out, n)
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// MarkNotificationsRead stamps a member's notifications as read; ids that
// are unknown or another member's are skipped.
func MarkNotificationsRead(tx *Tx, meshID, member string, ids []string, now int64) (int, error) {
	b, err := topicSub(tx, meshID, bNotifs)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		k := notifKey(member, id)
		v := b.Get(k)
		if v == nil {
			continue
		}
		var rec Notification
		if err := dec(v, &rec); err != nil {
			return n, err
		}
		if rec.ReadAt != 0 {
			continue
		}
		rec.ReadAt = now
		if err := b.Put(k, enc(&rec)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// initMeshTopics sets up a new mesh's topics and API keys.
func initMeshTopics(tx *Tx, mb *Bucket, createdAt int64) error {
	if err := initTopics(tx, mb, createdAt); err != nil {
		return err
	}
	return initAPIKeys(tx, mb)
}

// migrateTopics (schema 2 → 3) gives every existing mesh what a new one gets.
func migrateTopics(tx *Tx) error {
	if _, err := tx.CreateBucketIfNotExists(bucketKeyPrefixes); err != nil {
		return err
	}
	return tx.Bucket(bucketMeshes).ForEachBucket(func(k []byte) error {
		mb := tx.Bucket(bucketMeshes).Bucket(k)
		var m Mesh
		if err := dec(mb.Get(keyInfo), &m); err != nil {
			return err
		}
		return initMeshTopics(tx, mb, m.CreatedAt)
	})
}
