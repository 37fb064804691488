package broker

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

func sortMembers(ms []wire.Member) {
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].JoinedAt != ms[j].JoinedAt {
			return ms[i].JoinedAt < ms[j].JoinedAt
		}
		return ms[i].MemberID < ms[j].MemberID
	})
}

// handleProfile applies set_status, set_summary, set_visible, join_group and
// leave_group. Over a session connection they change that session alone;
// over any other connection, transient included, the member's persisted
// profile shared by its member presences (01-protocol §4).
// profileFields are what the profile frames change, on a session presence
// or on a member (whose values its presences without a session share).
type profileFields struct {
	status   *string
	statusAt *time.Time
	summary  *string
	hidden   *bool
	groups   *[]wire.Group
}

// apply makes the change u asks for, or refuses it (nothing is changed
// then): a join_group that would pass maxGroups, a leave_group of a group
// the profile is not in (a leave that changed nothing was answered "ok",
// and `status group leave nosuch` said "left @nosuch").
func (f profileFields) apply(u *wire.ProfileUpdate, now time.Time, maxGroups int) (code, msg string) {
	switch u.Type {
	case wire.TypeSetStatus:
		*f.status, *f.statusAt = u.Status, now
	case wire.TypeSetSummary:
		*f.summary = u.Summary
	case wire.TypeSetVisible:
		*f.hidden = !*u.Visible
	case wire.TypeJoinGroup:
		// A copy: the slice may be shared with a persist closure that is
		// encoding it on the committer.
		groups := slices.Clone(*f.groups)
		mergeGroups(&groups, []wire.Group{{Name: u.Name, Role: u.Role}})
		if len(groups) > maxGroups {
			return wire.CodeInvalidArgument, fmt.Sprintf("at most %d groups", maxGroups)
		}
		*f.groups = groups
	case wire.TypeLeaveGroup:
		if !slices.ContainsFunc(*f.groups, func(g wire.Group) bool { return g.Name == u.Name }) {
			return wire.CodeNotFound, "not in group " + u.Name
		}
		*f.groups = removeGroup(slices.Clone(*f.groups), u.Name)
	}
	return "", ""
}

func (c *conn) handleProfile(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var u wire.ProfileUpdate
	if err := wire.Decode(data, &u); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	switch u.Type {
	case wire.TypeSetStatus:
		switch u.Status {
		case wire.StatusIdle, wire.StatusWorking, wire.StatusDND:
		default:
			c.sendError(u.ReqID, wire.CodeInvalidArgument, "status must be idle, working or dnd")
			return
		}
	case wire.TypeSetSummary:
		if utf8.RuneCountInString(u.Summary) > maxSummaryRunes || !wire.ValidText(u.Summary, 4*maxSummaryRunes) {
			c.sendError(u.ReqID, wire.CodeInvalidArgument, "summary is at most 280 characters with no control characters")
			return
		}
	case wire.TypeSetVisible:
		if u.Visible == nil {
			c.sendError(u.ReqID, wire.CodeInvalidArgument, "set_visible needs visible: true|false")
			return
		}
	case wire.TypeJoinGroup, wire.TypeLeaveGroup:
		if !wire.ValidGroup(u.Name) {
			c.sendError(u.ReqID, wire.CodeInvalidArgument, "group names match ^[a-z0-9][a-z0-9_-]{0,31}(/[a-z0-9][a-z0-9_-]{0,31}){0,3}$")
			return
		}
		if !wire.ValidText(u.Role, 32) {
			// The role, not the name (it was told the name's pattern).
			c.sendError(u.ReqID, wire.CodeInvalidArgument, "a group role is at most 32 bytes with no control characters")
			return
		}
	}
	ms := c.ms
	now := time.Now()
	ms.mu.Lock()
	p := c.pres
	var persist func(tx *store.Tx) error
	var written func(error)
	if p != nil && p.session {
		if i := slices.IndexFunc(c.mem.Groups, func(g wire.Group) bool { return inGroup([]wire.Group{g}, u.Name) }); u.Type == wire.TypeLeaveGroup && i >= 0 {
			// A session is in its member's groups (effective groups:
			// the member's and its own, a group's subgroups in it): it
			// cannot leave one, and "not in group" would be untrue.
			ms.mu.Unlock()
			via := ""
			if g := c.mem.Groups[i].Name; g != u.Name {
				via = " (through @" + g + ")"
			}
			c.sendError(u.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("@%s is a group of your member %s%s, and every session of %s is in it: this session cannot leave it; the member leaves it (a command run outside the agent session)",
				u.Name, c.mem.DisplayName, via, c.mem.DisplayName))
			return
		}
		if code, msg := (profileFields{&p.status, &p.statusAt, &p.summary, &p.hidden, &p.groups}).apply(&u, now, c.b.cfg.MaxGroups); code != "" {
			ms.mu.Unlock()
			c.sendError(u.ReqID, code, msg)
			return
		}
		if s := ms.sessions[p.pubkey]; s != nil && (u.Type == wire.TypeJoinGroup || u.Type == wire.TypeLeaveGroup) {
			cp := *s
			cp.Groups = append([]wire.Group(nil), p.groups...)
			ms.putSessionLocked(p.pubkey, &cp)
			// Registered as a hello's write is: a forget of the key
			// or a later hello before it is written cancels it.
			persist, written = ms.sessionWriteLocked(&cp, false, nil)
		}
		if u.Type == wire.TypeSetStatus && u.Status == wire.StatusIdle && p.conn != nil {
			p.conn.refillLocked()
		}
		ms.cluster().up(ms, p)
	} else {
		mem := c.mem
		if code, msg := (profileFields{&mem.Status, &mem.statusSetAt, &mem.Summary, &mem.Hidden, &mem.Groups}).apply(&u, now, c.b.cfg.MaxGroups); code != "" {
			ms.mu.Unlock()
			c.sendError(u.ReqID, code, msg)
			return
		}
		m := mem.Member
		m.Groups = append([]wire.Group(nil), mem.Groups...)
		persist = func(tx *store.Tx) error {
			cur, err := store.GetMember(tx, ms.id, m.ID)
			if err != nil {
				return nil
			}
			cur.Status, cur.Summary, cur.Hidden, cur.Groups = m.Status, m.Summary, m.Hidden, m.Groups
			return store.PutMember(tx, ms.id, cur)
		}
		if u.Type == wire.TypeSetStatus && u.Status == wire.StatusIdle {
			for _, t := range ms.targets(mem.Pubkey) {
				t.refillLocked()
			}
		}
	}
	ms.mu.Unlock()
	if persist == nil {
		c.sendOK(u.ReqID)
		return
	}
	if h := c.b.cfg.testHookProfileWrite; h != nil {
		h()
	}
	if err := c.b.store.Submit(persist, func(err error) {
		if written != nil {
			written(err)
		}
		if errors.Is(err, store.ErrUnavailable) {
			c.sendUnavailable(u.ReqID, "the profile change", false)
			return
		}
		if err != nil {
			c.sendError(u.ReqID, wire.CodeInternal, "could not save the profile")
			return
		}
		c.sendOK(u.ReqID)
	}); err != nil {
		if written != nil {
			written(err)
		}
		c.sendError(u.ReqID, wire.CodeShuttingDown, "broker is shutting down")
	}
}

func removeGroup(groups []wire.Group, name string) []wire.Group {
	out := groups[:0]
	for _, g := range groups {
		if g.Name != name {
			out = append(out, g)
		}
	}
	return out
}

// handleMessageStatus answers message_status for the sending member and its
// sessions only; anyone else learns nothing, not even that the id exists.
func (c *conn) handleMessageStatus(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var q wire.MessageStatusRequest
	if err := wire.Decode(data, &q); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	if (q.MessageID == "") == (q.ClientMessageID == "") {
		c.sendError(q.ReqID, wire.CodeInvalidArgument, "give exactly one of messageId or clientMessageId")
		return
	}
	ms := c.ms
	var msg *store.Message
	var dl []store.RecipientDelivery
	read := func(tx *store.Tx) error {
		var err error
		if q.MessageID != "" {
			msg, err = store.GetMessage(tx, ms.id, q.MessageID)
		} else if wire.ValidReqID(q.ClientMessageID) {
			msg, err = store.LookupIdempotent(tx, ms.id, c.pubkey, q.ClientMessageID)
			if errors.Is(err, store.ErrNotFound) && c.pubkey != c.mem.Pubkey {
				msg, err = store.LookupIdempotent(tx, ms.id, c.mem.Pubkey, q.ClientMessageID)
			}
		} else {
			err = store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if msg.SenderMember != c.mem.Pubkey {
			return store.ErrNotFound
		}
		dl, err = store.Deliveries(tx, ms.id, msg.ID)
		return err
	}
	err := c.b.store.View(read)
	if errors.Is(err, store.ErrNotFound) && c.b.engine != nil {
		// A node behind the cluster's log may not have applied a
		// message another node acked a moment ago: not_found must be
		// final (a daemon fails its row as lost on it), so it is said
		// only once this node has the log up to its end.
		if !c.b.catchUpLog(time.Now()) {
			c.enqueue(wire.MustEncode(wire.Error{Type: wire.TypeError, ReqID: q.ReqID, Code: wire.CodeUnavailable,
				Message: "this node could not catch up with the cluster's log to look for the message; ask again later", RetryAfterMs: unavailableRetryMs}))
			return
		}
		err = c.b.store.View(read)
	}
	if errors.Is(err, store.ErrNotFound) {
		// Not a direct, group or broadcast message: perhaps a topic post
		// of this member (by post id, or the clientMessageId that
		// `topic post` printed).
		if out := c.postStatus(q); out != nil {
			c.reply(out)
			return
		}
		if q.MessageID != "" && c.b.mayBePurged(q.MessageID) {
			// Purged (sweep): every recipient had it or its delivery
			// expired, but which is no longer known.
			c.sendError(q.ReqID, wire.CodeExpired, "no record of that message any more: the broker keeps a message's record for its queue time plus a day")
			return
		}
		c.sendError(q.ReqID, wire.CodeNotFound, "no message with that id was sent by you")
		return
	}
	if err != nil {
		c.sendError(q.ReqID, wire.CodeInternal, "could not read the message")
		return
	}
	out := wire.MessageStatus{Type: wire.TypeMessageStatus, ReqID: q.ReqID, MessageID: msg.ID, TargetSpec: msg.TargetSpec, CreatedAt: msg.CreatedAt, Recipients: []wire.RecipientState{}}
	ms.mu.Lock()
	for _, d := range dl {
		out.Recipients = append(out.Recipients, wire.RecipientState{Pubkey: d.Recipient, DisplayName: ms.nameOf(d.Recipient), State: d.State, DeliveredAt: d.DeliveredAt})
	}
	ms.mu.Unlock()
	c.reply(out)
}

// mayBePurged reports whether a message with this id (a ULID, stamped
// when the broker took it) is older than the records sweep keeps: its
// absence then says nothing about whether the broker ever had it.
func (b *Broker) mayBePurged(messageID string) bool {
	id, err := ulid.ParseStrict(messageID)
	if err != nil {
		return false
	}
	return time.UnixMilli(int64(id.Time())).Before(time.Now().Add(-b.cfg.QueueTTL - 24*time.Hour))
}

// postStatus is message_status of a topic post this member (or one of its
// sessions) made, or nil: the post's id, topic and time, no recipients.
func (c *conn) postStatus(q wire.MessageStatusRequest) *wire.MessageStatus {
	ms := c.ms
	var post *store.TopicPost
	c.b.store.View(func(tx *store.Tx) error {
		if q.MessageID != "" {
			tid, seq, err := store.TopicPostLocation(tx, ms.id, q.MessageID)
			if err == nil {
				post, _ = store.GetTopicPost(tx, ms.id, tid, seq)
			}
			return nil
		}
		post, _ = c.ownPost(tx, q.ClientMessageID)
		return nil
	})
	if post == nil || post.SenderMember != c.mem.Pubkey {
		return nil
	}
	out := &wire.MessageStatus{Type: wire.TypeMessageStatus, ReqID: q.ReqID, MessageID: post.ID, TargetSpec: "#" + post.TopicID,
		CreatedAt: post.CreatedAt, Recipients: []wire.RecipientState{}, Topic: post.TopicID}
	ms.mu.Lock()
	if idx, err := c.b.topicsLocked(ms); err == nil {
		if t := idx.lookupID(post.TopicID); t != nil {
			out.Topic = t.Name
		}
	}
	ms.mu.Unlock()
	return out
}

// nameOf is the display name of a member or known session key.
func (ms *meshState) nameOf(pubkey string) string {
	if m := ms.members[pubkey]; m != nil {
		return m.DisplayName
	}
	if s := ms.sessions[pubkey]; s != nil {
		return s.DisplayName
	}
	return ""
}

// handleMeshLeave removes the caller from the mesh. Its queues are dropped,
// its connections close 1000 `left`. The sole owner cannot leave.
func (c *conn) handleMeshLeave(env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	ms := c.ms
	mem := c.mem
	ms.mu.Lock()
	if mem.Role == wire.MemberOwner {
		owners := 0
		for _, m := range ms.members {
			if m.Role == wire.MemberOwner && m.RevokedAt == 0 {
				owners++
			}
		}
		if owners <= 1 {
			ms.mu.Unlock()
			c.sendError(env.ReqID, wire.CodeForbidden, "the sole owner cannot leave the mesh")
			return
		}
	}
	ms.mu.Unlock()
	var dropped []store.Expired
	var sessions []string
	err := c.b.store.Update(func(tx *store.Tx) error {
		dropped, sessions = nil, nil
		m, err := store.GetMember(tx, ms.id, mem.ID)
		if err != nil {
			return err
		}
		if sessions, dropped, err = store.RemoveMember(tx, ms.id, m); err != nil {
			return err
		}
		_, err = store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditMemberLeft, Actor: m.Pubkey,
			Payload: map[string]any{"member": memberJSON(m)}})
		return err
	})
	if err != nil {
		c.storeFailed(env.ReqID, err, "could not leave the mesh", "the leave")
		return
	}
	c.b.hub.settleExpired(ms, dropped)
	c.b.topicsMemberGone(ms, mem.Pubkey)
	c.sendOK(env.ReqID)
	ms.mu.Lock()
	var victims []*conn
	for _, k := range sessions {
		ms.deleteSessionLocked(k)
	}
	// Sessions accepted since the leave committed: what was queued for
	// them meanwhile is dropped too (below).
	late := ms.forgetMemberSessionsLocked(mem.ID)
	for k, set := range ms.conns {
		for cc := range set {
			if cc.mem == mem {
				victims = append(victims, cc)
			}
		}
		_ = k
	}
	delete(ms.grants, mem.Pubkey)
	ms.removeMember(mem)
	ms.memberChanged(wire.MemberLeft, mem, nil)
	ms.mu.Unlock()
	c.b.hub.forgetSessions(ms, late)
	for _, v := range victims {
		v.endPresence.Store(true)
		v.closeWith(wire.CloseNormal, wire.ReasonLeft)
	}
}

// ---- invites ----

func (c *conn) requireAdmin(reqID string) bool {
	if !isManager(c.role()) {
		c.sendError(reqID, wire.CodeForbidden, "only the mesh owner or an admin can manage invites")
		return false
	}
	return true
}

func (c *conn) handleInviteCreate(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var r wire.InviteCreate
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	inv, token, err := cmcrypto.ParseInvite(r.Token)
	if err != nil || token != r.Token {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "token must be a bare invite token")
		return
	}
	if err := inv.Verify(); err != nil {
		code := wire.CodeInvalidArgument
		if errors.Is(err, cmcrypto.ErrBadSignature) {
			code = wire.CodeBadSignature
		}
		c.sendError(r.ReqID, code, "invite: "+err.Error())
		return
	}
	if !c.requireAdmin(r.ReqID) {
		return
	}
	switch {
	case inv.IssuerPubkey != c.mem.Pubkey:
		c.sendError(r.ReqID, wire.CodeForbidden, "the invite must be issued by the connected member")
		return
	case inv.Role == wire.MemberAdmin && c.role() != wire.MemberOwner:
		c.sendError(r.ReqID, wire.CodeForbidden, "only the owner can issue admin invites")
		return
	case inv.MeshID != c.ms.id || inv.BrokerPubkey != c.b.keyHex || inv.MeshSlug != c.ms.slug:
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "the invite names another mesh or broker")
		return
	case inv.ExpiresAt <= time.Now().UnixMilli():
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "the invite has already expired")
		return
	}
	rec := &store.Invite{ID: inv.InviteID, Token: r.Token, Role: inv.Role, IssuerPubkey: inv.IssuerPubkey, ExpiresAt: inv.ExpiresAt, MaxUses: inv.MaxUses, CreatedAt: time.Now().UnixMilli()}
	ms := c.ms
	err = c.b.store.Update(func(tx *store.Tx) error {
		if _, err := store.GetInvite(tx, ms.id, rec.ID); err == nil {
			return store.ErrExists
		}
		if err := store.PutInvite(tx, ms.id, rec); err != nil {
			return err
		}
		_, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditInviteCreated, Actor: c.actor(), Payload: map[string]any{
			"inviteId": rec.ID, "role": rec.Role, "expiresAt": rec.ExpiresAt, "maxUses": rec.MaxUses}})
		return err
	})
	if errors.Is(err, store.ErrExists) {
		c.sendError(r.ReqID, wire.CodeInviteExists, "an invite with this id is already registered")
		return
	}
	if err != nil {
		c.storeFailed(r.ReqID, err, "could not store the invite", "the invite")
		return
	}
	c.reply(wire.InviteReply{Type: wire.TypeInvite, ReqID: r.ReqID, InviteInfo: rec.Info()})
}

func (c *conn) handleInviteList(env wire.Envelope) {
	if !c.requireReqID(env) || !c.requireAdmin(env.ReqID) {
		return
	}
	var invs []store.Invite
	err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		invs, err = store.ListInvites(tx, c.ms.id)
		return err
	})
	if err != nil {
		c.sendError(env.ReqID, wire.CodeInternal, "could not list invites")
		return
	}
	out := wire.Invites{Type: wire.TypeInvites, ReqID: env.ReqID, Invites: make([]wire.InviteInfo, 0, len(invs))}
	for i := range invs {
		out.Invites = append(out.Invites, invs[i].Info())
	}
	c.reply(out)
}

func (c *conn) handleInviteRevoke(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var r wire.InviteRevoke
	if err := wire.Decode(data, &r); err != nil || r.InviteID == "" {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, "invite_revoke needs inviteId")
		return
	}
	if !c.requireAdmin(r.ReqID) {
		return
	}
	ms := c.ms
	err := c.b.store.Update(func(tx *store.Tx) error {
		inv, err := store.GetInvite(tx, ms.id, r.InviteID)
		if err != nil {
			return err
		}
		if inv.RevokedAt != 0 {
			return nil // already revoked: nothing changes, nothing to record
		}
		inv.RevokedAt = time.Now().UnixMilli()
		if err := store.PutInvite(tx, ms.id, inv); err != nil {
			return err
		}
		_, err = store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditInviteRevoked, Actor: c.actor(),
			Payload: map[string]any{"inviteId": inv.ID}})
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		c.sendError(r.ReqID, wire.CodeInviteNotFound, "no invite with that id")
		return
	}
	if err != nil {
		c.storeFailed(r.ReqID, err, "could not revoke the invite", "the revocation")
		return
	}
	c.sendOK(r.ReqID)
}
