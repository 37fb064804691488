package broker

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// sendError queues an error frame.
func (c *conn) sendError(reqID, code, msg string) {
	c.enqueue(wire.MustEncode(wire.Error{Type: wire.TypeError, ReqID: reqID, Code: code, Message: msg}))
}

// unavailableRetryMs is the retryAfterMs of `unavailable`: about how long
// a cluster takes to elect a leader for its log once a quorum is back.
const unavailableRetryMs = 1000

// unavailableText explains an `unavailable` refusal. The write is not
// acknowledged; it may still be stored if the quorum comes back before the
// log's leader gives it up, which is why a retry reuses the id (a send's
// idempotency makes it land once).
func unavailableText(what string) string {
	return "the broker's cluster could not make " + what + " durable in time (a quorum of its nodes is unreachable, or this node is catching up with the others): it is not acknowledged; retry in a moment, here or on another node, with the same id (it is never applied twice)"
}

// unavailableChangeText explains an `unavailable` refusal of a write that
// carries no id of its own to retry with (a profile change, an invite, a
// topic, an admin change): retrying it is the user's choice.
func unavailableChangeText(what string) string {
	return "the broker's cluster could not make " + what + " durable in time (a quorum of its nodes is unreachable, or this node is catching up with the others): it is not acknowledged, and may still take effect if the quorum comes back at once; try again in a moment"
}

// sendUnavailable answers a request whose write a cluster without quorum
// refused; byID: the client retries it with the same id (an ack).
func (c *conn) sendUnavailable(reqID, what string, byID bool) {
	msg := unavailableChangeText(what)
	if byID {
		msg = unavailableText(what)
	}
	c.enqueue(wire.MustEncode(wire.Error{Type: wire.TypeError, ReqID: reqID, Code: wire.CodeUnavailable, Message: msg, RetryAfterMs: unavailableRetryMs}))
}

// storeFailed answers a request whose write failed: `unavailable` when a
// cluster without quorum refused it (what names the change), else
// `internal` with msg. Before, every such write but a send, a post, an
// ack and a profile change was answered `internal` ("could not …"), so a
// cluster without quorum read as a broken broker, exit 1.
func (c *conn) storeFailed(reqID string, err error, msg, what string) {
	if errors.Is(err, store.ErrUnavailable) {
		c.sendUnavailable(reqID, what, false)
		return
	}
	c.sendError(reqID, wire.CodeInternal, msg)
}

func (c *conn) sendOK(reqID string) {
	c.enqueue(wire.MustEncode(wire.OK{Type: wire.TypeOK, ReqID: reqID}))
}

// handle dispatches one authenticated frame. Every request gets a response
// or an error; nothing is silently swallowed (01-protocol §1).
func (c *conn) handle(data []byte) {
	start := time.Now()
	var env wire.Envelope
	if typ, ok := wire.FrameType(data); ok && (typ == wire.TypeSend || typ == wire.TypeClientAck) {
		// The hot frames are parsed once, by their typed decode, which
		// also reads and checks the reqId (checkReqID).
		env.Type = typ
	} else {
		var err error
		if env, err = wire.Peek(data); err != nil {
			c.sendError(safeReqID(env.ReqID), wire.CodeInvalidArgument, err.Error())
			c.chargeInvalidFrame()
			return
		}
		if !c.checkReqID(env.ReqID) {
			c.chargeInvalidFrame()
			return
		}
	}
	if env.Type != wire.TypeSend && env.Type != wire.TypeClientAck && !c.frames.Allow() {
		c.sendRateLimited(env.ReqID, "too many requests on this connection; slow down", untilTokens(c.frames, 1))
		return
	}
	if env.Type == wire.TypeClientAck && c.acks != nil && !c.acks.Allow() {
		// Before the frame is decoded: a flood of 500-id frames costs
		// its parse otherwise.
		c.b.metrics.limitTripped.WithLabelValues("ack_rate").Inc()
		// The hot path above read no reqId; the refusal needs it, or a
		// client waiting for this frame's answer waits for ever.
		c.sendRateLimited(peekReqID(data), "too many client_ack frames on this connection; batch ids (up to 500 per frame)", untilTokens(c.acks, 1))
		return
	}
	if env.Type == wire.TypeClientAck && c.refuseAckEarly(data) {
		return
	}
	if env.Type == wire.TypeSend && c.refuseSendEarly(data) {
		return
	}
	switch env.Type {
	case wire.TypeSend:
		c.handleSend(data, env, start)
	case wire.TypeClientAck:
		c.handleClientAck(data, env)
	case wire.TypeFetchQueued:
		c.handleFetchQueued(data, env)
	case wire.TypeListPeers:
		c.handleListPeers(data, env)
	case wire.TypeMembersList:
		c.reply(wire.Members{Type: wire.TypeMembers, ReqID: env.ReqID, Members: c.ms.memberList()})
	case wire.TypeSetStatus, wire.TypeSetSummary, wire.TypeSetVisible, wire.TypeJoinGroup, wire.TypeLeaveGroup:
		c.handleProfile(data, env)
	case wire.TypeMessageStatus:
		c.handleMessageStatus(data, env)
	case wire.TypeMeshLeave:
		c.handleMeshLeave(env)
	case wire.TypeInviteCreate:
		c.handleInviteCreate(data, env)
	case wire.TypeInviteList:
		c.handleInviteList(env)
	case wire.TypeInviteRevoke:
		c.handleInviteRevoke(data, env)
	case wire.TypeDisconnect, wire.TypeKick, wire.TypeBan, wire.TypeUnban, wire.TypeListBans, wire.TypeSetRole, wire.TypeMeshTransfer:
		c.handleAdmin(data, env)
	case wire.TypeTopicCreate, wire.TypeTopicList, wire.TypeTopicJoin, wire.TypeTopicLeave, wire.TypeTopicAdd,
		wire.TypeTopicRemove, wire.TypeTopicMembers, wire.TypeTopicHistory, wire.TypeTopicKeys, wire.TypeTopicPendingSeals,
		wire.TypeTopicSeal, wire.TypeTopicRotate, wire.TypeTopicMarkRead, wire.TypeNotificationsList,
		wire.TypeNotificationsRead, wire.TypeAPIKeyCreate, wire.TypeAPIKeyList, wire.TypeAPIKeyRevoke:
		c.handleTopicFrame(data, env)
	case wire.TypeGrantsSet:
		c.handleGrantsSet(data, env)
	case wire.TypeGrantsGet:
		c.handleGrantsGet(env)
	case wire.TypeSkillPublish, wire.TypeSkillList, wire.TypeSkillGet, wire.TypeSkillRemove:
		c.handleSkill(data, env)
	case wire.TypeAuditQuery:
		c.handleAuditQuery(data, env)
	case wire.TypeAuditCheckpoint:
		c.handleAuditCheckpoint(env)
	case wire.TypeHello, wire.TypeSessionHello:
		c.sendError(env.ReqID, wire.CodeInvalidArgument, "this connection is already authenticated")
	default:
		c.sendError(env.ReqID, wire.CodeUnknownMessageType, fmt.Sprintf("unknown frame type %q", env.Type))
	}
}

func (c *conn) reply(v any) { c.enqueue(wire.MustEncode(v)) }

// safeReqID is a reqId that may be echoed: never an unchecked (possibly
// huge) value.
func safeReqID(reqID string) string {
	if !wire.ValidReqID(reqID) {
		return ""
	}
	return reqID
}

// peekReqID is the valid reqId of a frame refused before it is decoded,
// or "". A frame without one (an ack flood's) is not walked through: its
// 500 ids would be skipped token by token for nothing.
func peekReqID(data []byte) string {
	if !bytes.Contains(data, []byte(`"reqId"`)) {
		return ""
	}
	return safeReqID(wire.PeekFields(data, "reqId")[0])
}

// checkReqID answers a frame whose reqId is malformed.
func (c *conn) checkReqID(reqID string) bool {
	if reqID != "" && !wire.ValidReqID(reqID) {
		c.sendError("", wire.CodeInvalidArgument, "reqId must match ^[A-Za-z0-9._:-]{1,64}$")
		return false
	}
	return true
}

// decodeHot decodes a send or client_ack that handle did not Peek: on
// failure it answers with the reqId Peek salvages, as for any ill-shaped
// frame; on success it checks the reqId the frame carried.
func (c *conn) decodeHot(data []byte, v any, reqID func() string) bool {
	if err := wire.Decode(data, v); err != nil {
		env, _ := wire.Peek(data)
		c.sendError(safeReqID(env.ReqID), wire.CodeInvalidArgument, err.Error())
		return false
	}
	return c.checkReqID(reqID())
}

// requireReqID answers requests that must carry a reqId.
func (c *conn) requireReqID(env wire.Envelope) bool {
	if env.ReqID == "" {
		c.sendError("", wire.CodeInvalidArgument, env.Type+" needs a reqId")
		return false
	}
	return true
}

// ---- send ----

// sendResult carries what the commit decided back to its callback.
type sendResult struct {
	messageID string
	duplicate bool
	reused    bool
	held      *lineHold // refused: an earlier send of its line was
	// overBudget: let through as a stored message's retry (free), it was
	// not one (its record is gone): refused rate_limited.
	overBudget bool
	heldMs     int64 // and the retryAfterMs it is told
	pending    int
	seqs       []uint64
}

func (c *conn) ackError(s *wire.Send, code, msg string, retryAfterMs int64) {
	c.b.metrics.rejected.WithLabelValues(code).Inc()
	c.reply(wire.Ack{Type: wire.TypeAck, ID: s.ID, ReqID: s.ReqID, Error: &wire.AckError{Code: code, Message: msg, RetryAfterMs: retryAfterMs}})
}

// refuseSend answers a send its member's rate limits refused.
func (c *conn) refuseSend(s *wire.Send, ref *sendRefusal) {
	c.ackError(s, wire.CodeRateLimited, ref.msg, retryAfterMs(ref.retry))
	if ref.limit == "byte_rate" {
		// Bytes are what the refusal is about: it counts against the
		// member's budget of refusals (refusedForRate), which closes a
		// connection once the member's connections together keep being
		// refused; each one alone is paced to a refusal per retry.
		c.refusedForRate(ref.retry)
		return
	}
	c.paceReads(ref.retry)
}

// refuseSendEarly refuses, before it is decoded, a send its member's
// budgets would refuse after (sendrate.go): the ack names the frame by
// the id and reqId read from its first bytes (wire.PeekFields), each
// echoed only if it is well-formed.
func (c *conn) refuseSendEarly(data []byte) bool {
	ref := c.b.refuseSendEarly(c.mem, len(data))
	if ref == nil {
		return false
	}
	f := wire.PeekFields(data, "id", "reqId", "targetSpec", "clientMessageId", "kind")
	if c.lines.hasPrepaid(cmp.Or(f[3], f[0]), len(data)) {
		return false // paid for when it was read and refused before (handleSend)
	}
	if ref.limit == "byte_rate" && wire.ValidReqID(cmp.Or(f[3], f[0])) && mayRetry(c.mem, len(data)) &&
		c.b.storedAlready(c.ms.id, c.pubkey, cmp.Or(f[3], f[0]), f[4] == wire.KindTopic) {
		return false // a retry of a stored message: its retry allowance (chargeSend)
	}
	c.refuseSend(&wire.Send{ID: safeReqID(f[0]), ReqID: safeReqID(f[1])}, ref)
	// It holds its line like any refusal to be sent again
	// (sendorder.go), when the frame names it well enough.
	if cmid := cmp.Or(f[3], f[0]); wire.ValidReqID(cmid) && f[2] != "" && len(f[2]) <= 128 {
		place := c.place(f[2], cmid)
		place.size = len(data)
		place.refuse(wire.CodeRateLimited, retryAfterMs(ref.retry))
	}
	return true
}

func (c *conn) handleSend(data []byte, env wire.Envelope, start time.Time) {
	var s wire.Send
	if !c.decodeHot(data, &s, func() string { return s.ReqID }) {
		c.b.metrics.rejected.WithLabelValues(wire.CodeInvalidArgument).Inc()
		c.chargeInvalidSend(len(data))
		return
	}
	env.ReqID = s.ReqID
	if !wire.ValidReqID(s.ID) {
		c.b.metrics.rejected.WithLabelValues(wire.CodeInvalidArgument).Inc()
		c.sendError(env.ReqID, wire.CodeInvalidArgument, "send needs an id matching ^[A-Za-z0-9._:-]{1,64}$")
		c.chargeInvalidSend(len(data))
		return
	}
	if err := c.validateSend(&s); err != nil {
		code := wire.CodeInvalidArgument
		var ce codedError
		if errors.As(err, &ce) {
			code = ce.code
		}
		c.ackError(&s, code, err.Error(), 0)
		c.chargeInvalidSend(len(data))
		return
	}
	// Its place in its line: a send read after one of the line that was
	// refused, before that one came again, is refused too (sendorder.go).
	place := c.place(s.TargetSpec, s.ClientMessageID)
	place.size = len(data)
	// Its fingerprint, a hash of up to 87 KB, is computed once, here on
	// its connection's goroutine: for its credit's check, its records and
	// the credit a refusal leaves (prepay, which may run on the committer
	// or the dispatcher every mesh shares: it hashes nothing there).
	fpOf := func() string {
		if place.fp == "" {
			place.fp = fingerprint(&s)
		}
		return place.fp
	}
	// What it costs (chargeSend, sendrate.go): a send read and refused
	// before, held or to be sent again, was charged then (prepay); a
	// retry of a stored message costs no bytes.
	charge, ref := c.b.chargeSend(c.mem, len(data),
		func() (int, bool) {
			return c.lines.takePrepaid(s.ClientMessageID, len(data), fpOf)
		},
		func() bool { return c.b.storedAlready(c.ms.id, c.pubkey, s.ClientMessageID, s.Kind == wire.KindTopic) })
	if ref != nil {
		c.refuseSend(&s, ref)
		place.refuse(wire.CodeRateLimited, retryAfterMs(ref.retry))
		return
	}
	place.charge, place.paid = charge, charge.paid
	fpOf()
	if s.Kind == wire.KindTopic {
		c.handleTopicSend(&s, start, place) // topic_post.go
		return
	}
	ms := c.ms
	now := time.Now()
	r := c.resolveSend(&s)
	if r.code == wire.CodeUnknownRecipient && c.b.catchUpLog(now) {
		// A key that joined through another node a moment ago
		// (cluster_lookup.go): look again once this node has the log.
		r = c.resolveSend(&s)
		now = time.Now()
	}
	to, code, msg := r.to, r.code, r.msg
	senderName, attestation, memberPubkey := r.senderName, r.attestation, r.memberPubkey
	if code != "" {
		c.ackError(&s, code, msg, 0)
		place.refuse(code, 0)
		return
	}
	// resolveRecipients reserved a place in each recipient's queue; a send
	// that ends up queuing nothing gives them back.
	release := func() {
		ms.mu.Lock()
		for _, d := range to {
			ms.releaseLocked(d.Recipient, d.From, d.Charge)
		}
		ms.mu.Unlock()
	}
	if h := place.arrive(); h != nil {
		release()
		place.prepay()
		c.ackError(&s, h.code, heldText(h, s.TargetSpec), place.heldRetryMs(h))
		return
	}
	if s.ReplyToID != "" {
		s.ReplyToID = c.replyTarget(s.ReplyToID)
	}
	messageID := newID()
	push := wire.Push{
		Type: wire.TypePush, MessageID: messageID, MeshID: ms.id, Kind: s.Kind, TargetSpec: s.TargetSpec,
		SenderPubkey: c.pubkey, SenderMemberPubkey: memberPubkey, SenderName: senderName,
		SenderAttestation: attestation, Priority: s.Priority, Nonce: s.Nonce, Ciphertext: s.Ciphertext,
		KeyGen: s.KeyGen, Signature: s.Signature, BodyVersion: s.BodyVersion, ReplyToID: s.ReplyToID,
		Mentions: s.Mentions, Subtype: s.Subtype, ClientMessageID: s.ClientMessageID, CreatedAt: now.UnixMilli(),
	}
	// The push is encoded once, into the body record the store keeps
	// until the last recipient settles it (store.BodyHeader), so neither
	// the encoding nor the store copies it again.
	body := store.BodyHeader(make([]byte, 0, binary.MaxVarintLen64+wire.PushSize(&push)), len(to))
	hdr := len(body)
	body = wire.AppendPush(body, &push)
	base := body[hdr:len(body):len(body)]
	rec := &store.Message{
		ID: messageID, ClientMessageID: s.ClientMessageID, SenderPubkey: c.pubkey, SenderMember: memberPubkey,
		TargetSpec: s.TargetSpec, Kind: s.Kind, Priority: s.Priority, Fingerprint: place.fp,
		Push: base, Receipts: s.Receipts == nil || *s.Receipts, CreatedAt: now.UnixMilli(),
	}
	// With --audit-messages, the entry's payload (metadata only, as the
	// broker sees it: never a body) is made canonical here, off the
	// committer every mesh shares.
	var auditPayload store.CanonicalPayload
	if c.b.cfg.AuditMessages {
		var err error
		auditPayload, err = store.Canonicalize(map[string]any{
			"messageId": messageID, "clientMessageId": s.ClientMessageID, "senderPubkey": c.pubkey,
			"targetSpec": s.TargetSpec, "kind": s.Kind, "recipients": len(to), "fingerprint": rec.Fingerprint})
		if err != nil {
			release()
			c.ackError(&s, wire.CodeInternal, "could not prepare the audit entry", 1000)
			place.refuse(wire.CodeInternal, 1000)
			return
		}
	}
	// The records are encoded here, on this connection's goroutine: the
	// committer that every write of every mesh waits for only puts them.
	prepared := store.PrepareMessageBody(rec, to, body)
	// So is each recipient's key entry, for a multi: a broadcast encodes
	// up to a thousand, which on the dispatcher would hold up every later
	// commit's pushes and acks.
	frames := pushFrames(base, to)
	var res sendResult
	// Sized by its body and keyed by its sender: a large message waits in
	// the committer's large lane (store.SubmitSized) instead of making
	// every small send of its commit wait for its pages, and this
	// sender's later sends wait behind it, in order.
	err := store.SubmitRefusable(c.b.store, func(tx *store.Tx) error {
		res = sendResult{}
		if res.held = place.heldBy(); res.held != nil {
			res.heldMs = place.heldRetryMs(res.held)
			return nil // an earlier send of its line was refused meanwhile
		}
		prev, err := store.LookupIdempotent(tx, ms.id, c.pubkey, s.ClientMessageID)
		if err == nil {
			if prev.Fingerprint != rec.Fingerprint {
				res.reused = true
				return nil
			}
			res.duplicate, res.messageID = true, prev.ID
			dl, err := store.Deliveries(tx, ms.id, prev.ID)
			if err != nil {
				return err
			}
			for _, d := range dl {
				if d.State == store.DeliveryPending {
					res.pending++
				}
			}
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if place.free() {
			// Let through without its bytes as a stored message's
			// retry, and the record is gone: it would be new bytes
			// past the budget.
			res.overBudget = true
			return nil
		}
		res.seqs, err = prepared.Append(tx, ms.id)
		res.messageID = messageID
		if err == nil && auditPayload != nil {
			_, err = store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditMessageSent, Actor: memberPubkey, At: now, Payload: auditPayload})
		}
		return err
	}, func(err error) {
		if err != nil || res.reused || res.duplicate || res.held != nil || res.overBudget {
			release()
		}
		if res.held != nil {
			place.prepay()
		}
		if res.duplicate {
			c.b.refundBytes(c.mem, place.charge.bytes) // it stored nothing
		}
		if res.overBudget {
			place.refuse(wire.CodeRateLimited, 1000)
		}
		c.afterSend(&s, rec, to, frames, &res, err, start)
	}, place.refused, len(body), c.pubkey)
	if err != nil {
		release()
		c.ackError(&s, wire.CodeShuttingDown, "broker is shutting down; retry", 1000)
		place.refuse(wire.CodeShuttingDown, 1000)
	}
}

// unreserveLocked gives back a recipient's queue place. Caller holds ms.mu.
func (ms *meshState) unreserveLocked(recipient string) {
	if ms.pending[recipient]--; ms.pending[recipient] <= 0 {
		delete(ms.pending, recipient)
	}
}

// afterSend runs on the committer goroutine once the message is durable:
// push to online recipients (in commit order, hence FIFO), then ack.
func (c *conn) afterSend(s *wire.Send, rec *store.Message, to []store.NewDelivery, frames []outFrame, res *sendResult, err error, start time.Time) {
	if errors.Is(err, store.ErrUnavailable) {
		c.b.log.Warn("send refused: not durable in time", "err", err)
		c.ackError(s, wire.CodeUnavailable, unavailableText("the message"), unavailableRetryMs)
		return
	}
	if err != nil {
		c.b.log.Error("send commit failed", "err", err)
		c.ackError(s, wire.CodeInternal, "the broker could not store the message; retry", 1000)
		return
	}
	if h := res.held; h != nil {
		c.ackError(s, h.code, heldText(h, s.TargetSpec), res.heldMs)
		return
	}
	if res.reused {
		c.ackError(s, wire.CodeIdempotencyKeyReused, "clientMessageId was already used for a different message", 0)
		return
	}
	if res.overBudget {
		c.ackError(s, wire.CodeRateLimited, fmt.Sprintf("this member is sending more than %s/s (--byte-rate); retry later", humanBytes(c.b.cfg.ByteRate)), 1000)
		return
	}
	one := func(n int) *int { return &n }
	if res.duplicate {
		c.reply(wire.Ack{Type: wire.TypeAck, ID: s.ID, ReqID: s.ReqID, MessageID: res.messageID, Queued: true, Online: one(0), Pending: one(res.pending), Duplicate: true})
		return
	}
	ms := c.ms
	online := 0
	ms.mu.Lock()
	for i, d := range to {
		frame := frames[i]
		for _, t := range ms.targets(d.Recipient) {
			if t.offerLocked(rec.ID, res.seqs[i], rec.Priority, d.From, false, frame) {
				online++
			}
		}
	}
	if c.transient && rec.Receipts && len(to) > 0 && !c.closed {
		ms.origin[rec.ID] = &origin{conn: c, waiting: len(to), at: rec.CreatedAt}
		if c.origins == nil {
			c.origins = map[string]struct{}{}
		}
		c.origins[rec.ID] = struct{}{}
	}
	ms.mu.Unlock()
	c.b.metrics.pending.Add(float64(len(to)))
	c.b.metrics.routed.WithLabelValues(rec.Kind, rec.Priority).Inc()
	// Observed before the ack is queued, so a client that reads the ack
	// and then scrapes sees it counted.
	c.b.metrics.sendAck.Observe(time.Since(start).Seconds())
	c.enqueueFanout(wire.EncodeAck(&wire.Ack{Type: wire.TypeAck, ID: s.ID, ReqID: s.ReqID, MessageID: rec.ID, Queued: true, Online: one(online), Pending: one(len(to))}))
}

// codedError carries a specific ack code out of validation.
type codedError struct{ code, msg string }

func (e codedError) Error() string { return e.msg }

// validateSend checks a send's shape and fills defaults.
func (c *conn) validateSend(s *wire.Send) error {
	if s.ClientMessageID == "" {
		s.ClientMessageID = s.ID
	} else if !wire.ValidReqID(s.ClientMessageID) {
		return fmt.Errorf("clientMessageId must match ^[A-Za-z0-9._:-]{1,64}$")
	}
	switch s.Priority {
	case "":
		s.Priority = wire.PriorityNext
	case wire.PriorityNow, wire.PriorityNext, wire.PriorityLow:
	default:
		return fmt.Errorf("priority must be now, next or low")
	}
	if _, err := cmcrypto.DecodeB64Len(s.Nonce, 24); err != nil {
		return fmt.Errorf("nonce must be 24 bytes of canonical base64")
	}
	ctLen, err := cmcrypto.DecodedB64Len(s.Ciphertext)
	if err != nil {
		return fmt.Errorf("ciphertext must be canonical base64")
	}
	if ctLen > maxCiphertext {
		return codedError{wire.CodePayloadTooLarge, fmt.Sprintf("ciphertext is %d bytes; the limit is %d (64 KiB of plaintext)", ctLen, maxCiphertext)}
	}
	if ctLen < 16 && !(s.Kind == wire.KindTopic && s.BodyVersion == wire.BodyPlaintext) {
		return fmt.Errorf("ciphertext is shorter than its MAC")
	}
	if s.ReplyToID != "" && !wire.ValidReqID(s.ReplyToID) {
		return fmt.Errorf("replyToId is malformed")
	}
	if len(s.Mentions) > 64 {
		return fmt.Errorf("at most 64 mentions")
	}
	for _, m := range s.Mentions {
		if !wire.IsHex(m, 64) {
			return fmt.Errorf("mentions must be 64-hex pubkeys")
		}
	}
	if s.Subtype != "" && (strings.EqualFold(s.Subtype, wire.SubtypeSystem) || !wire.ValidText(s.Subtype, 32)) {
		// "system" is reserved for the broker's own presence events: a
		// peer must not be able to forge one, in any letter case (a
		// client that compares case-insensitively would take "System"
		// for the broker's).
		return fmt.Errorf("subtype %q is reserved or invalid", s.Subtype)
	}
	if s.BodyVersion != 0 && s.BodyVersion != 1 && s.BodyVersion != 2 {
		return fmt.Errorf("bodyVersion must be 1 or 2")
	}
	switch s.Kind {
	case wire.KindBox:
		if !wire.IsHex(s.TargetSpec, 64) {
			return fmt.Errorf("a box message targets one 64-hex pubkey")
		}
		if len(s.Keys) > 0 {
			return fmt.Errorf("a box message carries no keys")
		}
	case wire.KindMulti:
		if s.TargetSpec != "*" && !(strings.HasPrefix(s.TargetSpec, "@") && wire.ValidGroup(s.TargetSpec[1:])) {
			return fmt.Errorf("a multi message targets * or @group")
		}
		if !wire.IsHex(s.Signature, 128) {
			return fmt.Errorf("a multi message needs the sender's signature (128 hex)")
		}
		if len(s.Keys) == 0 || len(s.Keys) > maxMultiKeys {
			return fmt.Errorf("a multi message carries 1 to %d keys", maxMultiKeys)
		}
		seen := make(map[string]struct{}, len(s.Keys))
		for _, k := range s.Keys {
			if !wire.IsHex(k.To, 64) {
				return fmt.Errorf("keys[].to must be a 64-hex pubkey")
			}
			if _, dup := seen[k.To]; dup {
				return fmt.Errorf("keys[].to must be unique")
			}
			seen[k.To] = struct{}{}
			if _, err := cmcrypto.DecodeB64Len(k.Nonce, 24); err != nil {
				return fmt.Errorf("keys[].nonce must be 24 bytes of canonical base64")
			}
			if _, err := cmcrypto.DecodeB64Len(k.Box, 48); err != nil {
				return fmt.Errorf("keys[].box must be a 48-byte box of a 32-byte key")
			}
		}
	case wire.KindTopic:
		return validateTopicSend(s)
	default:
		return fmt.Errorf("kind must be box, multi or topic")
	}
	return nil
}

// resolvedSend is what a send learns under the mesh lock: its recipients
// (each with a place reserved) or the code refusing it, and the sender's
// name and attestation as its push shows them.
type resolvedSend struct {
	to                       []store.NewDelivery
	code, msg                string
	senderName, memberPubkey string
	attestation              *wire.Attestation
}

func (c *conn) resolveSend(s *wire.Send) (r resolvedSend) {
	ms := c.ms
	ms.mu.Lock()
	defer ms.mu.Unlock()
	r.to, r.code, r.msg = c.resolveRecipients(s)
	r.senderName = c.mem.DisplayName
	if p := c.pres; p != nil && p.session {
		r.senderName, r.attestation = p.displayName, p.attestation
	} else if sess := ms.sessions[c.pubkey]; sess != nil {
		r.senderName = sess.DisplayName
	}
	r.memberPubkey = c.mem.Pubkey
	return r
}

// resolveRecipients applies 01-protocol §4's routing table. Caller holds
// ms.mu. A non-empty code refuses the send. Each recipient returned has a
// place reserved in its --max-pending count, taken in the same critical
// section as the check, so a burst of sends in flight to the committer
// cannot all pass the check before any is counted; the caller gives the
// places back if the send queues nothing. The sender's share of each
// queue and its and the mesh's queued bytes (quota.go) are checked and
// reserved the same way.
func (c *conn) resolveRecipients(s *wire.Send) (to []store.NewDelivery, code, msg string) {
	ms := c.ms
	from := c.mem.Pubkey // quotas count the member, whichever of its keys sends
	if s.Kind == wire.KindBox {
		if !ms.knownRecipient(s.TargetSpec) {
			return nil, wire.CodeUnknownRecipient, "no member or session of this mesh has that key"
		}
		if !ms.allows(s.TargetSpec, c.mem.Pubkey, wire.CapDM) {
			c.b.metrics.droppedByGrant.WithLabelValues(wire.CapDM).Inc()
			return nil, wire.CodeBlockedByRecipient, "the recipient does not accept direct messages from you"
		}
		if !c.queueRoomLocked(s.TargetSpec, from) {
			return nil, wire.CodeRecipientQueueFull, "the recipient has too many undelivered messages (from you, or in all)"
		}
		to = []store.NewDelivery{{Recipient: s.TargetSpec}}
		return c.reserveLocked(to, from, len(s.Ciphertext))
	}
	group := strings.TrimPrefix(s.TargetSpec, "@")
	to = make([]store.NewDelivery, 0, len(s.Keys))
	for i := range s.Keys {
		k := &s.Keys[i]
		if k.To == c.pubkey || !ms.knownRecipient(k.To) {
			continue
		}
		if s.TargetSpec != "*" && !inGroup(ms.effectiveGroups(k.To), group) {
			continue
		}
		if !ms.allows(k.To, c.mem.Pubkey, wire.CapBroadcast) {
			// Dropped for this recipient only; the others still get it.
			c.b.metrics.droppedByGrant.WithLabelValues(wire.CapBroadcast).Inc()
			continue
		}
		if !c.queueRoomLocked(k.To, from) {
			c.b.metrics.rejected.WithLabelValues(wire.CodeRecipientQueueFull).Inc()
			continue
		}
		to = append(to, store.NewDelivery{Recipient: k.To, Key: &wire.MultiKey{To: k.To, Nonce: k.Nonce, Box: k.Box}})
	}
	return c.reserveLocked(to, from, len(s.Ciphertext))
}

// reserveLocked charges the deliveries to their sender (chargeDeliveries)
// and, unless that goes over a byte quota, takes their places and bytes.
// Caller holds ms.mu.
func (c *conn) reserveLocked(to []store.NewDelivery, from string, ciphertextLen int) ([]store.NewDelivery, string, string) {
	total := chargeDeliveries(to, from, ciphertextLen)
	if len(to) == 0 {
		return to, "", ""
	}
	if code, msg := c.checkQueueBytes(from, total); code != "" {
		return nil, code, msg
	}
	for _, d := range to {
		c.ms.holdLocked(d.Recipient, d.From, d.Charge)
	}
	return to, "", ""
}

// fingerprint identifies a send's content for idempotency: a retry with the
// same clientMessageId must carry the same bytes.
// replyTarget is the message a reply answers, by its message id: the
// clientMessageId of a message this connection (or its member) sent — what
// send printed when the message went through the daemon's outbox — is
// replaced by that message's id, which is what its recipients know.
// Anything else is kept as it came (replyToId is a routing field the
// sender chose).
func (c *conn) replyTarget(id string) string {
	out := id
	c.b.store.View(func(tx *store.Tx) error {
		for _, k := range []string{c.pubkey, c.mem.Pubkey} {
			if m := store.IdempotentID(tx, c.ms.id, k, id); m != "" {
				out = m
				return nil
			}
		}
		return nil
	})
	return out
}

// fingerprinted, when set (by tests only), is told of each fingerprint
// computed.
var fingerprinted atomic.Pointer[func(*wire.Send)]

func fingerprint(s *wire.Send) string {
	if f := fingerprinted.Load(); f != nil {
		(*f)(s)
	}
	h := sha256.New()
	// Strings go through a buffer on the stack: []byte(s.Ciphertext) was
	// a fresh copy of up to 87 KB for every send, only to be hashed.
	var buf [4 << 10]byte
	for _, part := range []string{s.TargetSpec, s.Kind, s.Nonce, s.Ciphertext} {
		for len(part) > 0 {
			n := copy(buf[:], part)
			h.Write(buf[:n])
			part = part[n:]
		}
		h.Write([]byte{0})
	}
	for _, k := range s.Keys {
		h.Write([]byte(k.To + "|" + k.Nonce + "|" + k.Box))
		h.Write([]byte{0})
	}
	if s.KeyGen != nil {
		h.Write([]byte(strconv.Itoa(*s.KeyGen)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ---- client_ack ----

func (c *conn) handleClientAck(data []byte, env wire.Envelope) {
	var a wire.ClientAck
	if !c.decodeHot(data, &a, func() string { return a.ReqID }) {
		return
	}
	ids := a.MessageIDs
	if a.MessageID != "" {
		ids = append(ids, a.MessageID)
	}
	if len(ids) == 0 || len(ids) > maxAckIDs {
		c.sendError(a.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("client_ack carries 1 to %d ids", maxAckIDs))
		return
	}
	valid := make([]string, 0, len(ids))
	for _, id := range ids {
		if !wire.ValidULID(id) {
			c.sendError(a.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("%q is not a message id", id))
			return
		}
		valid = append(valid, id)
	}
	valid, ok := c.settleable(a.ReqID, valid)
	if !ok {
		return
	}
	if len(valid) == 0 {
		// Nothing to settle: unknown or already settled ids are a no-op,
		// answered without a write.
		if a.ReqID != "" {
			c.reply(wire.Acked{Type: wire.TypeAcked, ReqID: a.ReqID, MessageIDs: ids})
		}
		return
	}
	ms := c.ms
	var outcomes []store.AckOutcome
	submit := c.b.store.Submit
	if a.ReqID == "" {
		// Nobody waits for this ack: it may wait a moment for the other
		// acks of the same fan-out to share its commit.
		submit = func(fn func(tx *store.Tx) error, after func(error)) error {
			return store.SubmitDeferred(c.b.store, fn, after)
		}
	}
	err := submit(func(tx *store.Tx) error {
		var err error
		outcomes, err = store.Ack(tx, ms.id, c.pubkey, valid, time.Now().UnixMilli())
		return err
	}, func(err error) {
		if errors.Is(err, store.ErrUnavailable) {
			c.sendUnavailable(a.ReqID, "the ack", true)
			return
		}
		if err != nil {
			c.b.log.Error("ack commit failed", "err", err)
			c.sendError(a.ReqID, wire.CodeInternal, "the broker could not record the ack; retry")
			return
		}
		c.afterAck(outcomes)
		if a.ReqID != "" {
			c.reply(wire.Acked{Type: wire.TypeAcked, ReqID: a.ReqID, MessageIDs: ids})
		}
	})
	if err != nil {
		c.sendError(a.ReqID, wire.CodeShuttingDown, "broker is shutting down; retry")
	}
}

// afterAck settles in-memory state and pushes receipts (committer
// goroutine).
func (c *conn) afterAck(outcomes []store.AckOutcome) {
	if len(outcomes) == 0 {
		return
	}
	ms := c.ms
	settled := 0
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, o := range outcomes {
		for sib := range ms.conns[c.pubkey] {
			sib.ackedLocked(o.ID)
		}
		if o.Receipt {
			continue
		}
		settled++
		ms.releaseLocked(c.pubkey, o.From, o.Charge)
		if o.NewReceipt == nil {
			continue
		}
		frame := o.ReceiptFrame // encoded once, in the store
		if frame == nil {
			frame = wire.MustEncode(o.NewReceipt)
		}
		targets := ms.targets(o.ReceiptFor)
		for _, t := range targets {
			t.offerLocked(o.NewReceipt.ReceiptID, o.ReceiptSeq, wire.PriorityNow, "", true, outFrame{b: frame})
		}
		if og := ms.receiptCameLocked(o.Message.ID); og != nil {
			oc := og.conn
			isTarget := false
			for _, t := range targets {
				isTarget = isTarget || t == oc
			}
			if !isTarget && !oc.closed {
				oc.enqueueFanout(frame)
			}
		}
	}
	for sib := range ms.conns[c.pubkey] {
		if sib.behindLocked() {
			sib.requestRefill()
		}
	}
	c.b.metrics.pending.Sub(float64(settled))
}

// ---- fetch_queued ----

func (c *conn) handleFetchQueued(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var f wire.FetchQueued
	if err := wire.Decode(data, &f); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if limit > maxFetch {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("limit is at most %d", maxFetch))
		return
	}
	budget, ok := c.fetchBudget(env.ReqID)
	if !ok {
		return
	}
	out := wire.Queued{Type: wire.TypeQueued, ReqID: env.ReqID, Messages: []wire.RawJSON{}, Receipts: []wire.Receipt{}}
	size := 256
	err := c.b.store.View(func(tx *store.Tx) error {
		var inner error
		err := store.ScanQueue(tx, c.ms.id, c.pubkey, 0, func(_ uint64, e *store.QueueEntry) bool {
			if len(out.Messages)+len(out.Receipts) >= limit {
				out.More = true
				return false
			}
			if e.Receipt {
				var r wire.Receipt
				if inner = wire.Decode(e.Frame, &r); inner != nil {
					return false
				}
				if size+len(e.Frame) > budget {
					out.More = true
					return false
				}
				size += len(e.Frame)
				out.Receipts = append(out.Receipts, r)
				return true
			}
			m, err := store.GetMessage(tx, c.ms.id, e.ID)
			if err != nil {
				inner = err
				return false
			}
			frame := wire.EncodePushWithKey(m.Push, e.Key)
			if size+len(frame) > budget {
				out.More = true
				return false
			}
			size += len(frame)
			out.Messages = append(out.Messages, frame)
			return true
		})
		if err != nil {
			return err
		}
		return inner
	})
	if err != nil {
		c.sendError(env.ReqID, wire.CodeInternal, "could not read the queue")
		return
	}
	c.chargeFetch(size)
	c.reply(out)
}

// ---- members ----

func (ms *meshState) memberList() []wire.Member {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	online := map[string]bool{}
	for _, p := range ms.presences {
		if p.online() {
			online[p.member.Pubkey] = true
		}
	}
	out := make([]wire.Member, 0, len(ms.members))
	for _, m := range ms.members {
		out = append(out, ms.memberRow(m, online[m.Pubkey]))
	}
	sortMembers(out)
	return out
}

// sendRateLimited refuses a frame with rate_limited, to be retried after
// retry.
func (c *conn) sendRateLimited(reqID, msg string, retry time.Duration) {
	c.enqueue(wire.MustEncode(wire.Error{Type: wire.TypeError, ReqID: reqID, Code: wire.CodeRateLimited, Message: msg, RetryAfterMs: max(retry.Milliseconds(), 1)}))
	c.refusedForRate(retry)
}

// refusedForRate counts a frame refused with rate_limited, which retry
// from now would have been accepted; the connection's next frame is not
// read before then (paceReads). A connection
// that keeps sending after it was told to slow down (past a burst of
// refusals for its member, then more than a few a second) is closed with
// 1008 rate_limited, and a new connection of that member is closed at its
// next refusal until the budget refills: answering and parsing a flood costs the broker's CPU,
// which every mesh shares, even when each frame is refused (bench
// --adversary). A client that honours rate_limited never gets near it.
func (c *conn) refusedForRate(retry time.Duration) {
	c.paceReads(retry)
	// c.mem is set by every accepted hello, and frames are refused only
	// after one.
	if c.mem.refusals.Allow() {
		return
	}
	if c.refusalClosed.CompareAndSwap(false, true) {
		// The close is a verified refusal of the member, like a refused
		// hello (hellobudget.go): otherwise each reconnect would buy a
		// fresh burst of every per-connection limit.
		spendHelloRefusal(c.mem, nil)
		c.b.metrics.limitTripped.WithLabelValues("refusals").Inc()
		c.b.log.Warn("connection closed: it kept sending after rate_limited", "member", c.pubkey, "ip", c.ip)
		c.closeWith(wire.ClosePolicy, wire.CodeRateLimited)
	}
}
