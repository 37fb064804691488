package broker

import (
	"fmt"
	"time"

	"claudemesh/wire"
)

// presenceKey identifies a presence: a session key, or (member key,
// sessionId). One presence per identity is what stops ghost peers when an
// agent restarts (01-protocol §3).
func presenceKey(id helloIdentity, memberPubkey string) string {
	if id.session {
		return id.pubkey
	}
	return memberPubkey + "|" + id.sessionID
}

// replacedText is the error frame a connection gets before it is closed
// with session_replaced: where the connection that took its presence over
// comes from (its hello's hostname, its address; either may be ""). The
// same client reconnecting never reads it (its old connection is dead to
// it); a second process with the same keys (a daemon on a copied home)
// does, and must be told that it is not a network blip.
func replacedText(hostname, ip string) string {
	from := ""
	switch {
	case hostname != "" && ip != "":
		from = fmt.Sprintf(" from host %q (address %s)", hostname, ip)
	case hostname != "":
		from = fmt.Sprintf(" from host %q", hostname)
	case ip != "":
		from = " from address " + ip
	}
	return "another connection with this identity connected" + from + " and took over: two processes hold the same keys (a daemon on a copy of this home, or a second one started for it); each new connection closes the other's"
}

// attach registers an authenticated connection. Caller holds ms.mu. It
// returns the connection this one replaces, if any, for the caller to close
// after unlocking.
func (h *hub) attach(c *conn, id helloIdentity) (replaced *conn) {
	ms := c.ms
	h.mu.Lock()
	h.conns[c] = struct{}{}
	h.mu.Unlock()
	h.b.metrics.connsActive.Inc()
	h.b.metrics.connsTotal.Inc()
	ms.connCount++
	ms.memberConns[c.mem.Pubkey]++
	set := ms.conns[c.pubkey]
	if set == nil {
		set = map[*conn]struct{}{}
		ms.conns[c.pubkey] = set
	}
	set[c] = struct{}{}
	if c.transient {
		return nil
	}
	key := presenceKey(id, c.mem.Pubkey)
	p := ms.presences[key]
	now := time.Now()
	fresh := p == nil
	if !fresh {
		// Same identity again: re-attach silently, whether the old
		// connection is still open (replace it) or within its grace.
		if p.grace != nil {
			p.grace.Stop()
			p.grace = nil
		}
		if p.conn != nil {
			replaced = p.conn
			replaced.pres = nil // its close must not end this presence
			ms.setConnLocked(p, nil)
			// It is on its way out: off the counts now, so that
			// takeovers do not add up while replaced connections linger.
			ms.uncountConnLocked(replaced)
		}
		// Held by another node of a cluster (connected there, or in its
		// grace): this node takes it over, and the other closes its
		// connection (cluster_presence.go).
		p.node, p.epoch, p.remoteUp = "", "", false
		p.stamp = attachStamp(p)
	} else {
		p = &presence{key: key, id: newID(), connectedAt: now.UnixMilli(), status: wire.StatusIdle, statusAt: now, stamp: attachStamp(nil)}
		ms.presences[key] = p
		if !id.session {
			idx := ms.memberPresences[c.mem.Pubkey]
			if idx == nil {
				idx = map[string]*presence{}
				ms.memberPresences[c.mem.Pubkey] = idx
			}
			idx[key] = p
		}
	}
	p.pubkey, p.member, p.session = id.pubkey, c.mem, id.session
	p.role, p.sessionID, p.peerType = id.role, id.sessionID, id.peerType
	p.channel, p.model, p.cwd, p.hostname, p.pid = id.channel, id.model, id.cwd, id.hostname, id.pid
	p.attestation = id.attestation
	p.displayName = c.mem.DisplayName
	if id.session {
		p.displayName, p.groups = id.displayName, id.groups
	}
	ms.setConnLocked(p, c)
	c.pres = p
	c.startEventsLocked()
	ms.cluster().up(ms, p)
	if fresh {
		event := wire.EventPeerJoined
		if _, ok := ms.history[key]; ok {
			event = wire.EventPeerReturned
		}
		ms.history[key] = now.UnixMilli()
		ms.broadcastSystem(event, p)
	}
	// A member's first presence resets a stale `working` (a presence starts
	// idle); `dnd` is sticky.
	if !id.session && c.mem.Status == wire.StatusWorking && len(ms.memberPresences[c.mem.Pubkey]) == 1 {
		c.mem.Status = wire.StatusIdle
	}
	// Deliver what is queued. A new control-plane presence becomes the
	// member's target; the others stop being targets until it leaves.
	c.resumeWindowLocked()
	c.refillLocked()
	return replaced
}

// detach runs when a connection's reader ends: the presence enters its grace
// period (or ends at once after a clean close, kick, ban or leave).
func (h *hub) detach(c *conn) {
	if !c.authed.Load() {
		return
	}
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	h.b.metrics.connsActive.Dec()
	ms := c.ms
	ms.mu.Lock()
	h.detachLocked(c)
	seen := c.mem.LastSeenAt // what detachLocked stamped: the store gets the same time
	ms.mu.Unlock()
	if !c.transient {
		// Outside ms.mu: the write may wait for room in the committer's
		// queue, and the committer's callbacks take ms.mu.
		session := ""
		if c.pubkey != c.mem.Pubkey {
			session = c.pubkey // a session's last connection dates its expiry
		}
		h.noteSeen(ms.id, c.mem.ID, session, seen)
	}
}

func (h *hub) detachLocked(c *conn) {
	ms := c.ms
	c.closed = true
	ms.uncountConnLocked(c)
	if set := ms.conns[c.pubkey]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(ms.conns, c.pubkey)
		}
	}
	for id := range c.origins {
		if o := ms.origin[id]; o != nil && o.conn == c {
			ms.forgetOriginLocked(id, o)
		}
	}
	c.leftUnackedLocked()
	c.forgetInflightLocked()
	if !c.transient {
		now := time.Now().UnixMilli()
		c.mem.LastSeenAt = now
		if s := ms.sessions[c.pubkey]; s != nil && c.pubkey != c.mem.Pubkey {
			cp := *s // records are shared with persist closures: copy, never mutate
			cp.LastSeenAt = now
			ms.putSessionLocked(c.pubkey, &cp)
		}
	}
	p := c.pres
	if p == nil || p.conn != c {
		return // transient, or replaced by a newer connection
	}
	ms.setConnLocked(p, nil)
	if c.endPresence.Load() {
		ms.endPresence(p)
	} else {
		ms.cluster().up(ms, p) // listed, offline, for the grace period
		p.grace = time.AfterFunc(h.b.cfg.Grace, func() {
			ms.mu.Lock()
			defer ms.mu.Unlock()
			if ms.presences[p.key] == p && p.conn == nil {
				ms.endPresence(p)
			}
		})
	}
	// If this was the member's last control-plane presence, its other
	// member presences become targets now and should get the queue.
	if !p.session && p.role == wire.RoleControlPlane && ms.controlPlanes[p.member.Pubkey] == 0 {
		for _, t := range ms.targets(p.member.Pubkey) {
			t.refillLocked()
		}
	}
}

// endPresence removes a presence and tells the mesh. Caller holds ms.mu.
func (ms *meshState) endPresence(p *presence) {
	if p.grace != nil {
		p.grace.Stop()
		p.grace = nil
	}
	delete(ms.presences, p.key)
	ms.cluster().end(ms, p)
	ms.history[p.key] = time.Now().UnixMilli()
	if idx := ms.memberPresences[p.member.Pubkey]; idx != nil {
		delete(idx, p.key)
		if len(idx) == 0 {
			delete(ms.memberPresences, p.member.Pubkey)
		}
	}
	ms.broadcastSystem(wire.EventPeerLeft, p)
}

// setConnLocked sets (or clears) the live connection of p, counting each
// member's connected control-plane presences so that "is this connection a
// target of its member's messages" costs O(1) even for a member with
// thousands of presences. Caller holds ms.mu.
func (ms *meshState) setConnLocked(p *presence, c *conn) {
	control := !p.session && p.role == wire.RoleControlPlane
	if control && p.conn != nil {
		if ms.controlPlanes[p.member.Pubkey]--; ms.controlPlanes[p.member.Pubkey] <= 0 {
			delete(ms.controlPlanes, p.member.Pubkey)
		}
	}
	p.conn = c
	if control && c != nil {
		ms.controlPlanes[p.member.Pubkey]++
	}
}

// isTargetLocked reports whether c is among ms.targets(c.pubkey): a
// session's connection, a control-plane presence, or any member presence
// of a member with no control-plane presence connected (01-protocol §4).
// Caller holds ms.mu.
func (ms *meshState) isTargetLocked(c *conn) bool {
	p := c.pres
	if p == nil || p.conn != c {
		return false
	}
	if p.session || p.role == wire.RoleControlPlane {
		return true
	}
	return ms.controlPlanes[p.member.Pubkey] == 0
}
