package broker

import (
	"cmp"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// The topic post path: a `send` with kind "topic" (or a REST post by an API
// key) is checked against the topic, its signature verified, committed to
// the topic's history by the group committer before it is acknowledged, and
// then, from the commit callback, pushed once-encoded to every connected
// presence of every member of the topic (sessions included) and to the
// topic's SSE streams. There are no per-member delivery records: a member
// who was away reads the history (and its unread count says how much).

// postSender is who a topic post comes from.
type postSender struct {
	pubkey      string // the signing key: a member key, or a session key
	mem         *member
	name        string
	attestation *wire.Attestation
}

// topicPostResult is what became of a post.
type topicPostResult struct {
	code, msg string // a refusal
	retryMs   int64  // its retryAfterMs, when not the code's own
	messageID string
	createdAt int64
	duplicate bool
	online    int
}

// validateTopicSend checks the shape of a topic send; what depends on the
// topic (encrypted or not, the key generation) is checked in postTopic.
func validateTopicSend(s *wire.Send) error {
	ref, ok := strings.CutPrefix(s.TargetSpec, "#")
	if !ok || !(wire.ValidULID(ref) || wire.ValidTopicName(ref)) {
		return fmt.Errorf("a topic message targets #<topicId> (or #<name>)")
	}
	if len(s.Keys) > 0 {
		return fmt.Errorf("a topic message carries no keys")
	}
	switch s.BodyVersion {
	case 0, wire.BodyEncrypted:
		if !wire.IsHex(s.Signature, 128) {
			return fmt.Errorf("a topic message needs the sender's signature (128 hex)")
		}
		if s.KeyGen == nil || *s.KeyGen < 1 {
			return fmt.Errorf("an encrypted topic message names its key generation (keyGen ≥ 1)")
		}
	case wire.BodyPlaintext:
	}
	return nil
}

// handleTopicSend is a `send` of kind topic on a connection.
func (c *conn) handleTopicSend(s *wire.Send, start time.Time, place *sendPlace) {
	ms := c.ms
	ms.mu.Lock()
	sender := postSender{pubkey: c.pubkey, mem: c.mem, name: c.mem.DisplayName}
	if p := c.pres; p != nil && p.session {
		sender.name, sender.attestation = p.displayName, p.attestation
	} else if sess := ms.sessions[c.pubkey]; sess != nil {
		sender.name = sess.DisplayName
		sender.attestation = &sess.Attestation
	}
	ms.mu.Unlock()
	c.b.postTopic(ms, sender, s, place, place.free(), func(r topicPostResult) {
		if r.duplicate {
			c.b.refundBytes(c.mem, place.charge.bytes) // it stored nothing
		}
		if r.code != "" {
			c.ackError(s, r.code, r.msg, cmp.Or(r.retryMs, ackRetryAfter(r.code)))
			return
		}
		zero, online := 0, r.online
		c.reply(wire.Ack{Type: wire.TypeAck, ID: s.ID, ReqID: s.ReqID, MessageID: r.messageID, Queued: true,
			Online: &online, Pending: &zero, Duplicate: r.duplicate})
		if !r.duplicate {
			c.b.metrics.sendAck.Observe(time.Since(start).Seconds())
		}
	})
}

// replyTarget is the post a reply answers, by its post id: a
// clientMessageId of the sender's own post (what `topic post` printed when
// the post went through the daemon's outbox) is replaced by the post's id,
// so that readers, who know posts by that id, see which post it answers.
// Any other value is kept as it came (replyToId is a routing field the
// sender chose; docs/crypto.md).
func (b *Broker) replyTarget(meshID string, from postSender, id string) string {
	out := id
	b.store.View(func(tx *store.Tx) error {
		if _, _, err := store.TopicPostLocation(tx, meshID, id); err == nil {
			return nil
		}
		for _, k := range []string{from.pubkey, from.mem.Pubkey} {
			if p, err := store.LookupTopicIdempotent(tx, meshID, k, id); err == nil {
				out = p.ID
				return nil
			}
		}
		return nil
	})
	return out
}

func ackRetryAfter(code string) int64 {
	if code == wire.CodeShuttingDown || code == wire.CodeInternal || code == wire.CodeUnavailable {
		return 1000
	}
	return 0
}

// postTopic runs one topic post and calls done exactly once, from the
// commit callback (or at once for a refusal). s has passed validateSend.
// place is the post's place on its connection (nil for a REST post): a
// refusal to be sent again holds the line behind it (sendorder.go). free:
// it was let through without its bytes as a retry of a stored post
// (chargeSend): it is answered from the idempotency record, or refused.
func (b *Broker) postTopic(ms *meshState, from postSender, s *wire.Send, place *sendPlace, free bool, done func(topicPostResult)) {
	refuse := func(code, msg string) {
		b.metrics.rejected.WithLabelValues(code).Inc()
		done(topicPostResult{code: code, msg: msg})
		place.refuse(code, ackRetryAfter(code))
	}
	ref := strings.TrimPrefix(s.TargetSpec, "#")
	ms.mu.Lock()
	idx, err := b.topicsLocked(ms)
	if err != nil {
		ms.mu.Unlock()
		refuse(wire.CodeInternal, "could not load the topics")
		return
	}
	t := idx.lookup(ref)
	var topic topicState
	var role string
	var mentioned []string
	if t != nil {
		topic = *t
		role = t.role(ms, from.mem.Pubkey)
		if !t.isMember(ms, from.mem.Pubkey) {
			role = ""
		}
		mentioned = mentionedMembers(ms, t, s.Mentions)
	}
	ms.mu.Unlock()
	switch {
	case t == nil || (role == "" && topic.Visibility == wire.VisibilityPrivate):
		refuse(wire.CodeTopicNotFound, fmt.Sprintf("no topic %q in this mesh", ref))
		return
	case role == "":
		refuse(wire.CodeNotAMember, "you are not a member of #"+topic.Name+"; join it first")
		return
	case role == wire.TopicObserver:
		refuse(wire.CodeForbidden, "observers of #"+topic.Name+" read but do not post")
		return
	}
	ct, _ := cmcrypto.DecodeB64(s.Ciphertext) // validated by validateSend
	// The post's fingerprint: the one computed when its frame was read
	// (handleSend), unless it changes below.
	var fp string
	if place != nil {
		fp = place.fp
	}
	if topic.Encrypted {
		if s.BodyVersion == wire.BodyPlaintext {
			refuse(wire.CodeTopicEncrypted, "#"+topic.Name+" is end-to-end encrypted: post ciphertext under its topic key (bodyVersion 2), never plaintext")
			return
		}
		s.BodyVersion = wire.BodyEncrypted
		if code, msg := verifyTopicPost(ms.id, topic.ID, s, ct, from.pubkey); code != "" {
			refuse(code, msg)
			return
		}
	} else {
		if s.BodyVersion != wire.BodyPlaintext {
			refuse(wire.CodeInvalidArgument, "#"+topic.Name+" is a plaintext topic: post bodyVersion 1 (base64 text)")
			return
		}
		if !utf8.Valid(ct) {
			refuse(wire.CodeInvalidArgument, "a plaintext post's body is base64 of UTF-8 text")
			return
		}
		// Nothing binds a plaintext post to a key generation.
		if s.KeyGen != nil {
			s.KeyGen = nil
			fp = "" // what was read, not what is stored
		}
	}
	if s.ReplyToID != "" {
		s.ReplyToID = b.replyTarget(ms.id, from, s.ReplyToID)
	}
	if fp == "" {
		fp = fingerprint(s) // a REST post, or its keyGen dropped
	}
	now := time.Now()
	messageID := newID()
	push := wire.Push{
		Type: wire.TypePush, MessageID: messageID, MeshID: ms.id, Kind: wire.KindTopic, TargetSpec: s.TargetSpec,
		SenderPubkey: from.pubkey, SenderMemberPubkey: from.mem.Pubkey, SenderName: from.name,
		SenderAttestation: from.attestation, Priority: s.Priority, Nonce: s.Nonce, Ciphertext: s.Ciphertext,
		Topic: &wire.TopicRef{ID: topic.ID, Name: topic.Name}, KeyGen: s.KeyGen, Signature: s.Signature,
		BodyVersion: s.BodyVersion, ReplyToID: s.ReplyToID, Mentions: s.Mentions, Subtype: s.Subtype,
		ClientMessageID: s.ClientMessageID, CreatedAt: now.UnixMilli(),
	}
	post := &store.TopicPost{ID: messageID, TopicID: topic.ID, SenderPubkey: from.pubkey, SenderMember: from.mem.Pubkey,
		ClientMessageID: s.ClientMessageID, Fingerprint: fp, CreatedAt: now.UnixMilli(), Push: wire.MustEncode(push)}
	if h := place.arrive(); h != nil {
		// An earlier post of its connection to this topic was refused
		// and has not come again (sendorder.go).
		b.metrics.rejected.WithLabelValues(h.code).Inc()
		place.prepay()
		done(topicPostResult{code: h.code, msg: heldText(h, s.TargetSpec), retryMs: place.heldRetryMs(h)})
		return
	}
	var res topicPostResult
	// Sized and keyed like a DM (route.go): a large post waits in the
	// committer's large lane, this sender's later writes behind it.
	refused := func(err error) {}
	if place != nil {
		refused = place.refused
	}
	err = store.SubmitRefusable(b.store, func(tx *store.Tx) error {
		res = topicPostResult{messageID: messageID, createdAt: post.CreatedAt}
		if h := place.heldBy(); h != nil {
			// An earlier post of its connection to this topic was
			// refused meanwhile.
			res.code, res.msg, res.retryMs = h.code, heldText(h, s.TargetSpec), place.heldRetryMs(h)
			place.prepay()
			return nil
		}
		if prev, err := store.LookupTopicIdempotent(tx, ms.id, from.pubkey, s.ClientMessageID); err == nil {
			if prev.Fingerprint != post.Fingerprint {
				res.code, res.msg = wire.CodeIdempotencyKeyReused, "clientMessageId was already used for a different message"
			} else {
				res.duplicate, res.messageID, res.createdAt = true, prev.ID, prev.CreatedAt
			}
			return nil
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if free {
			// Let through without its bytes as a stored post's retry,
			// and the record is gone: it would be new bytes past the
			// budget.
			res.code, res.msg, res.retryMs = wire.CodeRateLimited, fmt.Sprintf("this member is sending more than %s/s (--byte-rate); retry later", humanBytes(b.cfg.ByteRate)), 1000
			return nil
		}
		cur, err := store.GetTopic(tx, ms.id, topic.ID)
		if err != nil {
			return err
		}
		if cur.Encrypted {
			switch {
			case cur.KeyGen == 0:
				res.code, res.msg = wire.CodeTopicKeyMissing, "#"+topic.Name+" has no key yet: the mesh owner or an admin makes its first one"
				return nil
			case *s.KeyGen < cur.KeyGen:
				res.code, res.msg = wire.CodeStaleKeyGen, fmt.Sprintf("#%s was rotated to key generation %d; fetch the new key and post again", topic.Name, cur.KeyGen)
				return nil
			case *s.KeyGen > cur.KeyGen:
				res.code, res.msg = wire.CodeInvalidArgument, fmt.Sprintf("#%s has no key generation %d yet", topic.Name, *s.KeyGen)
				return nil
			}
		}
		seq, err := store.AppendTopicPost(tx, ms.id, post)
		if err != nil {
			return err
		}
		if b.cfg.AuditMessages {
			// Metadata only, as the broker sees it: never a body.
			if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditMessageSent, Actor: from.mem.Pubkey,
				At: now, Payload: map[string]any{"messageId": messageID, "clientMessageId": s.ClientMessageID,
					"senderPubkey": from.pubkey, "targetSpec": s.TargetSpec, "kind": wire.KindTopic, "topicId": topic.ID,
					"fingerprint": post.Fingerprint}}); err != nil {
				return err
			}
		}
		for _, m := range mentioned {
			n := &store.Notification{ID: newID(), TopicID: topic.ID, Topic: topic.Name, MessageID: messageID,
				SenderPubkey: from.pubkey, SenderName: from.name, CreatedAt: post.CreatedAt}
			if err := store.AddNotification(tx, ms.id, m, n); err != nil {
				return err
			}
		}
		// The sender has read its own post if it had read everything
		// before it.
		if rec, err := store.GetTopicMember(tx, ms.id, topic.ID, from.mem.Pubkey); err == nil && rec.ReadSeq == seq-1 {
			rec.ReadSeq = seq
			return store.PutTopicMember(tx, ms.id, topic.ID, rec)
		}
		return nil
	}, func(err error) {
		if errors.Is(err, store.ErrUnavailable) {
			res = topicPostResult{code: wire.CodeUnavailable, msg: unavailableText("the post")}
		} else if err != nil {
			b.log.Error("topic post commit failed", "err", err)
			res = topicPostResult{code: wire.CodeInternal, msg: "the broker could not store the post; retry"}
		}
		if res.code == "" && !res.duplicate {
			res.online = b.fanOutTopicPost(ms, topic.ID, post)
			b.metrics.routed.WithLabelValues(wire.KindTopic, s.Priority).Inc()
		} else if res.code != "" {
			b.metrics.rejected.WithLabelValues(res.code).Inc()
		}
		if res.code == wire.CodeRateLimited {
			place.refuse(res.code, res.retryMs)
		}
		done(res)
	}, refused, len(post.Push), from.pubkey)
	if err != nil {
		refuse(wire.CodeShuttingDown, "broker is shutting down; retry")
	}
}

// verifyTopicPost checks the post signature of 02-crypto over the topic this
// broker will file it under: a post signed for another topic, generation or
// body never enters a history. (Clients verify again; this spares them
// forgeries a member could otherwise plant.)
func verifyTopicPost(meshID, topicID string, s *wire.Send, ct []byte, signer string) (code, msg string) {
	pub, err := cmcrypto.ParsePublicKey(signer)
	if err != nil {
		return wire.CodeInvalidArgument, "sender key: " + err.Error()
	}
	str, err := cmcrypto.TopicPostString(meshID, topicID, *s.KeyGen, s.Nonce, ct)
	if err != nil {
		return wire.CodeInvalidArgument, err.Error()
	}
	if cmcrypto.Verify(pub, str, s.Signature) != nil {
		return wire.CodeBadSignature, "the post's signature does not verify (claudemesh/topic-post/v1 over this topic's id and generation, see docs/crypto.md)"
	}
	return "", ""
}

// mentionedMembers maps mentioned pubkeys (member or session keys) to the
// topic members they name. Caller holds ms.mu.
func mentionedMembers(ms *meshState, t *topicState, mentions []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range mentions {
		if s := ms.sessions[k]; s != nil {
			k = s.ParentPubkey
		}
		if seen[k] || !t.isMember(ms, k) {
			continue
		}
		seen[k] = true
		out = append(out, k)
	}
	return out
}

// fanOutTopicPost pushes a committed post, encoded once, to every connected
// presence of the topic's members and to its SSE streams; it returns how
// many connections it reached. It runs on the commit dispatcher, so posts
// reach everyone in commit order.
func (b *Broker) fanOutTopicPost(ms *meshState, topicID string, post *store.TopicPost) int {
	online := 0
	ms.mu.Lock()
	if t := ms.topics.lookupID(topicID); t != nil {
		for _, p := range ms.presences {
			if p.conn != nil && t.isMember(ms, p.member.Pubkey) && p.conn.enqueue(post.Push) {
				online++
			}
		}
	}
	ms.mu.Unlock()
	b.streams.publish(ms.id, topicID, post)
	return online
}
