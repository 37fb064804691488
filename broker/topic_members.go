package broker

import (
	"errors"
	"fmt"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// Topic membership: join, leave, add, remove, the hooks that remove or
// rekey a departed member's topics, and the topic events that follow.

// ---- membership ----

func (c *conn) handleTopicJoin(r wire.TopicRequest, t topicState) {
	ms := c.ms
	me := c.mem.Pubkey
	ms.mu.Lock()
	already := t.isMember(ms, me)
	ms.mu.Unlock()
	if already {
		c.sendOK(r.ReqID)
		return
	}
	if t.Visibility == wire.VisibilityPrivate {
		c.sendError(r.ReqID, wire.CodeForbidden, "#"+t.Name+" is private: a lead of the topic adds members (claudemesh topic add "+t.Name+" PEER)")
		return
	}
	// "": a member already there (a topic_add racing this join) keeps
	// its role.
	c.addTopicMember(r.ReqID, &t, c.mem, "")
}

// addTopicMember stores a membership (or a role change) and tells the key
// holders the member needs a seal. role "" keeps an existing member's
// role (a new one is a member): adding someone again, to have the key
// sealed for them, must not demote a lead.
func (c *conn) addTopicMember(reqID string, t *topicState, m *member, role string) {
	ms := c.ms
	now := time.Now().UnixMilli()
	rec := &store.TopicMember{MemberID: m.ID, Pubkey: m.Pubkey, JoinedAt: now}
	err := c.b.store.Update(func(tx *store.Tx) error {
		if _, err := store.GetTopic(tx, ms.id, t.ID); err != nil {
			return err
		}
		rec.Role = role
		if prev, err := store.GetTopicMember(tx, ms.id, t.ID, m.Pubkey); err == nil {
			rec.JoinedAt, rec.ReadSeq = prev.JoinedAt, prev.ReadSeq
			if role == "" {
				rec.Role = prev.Role
			}
		}
		if rec.Role == "" {
			rec.Role = wire.TopicMember
		}
		return store.PutTopicMember(tx, ms.id, t.ID, rec)
	})
	if err != nil {
		c.storeFailed(reqID, err, "could not store the membership", "the membership")
		return
	}
	ms.mu.Lock()
	if idx, err := c.b.topicsLocked(ms); err == nil {
		if cur := idx.byID[t.ID]; cur != nil {
			cur.members[m.Pubkey] = rec.Role
		}
	}
	ms.mu.Unlock()
	c.sendOK(reqID)
	c.b.announceJoin(ms, t.ID, m)
}

func (c *conn) handleTopicLeave(r wire.TopicRequest, t topicState) {
	if t.General {
		c.sendError(r.ReqID, wire.CodeForbidden, "every member belongs to #general; leave the mesh instead")
		return
	}
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	if err := c.b.removeFromTopic(c.ms, t.ID, c.mem.Pubkey); err != nil {
		c.storeFailed(r.ReqID, err, "could not leave the topic", "the leave")
		return
	}
	c.sendOK(r.ReqID)
}

// handleTopicAddRemove is topic_add and topic_remove, by a lead of the topic
// or the mesh's owner or an admin.
func (c *conn) handleTopicAddRemove(r wire.TopicRequest, t topicState) {
	if t.General {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "every active member belongs to #general")
		return
	}
	ms := c.ms
	ms.mu.Lock()
	lead := t.role(ms, c.mem.Pubkey) == wire.TopicLead && t.isMember(ms, c.mem.Pubkey)
	admin := isManager(c.mem.Role) // under ms.mu
	target := ms.topicTarget(r.Member)
	ms.mu.Unlock()
	if !lead && !admin {
		c.sendError(r.ReqID, wire.CodeForbidden, "only a lead of #"+t.Name+" (or the mesh owner or an admin) can do that")
		return
	}
	if target == nil {
		c.sendError(r.ReqID, wire.CodeUnknownTarget, fmt.Sprintf("no active member matches %q (give a pubkey, memberId or display name)", r.Member))
		return
	}
	if r.Type == wire.TypeTopicRemove {
		if err := c.b.removeFromTopic(ms, t.ID, target.Pubkey); err != nil {
			c.storeFailed(r.ReqID, err, "could not remove the member", "the removal")
			return
		}
		c.sendOK(r.ReqID)
		return
	}
	role := r.Role
	switch role {
	case "": // a new member's is member; an existing one keeps its own
	case wire.TopicLead, wire.TopicMember, wire.TopicObserver:
	default:
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "role is lead, member or observer")
		return
	}
	c.addTopicMember(r.ReqID, &t, target, role)
}

// topicTarget finds an active member by pubkey, memberId or display name.
// Caller holds ms.mu.
func (ms *meshState) topicTarget(ref string) *member {
	if m := ms.activeMember(ref); m != nil {
		return m
	}
	if m := ms.memberByID[ref]; m != nil && m.RevokedAt == 0 {
		return m
	}
	key := cmcrypto.NameKey(ref)
	for _, m := range ms.members {
		if m.RevokedAt == 0 && m.NameKey == key {
			return m
		}
	}
	return nil
}

// removeFromTopic deletes a membership and marks the topic rekeyNeeded (the
// member had the key), telling the key holders.
func (b *Broker) removeFromTopic(ms *meshState, topicID, pubkey string) error {
	var marked []string
	err := b.store.Update(func(tx *store.Tx) error {
		marked = nil
		removed, err := store.RemoveTopicMember(tx, ms.id, topicID, pubkey)
		if err != nil || !removed {
			return err
		}
		marked, err = markRekey(tx, ms.id, []string{topicID})
		return err
	})
	if err != nil {
		return err
	}
	ms.mu.Lock()
	if idx, err := b.topicsLocked(ms); err == nil {
		if t := idx.byID[topicID]; t != nil {
			delete(t.members, pubkey)
		}
	}
	ms.credentialsChangedLocked() // the member's API-key streams of the topic end (credwatch.go)
	ms.mu.Unlock()
	b.announceRekey(ms, marked)
	return nil
}

// markRekey sets rekeyNeeded on the encrypted topics among ids that have a
// key, returning those it marked.
func markRekey(tx *store.Tx, meshID string, ids []string) ([]string, error) {
	var out []string
	for _, id := range ids {
		t, err := store.GetTopic(tx, meshID, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !t.Encrypted || t.KeyGen == 0 {
			continue
		}
		if !t.RekeyNeeded {
			t.RekeyNeeded = true
			if err := store.PutTopic(tx, meshID, t); err != nil {
				return nil, err
			}
		}
		out = append(out, id)
	}
	return out, nil
}

// topicsMemberGone runs after a member left the mesh or was banned: its
// topic memberships go, and every topic it could read (its topics and
// general) is marked rekeyNeeded, so the next key holder online rotates to a
// key the member never had. A banned member that is unbanned is back in
// general (and gets a seal of the then current key) but not in its other
// topics.
func (b *Broker) topicsMemberGone(ms *meshState, pubkey string) {
	// It may be called from a commit callback, which must not wait for
	// another commit: the work runs on its own goroutine. Until it is done
	// the departed member already counts for nothing (topics look only at
	// active members).
	go b.removeDeparted(ms, pubkey)
}

func (b *Broker) removeDeparted(ms *meshState, pubkey string) {
	var marked []string
	err := b.store.Update(func(tx *store.Tx) error {
		marked = nil
		ids, err := store.MemberTopicIDs(tx, ms.id, pubkey)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := store.RemoveTopicMember(tx, ms.id, id, pubkey); err != nil {
				return err
			}
		}
		general, err := store.TopicByName(tx, ms.id, wire.GeneralTopic)
		if err == nil {
			ids = append(ids, general.ID)
		}
		marked, err = markRekey(tx, ms.id, ids)
		return err
	})
	if err != nil {
		b.log.Error("topics: removing a departed member", "err", err)
		return
	}
	ms.mu.Lock()
	if idx, err := b.topicsLocked(ms); err == nil {
		for _, t := range idx.byID {
			delete(t.members, pubkey)
		}
	}
	ms.mu.Unlock()
	b.announceRekey(ms, marked)
}

// topicsMembersKicked runs after a kick: the kicked members stay members
// (kick is advisory, ban is the control), but their topics are marked
// rekeyNeeded as 02-crypto asks, so the keys are refreshed.
func (b *Broker) topicsMembersKicked(ms *meshState, pubkeys []string) {
	if len(pubkeys) > 0 {
		go b.rekeyKicked(ms, pubkeys) // called from a commit callback: see topicsMemberGone
	}
}

func (b *Broker) rekeyKicked(ms *meshState, pubkeys []string) {
	var marked []string
	err := b.store.Update(func(tx *store.Tx) error {
		marked = nil
		seen := map[string]bool{}
		var ids []string
		for _, pk := range pubkeys {
			own, err := store.MemberTopicIDs(tx, ms.id, pk)
			if err != nil {
				return err
			}
			for _, id := range own {
				if !seen[id] {
					seen[id] = true
					ids = append(ids, id)
				}
			}
		}
		if general, err := store.TopicByName(tx, ms.id, wire.GeneralTopic); err == nil {
			ids = append(ids, general.ID)
		}
		var err error
		marked, err = markRekey(tx, ms.id, ids)
		return err
	})
	if err != nil {
		b.log.Error("topics: marking kicked members' topics", "err", err)
		return
	}
	b.announceRekey(ms, marked)
}

// topicsMemberEnrolled runs after a member joined the mesh: it is in
// general, so general's key holders are told to seal for it.
func (b *Broker) topicsMemberEnrolled(ms *meshState, pubkey string) {
	ms.mu.Lock()
	m := ms.activeMember(pubkey)
	idx, err := b.topicsLocked(ms)
	var general string
	if err == nil {
		if t := idx.byName[wire.GeneralTopic]; t != nil {
			general = t.ID
		}
	}
	ms.mu.Unlock()
	if m != nil && general != "" {
		b.announceJoin(ms, general, m)
	}
}

// ---- events ----

// keyHolders returns the topic's active members that have a seal of the
// current generation, by a sealer who is an active member.
func (b *Broker) keyHolders(ms *meshState, t *topicState, members []string) map[string]bool {
	out := map[string]bool{}
	if !t.Encrypted || t.KeyGen == 0 {
		return out
	}
	b.store.View(func(tx *store.Tx) error {
		for _, m := range members {
			sealers, err := store.Sealers(tx, ms.id, t.ID, m, t.KeyGen)
			if err != nil {
				return err
			}
			ms.mu.Lock()
			for _, s := range sealers {
				if ms.activeMember(s) != nil {
					out[m] = true
					break
				}
			}
			ms.mu.Unlock()
		}
		return nil
	})
	return out
}

// sendTopicEvent pushes a topic system event to the connected member
// presences (not sessions: they hold no member key) of the members in to.
func (b *Broker) sendTopicEvent(ms *meshState, event string, data wire.TopicEvent, to map[string]bool) {
	if len(to) == 0 {
		return
	}
	frame := wire.MustEncode(wire.Push{Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: event,
		MessageID: newID(), CreatedAt: time.Now().UnixMilli(), EventData: data})
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, p := range ms.presences {
		if p.conn != nil && !p.session && to[p.member.Pubkey] {
			p.conn.enqueue(frame)
		}
	}
}

// currentTopic returns a copy of a topic and its active members.
func (b *Broker) currentTopic(ms *meshState, topicID string) (topicState, []string, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	idx, err := b.topicsLocked(ms)
	if err != nil {
		return topicState{}, nil, false
	}
	t := idx.byID[topicID]
	if t == nil {
		return topicState{}, nil, false
	}
	return *t, t.memberKeys(ms), true
}

// announceJoin tells the key holders of a topic that m joined it without
// the key (nothing when m already has a seal of the current generation).
func (b *Broker) announceJoin(ms *meshState, topicID string, m *member) {
	t, members, ok := b.currentTopic(ms, topicID)
	if !ok || !t.Encrypted || t.KeyGen == 0 {
		return
	}
	if b.keyHolders(ms, &t, []string{m.Pubkey})[m.Pubkey] {
		return
	}
	b.sendTopicEvent(ms, wire.EventTopicMemberJoined, wire.TopicEvent{TopicID: t.ID, TopicName: t.Name, KeyGen: t.KeyGen,
		MemberID: m.ID, MemberPubkey: m.Pubkey, DisplayName: m.DisplayName}, others(members, m.Pubkey))
}

// others is the set of members but one. Topic events go to every member:
// the broker cannot know who holds a key (a member may hold one sealed by
// someone who has left since), so each member's client checks its own
// keyring before it acts.
func others(members []string, but string) map[string]bool {
	out := make(map[string]bool, len(members))
	for _, k := range members {
		if k != but {
			out[k] = true
		}
	}
	return out
}

// announceRekey records in the index that each topic (already marked in
// the store) needs a new key, and tells its key holders.
func (b *Broker) announceRekey(ms *meshState, topicIDs []string) {
	ms.mu.Lock()
	for _, id := range topicIDs {
		if t := ms.topics.lookupID(id); t != nil {
			t.RekeyNeeded = true
		}
	}
	ms.mu.Unlock()
	for _, id := range topicIDs {
		t, members, ok := b.currentTopic(ms, id)
		if !ok {
			continue
		}
		b.sendTopicEvent(ms, wire.EventTopicRekeyNeeded, wire.TopicEvent{TopicID: t.ID, TopicName: t.Name, KeyGen: t.KeyGen},
			others(members, ""))
	}
}

// announceSealed tells members that seals for them were stored.
func (b *Broker) announceSealed(ms *meshState, t *topicState, keyGen int, recipients map[string]bool) {
	b.sendTopicEvent(ms, wire.EventTopicSealed, wire.TopicEvent{TopicID: t.ID, TopicName: t.Name, KeyGen: keyGen}, recipients)
}

// kickedMembers are the members (not sessions) whose presences a kick
// closed.
func kickedMembers(victims []*conn) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range victims {
		if v.pubkey == v.mem.Pubkey && !seen[v.mem.Pubkey] { // a member's own connection, not a session's
			seen[v.mem.Pubkey] = true
			out = append(out, v.mem.Pubkey)
		}
	}
	return out
}
