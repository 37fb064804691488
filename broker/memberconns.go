package broker

import "claudemesh/wire"

// checkMemberConns refuses a hello that would give its member more than
// --max-connections-per-member open connections in the mesh, its
// sessions' counted with its own (issue: with only the mesh's cap, one
// member could hold all of --max-connections-per-mesh and lock every
// other member out, and each new connection of a key walked all of that
// key's others). A hello that takes over a presence still connected (an
// agent reconnecting before its old connection timed out) replaces a
// connection instead of adding one and is let through. Caller holds
// ms.mu.
func (ms *meshState) checkMemberConns(b *Broker, mem *member, id helloIdentity) *handshakeError {
	max := b.cfg.MaxConnsPerMember
	n := ms.memberConns[mem.Pubkey]
	if max <= 0 || n < max {
		return nil
	}
	if id.presence {
		if p := ms.presences[presenceKey(id, mem.Pubkey)]; p != nil && p.conn != nil {
			return nil
		}
	}
	b.metrics.limitTripped.WithLabelValues("connections_per_member").Inc()
	conns := "connections"
	if n == 1 {
		conns = "connection"
	}
	return refuse(wire.CodeCapacity, "this member already has %d %s open in this mesh, the most it may have; close some, or ask the operator about --max-connections-per-member", n, conns)
}

// uncountConnLocked takes c off the mesh's and its member's connection
// counts (--max-connections-per-mesh, --max-connections-per-member), once:
// when it is replaced by a takeover of its presence (on this node or, in a
// cluster, on another: cluster_presence.go), or when it detaches.
// A replaced connection lingers until its reader ends (a second, or more
// if its client does not answer the close), and a takeover is never
// refused for --presence-rate (01-protocol: a re-attach never is), so
// counting replaced connections let a member pile them up past both caps
// with takeovers of its own presence. Caller holds ms.mu.
func (ms *meshState) uncountConnLocked(c *conn) {
	if c.uncounted {
		return
	}
	c.uncounted = true
	ms.connCount--
	if ms.memberConns[c.mem.Pubkey]--; ms.memberConns[c.mem.Pubkey] <= 0 {
		delete(ms.memberConns, c.mem.Pubkey)
	}
}
