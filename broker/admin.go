package broker

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// Administration (01-protocol §6): the owner and admins act on members and
// sessions. Admins cannot act on the owner or on other admins; only the
// owner changes roles and hands over ownership.
//
// Every decision that depends on roles is taken inside the store
// transaction that makes the change, from the stored records: two admin
// actions racing on the same members are serialised by bbolt, each sees
// the other's outcome, and each appends its audit entry in that same
// transaction. The in-memory member is updated afterwards in the commit's
// callback, which runs in commit order, so memory ends where the store is.

// adminTarget is one resolved target: a member, or one session of a member.
type adminTarget struct {
	member  *member
	session string // session pubkey, "" for the member itself
	name    string
}

func (t adminTarget) ref() wire.PeerRef {
	if t.session != "" {
		return wire.PeerRef{DisplayName: t.name, Pubkey: t.session}
	}
	return wire.PeerRef{DisplayName: t.member.DisplayName, Pubkey: t.member.Pubkey}
}

// adminError is a refusal decided inside an admin transaction.
type adminError struct{ code, msg string }

func refusal(code, msg string) *adminError { return &adminError{code, msg} }

// matchTargets finds what a target names, at the first level that matches:
// a full pubkey (its holder alone, never a name), or a pubkey prefix of
// 8..63 hex (members and sessions, and with them every member and session
// whose display name it also is), else a display name (exact,
// case-insensitive) of members, else of sessions. Caller holds ms.mu.
func (ms *meshState) matchTargets(target string) []adminTarget {
	// Keys are lowercase hex: a client that sends one in capitals still
	// names the key (names compare case-folded, so none is lost).
	if lower := strings.ToLower(target); len(target) >= 8 && len(target) <= 64 && wire.IsHex(lower, len(lower)) {
		target = lower
	}
	var out []adminTarget
	sessionTarget := func(pubkey, name, parentID string) {
		if parent := ms.memberByID[parentID]; parent != nil {
			out = append(out, adminTarget{member: parent, session: pubkey, name: name})
		}
	}
	if m := ms.members[target]; m != nil && len(target) == 64 {
		// A full member key names that member and nothing else, even if
		// a session record claims the same key (unban by key must never
		// become ambiguous).
		return []adminTarget{{member: m, name: m.DisplayName}}
	}
	if len(target) >= 8 && len(target) <= 64 && wire.IsHex(target, len(target)) {
		for _, m := range ms.members {
			if strings.HasPrefix(m.Pubkey, target) {
				out = append(out, adminTarget{member: m, name: m.DisplayName})
			}
		}
		for k, s := range ms.sessions {
			if _, isMember := ms.members[k]; !isMember && strings.HasPrefix(k, target) {
				sessionTarget(k, s.DisplayName, s.ParentMemberID)
			}
		}
		if len(target) == 64 {
			// A full key names its holder and nothing else: a name is
			// free text, so anyone may call itself by someone's full key,
			// and a full key must never become ambiguous (nor, held by
			// nobody, reach whoever is so named). The client's resolver
			// treats 64 hex the same way.
			return out
		}
		if len(out) > 0 {
			// A display name may look like a key prefix: a member or a
			// session so named is a match too, so that a name that is a
			// prefix of someone else's key names neither (ambiguous_target).
			key := cmcrypto.NameKey(target)
			for _, m := range ms.members {
				if m.NameKey == key && !slices.ContainsFunc(out, func(t adminTarget) bool { return t.session == "" && t.member == m }) {
					out = append(out, adminTarget{member: m, name: m.DisplayName})
				}
			}
			for k, s := range ms.sessions {
				if _, isMember := ms.members[k]; !isMember && cmcrypto.NameKey(s.DisplayName) == key &&
					!slices.ContainsFunc(out, func(t adminTarget) bool { return t.session == k }) {
					sessionTarget(k, s.DisplayName, s.ParentMemberID)
				}
			}
			return out
		}
	}
	key := cmcrypto.NameKey(target)
	for _, m := range ms.members {
		if m.NameKey == key {
			out = append(out, adminTarget{member: m, name: m.DisplayName})
		}
	}
	if len(out) > 0 {
		return out
	}
	for k, s := range ms.sessions {
		if cmcrypto.NameKey(s.DisplayName) == key {
			sessionTarget(k, s.DisplayName, s.ParentMemberID)
		}
	}
	return out
}

func candidatesOf(ts []adminTarget) []wire.Candidate {
	cands := make([]wire.Candidate, 0, len(ts))
	for _, t := range ts {
		kind := "member"
		if t.session != "" {
			kind = "session"
		}
		r := t.ref()
		c := wire.Candidate{DisplayName: r.DisplayName, Pubkey: r.Pubkey, Kind: kind}
		if t.session != "" && t.member != nil {
			c.MemberName, c.MemberPubkey = t.member.DisplayName, t.member.Pubkey
		}
		cands = append(cands, c)
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Pubkey < cands[j].Pubkey })
	return cands
}

// oneTarget resolves r.Target to exactly one target or answers the error.
// With membersOnly (ban, unban, set_role, transfer) a session is not a
// valid target: the verb acts on a member, and acting on a session's
// parent by the session's name would surprise.
func (c *conn) oneTarget(r *wire.AdminRequest, membersOnly bool) (adminTarget, bool) {
	if r.Target == "" {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, r.Type+" needs a target")
		return adminTarget{}, false
	}
	ms := c.ms
	ms.mu.Lock()
	ts := ms.matchTargets(r.Target)
	var t adminTarget
	var n int
	var sessionOf string
	if membersOnly {
		t, n, sessionOf = memberTarget(ts)
	} else if n = len(ts); n == 1 {
		t = ts[0]
	}
	ms.mu.Unlock()
	switch {
	case n > 1:
		c.reply(wire.Error{Type: wire.TypeError, ReqID: r.ReqID, Code: wire.CodeAmbiguousTarget,
			Message: "several peers match " + r.Target + "; use a longer pubkey prefix", Candidates: candidatesOf(ts)})
		return adminTarget{}, false
	case n == 0 && sessionOf != "":
		c.sendError(r.ReqID, wire.CodeInvalidArgument, sessionOf+"; "+adminVerb(r.Type)+" acts on members: name the member")
		return adminTarget{}, false
	case n == 0:
		c.sendError(r.ReqID, wire.CodeUnknownTarget, "no member or session matches "+r.Target)
		return adminTarget{}, false
	}
	return t, true
}

// memberTarget is the member a members-only verb (ban, unban, set_role,
// mesh_transfer, the operator's remove-member) acts on, from what
// matchTargets found: n is 1 with the member, 0 when nothing matched or
// only sessions of one member did (sessionOf then says whose), and more
// than 1 when the matches belong to several members. Ambiguity is decided
// over every match, sessions included, before sessions are left out: a
// session named like a prefix of bob's key makes that prefix ambiguous,
// where leaving the session out first acted on bob. Sessions of the member
// that matched are that member (either reading names it).
// adminVerb names an admin request as the CLI verb a user typed ("mesh
// transfer", not the frame's mesh_transfer).
func adminVerb(typ string) string {
	switch typ {
	case wire.TypeSetRole:
		return "role set"
	case wire.TypeMeshTransfer:
		return "mesh transfer"
	}
	return strings.ReplaceAll(typ, "_", " ")
}

func memberTarget(ts []adminTarget) (t adminTarget, n int, sessionOf string) {
	var owners []*member
	for _, m := range ts {
		if !slices.Contains(owners, m.member) {
			owners = append(owners, m.member)
		}
	}
	if len(owners) > 1 {
		return adminTarget{}, len(owners), ""
	}
	for _, m := range ts {
		if m.session == "" {
			return m, 1, ""
		}
		sessionOf = m.name + " is an agent session of " + m.member.DisplayName
	}
	return adminTarget{}, 0, sessionOf
}

// role reads the caller's member role under the mesh lock: set_role,
// mesh_transfer and re-joins change it from other goroutines.
func (c *conn) role() string {
	c.ms.mu.Lock()
	defer c.ms.mu.Unlock()
	return c.mem.Role
}

func isManager(role string) bool { return role == wire.MemberOwner || role == wire.MemberAdmin }

// skipReason says why a caller with role callerRole may not act on member
// m ("" when it may). Caller holds ms.mu.
func skipReason(callerRole string, m *member) string {
	switch {
	case m.Role == wire.MemberOwner:
		return wire.SkipOwner
	case m.Role == wire.MemberAdmin && callerRole != wire.MemberOwner:
		return wire.SkipAdmin
	}
	return ""
}

func (c *conn) handleAdmin(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var r wire.AdminRequest
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	if !isManager(c.role()) && r.Type != wire.TypeSetRole && r.Type != wire.TypeMeshTransfer {
		// (Roles and transfers are the owner's alone: their handlers
		// say so, not "the owner or an admin".)
		c.sendError(r.ReqID, wire.CodeForbidden, "only the mesh owner or an admin can do that")
		return
	}
	switch r.Type {
	case wire.TypeListBans:
		c.handleListBans(&r)
	case wire.TypeDisconnect, wire.TypeKick:
		c.handleDrop(&r)
	case wire.TypeBan, wire.TypeUnban:
		c.handleBan(&r)
	case wire.TypeSetRole:
		c.handleSetRole(&r)
	case wire.TypeMeshTransfer:
		c.handleTransfer(&r)
	}
}

// adminTx runs an admin change on the committer. fn decides inside the
// transaction: it returns a refusal (decided before anything is written),
// a refusal with code internal (a store failure: the transaction is rolled
// back), or nil after making the change. done runs in commit order once the change is durable; it
// updates memory and answers.
func (c *conn) adminTx(reqID string, fn func(tx *store.Tx, me *store.Member) *adminError, done func()) {
	ms := c.ms
	var refused *adminError
	err := c.b.store.Submit(func(tx *store.Tx) error {
		refused = nil
		me, err := store.GetMember(tx, ms.id, c.mem.ID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			refused = refusal(wire.CodeForbidden, "you are no longer a member of this mesh")
			return nil
		case err != nil:
			return err
		case me.RevokedAt != 0:
			refused = refusal(wire.CodeForbidden, "you were removed from this mesh")
			return nil
		}
		refused = fn(tx, me)
		if refused != nil && refused.code == wire.CodeInternal {
			// A failure after fn began writing: roll the whole
			// transaction back (a refusal is decided before any write).
			return errors.New(refused.msg)
		}
		return nil
	}, func(err error) {
		switch {
		case errors.Is(err, store.ErrUnavailable):
			c.sendUnavailable(reqID, "the change", false)
		case err != nil:
			c.b.log.Error("admin commit failed", "mesh", ms.id, "err", err)
			c.sendError(reqID, wire.CodeInternal, "the broker could not save the change; nothing was changed")
		case refused != nil:
			c.sendError(reqID, refused.code, refused.msg)
		default:
			done()
		}
	})
	if err != nil {
		c.sendError(reqID, wire.CodeShuttingDown, "broker is shutting down; retry")
	}
}

func newAdminResult(reqID string) wire.AdminResult {
	return wire.AdminResult{Type: wire.TypeAdminResult, ReqID: reqID, Affected: []wire.PeerRef{}, Skipped: []wire.PeerRef{}}
}

func skipped(ref wire.PeerRef, reason string) wire.PeerRef {
	ref.Reason = reason
	return ref
}

// replySkipped answers a one-member action its transaction skipped (skip
// is the reason, "" when it was done) and reports whether it did; ref
// names the member either way.
func (c *conn) replySkipped(res *wire.AdminResult, m *store.Member, skip string) (ref wire.PeerRef, done bool) {
	ref = wire.PeerRef{DisplayName: m.DisplayName, Pubkey: m.Pubkey}
	if skip == "" {
		return ref, false
	}
	res.Skipped = append(res.Skipped, skipped(ref, skip))
	c.reply(*res)
	return ref, true
}

// handleDrop is disconnect (the client reconnects) and kick (the client
// must not reconnect). A named target loses every connection it has; with
// --all or --stale, control-plane connections (daemons) are skipped and
// reported: roles are self-declared, so a mass kick is advisory, and ban is
// the real control. The caller's own member is never dropped by --all.
func (c *conn) handleDrop(r *wire.AdminRequest) {
	ms := c.ms
	selectors := 0
	if r.Target != "" {
		selectors++
	}
	if r.All {
		selectors++
	}
	if r.StaleMs != 0 {
		selectors++
	}
	switch {
	case r.StaleMs < 0:
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "staleMs must be a positive number of milliseconds")
		return
	case selectors != 1:
		c.sendError(r.ReqID, wire.CodeInvalidArgument, r.Type+" takes exactly one of target, all or staleMs")
		return
	}
	var single *adminTarget
	if r.Target != "" {
		t, ok := c.oneTarget(r, false)
		if !ok {
			return
		}
		single = &t
	}
	res := newAdminResult(r.ReqID)
	var victims []*conn
	now := time.Now()
	ms.mu.Lock()
	callerRole := c.mem.Role
	if single != nil {
		if why := skipReason(callerRole, single.member); why != "" && single.member != c.mem {
			ms.mu.Unlock()
			c.sendError(r.ReqID, wire.CodeForbidden, "admins cannot "+r.Type+" the owner or another admin")
			return
		}
		if single.member == c.mem && single.session == "" {
			// The caller's own member, as a kick of everyone skips it
			// (an owner kicking herself was told "the owner" for her
			// daemon and "not connected", untrue, for the rest).
			ms.mu.Unlock()
			res.Skipped = append(res.Skipped, skipped(single.ref(), wire.SkipSelf))
			c.reply(res)
			return
		}
	}
	seen := map[string]bool{}
	for _, p := range ms.presences {
		if p.conn == nil || p.conn == c {
			continue
		}
		switch {
		case single != nil && single.session != "":
			if p.pubkey != single.session {
				continue
			}
		case single != nil:
			if p.member != single.member {
				continue
			}
		case r.StaleMs > 0:
			if now.Sub(time.UnixMilli(p.conn.lastActive.Load())) < time.Duration(r.StaleMs)*time.Millisecond {
				continue
			}
		}
		ref := wire.PeerRef{DisplayName: p.displayName, Pubkey: p.pubkey}
		why := skipReason(callerRole, p.member)
		switch {
		case single == nil && p.member == c.mem:
			why = wire.SkipSelf
		case single == nil && why == "" && r.Type == wire.TypeKick && p.role == wire.RoleControlPlane:
			why = wire.SkipControlPlane
		}
		if why != "" {
			if !seen[why+p.pubkey] {
				seen[why+p.pubkey] = true
				res.Skipped = append(res.Skipped, skipped(ref, why))
			}
			continue
		}
		if !seen[p.pubkey] {
			// One row per key: a member's presences (daemon, inbox
			// --follow) all stand for the member.
			seen[p.pubkey] = true
			res.Affected = append(res.Affected, ref)
		}
		victims = append(victims, p.conn)
	}
	if single != nil && len(victims) == 0 {
		res.Skipped = append(res.Skipped, skipped(single.ref(), wire.SkipNotConnected))
	}
	ms.mu.Unlock()
	sortRefs(res.Affected)
	sortRefs(res.Skipped)
	if len(victims) == 0 {
		c.reply(res) // nothing changes, nothing to record
		return
	}
	event := wire.AuditDisconnect
	if r.Type == wire.TypeKick {
		event = wire.AuditKick
	}
	payload := map[string]any{"affected": res.Affected}
	switch {
	case r.All:
		payload["all"] = true
	case r.StaleMs > 0:
		payload["staleMs"] = r.StaleMs
	}
	c.adminTx(r.ReqID, func(tx *store.Tx, me *store.Member) *adminError {
		if !isManager(me.Role) {
			return refusal(wire.CodeForbidden, "only the mesh owner or an admin can do that")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: event, Actor: c.actor(), Payload: payload}); err != nil {
			return refusal(wire.CodeInternal, "could not record the action")
		}
		return nil
	}, func() {
		c.reply(res)
		if r.Type == wire.TypeKick {
			c.b.topicsMembersKicked(ms, kickedMembers(victims))
		}
		for _, v := range victims {
			if r.Type == wire.TypeKick {
				// How to come back depends on the client (a daemon stays
				// off until `daemon up`; a one-shot command just runs
				// again): its hint says, not this text.
				v.sendError("", wire.ReasonKicked, "You were disconnected from \""+ms.name+"\" by an admin.")
				v.endPresence.Store(true)
				v.closeWith(wire.CloseKicked, wire.ReasonKicked)
			} else {
				v.closeWith(wire.CloseNormal, wire.ReasonDisconnected)
			}
		}
	})
}

func sortRefs(refs []wire.PeerRef) {
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].DisplayName != refs[j].DisplayName {
			return refs[i].DisplayName < refs[j].DisplayName
		}
		return refs[i].Pubkey < refs[j].Pubkey
	})
}

// bannedMessage is what a removed member is told (01-protocol §3).
func bannedMessage(meshName string) string {
	return "You've been removed from \"" + meshName + "\". Contact the mesh owner to rejoin."
}

// handleBan revokes (or restores) a member. A ban closes every connection
// of the member and of its sessions (4002), forgets its sessions, drops
// everything queued for those keys, and from then on hello and /v1/join
// refuse it. An admin cannot lift a ban the owner imposed.
func (c *conn) handleBan(r *wire.AdminRequest) {
	ban := r.Type == wire.TypeBan
	if ban && !wire.ValidText(r.Reason, 280) {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "reason is at most 280 bytes without control characters")
		return
	}
	if !ban && r.Reason != "" {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "unban takes no reason")
		return
	}
	t, ok := c.oneTarget(r, true)
	if !ok {
		return
	}
	ms := c.ms
	memberID := t.member.ID
	res := newAdminResult(r.ReqID)
	var cur store.Member
	var dropped []store.Expired
	var sessions []string
	var skip string
	now := time.Now().UnixMilli()
	c.adminTx(r.ReqID, func(tx *store.Tx, me *store.Member) *adminError {
		dropped, sessions, skip = nil, nil, ""
		m, err := store.GetMember(tx, ms.id, memberID)
		if err != nil {
			return refusal(wire.CodeUnknownTarget, "that member is no longer in the mesh")
		}
		cur = *m
		switch {
		case !isManager(me.Role):
			return refusal(wire.CodeForbidden, "only the mesh owner or an admin can do that")
		case m.ID == me.ID:
			skip = wire.SkipSelf
			return nil
		case m.Role == wire.MemberOwner:
			return refusal(wire.CodeForbidden, "the mesh owner cannot be banned")
		case m.Role == wire.MemberAdmin && me.Role != wire.MemberOwner:
			return refusal(wire.CodeForbidden, "admins cannot ban or unban another admin")
		case ban && m.RevokedAt != 0:
			skip = wire.SkipAlreadyBanned
			return nil
		case !ban && m.RevokedAt == 0:
			skip = wire.SkipNotBanned
			return nil
		case !ban && me.Role != wire.MemberOwner && m.BannedByRole != wire.MemberAdmin:
			return refusal(wire.CodeForbidden, "the mesh owner banned "+m.DisplayName+"; only the owner can lift that ban")
		}
		payload := map[string]any{"member": memberJSON(m)}
		event := wire.AuditMemberUnbanned
		if ban {
			event = wire.AuditMemberBanned
			m.RevokedAt, m.BanReason, m.BannedBy, m.BannedByRole = now, r.Reason, me.Pubkey, me.Role
			if sessions, dropped, err = store.EndMemberSessions(tx, ms.id, m); err != nil {
				return refusal(wire.CodeInternal, "could not end the member's sessions")
			}
			payload["reason"] = r.Reason
			payload["droppedDeliveries"] = len(dropped)
			payload["endedSessions"] = len(sessions)
		} else {
			m.RevokedAt, m.BanReason, m.BannedBy, m.BannedByRole = 0, "", "", ""
		}
		if err := store.PutMember(tx, ms.id, m); err != nil {
			return refusal(wire.CodeInternal, "could not save the ban")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: event, Actor: me.Pubkey, Payload: payload}); err != nil {
			return refusal(wire.CodeInternal, "could not record the ban")
		}
		cur = *m
		return nil
	}, func() {
		ref, done := c.replySkipped(&res, &cur, skip)
		if done {
			return
		}
		c.b.hub.settleExpired(ms, dropped)
		var victims []*conn
		var late []*store.Session // sessions the ban's transaction did not find
		ms.mu.Lock()
		if m := ms.memberByID[memberID]; m != nil {
			m.RevokedAt, m.BanReason, m.BannedBy, m.BannedByRole = cur.RevokedAt, cur.BanReason, cur.BannedBy, cur.BannedByRole
			change := wire.MemberUnbanned
			if ban {
				change = wire.MemberBanned
			}
			ms.memberChanged(change, m, nil)
			if ban {
				for _, k := range sessions {
					ms.deleteSessionLocked(k)
				}
				late = ms.forgetMemberSessionsLocked(m.ID)
				delete(ms.unacked, m.Pubkey) // its queue is dropped
				for _, set := range ms.conns {
					for cc := range set {
						if cc.mem == m {
							victims = append(victims, cc)
						}
					}
				}
				// The member's presences end now, its sessions'
				// included, even those whose connection already
				// dropped and that would otherwise stay listed for
				// the grace period.
				for _, p := range ms.presences {
					if p.member == m && p.conn == nil {
						ms.endPresence(p)
					}
				}
			}
		}
		ms.mu.Unlock()
		if len(late) > 0 {
			// Off the dispatcher: forgetSessions submits a write.
			go c.b.hub.forgetSessions(ms, late)
		}
		res.Affected = append(res.Affected, ref)
		c.reply(res)
		if ban {
			c.b.topicsMemberGone(ms, cur.Pubkey)
		}
		msg := bannedMessage(ms.name)
		for _, v := range victims {
			v.sendError("", wire.CodeRevoked, msg)
			v.endPresence.Store(true)
			v.closeWith(wire.CloseBanned, wire.ReasonBanned)
		}
	})
}

func (c *conn) handleListBans(r *wire.AdminRequest) {
	out := wire.Bans{Type: wire.TypeBans, ReqID: r.ReqID, Bans: []wire.BanInfo{}}
	c.ms.mu.Lock()
	for _, m := range c.ms.members {
		if m.RevokedAt != 0 {
			out.Bans = append(out.Bans, wire.BanInfo{DisplayName: m.DisplayName, Pubkey: m.Pubkey, RevokedAt: m.RevokedAt, Reason: m.BanReason, BannedBy: m.BannedBy})
		}
	}
	c.ms.mu.Unlock()
	sort.Slice(out.Bans, func(i, j int) bool { return out.Bans[i].RevokedAt < out.Bans[j].RevokedAt })
	c.reply(out)
}

// handleSetRole changes a member's role between admin and member (owner
// only; the owner's own role changes only by mesh_transfer).
func (c *conn) handleSetRole(r *wire.AdminRequest) {
	if c.role() != wire.MemberOwner {
		c.sendError(r.ReqID, wire.CodeForbidden, "only the owner changes roles")
		return
	}
	if r.Role != wire.MemberAdmin && r.Role != wire.MemberMember {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "role must be admin or member")
		return
	}
	t, ok := c.oneTarget(r, true)
	if !ok {
		return
	}
	ms := c.ms
	memberID := t.member.ID
	res := newAdminResult(r.ReqID)
	var cur store.Member
	var skip, from string
	c.adminTx(r.ReqID, func(tx *store.Tx, me *store.Member) *adminError {
		skip = ""
		m, err := store.GetMember(tx, ms.id, memberID)
		if err != nil {
			return refusal(wire.CodeUnknownTarget, "that member is no longer in the mesh")
		}
		cur = *m
		switch {
		case me.Role != wire.MemberOwner:
			return refusal(wire.CodeForbidden, "only the owner changes roles")
		case m.ID == me.ID:
			return refusal(wire.CodeForbidden, "the owner's role changes only by handing over ownership (claudemesh mesh transfer)")
		case m.RevokedAt != 0:
			skip = wire.SkipBanned
			return nil
		case m.Role == r.Role:
			skip = wire.SkipUnchanged
			return nil
		}
		from = m.Role
		m.Role = r.Role
		if err := store.PutMember(tx, ms.id, m); err != nil {
			return refusal(wire.CodeInternal, "could not change the role")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditRoleChanged, Actor: me.Pubkey,
			Payload: map[string]any{"member": memberJSON(m), "from": from, "to": m.Role}}); err != nil {
			return refusal(wire.CodeInternal, "could not record the role change")
		}
		cur = *m
		return nil
	}, func() {
		ref, done := c.replySkipped(&res, &cur, skip)
		if done {
			return
		}
		ms.mu.Lock()
		if m := ms.memberByID[memberID]; m != nil {
			m.Role = cur.Role
			ms.memberChanged(wire.MemberRoleChanged, m, &wire.MemberPrevious{MemberRole: from})
		}
		ms.mu.Unlock()
		res.Affected = append(res.Affected, ref)
		c.reply(res)
	})
}

// handleTransfer hands ownership to another active member: it becomes the
// owner and the caller an admin, in one transaction with its audit entry.
func (c *conn) handleTransfer(r *wire.AdminRequest) {
	if c.role() != wire.MemberOwner {
		c.sendError(r.ReqID, wire.CodeForbidden, "only the owner can hand over the mesh")
		return
	}
	t, ok := c.oneTarget(r, true)
	if !ok {
		return
	}
	ms := c.ms
	memberID := t.member.ID
	res := newAdminResult(r.ReqID)
	var newOwner, oldOwner store.Member
	var newOwnerWas string
	c.adminTx(r.ReqID, func(tx *store.Tx, me *store.Member) *adminError {
		m, err := store.GetMember(tx, ms.id, memberID)
		switch {
		case err != nil:
			return refusal(wire.CodeUnknownTarget, "that member is no longer in the mesh")
		case me.Role != wire.MemberOwner:
			return refusal(wire.CodeForbidden, "only the owner can hand over the mesh")
		case m.ID == me.ID:
			return refusal(wire.CodeInvalidArgument, "you already own the mesh")
		case m.RevokedAt != 0:
			return refusal(wire.CodeInvalidArgument, m.DisplayName+" is banned; unban them first")
		}
		newOwnerWas = m.Role
		m.Role, me.Role = wire.MemberOwner, wire.MemberAdmin
		if err := store.PutMember(tx, ms.id, m); err != nil {
			return refusal(wire.CodeInternal, "could not hand over the mesh")
		}
		if err := store.PutMember(tx, ms.id, me); err != nil {
			return refusal(wire.CodeInternal, "could not hand over the mesh")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditOwnershipTransferred, Actor: me.Pubkey,
			Payload: map[string]any{"from": memberJSON(me), "to": memberJSON(m), "previousRole": newOwnerWas}}); err != nil {
			return refusal(wire.CodeInternal, "could not record the hand-over")
		}
		newOwner, oldOwner = *m, *me
		return nil
	}, func() {
		ms.mu.Lock()
		if m := ms.memberByID[newOwner.ID]; m != nil {
			m.Role = newOwner.Role
			ms.memberChanged(wire.MemberRoleChanged, m, &wire.MemberPrevious{MemberRole: newOwnerWas})
		}
		if m := ms.memberByID[oldOwner.ID]; m != nil {
			m.Role = oldOwner.Role
			ms.memberChanged(wire.MemberRoleChanged, m, &wire.MemberPrevious{MemberRole: wire.MemberOwner})
		}
		ms.mu.Unlock()
		res.Affected = append(res.Affected, wire.PeerRef{DisplayName: newOwner.DisplayName, Pubkey: newOwner.Pubkey})
		c.reply(res)
	})
}
