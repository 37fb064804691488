package broker

import (
	"errors"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// Administration (01-protocol §6): owner and admins act on members and
// sessions. Admins cannot act on the owner or on other admins; only the
// owner changes roles.

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

// resolveTarget matches a display name (exact, case-insensitive; members
// first, then sessions), a full pubkey, or a pubkey prefix of ≥ 8 hex.
// Caller holds ms.mu.
func (ms *meshState) resolveTarget(target string) ([]adminTarget, []wire.Candidate) {
	var out []adminTarget
	sessionTarget := func(pubkey, name, parentID string) {
		if parent := ms.memberByID[parentID]; parent != nil {
			out = append(out, adminTarget{member: parent, session: pubkey, name: name})
		}
	}
	isPrefix := len(target) >= 8 && len(target) <= 64 && wire.IsHex(target, len(target))
	if isPrefix {
		for _, m := range ms.members {
			if strings.HasPrefix(m.Pubkey, target) {
				out = append(out, adminTarget{member: m})
			}
		}
		for k, s := range ms.sessions {
			if strings.HasPrefix(k, target) {
				sessionTarget(k, s.DisplayName, s.ParentMemberID)
			}
		}
	}
	if len(out) == 0 {
		key := cmcrypto.NameKey(target)
		for _, m := range ms.members {
			if m.NameKey == key {
				out = append(out, adminTarget{member: m})
			}
		}
		if len(out) == 0 {
			for k, s := range ms.sessions {
				if cmcrypto.NameKey(s.DisplayName) == key {
					sessionTarget(k, s.DisplayName, s.ParentMemberID)
				}
			}
		}
	}
	if len(out) <= 1 {
		return out, nil
	}
	cands := make([]wire.Candidate, 0, len(out))
	for _, t := range out {
		kind := "member"
		if t.session != "" {
			kind = "session"
		}
		r := t.ref()
		cands = append(cands, wire.Candidate{DisplayName: r.DisplayName, Pubkey: r.Pubkey, Kind: kind})
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].Pubkey < cands[j].Pubkey })
	return nil, cands
}

// mayActOn reports whether the caller may act on member m.
func (c *conn) mayActOn(m *member) bool {
	if c.mem.Role == wire.MemberOwner {
		return true
	}
	return m.Role == wire.MemberMember
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
	if c.mem.Role != wire.MemberOwner && c.mem.Role != wire.MemberAdmin {
		c.sendError(r.ReqID, wire.CodeForbidden, "only the mesh owner or an admin can do that")
		return
	}
	switch r.Type {
	case wire.TypeListBans:
		c.handleListBans(r)
	case wire.TypeDisconnect, wire.TypeKick:
		c.handleDrop(r)
	case wire.TypeBan, wire.TypeUnban:
		c.handleBan(r)
	case wire.TypeSetRole:
		c.handleSetRole(r)
	}
}

// oneTarget resolves r.Target to exactly one target or answers the error.
func (c *conn) oneTarget(r wire.AdminRequest) (adminTarget, bool) {
	if r.Target == "" {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, r.Type+" needs a target")
		return adminTarget{}, false
	}
	c.ms.mu.Lock()
	ts, cands := c.ms.resolveTarget(r.Target)
	c.ms.mu.Unlock()
	if cands != nil {
		c.reply(wire.Error{Type: wire.TypeError, ReqID: r.ReqID, Code: wire.CodeAmbiguousTarget, Message: "several peers match " + r.Target + "; use a longer pubkey prefix", Candidates: cands})
		return adminTarget{}, false
	}
	if len(ts) == 0 {
		c.sendError(r.ReqID, wire.CodeUnknownTarget, "no member or session matches "+r.Target)
		return adminTarget{}, false
	}
	return ts[0], true
}

// handleDrop is disconnect (the client reconnects) and kick (the session
// ends; control-plane connections are skipped: roles are self-declared, so
// kick is advisory and ban is the real control).
func (c *conn) handleDrop(r wire.AdminRequest) {
	ms := c.ms
	res := wire.AdminResult{Type: wire.TypeAdminResult, ReqID: r.ReqID, Affected: []wire.PeerRef{}, Skipped: []wire.PeerRef{}}
	var victims []*conn
	var single *adminTarget
	if !r.All && r.StaleMs == 0 {
		t, ok := c.oneTarget(r)
		if !ok {
			return
		}
		single = &t
	}
	now := time.Now()
	ms.mu.Lock()
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
		if !c.mayActOn(p.member) || (r.Type == wire.TypeKick && p.role == wire.RoleControlPlane) {
			res.Skipped = append(res.Skipped, ref)
			continue
		}
		res.Affected = append(res.Affected, ref)
		victims = append(victims, p.conn)
	}
	ms.mu.Unlock()
	c.reply(res)
	for _, v := range victims {
		if r.Type == wire.TypeKick {
			v.endPresence.Store(true)
			v.closeWith(wire.CloseKicked, wire.ReasonKicked)
		} else {
			v.closeWith(wire.CloseNormal, wire.ReasonDisconnected)
		}
	}
}

// handleBan revokes (or restores) a member: all its connections close 4002
// and hello and /v1/join refuse it from then on.
func (c *conn) handleBan(r wire.AdminRequest) {
	t, ok := c.oneTarget(r)
	if !ok {
		return
	}
	m := t.member
	ref := wire.PeerRef{DisplayName: m.DisplayName, Pubkey: m.Pubkey}
	res := wire.AdminResult{Type: wire.TypeAdminResult, ReqID: r.ReqID, Affected: []wire.PeerRef{}, Skipped: []wire.PeerRef{}}
	if m == c.mem || !c.mayActOn(m) || m.Role == wire.MemberOwner {
		res.Skipped = append(res.Skipped, ref)
		c.reply(res)
		return
	}
	if !wire.ValidText(r.Reason, 280) {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "reason is at most 280 bytes without control characters")
		return
	}
	ms := c.ms
	now := time.Now().UnixMilli()
	ban := r.Type == wire.TypeBan
	err := c.b.store.Update(func(tx *bolt.Tx) error {
		cur, err := store.GetMember(tx, ms.id, m.ID)
		if err != nil {
			return err
		}
		if ban {
			cur.RevokedAt, cur.BanReason = now, r.Reason
		} else {
			cur.RevokedAt, cur.BanReason = 0, ""
		}
		return store.PutMember(tx, ms.id, cur)
	})
	if errors.Is(err, store.ErrNotFound) {
		c.sendError(r.ReqID, wire.CodeUnknownTarget, "that member left the mesh")
		return
	}
	if err != nil {
		c.sendError(r.ReqID, wire.CodeInternal, "could not save the ban")
		return
	}
	var victims []*conn
	ms.mu.Lock()
	if ban {
		m.RevokedAt, m.BanReason = now, r.Reason
		for _, set := range ms.conns {
			for cc := range set {
				if cc.mem == m {
					victims = append(victims, cc)
				}
			}
		}
		ms.memberChanged(wire.MemberBanned, m, nil)
	} else {
		m.RevokedAt, m.BanReason = 0, ""
		ms.memberChanged(wire.MemberUnbanned, m, nil)
	}
	ms.mu.Unlock()
	res.Affected = append(res.Affected, ref)
	c.reply(res)
	msg := "You've been removed from \"" + ms.name + "\". Contact the mesh owner to rejoin."
	for _, v := range victims {
		v.sendError("", wire.CodeRevoked, msg)
		v.endPresence.Store(true)
		v.closeWith(wire.CloseBanned, wire.ReasonBanned)
	}
}

func (c *conn) handleListBans(r wire.AdminRequest) {
	out := wire.Bans{Type: wire.TypeBans, ReqID: r.ReqID, Bans: []wire.BanInfo{}}
	c.ms.mu.Lock()
	for _, m := range c.ms.members {
		if m.RevokedAt != 0 {
			out.Bans = append(out.Bans, wire.BanInfo{DisplayName: m.DisplayName, Pubkey: m.Pubkey, RevokedAt: m.RevokedAt, Reason: m.BanReason})
		}
	}
	c.ms.mu.Unlock()
	sort.Slice(out.Bans, func(i, j int) bool { return out.Bans[i].RevokedAt < out.Bans[j].RevokedAt })
	c.reply(out)
}

// handleSetRole changes a member's role (owner only).
func (c *conn) handleSetRole(r wire.AdminRequest) {
	if c.mem.Role != wire.MemberOwner {
		c.sendError(r.ReqID, wire.CodeForbidden, "only the owner changes roles")
		return
	}
	if r.Role != wire.MemberAdmin && r.Role != wire.MemberMember {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "role must be admin or member")
		return
	}
	t, ok := c.oneTarget(r)
	if !ok {
		return
	}
	m := t.member
	res := wire.AdminResult{Type: wire.TypeAdminResult, ReqID: r.ReqID, Affected: []wire.PeerRef{}, Skipped: []wire.PeerRef{}}
	ref := wire.PeerRef{DisplayName: m.DisplayName, Pubkey: m.Pubkey}
	if m.Role == wire.MemberOwner {
		res.Skipped = append(res.Skipped, ref)
		c.reply(res)
		return
	}
	ms := c.ms
	err := c.b.store.Update(func(tx *bolt.Tx) error {
		cur, err := store.GetMember(tx, ms.id, m.ID)
		if err != nil {
			return err
		}
		cur.Role = r.Role
		return store.PutMember(tx, ms.id, cur)
	})
	if err != nil {
		c.sendError(r.ReqID, wire.CodeInternal, "could not change the role")
		return
	}
	ms.mu.Lock()
	prev := m.Role
	m.Role = r.Role
	if prev != r.Role {
		ms.memberChanged(wire.MemberRoleChanged, m, &wire.MemberPrevious{MemberRole: prev})
	}
	ms.mu.Unlock()
	res.Affected = append(res.Affected, ref)
	c.reply(res)
}
