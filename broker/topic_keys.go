package broker

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// Topic keys: members and who holds the current key, seals, pending seals
// and rotation (02-crypto "Topic key seals", "Rotation"). The broker checks
// every seal's signature and stores what it cannot open.

// ---- members, history, keys ----

func (c *conn) handleTopicMembers(r wire.TopicRequest, t topicState) {
	ms := c.ms
	ms.mu.Lock()
	visible := t.visibleTo(ms, c.mem.Pubkey)
	keys := t.memberKeys(ms)
	out := make([]wire.TopicMemberInfo, 0, len(keys))
	for _, k := range keys {
		m := ms.members[k]
		out = append(out, wire.TopicMemberInfo{MemberID: m.ID, Pubkey: k, DisplayName: m.DisplayName, Role: t.role(ms, k), JoinedAt: m.JoinedAt})
	}
	ms.mu.Unlock()
	if !visible {
		c.sendError(r.ReqID, wire.CodeTopicNotFound, fmt.Sprintf("no topic %q in this mesh", r.Topic))
		return
	}
	holders := c.b.keyHolders(ms, &t, keys)
	c.b.store.View(func(tx *store.Tx) error {
		for i := range out {
			out[i].HasCurrentKey = holders[out[i].Pubkey]
			if tm, err := store.GetTopicMember(tx, ms.id, t.ID, out[i].Pubkey); err == nil && !t.General {
				out[i].JoinedAt = tm.JoinedAt
			}
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].JoinedAt != out[j].JoinedAt {
			return out[i].JoinedAt < out[j].JoinedAt
		}
		return out[i].Pubkey < out[j].Pubkey
	})
	c.reply(wire.TopicMembers{Type: wire.TypeTopicMembers, ReqID: r.ReqID, Members: out})
}

func (c *conn) handleTopicKeys(r wire.TopicRequest, t topicState) {
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	out := wire.TopicKeys{Type: wire.TypeTopicKeys, ReqID: r.ReqID, Seals: []wire.TopicSealOut{}}
	ms := c.ms
	err := c.b.store.View(func(tx *store.Tx) error {
		cur, err := store.GetTopic(tx, ms.id, t.ID)
		if err != nil {
			return err
		}
		out.KeyGen = cur.KeyGen
		seals, err := store.SealsFor(tx, ms.id, t.ID, c.mem.Pubkey)
		for _, s := range seals {
			out.Seals = append(out.Seals, wire.TopicSealOut{KeyGen: s.KeyGen, Blob: s.Blob, Nonce: s.Nonce, SealerPubkey: s.Sealer, Signature: s.Signature})
		}
		return err
	})
	if err != nil {
		c.sendError(r.ReqID, wire.CodeInternal, "could not read the seals")
		return
	}
	c.reply(out)
}

func (c *conn) handleTopicPending(r wire.TopicRequest, t topicState) {
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	ms := c.ms
	cur, members, ok := c.b.currentTopic(ms, t.ID)
	if !ok {
		c.sendError(r.ReqID, wire.CodeTopicNotFound, "the topic is gone")
		return
	}
	out := wire.TopicPendingSeals{Type: wire.TypeTopicPendingSeals, ReqID: r.ReqID, KeyGen: cur.KeyGen, Pending: []wire.PendingMember{}}
	if cur.Encrypted && cur.KeyGen > 0 {
		holders := c.b.keyHolders(ms, &cur, members)
		ms.mu.Lock()
		for _, k := range members {
			if !holders[k] {
				out.Pending = append(out.Pending, wire.PendingMember{MemberID: ms.members[k].ID, Pubkey: k})
			}
		}
		ms.mu.Unlock()
	}
	c.reply(out)
}

const maxSealsPerFrame = 1000

func (c *conn) handleTopicSeal(r wire.TopicRequest, t topicState) {
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	if !t.Encrypted {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "#"+t.Name+" is a plaintext topic: it has no key")
		return
	}
	if len(r.Seals) == 0 || len(r.Seals) > maxSealsPerFrame {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("topic_seal carries 1 to %d seals", maxSealsPerFrame))
		return
	}
	ms := c.ms
	now := time.Now().UnixMilli()
	seals := make([]*store.TopicSeal, 0, len(r.Seals))
	ms.mu.Lock()
	for _, s := range r.Seals {
		if !t.isMember(ms, s.RecipientPubkey) {
			ms.mu.Unlock()
			c.sendError(r.ReqID, wire.CodeNotAMember, "a seal's recipient "+shortHex(s.RecipientPubkey)+" is not a member of #"+t.Name)
			return
		}
	}
	ms.mu.Unlock()
	for _, s := range r.Seals {
		rec, code, msg := c.checkSeal(t.ID, s, now)
		if code != "" {
			c.sendError(r.ReqID, code, msg)
			return
		}
		seals = append(seals, rec)
	}
	var stale bool
	err := c.b.store.Update(func(tx *store.Tx) error {
		stale = false
		cur, err := store.GetTopic(tx, ms.id, t.ID)
		if err != nil {
			return err
		}
		for _, s := range seals {
			if s.KeyGen > cur.KeyGen {
				stale = true
				return nil
			}
		}
		for _, s := range seals {
			if err := store.PutTopicSeal(tx, ms.id, t.ID, s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		c.storeFailed(r.ReqID, err, "could not store the seals", "the seals")
		return
	}
	if stale {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "a seal names a key generation the topic does not have yet")
		return
	}
	c.sendOK(r.ReqID)
	byGen := map[int]map[string]bool{}
	for _, s := range seals {
		if byGen[s.KeyGen] == nil {
			byGen[s.KeyGen] = map[string]bool{}
		}
		byGen[s.KeyGen][s.Recipient] = true
	}
	for g, to := range byGen {
		c.b.announceSealed(ms, &t, g, to)
	}
}

// handleTopicRotate moves a topic to keyGen = current + 1 with seals of the
// new key for every current member (02-crypto "Rotation"). Any member may
// rotate a topic marked rekeyNeeded; a lead (or the mesh owner or an admin)
// may rotate at any time; general's first key (0 → 1) comes from an owner
// or admin with only its own seal, the others being re-sealed as pending.
func (c *conn) handleTopicRotate(r wire.TopicRequest, t topicState) {
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	if !t.Encrypted {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "#"+t.Name+" is a plaintext topic: it has no key to rotate")
		return
	}
	ms := c.ms
	me := c.mem.Pubkey
	admin := isManager(c.role())
	ms.mu.Lock()
	lead := t.role(ms, me) == wire.TopicLead
	ms.mu.Unlock()
	if r.KeyGen != t.KeyGen+1 {
		c.sendError(r.ReqID, wire.CodeStaleKeyGen, fmt.Sprintf("#%s is at key generation %d; a rotation names %d", t.Name, t.KeyGen, t.KeyGen+1))
		return
	}
	switch {
	case t.KeyGen == 0 && !admin:
		c.sendError(r.ReqID, wire.CodeForbidden, "the first key of #"+t.Name+" comes from the mesh owner or an admin")
		return
	case t.KeyGen > 0 && !t.RekeyNeeded && !lead && !admin:
		c.sendError(r.ReqID, wire.CodeForbidden, "#"+t.Name+" does not need a new key; only a lead (or the mesh owner or an admin) rotates it at will")
		return
	}
	if len(r.Seals) == 0 || len(r.Seals) > maxSealsPerFrame {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("topic_rotate carries 1 to %d seals", maxSealsPerFrame))
		return
	}
	now := time.Now().UnixMilli()
	seals := make([]*store.TopicSeal, 0, len(r.Seals))
	got := map[string]bool{}
	for _, s := range r.Seals {
		if s.KeyGen != r.KeyGen {
			c.sendError(r.ReqID, wire.CodeInvalidArgument, "every seal of a rotation is of the new generation")
			return
		}
		rec, code, msg := c.checkSeal(t.ID, s, now)
		if code != "" {
			c.sendError(r.ReqID, code, msg)
			return
		}
		got[s.RecipientPubkey] = true
		seals = append(seals, rec)
	}
	// Membership is read before the transaction (which must not take the
	// mesh lock): a member who joins meanwhile is simply pending under the
	// new generation and gets re-sealed like any joiner.
	_, members, _ := c.b.currentTopic(ms, t.ID)
	if t.KeyGen == 0 {
		members = []string{me}
	}
	var missing []string
	for _, m := range members {
		if !got[m] {
			missing = append(missing, m)
		}
	}
	recipients := map[string]bool{}
	ms.mu.Lock()
	for _, s := range seals {
		if t.isMember(ms, s.Recipient) {
			recipients[s.Recipient] = true
		}
	}
	ms.mu.Unlock()
	var stale bool
	err := c.b.store.Update(func(tx *store.Tx) error {
		stale = false
		cur, err := store.GetTopic(tx, ms.id, t.ID)
		if err != nil {
			return err
		}
		if cur.KeyGen != r.KeyGen-1 {
			stale = true
			return nil
		}
		if len(missing) > 0 {
			return nil
		}
		for _, s := range seals {
			if recipients[s.Recipient] {
				if err := store.PutTopicSeal(tx, ms.id, t.ID, s); err != nil {
					return err
				}
			}
		}
		cur.KeyGen, cur.RekeyNeeded = r.KeyGen, false
		if err := store.PutTopic(tx, ms.id, cur); err != nil {
			return err
		}
		return c.b.auditTopic(tx, ms, wire.AuditTopicRotated, me, map[string]any{"topicId": t.ID, "name": t.Name, "keyGen": r.KeyGen})
	})
	switch {
	case err != nil:
		c.b.log.Error("topic rotate", "err", err)
		c.storeFailed(r.ReqID, err, "could not rotate the key", "the rotation")
		return
	case stale:
		c.sendError(r.ReqID, wire.CodeStaleKeyGen, "another member rotated #"+t.Name+" first; fetch the new key")
		return
	case len(missing) > 0:
		short := make([]string, len(missing))
		for i, m := range missing {
			short[i] = shortHex(m)
		}
		c.sendError(r.ReqID, wire.CodeIncompleteSeals, fmt.Sprintf("a rotation seals the new key for every member of #%s; missing %d: %s",
			t.Name, len(missing), strings.Join(short, ", ")))
		return
	}
	ms.mu.Lock()
	if idx, err := c.b.topicsLocked(ms); err == nil {
		if cur := idx.byID[t.ID]; cur != nil {
			cur.KeyGen, cur.RekeyNeeded = r.KeyGen, false
		}
	}
	ms.mu.Unlock()
	c.sendOK(r.ReqID)
	c.b.announceSealed(ms, &t, r.KeyGen, recipients)
	if t.KeyGen == 0 {
		// General's first key: everyone else is pending now.
		_, members, _ := c.b.currentTopic(ms, t.ID)
		t.KeyGen = r.KeyGen
		ms.mu.Lock()
		var joiners []*member
		for _, k := range members {
			if k != me {
				joiners = append(joiners, ms.members[k])
			}
		}
		ms.mu.Unlock()
		for _, m := range joiners {
			c.b.announceJoin(ms, t.ID, m)
		}
	}
}
