package broker

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
	"github.com/oklog/ulid/v2"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

func newID() string { return ulid.Make().String() }

// handshakeError is a refused hello: the code goes in the error frame and
// as the close reason.
type handshakeError struct {
	code, msg    string
	close        int   // close code; 1008 unless stated
	retryAfterMs int64 // with rate_limited
}

func (e *handshakeError) Error() string { return e.code + ": " + e.msg }

func refuse(code, format string, args ...any) *handshakeError {
	return &handshakeError{code: code, msg: fmt.Sprintf(format, args...), close: wire.ClosePolicy}
}

// handshake sends the signed challenge and waits for a valid hello or
// session_hello (01-protocol §3). It reports whether the connection is now
// authenticated; on failure the error frame and close are already queued.
func (c *conn) handshake() bool {
	b := c.b
	nonce := cmcrypto.RandomHex32()
	now := time.Now().UnixMilli()
	s, _ := cmcrypto.ChallengeString(nonce, now)
	c.enqueue(wire.MustEncode(wire.Challenge{
		Type: wire.TypeChallenge, Nonce: nonce, ServerTime: now, Protocol: wire.ProtocolVersion,
		BrokerVersion: b.cfg.Version, BrokerPubkey: b.keyHex, Signature: b.key.Sign(s),
	}))
	deadline := time.Now().Add(b.cfg.HelloTimeout)
	for {
		c.ws.SetReadDeadline(deadline)
		data, err := c.readFrame()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
				msg := "no hello within " + b.cfg.HelloTimeout.String()
				c.debugHandshakeFailed(wire.CodeHelloTimeout, msg)
				b.metrics.connsRejected.WithLabelValues(wire.CodeHelloTimeout).Inc()
				c.sendError("", wire.CodeHelloTimeout, msg)
				c.closeWith(wire.ClosePolicy, wire.CodeHelloTimeout)
			} else if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
				// Closed cleanly (1000) before any hello: a client that
				// only checked the broker's signed challenge (join and
				// mesh create prove the key an invite pins before they
				// send anything). An eighth of a failure (strikeParts):
				// counted whole, it gave everyone behind one NAT address
				// who joined in the same seconds a 429; not counted, a
				// stranger closing cleanly in a loop had the broker sign
				// a challenge for each at any rate.
				c.leftClean = true
				c.debugHandshakeFailed("", "closed before its hello (an eighth of a failure): "+err.Error())
			} else {
				c.debugHandshakeFailed("", "gone before its hello: "+err.Error())
			}
			return false
		}
		// Before hello_ack a client gets exactly one frame, the hello: any
		// other frame is answered and the connection closed, so a stranger
		// cannot stream junk at the broker for the whole hello timeout.
		if data == nil {
			// A binary frame, already answered with malformed.
			b.metrics.limitTripped.WithLabelValues("pre_hello").Inc()
			c.debugHandshakeFailed(wire.CodeMalformed, "a binary frame before the hello")
			c.closeWith(wire.ClosePolicy, wire.CodeMalformed)
			return false
		}
		herr, closed := c.readHello(data, nonce)
		if closed {
			return false
		}
		if herr != nil {
			c.refuseHello(herr)
			return false
		}
		c.authed.Store(true)
		return true
	}
}

// readHello checks the first frame as a hello or session_hello. closed
// reports a frame that was neither (answered and closed already); herr
// a hello refused.
func (c *conn) readHello(data []byte, nonce string) (herr *handshakeError, closed bool) {
	// A hello in the canonical form (how this project's clients write
	// it) is read once, by its own decoder, instead of by Peek and then
	// the generic one: it is every connection's first frame, and all of
	// a presence churn's or a refused hello's cost but the signatures.
	// Anything else takes the generic path below, which accepts or
	// refuses it as before.
	var h wire.Hello
	if wire.DecodeHelloFast(data, &h) {
		return c.acceptHello(&h, nonce), false
	}
	env, err := wire.Peek(data)
	reqID := env.ReqID
	if !wire.ValidReqID(reqID) {
		reqID = "" // never echo an unchecked (possibly huge) value
	}
	if err != nil {
		c.b.metrics.connsRejected.WithLabelValues(wire.CodeMalformed).Inc()
		c.debugHandshakeFailed(wire.CodeMalformed, err.Error())
		c.sendError(reqID, wire.CodeMalformed, err.Error())
		c.closeWith(wire.ClosePolicy, wire.CodeMalformed)
		return nil, true
	}
	switch env.Type {
	case wire.TypeHello:
		if err := wire.Decode(data, &h); err != nil {
			return refuse(wire.CodeMalformed, "%v", err), false
		}
		return c.acceptHello(&h, nonce), false
	case wire.TypeSessionHello:
		return c.acceptSessionHello(data, nonce), false
	}
	c.b.metrics.connsRejected.WithLabelValues(wire.CodeNoHello).Inc()
	c.debugHandshakeFailed(wire.CodeNoHello, "the first frame was "+strconv.Quote(clipped(env.Type, 40))+", not a hello")
	c.b.metrics.limitTripped.WithLabelValues("pre_hello").Inc()
	c.sendError(reqID, wire.CodeNoHello, "send hello or session_hello first")
	c.closeWith(wire.ClosePolicy, wire.CodeNoHello)
	return nil, true
}

// refuseHello answers a refused hello and closes the connection.
func (c *conn) refuseHello(herr *handshakeError) {
	c.b.metrics.connsRejected.WithLabelValues(herr.code).Inc()
	c.debugHandshakeFailed(herr.code, herr.msg)
	c.reply(wire.Error{Type: wire.TypeError, Code: herr.code, Message: herr.msg, RetryAfterMs: herr.retryAfterMs})
	reason := herr.code
	if herr.close == wire.CloseBanned {
		reason = wire.ReasonBanned
	}
	// The broker's own per-member throttles tell a member to
	// retry later: not a stranger's failure, and already
	// charged to the member (strikes.go).
	c.throttled = herr.code == wire.CodeRateLimited || herr.code == wire.CodeCapacity
	c.closeWith(herr.close, reason)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// helloIdentity is what both hello kinds establish.
type helloIdentity struct {
	pubkey      string
	session     bool
	role        string
	sessionID   string
	presence    bool
	peerType    string
	displayName string
	pid         int
	cwd         string
	hostname    string
	channel     string
	model       string
	groups      []wire.Group
	attestation *wire.Attestation
}

// checkCommon validates the optional descriptive fields both hellos share.
func checkCommon(sessionID, peerType, cwd, hostname, channel, model string, groups []wire.Group, maxGroups int) *handshakeError {
	if !wire.ValidSessionID(sessionID) {
		return refuse(wire.CodeMalformed, "sessionId must match ^[A-Za-z0-9._-]{1,64}$")
	}
	switch peerType {
	case "", wire.PeerAI, wire.PeerHuman, wire.PeerConnector:
	default:
		return refuse(wire.CodeMalformed, "peerType must be ai, human or connector")
	}
	if !wire.ValidText(cwd, 1024) || !wire.ValidText(hostname, 255) || !wire.ValidText(channel, 32) || !wire.ValidText(model, 64) {
		return refuse(wire.CodeMalformed, "cwd, hostname, channel or model is too long or has control characters")
	}
	if len(groups) > maxGroups {
		return refuse(wire.CodeMalformed, "a hello carries at most %d groups", maxGroups)
	}
	for _, g := range groups {
		if !wire.ValidGroup(g.Name) || !wire.ValidText(g.Role, 32) {
			return refuse(wire.CodeMalformed, "invalid group %q", g.Name)
		}
	}
	return nil
}

func checkTimeAndChallenge(ts int64, challenge, sent string) *handshakeError {
	skew := time.Since(time.UnixMilli(ts))
	if skew > timestampSkew || skew < -timestampSkew {
		return refuse(wire.CodeTimestampSkew, "hello timestamp is %s away from the broker's clock; fix the system clock", skew.Round(time.Second))
	}
	if challenge != sent {
		return refuse(wire.CodeBadChallenge, "hello does not answer this connection's challenge")
	}
	return nil
}

func (c *conn) acceptHello(h *wire.Hello, sentNonce string) *handshakeError {
	if h.Protocol != wire.ProtocolVersion || h.MeshID == "" || h.MemberID == "" || !wire.IsHex(h.Pubkey, 64) ||
		!wire.IsHex(h.Challenge, 64) || !wire.IsHex(h.Signature, 128) || h.Timestamp <= 0 {
		return refuse(wire.CodeMalformed, "hello needs protocol 1, meshId, memberId, pubkey (64 hex), timestamp, challenge and signature")
	}
	pub, err := cmcrypto.ParsePublicKey(h.Pubkey)
	if err != nil {
		return refuse(wire.CodeMalformed, "pubkey is not a valid ed25519 key")
	}
	role := h.Role
	switch role {
	case "":
		role = wire.RoleCLI
	case wire.RoleCLI, wire.RoleControlPlane, wire.RoleService:
	default:
		return refuse(wire.CodeMalformed, "role must be control-plane, cli or service")
	}
	if herr := checkCommon(h.SessionID, h.PeerType, h.Cwd, h.Hostname, h.Channel, h.Model, h.Groups, c.b.cfg.MaxGroups); herr != nil {
		return herr
	}
	if herr := checkTimeAndChallenge(h.Timestamp, h.Challenge, sentNonce); herr != nil {
		return herr
	}
	msg, err := cmcrypto.HelloString(h.MeshID, h.MemberID, h.Pubkey, c.b.keyHex, h.Timestamp, h.Challenge)
	if err != nil {
		return refuse(wire.CodeMalformed, "%v", err)
	}
	if herr := c.b.checkHelloBudget(h.MeshID, h.Pubkey); herr != nil {
		return herr
	}
	if cmcrypto.Verify(pub, msg, h.Signature) != nil {
		return refuse(wire.CodeBadSignature, "hello signature does not verify")
	}
	ms := c.b.hub.mesh(h.MeshID)
	if ms == nil {
		return refuse(wire.CodeUnauthorized, "no such member in this mesh")
	}
	peerType := h.PeerType
	if peerType == "" {
		peerType = wire.PeerHuman
	}
	id := helloIdentity{
		pubkey: h.Pubkey, role: role, sessionID: h.SessionID, presence: h.Presence == nil || *h.Presence,
		peerType: peerType, displayName: h.DisplayName, cwd: h.Cwd, hostname: h.Hostname,
		channel: h.Channel, model: h.Model, groups: h.Groups,
	}
	if h.PID != nil {
		id.pid = *h.PID
	}
	return c.admit(ms, h.Pubkey, h.MemberID, id)
}

func (c *conn) acceptSessionHello(data []byte, sentNonce string) *handshakeError {
	var h wire.SessionHello
	if err := wire.Decode(data, &h); err != nil {
		return refuse(wire.CodeMalformed, "%v", err)
	}
	a := h.Attestation
	if h.Protocol != wire.ProtocolVersion || h.MeshID == "" || h.ParentMemberID == "" || !wire.IsHex(h.ParentPubkey, 64) ||
		!wire.IsHex(h.SessionPubkey, 64) || !wire.IsHex(h.Challenge, 64) || !wire.IsHex(h.Signature, 128) || h.Timestamp <= 0 ||
		a == nil || !wire.IsHex(a.SessionPubkey, 64) || !wire.IsHex(a.ParentPubkey, 64) || !wire.IsHex(a.Signature, 128) || a.ExpiresAt <= 0 {
		return refuse(wire.CodeMalformed, "session_hello needs protocol 1, meshId, parentMemberId, parentPubkey, sessionPubkey, attestation, timestamp, challenge and signature")
	}
	parentPub, err1 := cmcrypto.ParsePublicKey(h.ParentPubkey)
	sessionPub, err2 := cmcrypto.ParsePublicKey(h.SessionPubkey)
	if err1 != nil || err2 != nil {
		return refuse(wire.CodeMalformed, "parentPubkey or sessionPubkey is not a valid ed25519 key")
	}
	name, err := cmcrypto.NormalizeName(h.DisplayName)
	if err != nil {
		return refuse(wire.CodeMalformed, "displayName: %v", err)
	}
	switch h.PeerType {
	case wire.PeerAI, wire.PeerHuman, wire.PeerConnector:
	default:
		return refuse(wire.CodeMalformed, "peerType must be ai, human or connector")
	}
	if herr := checkCommon(h.SessionID, h.PeerType, h.Cwd, h.Hostname, h.Channel, h.Model, h.Groups, c.b.cfg.MaxGroups); herr != nil {
		return herr
	}
	if herr := checkTimeAndChallenge(h.Timestamp, h.Challenge, sentNonce); herr != nil {
		return herr
	}
	if a.SessionPubkey != h.SessionPubkey || a.ParentPubkey != h.ParentPubkey {
		return refuse(wire.CodeAttestationMismatch, "attestation keys differ from the hello's keys")
	}
	until := time.Until(time.UnixMilli(a.ExpiresAt))
	if until <= 0 {
		return refuse(wire.CodeExpired, "session attestation has expired; sign a fresh one")
	}
	if until > maxAttestationTTL+timestampSkew {
		return refuse(wire.CodeTTLTooLong, "session attestation may be valid for at most 24h")
	}
	if herr := c.b.checkHelloBudget(h.MeshID, h.ParentPubkey); herr != nil {
		return herr
	}
	attest, err := cmcrypto.SessionAttestString(h.MeshID, h.ParentPubkey, h.SessionPubkey, a.ExpiresAt)
	if err != nil || cmcrypto.Verify(parentPub, attest, a.Signature) != nil {
		return refuse(wire.CodeBadAttestation, "attestation is not signed by the parent member key")
	}
	msg, err := cmcrypto.SessionHelloString(h.MeshID, h.ParentPubkey, h.SessionPubkey, c.b.keyHex, h.Timestamp, h.Challenge)
	if err != nil {
		return refuse(wire.CodeMalformed, "%v", err)
	}
	if cmcrypto.Verify(sessionPub, msg, h.Signature) != nil {
		return refuse(wire.CodeBadSignature, "session hello signature does not verify")
	}
	ms := c.b.hub.mesh(h.MeshID)
	if ms == nil {
		return refuse(wire.CodeUnauthorized, "no such member in this mesh")
	}
	id := helloIdentity{
		pubkey: h.SessionPubkey, session: true, role: wire.RoleSession, sessionID: h.SessionID, presence: true,
		peerType: h.PeerType, displayName: name, cwd: h.Cwd, hostname: h.Hostname,
		channel: h.Channel, model: h.Model, groups: h.Groups, attestation: a,
	}
	if h.PID != nil {
		id.pid = *h.PID
	}
	return c.admit(ms, h.ParentPubkey, h.ParentMemberID, id)
}

// admit runs the membership checks shared by both hellos (member exists,
// not revoked, memberId matches, capacity), then attaches the connection.
func (c *conn) admit(ms *meshState, memberPubkey, memberID string, id helloIdentity) *handshakeError {
	ms.mu.Lock()
	mem := ms.members[memberPubkey]
	if mem == nil {
		ms.mu.Unlock()
		return refuse(wire.CodeUnauthorized, "no such member in this mesh")
	}
	if mem.RevokedAt != 0 {
		e := refuse(wire.CodeRevoked, "You've been removed from %q. Contact the mesh owner to rejoin.", ms.name)
		e.close = wire.CloseBanned
		spendHelloRefusal(mem, e)
		ms.mu.Unlock()
		return e
	}
	if mem.ID != memberID {
		defer ms.mu.Unlock()
		return spendHelloRefusal(mem, refuse(wire.CodeMemberIDMismatch, "memberId does not belong to this key"))
	}
	if id.session {
		if herr := ms.checkSessionIdentity(mem, id); herr != nil {
			defer ms.mu.Unlock()
			return spendHelloRefusal(mem, herr)
		}
	}
	if max := c.b.cfg.MaxConnsPerMesh; max > 0 && ms.connCount >= max {
		ms.mu.Unlock()
		return refuse(wire.CodeCapacity, "this mesh has reached its connection limit")
	}
	if herr := ms.checkMemberConns(c.b, mem, id); herr != nil {
		defer ms.mu.Unlock()
		return spendHelloRefusal(mem, herr)
	}
	var evict string
	if id.session {
		var herr *handshakeError
		if evict, herr = ms.makeRoomForSession(c.b, mem, id.pubkey); herr != nil {
			defer ms.mu.Unlock()
			return spendHelloRefusal(mem, herr)
		}
	}
	if herr := ms.checkPresenceRate(c.b, mem, id); herr != nil {
		defer ms.mu.Unlock()
		return spendHelloRefusal(mem, herr)
	}
	c.ms, c.pubkey, c.mem = ms, id.pubkey, mem
	c.transient = !id.presence
	ack := wire.HelloAck{
		Type: wire.TypeHelloAck, MeshID: ms.id, MeshName: ms.name, MemberID: mem.ID,
		MemberRole: mem.Role, DisplayName: mem.DisplayName, BrokerPubkey: c.b.keyHex,
		ServerTime: time.Now().UnixMilli(), Features: features,
	}
	if len(c.b.cfg.PublicURLs) > 0 {
		ack.BrokerURLs = c.b.publicURLs
	}
	var persist func(tx *store.Tx) error
	var written func(error)
	var evicted *store.Session
	if id.session {
		ack.DisplayName = id.displayName
		now := time.Now()
		sess := &store.Session{
			Pubkey: id.pubkey, ParentMemberID: mem.ID, ParentPubkey: mem.Pubkey, SessionID: id.sessionID,
			DisplayName: id.displayName, Attestation: *id.attestation, Groups: id.groups,
			LastSeenAt: now.UnixMilli(), HelloAt: now.Add(c.b.cfg.clockSkew).UnixNano(), Node: c.b.nodeID(),
		}
		prev := ms.sessions[id.pubkey]
		ms.putSessionLocked(id.pubkey, sess)
		if evict != "" {
			evicted = ms.sessions[evict]
			ms.deleteSessionLocked(evict)
		}
		persist, written = ms.sessionWriteLocked(sess, true, prev)
	} else if len(id.groups) > 0 {
		// Groups in a member hello are added to the member's own (01-protocol
		// §4), under the same cap as join_group: the total is what every
		// list_peers entry of the member carries.
		groups := slices.Clone(mem.Groups)
		if mergeGroups(&groups, id.groups) {
			if len(groups) > c.b.cfg.MaxGroups {
				defer ms.mu.Unlock()
				c.b.metrics.limitTripped.WithLabelValues("max_groups").Inc()
				return spendHelloRefusal(mem, refuse(wire.CodeInvalidArgument, "this hello would give the member %d groups; the limit is %d (leave_group some first)", len(groups), c.b.cfg.MaxGroups))
			}
			mem.Groups = groups
			memberID, saved := mem.ID, slices.Clone(groups)
			persist = func(tx *store.Tx) error {
				cur, err := store.GetMember(tx, ms.id, memberID)
				if err != nil {
					return nil // left or removed meanwhile
				}
				cur.Groups = saved
				return store.PutMember(tx, ms.id, cur)
			}
		}
	}
	replaced := c.b.hub.attach(c, id)
	if !c.transient {
		ack.PresenceID = c.pres.id
	}
	c.enqueue(wire.EncodeHelloAck(&ack))
	ms.mu.Unlock()
	if replaced != nil {
		replaced.closeExplained(wire.CloseNormal, wire.ReasonReplaced, wire.ReasonReplaced, replacedText(id.hostname, c.ip))
	}
	switch {
	case written != nil:
		c.b.hub.writeSession(persist, written)
	case persist != nil:
		c.b.store.Submit(persist, nil) // the member's groups, best effort
	}
	if evicted != nil {
		c.b.hub.forgetSessions(ms, []*store.Session{evicted})
	}
	return nil
}

// checkSessionIdentity enforces who a session may claim to be (issue 12,
// items 2 and 3). Caller holds ms.mu.
//
//   - Its key is its own: never a member key of the mesh, current or
//     revoked (a member colluding with a banned one could otherwise bring
//     the banned key back as "its session", and DMs to the banned member
//     would reach it), and never a session key another member attested.
//   - Its display name is not confusable (case, Unicode confusables,
//     invisible code points: crypto.NamesConfusable) with the enrolled
//     name of any other member, revoked ones included, so bob's session
//     cannot call itself "alice". A session may use its own member's name.
//   - Its display name is not claudemesh's own (cmcrypto.IsReservedName).
func (ms *meshState) checkSessionIdentity(parent *member, id helloIdentity) *handshakeError {
	if m := ms.members[id.pubkey]; m != nil {
		if m.RevokedAt != 0 {
			return refuse(wire.CodeRevoked, "this key belongs to a member removed from the mesh; it cannot return as a session")
		}
		return refuse(wire.CodeSessionKeyConflict, "this key is a member key of the mesh; a session needs a key of its own")
	}
	if s := ms.sessions[id.pubkey]; s != nil && s.ParentPubkey != parent.Pubkey {
		return refuse(wire.CodeSessionKeyConflict, "this session key is attested by another member")
	}
	if cmcrypto.IsReservedName(id.displayName) {
		return refuse(wire.CodeNameTaken, "a session cannot be called %q: it is, or can be taken for, %q, the name of claudemesh's own notices to agents, which is reserved", id.displayName, cmcrypto.ReservedName)
	}
	for _, m := range ms.members {
		if m != parent && cmcrypto.NamesConfusable(id.displayName, m.DisplayName) {
			return refuse(wire.CodeNameTaken, "a session cannot be called %q: that is (or looks like) the name of another member", id.displayName)
		}
	}
	return nil
}

// confusableMember is the name of a member other than pubkey (revoked ones
// included) whose enrolled name name can be taken for, or "".
func (ms *meshState) confusableMember(name, pubkey string) string {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, m := range ms.members {
		if m.Pubkey != pubkey && cmcrypto.NamesConfusable(name, m.DisplayName) {
			return m.DisplayName
		}
	}
	return ""
}

// confusableSession is the name of an online agent session (of a member
// other than pubkey) that name can be taken for, and its member's name;
// "" when there is none. A session may not be called like another member
// (checkSessionIdentity); this is the other order: a newcomer enrolling
// under the name of a session everyone addresses by it would take the DMs
// sent to that name (`send zed` prefers a member to a session). Only a
// session with a presence (connected, or in its grace period) holds its
// name: the broker keeps an offline session's record up to --queue-ttl,
// and one member with many sessions could so have kept many names from
// every newcomer for days. An offline session is not addressed by its
// name anyway (names resolve to members, then to online sessions), and
// when it comes back under a name a member took meanwhile, its hello is
// refused name_taken like any session called like a member.
func (ms *meshState) confusableSession(name, pubkey string) (session, member string) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	for _, p := range ms.presences {
		if p.session && p.member != nil && p.member.Pubkey != pubkey && cmcrypto.NamesConfusable(name, p.displayName) {
			return p.displayName, p.member.DisplayName
		}
	}
	return "", ""
}

// features advertised in hello_ack.
var features = []string{"box", "multi", "receipts", "fetch_queued", "session_hello", "priority", "idempotency", "message_status", "invites", "member_events", "admin", "audit", "mesh_transfer", "topics", "notifications", "apikeys", "grants", "skills"}

// mergeGroups adds groups not yet present; reports whether any was added.
func mergeGroups(dst *[]wire.Group, add []wire.Group) bool {
	changed := false
	for _, g := range add {
		found := false
		for i, have := range *dst {
			if have.Name == g.Name {
				found = true
				if g.Role != "" && have.Role != g.Role {
					(*dst)[i].Role = g.Role
					changed = true
				}
				break
			}
		}
		if !found {
			*dst = append(*dst, g)
			changed = true
		}
	}
	return changed
}
