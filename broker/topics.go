package broker

import (
	"errors"
	"fmt"
	"sort"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// Topics (01-protocol §5): a mesh's rooms. The store holds topics,
// memberships, seals and history (store/topics.go); this file keeps an
// in-memory index of each mesh's topics and their members, so the post path
// (topic_post.go) routes without a read transaction, and answers every topic
// request. The broker never holds a topic key: it stores seals it cannot
// open and checks every seal's and post's signature before storing it.
//
// Topic events to clients (docs/protocol.md "Topics"): topic_member_joined
// to the key holders when a member joins without the key, topic_rekey_needed
// to them when a member left or was removed, topic_sealed to a member when a
// seal for it was stored.

// topicState is one topic as the hub sees it.
type topicState struct {
	store.Topic
	// members maps member pubkey → topic role. The general topic has no
	// entries: every active member of the mesh belongs to it.
	members map[string]string
}

// topicIndex is a mesh's topics; guarded by meshState.mu.
type topicIndex struct {
	byID   map[string]*topicState
	byName map[string]*topicState
}

// topicsLocked returns the mesh's topic index, loading it from the store on
// first use. Caller holds ms.mu.
func (b *Broker) topicsLocked(ms *meshState) (*topicIndex, error) {
	if ms.topics != nil {
		return ms.topics, nil
	}
	idx := &topicIndex{byID: map[string]*topicState{}, byName: map[string]*topicState{}}
	err := b.store.View(func(tx *store.Tx) error {
		topics, err := store.ListTopics(tx, ms.id)
		if err != nil {
			return err
		}
		for _, t := range topics {
			ts := &topicState{Topic: t, members: map[string]string{}}
			if !t.General {
				ms, err := store.TopicMembers(tx, ms.id, t.ID)
				if err != nil {
					return err
				}
				for _, m := range ms {
					ts.members[m.Pubkey] = m.Role
				}
			}
			idx.byID[t.ID], idx.byName[t.Name] = ts, ts
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ms.topics = idx
	return idx, nil
}

// put adds or replaces a topic in the index.
func (x *topicIndex) put(ts *topicState) {
	x.byID[ts.ID], x.byName[ts.Name] = ts, ts
}

// lookup finds a topic by id (a ULID) or name.
func (x *topicIndex) lookup(ref string) *topicState {
	if t := x.byID[ref]; t != nil {
		return t
	}
	return x.byName[ref]
}

// lookupID finds a topic by id; a nil index (never loaded) has none.
func (x *topicIndex) lookupID(id string) *topicState {
	if x == nil {
		return nil
	}
	return x.byID[id]
}

// isMember reports whether an active member belongs to the topic. Caller
// holds ms.mu.
func (t *topicState) isMember(ms *meshState, pubkey string) bool {
	if ms.activeMember(pubkey) == nil {
		return false
	}
	if t.General {
		return true
	}
	_, ok := t.members[pubkey]
	return ok
}

// role is a member's topic role: general gives the mesh's owner and admins
// the lead role and everyone else the member role.
func (t *topicState) role(ms *meshState, pubkey string) string {
	if t.General {
		if m := ms.activeMember(pubkey); m != nil && (m.Role == wire.MemberOwner || m.Role == wire.MemberAdmin) {
			return wire.TopicLead
		}
		return wire.TopicMember
	}
	return t.members[pubkey]
}

// memberKeys lists the topic's active members. Caller holds ms.mu.
func (t *topicState) memberKeys(ms *meshState) []string {
	var out []string
	if t.General {
		for k, m := range ms.members {
			if m.RevokedAt == 0 {
				out = append(out, k)
			}
		}
	} else {
		for k := range t.members {
			if ms.activeMember(k) != nil {
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// visibleTo reports whether a member may see a topic at all: public topics
// are listed to everyone, private ones only to their members.
func (t *topicState) visibleTo(ms *meshState, pubkey string) bool {
	return t.Visibility == wire.VisibilityPublic || t.isMember(ms, pubkey)
}

func (t *topicState) info() wire.TopicInfo {
	return wire.TopicInfo{ID: t.ID, Name: t.Name, Description: t.Description, Visibility: t.Visibility,
		Encrypted: t.Encrypted, KeyGen: t.KeyGen, CreatedAt: t.CreatedAt, RekeyNeeded: t.RekeyNeeded}
}

// topicFrames lists the requests handleTopicFrame serves.
var topicFrames = map[string]bool{
	wire.TypeTopicCreate: true, wire.TypeTopicList: true, wire.TypeTopicJoin: true, wire.TypeTopicLeave: true,
	wire.TypeTopicAdd: true, wire.TypeTopicRemove: true, wire.TypeTopicMembers: true, wire.TypeTopicHistory: true,
	wire.TypeTopicKeys: true, wire.TypeTopicPendingSeals: true, wire.TypeTopicSeal: true, wire.TypeTopicRotate: true,
	wire.TypeTopicMarkRead: true, wire.TypeNotificationsList: true, wire.TypeNotificationsRead: true,
	wire.TypeAPIKeyCreate: true, wire.TypeAPIKeyList: true, wire.TypeAPIKeyRevoke: true,
}

// handleTopicFrame dispatches the topic, notification and API-key requests.
func (c *conn) handleTopicFrame(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	switch env.Type {
	case wire.TypeTopicCreate:
		c.handleTopicCreate(data, env)
		return
	case wire.TypeTopicList:
		c.handleTopicList(env)
		return
	case wire.TypeNotificationsList, wire.TypeNotificationsRead:
		c.handleNotifications(data, env)
		return
	case wire.TypeAPIKeyCreate, wire.TypeAPIKeyList, wire.TypeAPIKeyRevoke:
		c.handleAPIKey(data, env)
		return
	}
	var r wire.TopicRequest
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	if r.Topic == "" {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, r.Type+" needs topic (an id or a name)")
		return
	}
	t, ok := c.topicFor(r.ReqID, r.Topic)
	if !ok {
		return
	}
	if t.Visibility == wire.VisibilityPrivate && r.Type != wire.TypeTopicJoin {
		// A private topic does not exist for a non-member (an owner or
		// admin may still add and remove members).
		ms := c.ms
		ms.mu.Lock()
		member := t.isMember(ms, c.mem.Pubkey)
		ms.mu.Unlock()
		admin := isManager(c.role())
		if !member && !(admin && (r.Type == wire.TypeTopicAdd || r.Type == wire.TypeTopicRemove)) {
			c.sendError(r.ReqID, wire.CodeTopicNotFound, fmt.Sprintf("no topic %q in this mesh", r.Topic))
			return
		}
	}
	switch r.Type {
	case wire.TypeTopicJoin:
		c.handleTopicJoin(r, t)
	case wire.TypeTopicLeave:
		c.handleTopicLeave(r, t)
	case wire.TypeTopicAdd, wire.TypeTopicRemove:
		c.handleTopicAddRemove(r, t)
	case wire.TypeTopicMembers:
		c.handleTopicMembers(r, t)
	case wire.TypeTopicHistory:
		c.handleTopicHistory(r, t)
	case wire.TypeTopicKeys:
		c.handleTopicKeys(r, t)
	case wire.TypeTopicPendingSeals:
		c.handleTopicPending(r, t)
	case wire.TypeTopicSeal:
		c.handleTopicSeal(r, t)
	case wire.TypeTopicRotate:
		c.handleTopicRotate(r, t)
	case wire.TypeTopicMarkRead:
		c.handleTopicMarkRead(r, t)
	}
}

// topicFor resolves a topic reference visible to the caller's member, or
// answers topic_not_found (a private topic the caller is not in does not
// exist as far as it can tell, except that topic_join names it). It returns
// a copy of the topic as it is now.
func (c *conn) topicFor(reqID, ref string) (topicState, bool) {
	ms := c.ms
	ms.mu.Lock()
	defer ms.mu.Unlock()
	idx, err := c.b.topicsLocked(ms)
	if err != nil {
		c.sendError(reqID, wire.CodeInternal, "could not load the topics")
		return topicState{}, false
	}
	t := idx.lookup(ref)
	if t == nil {
		c.sendError(reqID, wire.CodeTopicNotFound, fmt.Sprintf("no topic %q in this mesh", ref))
		return topicState{}, false
	}
	return *t, true
}

// requireTopicMember answers not_a_member unless the caller's member
// belongs to t (and, for a private topic, hides it).
func (c *conn) requireTopicMember(reqID string, t *topicState) bool {
	ms := c.ms
	ms.mu.Lock()
	member := t.isMember(ms, c.mem.Pubkey)
	ms.mu.Unlock()
	if member {
		return true
	}
	if t.Visibility == wire.VisibilityPrivate {
		c.sendError(reqID, wire.CodeTopicNotFound, fmt.Sprintf("no topic %q in this mesh", t.Name))
	} else {
		c.sendError(reqID, wire.CodeNotAMember, "you are not a member of #"+t.Name+"; join it first")
	}
	return false
}

// ---- create and list ----

const maxTopicDescription = 1024

// reserveTopicLocked checks a new topic of creator against
// Config.MaxTopicsPerMesh (what members can make the store keep; a mesh's
// topics are also listed whole in topic_list) and MaxTopicsPerMember (one
// member used to be able to create all of them and leave none to the
// others), counting the creates under way on this node (ms.topicCreating,
// which outlives a reload of the index), and reserves its place. A
// non-empty code refuses it; otherwise the caller calls
// finishTopicCreateLocked once the topic is created or not. Caller holds
// ms.mu.
func (c *conn) reserveTopicLocked(idx *topicIndex, creator string) (code, msg string) {
	ms, cfg := c.ms, c.b.cfg
	total, mine := len(idx.byID), ms.topicCreating[creator]
	for _, n := range ms.topicCreating {
		total += n
	}
	for _, t := range idx.byID {
		if t.CreatedBy == creator {
			mine++
		}
	}
	switch {
	case cfg.MaxTopicsPerMesh > 0 && total >= cfg.MaxTopicsPerMesh:
		return wire.CodeTooManyTopics, fmt.Sprintf("this mesh already has %d topics, the most it may have", cfg.MaxTopicsPerMesh)
	case cfg.MaxTopicsPerMember > 0 && mine >= cfg.MaxTopicsPerMember:
		c.b.metrics.limitTripped.WithLabelValues("topics_per_member").Inc()
		return wire.CodeTooManyTopics, fmt.Sprintf("you have created %d topics in this mesh, the most one member may", cfg.MaxTopicsPerMember)
	}
	ms.topicCreating[creator]++
	return "", ""
}

// finishTopicCreateLocked ends a reservation: the created topic (nil if it
// was not) goes into the index in the same critical section, so that it
// is never left out of the count. (If a cluster node reloads the index
// between the commit and this, the reloaded index already holds the topic
// and it counts twice for a moment: a create near the cap may then be
// refused a little early, never let past it.) Caller holds ms.mu.
func (c *conn) finishTopicCreateLocked(creator string, created *topicState) {
	ms := c.ms
	if created != nil {
		// The index may have been dropped meanwhile (a cluster node
		// reloads it after a replicated change); then it is loaded with
		// the topic.
		if idx, err := c.b.topicsLocked(ms); err == nil {
			idx.put(created)
		}
	}
	if ms.topicCreating[creator]--; ms.topicCreating[creator] <= 0 {
		delete(ms.topicCreating, creator)
	}
}

func (c *conn) handleTopicCreate(data []byte, env wire.Envelope) {
	var r wire.TopicCreate
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	fail := func(code, msg string) { c.sendError(r.ReqID, code, msg) }
	if !wire.ValidTopicName(r.Name) {
		fail(wire.CodeInvalidArgument, "topic names match ^[a-z0-9][a-z0-9_-]{0,63}$")
		return
	}
	if !wire.ValidText(r.Description, maxTopicDescription) {
		fail(wire.CodeInvalidArgument, fmt.Sprintf("description is at most %d bytes without control characters", maxTopicDescription))
		return
	}
	switch r.Visibility {
	case "":
		r.Visibility = wire.VisibilityPublic
	case wire.VisibilityPublic, wire.VisibilityPrivate:
	default:
		fail(wire.CodeInvalidArgument, "visibility is public or private")
		return
	}
	encrypted := r.Encrypted == nil || *r.Encrypted
	if r.ID == "" && !encrypted {
		r.ID = newID()
	}
	if !wire.ValidULID(r.ID) {
		fail(wire.CodeInvalidArgument, "id must be a ULID chosen by the creator: the creator's seal of the first key is signed over it")
		return
	}
	now := time.Now().UnixMilli()
	me := c.mem.Pubkey
	t := &store.Topic{ID: r.ID, Name: r.Name, Description: r.Description, Visibility: r.Visibility,
		Encrypted: encrypted, CreatedAt: now, CreatedBy: me}
	var seal *store.TopicSeal
	if encrypted {
		if r.Seal == nil {
			fail(wire.CodeInvalidArgument, "an encrypted topic needs the creator's own seal of its first key (seal)")
			return
		}
		if r.Seal.RecipientPubkey != "" && r.Seal.RecipientPubkey != me {
			fail(wire.CodeInvalidArgument, "the creation seal is the creator's own: recipientPubkey must be your member key")
			return
		}
		if r.Seal.KeyGen != 0 && r.Seal.KeyGen != 1 {
			fail(wire.CodeInvalidArgument, "a new topic starts at key generation 1")
			return
		}
		in := *r.Seal
		in.RecipientPubkey, in.KeyGen = me, 1
		var code, msg string
		seal, code, msg = c.checkSeal(t.ID, in, now)
		if code != "" {
			fail(code, msg)
			return
		}
		t.KeyGen = 1
	} else if r.Seal != nil {
		fail(wire.CodeInvalidArgument, "a plaintext topic has no key to seal")
		return
	}
	creator := &store.TopicMember{MemberID: c.mem.ID, Pubkey: me, Role: wire.TopicLead, JoinedAt: now}
	ms := c.ms
	ms.mu.Lock()
	idx, ierr := c.b.topicsLocked(ms)
	if ierr != nil {
		ms.mu.Unlock()
		c.b.log.Error("topic create", "err", ierr)
		fail(wire.CodeInternal, "could not create the topic")
		return
	}
	code, msg := c.reserveTopicLocked(idx, me)
	ms.mu.Unlock()
	if code != "" {
		fail(code, msg)
		return
	}
	finished := false
	finish := func(created *topicState) {
		ms.mu.Lock()
		c.finishTopicCreateLocked(me, created)
		ms.mu.Unlock()
		finished = true
	}
	defer func() {
		if !finished {
			finish(nil)
		}
	}()
	err := c.b.store.Update(func(tx *store.Tx) error {
		if err := store.CreateTopic(tx, ms.id, t, creator, seal); err != nil {
			return err
		}
		return c.b.auditTopic(tx, ms, wire.AuditTopicCreated, me, map[string]any{"topicId": t.ID, "name": t.Name,
			"visibility": t.Visibility, "encrypted": t.Encrypted})
	})
	if errors.Is(err, store.ErrTopicExists) {
		fail(wire.CodeTopicExists, fmt.Sprintf("a topic named %q (or with that id) already exists", r.Name))
		return
	}
	if errors.Is(err, store.ErrUnavailable) {
		c.sendUnavailable(r.ReqID, "the topic", false)
		return
	}
	if err != nil {
		c.b.log.Error("topic create", "err", err)
		fail(wire.CodeInternal, "could not create the topic")
		return
	}
	ts := &topicState{Topic: *t, members: map[string]string{me: wire.TopicLead}}
	finish(ts) // in the index before the reply: the creator may post at once
	info := ts.info()
	info.MemberCount, info.Joined, info.Role = 1, true, wire.TopicLead
	c.reply(wire.TopicReply{Type: wire.TypeTopic, ReqID: r.ReqID, Topic: info})
}

// checkSeal validates one uploaded seal for topicID signed by the caller's
// member key; a non-empty code refuses it.
func (c *conn) checkSeal(topicID string, s wire.TopicSealIn, now int64) (*store.TopicSeal, string, string) {
	if !wire.IsHex(s.RecipientPubkey, 64) || s.KeyGen < 1 || !wire.IsHex(s.Signature, 128) {
		return nil, wire.CodeInvalidArgument, "a seal needs recipientPubkey (64 hex), keyGen ≥ 1 and signature (128 hex)"
	}
	blob, err := cmcrypto.DecodeB64Len(s.Blob, 80)
	if err != nil {
		return nil, wire.CodeInvalidArgument, "a seal's blob is 80 bytes of canonical base64 (ephemeral key ‖ boxed topic key)"
	}
	if _, err := cmcrypto.DecodeB64Len(s.Nonce, 24); err != nil {
		return nil, wire.CodeInvalidArgument, "a seal's nonce is 24 bytes of canonical base64"
	}
	msg, err := cmcrypto.TopicSealString(c.ms.id, topicID, s.KeyGen, s.RecipientPubkey, s.Nonce, blob)
	if err != nil {
		return nil, wire.CodeInvalidArgument, err.Error()
	}
	sealer, err := cmcrypto.ParsePublicKey(c.mem.Pubkey)
	if err != nil || cmcrypto.Verify(sealer, msg, s.Signature) != nil {
		return nil, wire.CodeBadSignature, "a seal's signature does not verify under your member key (claudemesh/topic-seal/v1, see docs/crypto.md)"
	}
	return &store.TopicSeal{Recipient: s.RecipientPubkey, KeyGen: s.KeyGen, Sealer: c.mem.Pubkey,
		Blob: s.Blob, Nonce: s.Nonce, Signature: s.Signature, CreatedAt: now}, "", ""
}

func (c *conn) handleTopicList(env wire.Envelope) {
	infos, err := c.b.topicInfos(c.ms, c.mem.Pubkey)
	if err != nil {
		c.sendError(env.ReqID, wire.CodeInternal, "could not list the topics")
		return
	}
	c.reply(wire.Topics{Type: wire.TypeTopics, ReqID: env.ReqID, Topics: infos})
}

// topicInfos lists the topics member me can see, by name, with its unread
// counts.
func (b *Broker) topicInfos(ms *meshState, me string) ([]wire.TopicInfo, error) {
	ms.mu.Lock()
	idx, err := b.topicsLocked(ms)
	if err != nil {
		ms.mu.Unlock()
		return nil, err
	}
	infos := []wire.TopicInfo{}
	for _, t := range idx.byID {
		if !t.visibleTo(ms, me) {
			continue
		}
		info := t.info()
		info.MemberCount = len(t.memberKeys(ms))
		info.Joined = t.isMember(ms, me)
		if info.Joined {
			info.Role = t.role(ms, me)
		}
		infos = append(infos, info)
	}
	ms.mu.Unlock()
	err = b.store.View(func(tx *store.Tx) error {
		for i := range infos {
			if infos[i].Joined {
				infos[i].Unread = unreadCount(tx, ms.id, infos[i].ID, me)
			}
		}
		return nil
	})
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	return infos, err
}

// unreadCount is how many stored posts are newer than the member's read
// marker: O(1), from the topic's sequence and its oldest stored post.
func unreadCount(tx *store.Tx, meshID, topicID, member string) int {
	last := store.TopicLastSeq(tx, meshID, topicID)
	if last == 0 {
		return 0
	}
	var read uint64
	if m, err := store.GetTopicMember(tx, meshID, topicID, member); err == nil {
		read = m.ReadSeq
	}
	if first := store.TopicFirstSeq(tx, meshID, topicID); first == 0 {
		return 0
	} else if read < first-1 {
		read = first - 1
	}
	if read >= last {
		return 0
	}
	return int(last - read)
}

func shortHex(k string) string {
	if len(k) > 8 {
		return k[:8]
	}
	return k
}

// auditTopic appends a topic or API-key change to the mesh's audit chain in
// the caller's transaction, so the change commits with its entry.
func (b *Broker) auditTopic(tx *store.Tx, ms *meshState, event, actor string, payload map[string]any) error {
	_, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: event, Actor: actor, Payload: payload})
	return err
}
