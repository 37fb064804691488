package broker

import (
	"time"

	"claudemesh/cluster"
	"claudemesh/store"
	"claudemesh/wire"
)

// The hub of a cluster node follows the other nodes' writes. The node that
// took a request updates its own hub in the write's callback, as a single
// broker does; every other node learns of the write from the log entry it
// replays, as the list of records it changed (with their values before and
// after), and brings its hub to the same place here: new meshes, members
// and their bans, roles and profiles, known sessions, grants, pending
// counts, and pushes to the connections it holds — queued messages and
// receipts through the ordinary refill (FIFO, flow control and priority
// holding as on one node), topic posts through the ordinary fan-out.
// Everything runs on the engine's dispatcher, in log order.

// closeAction is a connection to close once the mesh lock is released.
type closeAction struct {
	c            *conn
	code         int
	reason, text string
	errCode      string
}

func (h *hub) applyRemote(changes []cluster.Change) {
	type post struct {
		ms    *meshState
		topic string
		p     *store.TopicPost
	}
	type join struct {
		ms      *meshState
		topicID string
		m       *member
	}
	type sealed struct {
		ms      *meshState
		topicID string
		keyGen  int
	}
	var (
		posts   []post
		joins   []join
		seals   = map[sealed]map[string]bool{} // the recipients of new seals
		closes  []closeAction
		kept    []keptSession
		fresh   = map[string]bool{} // meshes loaded whole from this entry
		removed = map[string]bool{} // meshes whose removal this entry records by the operator
		// the session keys this entry deletes, by mesh
		deleted = map[string]map[string]bool{}
	)
	for _, c := range changes {
		meshID, kind, _ := store.ClassifyChange(c.Path, c.Key)
		if kind == store.ChangeAudit && c.New != nil {
			if e, err := store.DecodeAuditEntry(c.New); err == nil && e.EventType == wire.AuditMemberRemoved {
				removed[meshID] = true
			}
		}
		if kind == store.ChangeSession && c.New == nil {
			if deleted[meshID] == nil {
				deleted[meshID] = map[string]bool{}
			}
			deleted[meshID][store.HexKey(c.Key)] = true
		}
	}
	for _, c := range changes {
		meshID, kind, sub := store.ClassifyChange(c.Path, c.Key)
		if meshID == "" || fresh[meshID] {
			continue
		}
		ms := h.mesh(meshID)
		if ms == nil {
			// A mesh another node created: load it as it is now, this
			// entry included.
			if err := h.loadMesh(meshID); err != nil {
				h.b.log.Error("cluster: load a new mesh", "mesh", meshID, "err", err)
			}
			fresh[meshID] = true
			continue
		}
		ms.mu.Lock()
		switch kind {
		case store.ChangeMember:
			closes = append(closes, h.remoteMember(ms, c, removed[meshID], deleted[meshID])...)
		case store.ChangeSession:
			pk := store.HexKey(c.Key)
			if c.New == nil {
				if w := ms.sessionWrites[pk]; w != nil && !w.cancelled.Load() {
					// This node's write of the key is still to
					// come: it comes after this entry in the log
					// (its callback, which ends it, would have run
					// before this one), and records the key again
					// over none (store.PutSessionOver,
					// UpdateSession). Its transaction may already
					// have run, on the node's copy, which is
					// ahead of memory by the entries still to be
					// handed over here: forgotten in memory now,
					// the key stayed stored, its recording
					// unknown to the one node that forgets it.
				} else if ms.connectedSessionLocked(pk) {
					// Forgotten by a node that did not see it
					// come back (its expiry or eviction ran on a
					// stale view): checked again below.
					kept = append(kept, keptSession{ms, pk})
				} else {
					ms.deleteSessionLocked(pk)
				}
			} else if s, err := store.DecodeSession(c.New); err == nil && ms.members[pk] == nil {
				// Not over a later recording memory holds: this
				// node's hello whose write is still to come (it
				// comes after this entry in the log, and replaces
				// it there too: store.PutSession). The order of
				// the writes decides, not HelloAt: two nodes'
				// clocks need not agree.
				if w := ms.sessionWrites[pk]; w == nil || !w.hello || w.cancelled.Load() {
					ms.putSessionLocked(pk, s)
				}
			}
		case store.ChangeAPIKey:
			ms.credentialsChangedLocked() // revoked on another node
		case store.ChangeGrants:
			pk := store.HexKey(c.Key)
			if c.New == nil {
				delete(ms.grants, pk)
			} else if g, err := store.DecodeGrants(c.New); err == nil {
				ms.grants[pk] = g
			}
		case store.ChangeQueue:
			h.remoteQueue(ms, c)
		case store.ChangeTopic:
			ms.topics = nil // reloaded from the store on next use
		case store.ChangeTopicMember:
			ms.topics = nil
			if c.New == nil {
				ms.credentialsChangedLocked() // removed or left through another node: its API-key streams end
			}
			// A member who joined (or was added) through another node:
			// the key holders connected here are told, as that node
			// told its own (announceJoin), so the key is sealed for it
			// in about the time it takes on one broker, not at a key
			// holder's next sweep.
			if c.Old == nil && c.New != nil {
				if topicID, pub, ok := store.TopicMemberKey(c.Key); ok && ms.members[pub] != nil {
					joins = append(joins, join{ms, topicID, ms.members[pub]})
				}
			}
		case store.ChangeTopicSeal:
			ms.topics = nil
			// A key sealed through another node for a member connected
			// here: told here, as that node told its own
			// (announceSealed).
			if c.New != nil {
				if topicID, to, gen, ok := store.TopicSealKey(c.Key); ok {
					k := sealed{ms, topicID, gen}
					if seals[k] == nil {
						seals[k] = map[string]bool{}
					}
					seals[k][to] = true
				}
			}
		case store.ChangeTopicPost:
			if c.Old == nil && c.New != nil {
				if p, err := store.DecodeTopicPost(sub, store.Be64(c.Key), c.New); err == nil {
					posts = append(posts, post{ms, sub, p})
				}
			}
		}
		ms.mu.Unlock()
	}
	// A session deleted by another node while connected here stays known
	// (else DMs to it are refused as unknown_recipient until it
	// reconnects), unless the same entry ended it (its member banned or
	// removed), and its record is written again: the store must know it
	// too, on every node.
	for _, k := range kept {
		k.ms.mu.Lock()
		var persist func(tx *store.Tx) error
		var written func(error)
		if s := k.ms.sessions[k.key]; s != nil && k.ms.connectedSessionLocked(k.key) {
			persist, written = k.ms.sessionWriteLocked(s, false, nil)
		}
		k.ms.mu.Unlock()
		if persist != nil {
			go h.writeSession(persist, written) // off the dispatcher: Submit may block
		}
	}
	for _, p := range posts {
		p.ms.mu.Lock()
		_, err := h.b.topicsLocked(p.ms)
		p.ms.mu.Unlock()
		if err == nil {
			h.b.fanOutTopicPost(p.ms, p.topic, p.p)
		}
	}
	for _, j := range joins {
		h.b.announceJoin(j.ms, j.topicID, j.m)
	}
	for k, to := range seals {
		if t, _, ok := h.b.currentTopic(k.ms, k.topicID); ok {
			h.b.announceSealed(k.ms, &t, k.keyGen, to)
		}
	}
	for _, a := range closes {
		if a.errCode != "" {
			a.c.sendError("", a.errCode, a.text)
		}
		a.c.endPresence.Store(true)
		a.c.closeWith(a.code, a.reason)
	}
}

// keptSession is a session key another node deleted while it is connected
// here.
type keptSession struct {
	ms  *meshState
	key string
}

// connectedSessionLocked reports whether a session key has a connection
// here that is open, current (not replaced) and not closing, of a member
// still active. Caller holds ms.mu.
func (ms *meshState) connectedSessionLocked(key string) bool {
	for c := range ms.conns[key] {
		if !c.closed && c.pres != nil && !c.closeDecided.Load() && c.pubkey != c.mem.Pubkey && ms.activeMember(c.mem.Pubkey) == c.mem {
			return true
		}
	}
	return false
}

// remoteMember applies a change of a member record; deleted are the
// session keys the same entry deletes. Caller holds ms.mu.
func (h *hub) remoteMember(ms *meshState, c cluster.Change, byOperator bool, deleted map[string]bool) []closeAction {
	// The member's sessions known here that its ban's or removal's
	// transaction did not find (accepted here since it committed) are
	// forgotten on disk too, with what was queued for them meanwhile.
	forgetLate := func(m *member) {
		var late []*store.Session
		for _, s := range ms.forgetMemberSessionsLocked(m.ID) {
			if !deleted[s.Pubkey] {
				late = append(late, s)
			}
		}
		if len(late) > 0 {
			go h.forgetSessions(ms, late) // off the dispatcher: Submit may block
		}
	}
	var old, cur *store.Member
	if c.Old != nil {
		old, _ = store.DecodeMember(c.Old)
	}
	if c.New != nil {
		cur, _ = store.DecodeMember(c.New)
	}
	switch {
	case old == nil && cur == nil:
		return nil
	case cur == nil:
		m := ms.memberByID[old.ID]
		if m == nil {
			return nil
		}
		closes := ms.connsOf(m)
		forgetLate(m)
		delete(ms.grants, m.Pubkey)
		// Its presences held by other nodes end here; those held here
		// end as their connections close.
		for _, p := range ms.presences {
			if p.member == m && p.node != "" {
				ms.endPresence(p)
			}
		}
		ms.removeMember(m)
		ms.topics = nil
		ms.memberChanged(wire.MemberLeft, m, nil)
		out := make([]closeAction, 0, len(closes))
		for _, cc := range closes {
			if byOperator {
				out = append(out, closeAction{c: cc, code: wire.CloseKicked, reason: wire.ReasonRemoved, errCode: wire.ReasonRemoved,
					text: "You were removed from \"" + ms.name + "\" by the broker's operator. Ask the mesh owner for a new invite to rejoin."})
			} else {
				out = append(out, closeAction{c: cc, code: wire.CloseNormal, reason: wire.ReasonLeft})
			}
		}
		return out
	}
	m := ms.memberByID[cur.ID]
	if m == nil {
		m = ms.addMember(*cur, h.b.cfg)
		ms.topics = nil
		ms.memberChanged(wire.MemberJoined, m, nil)
		return nil
	}
	prev := m.Member
	m.setRecord(*cur)
	var out []closeAction
	switch {
	case prev.RevokedAt == 0 && cur.RevokedAt != 0:
		ms.memberChanged(wire.MemberBanned, m, nil)
		// The ban's session deletions come in the same entry (before
		// or after this); a session accepted here since the ban
		// committed is forgotten too, also on disk (its record is
		// written if an unban committed meanwhile: admin.go).
		forgetLate(m)
		delete(ms.unacked, m.Pubkey) // its queue is dropped
		for _, cc := range ms.connsOf(m) {
			out = append(out, closeAction{c: cc, code: wire.CloseBanned, reason: wire.ReasonBanned, errCode: wire.CodeRevoked, text: bannedMessage(ms.name)})
		}
		for _, p := range ms.presences {
			if p.member == m && p.conn == nil {
				ms.endPresence(p)
			}
		}
		ms.topics = nil
	case prev.RevokedAt != 0 && cur.RevokedAt == 0:
		ms.memberChanged(wire.MemberUnbanned, m, nil)
		ms.topics = nil
	}
	if prev.Role != cur.Role {
		ms.memberChanged(wire.MemberRoleChanged, m, &wire.MemberPrevious{MemberRole: prev.Role})
	}
	if prev.DisplayName != cur.DisplayName {
		ms.memberChanged(wire.MemberRenamed, m, &wire.MemberPrevious{DisplayName: prev.DisplayName})
	}
	if prev.Status != cur.Status {
		m.statusSetAt = time.Now()
		if cur.Status == wire.StatusIdle {
			for _, t := range ms.targets(m.Pubkey) {
				t.refillLocked()
			}
		}
	}
	return out
}

// connsOf lists the live connections of a member and of its sessions.
// Caller holds ms.mu.
func (ms *meshState) connsOf(m *member) []*conn {
	var out []*conn
	for _, set := range ms.conns {
		for cc := range set {
			if cc.mem == m {
				out = append(out, cc)
			}
		}
	}
	return out
}

// remoteQueue applies a queue entry another node added or removed: pending
// counts, and what this node's connections of the recipient are sent.
// Caller holds ms.mu.
func (h *hub) remoteQueue(ms *meshState, c cluster.Change) {
	recipient, _, ok := store.QueueKey(c.Key)
	if !ok {
		return
	}
	switch {
	case c.Old == nil && c.New != nil:
		e, err := store.DecodeQueueEntry(c.New)
		if err != nil {
			return
		}
		if !e.Receipt {
			ms.holdLocked(recipient, e.From, e.Charge)
			h.b.metrics.pending.Add(1)
		}
		targets := ms.targets(recipient)
		for _, t := range targets {
			t.refillNewLocked()
		}
		if e.Receipt {
			// A `send --wait` connected here waits for this receipt.
			var r wire.Receipt
			if wire.Decode(e.Frame, &r) == nil {
				if og := ms.receiptCameLocked(r.MessageID); og != nil {
					isTarget := false
					for _, t := range targets {
						isTarget = isTarget || t == og.conn
					}
					if !isTarget && !og.conn.closed {
						og.conn.enqueue(e.Frame)
					}
				}
			}
		}
	case c.Old != nil && c.New == nil:
		e, err := store.DecodeQueueEntry(c.Old)
		if err != nil {
			return
		}
		for cc := range ms.conns[recipient] {
			cc.dropInflightLocked(e.ID)
			if cc.behindLocked() {
				cc.requestRefill()
			}
		}
		if !e.Receipt {
			ms.releaseLocked(recipient, e.From, e.Charge)
			h.b.metrics.pending.Sub(1)
		}
	}
}
