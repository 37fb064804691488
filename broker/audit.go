package broker

import (
	"fmt"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// The audit chain on the wire (01-protocol §6 "Audit"): any member may read
// its mesh's chain and ask for a signed checkpoint, because the point of
// the chain is that members, not the operator, can check it. Entries are
// appended by store.AppendAudit inside the transaction of the change they
// record (see the callers: rest.go, admin.go, requests.go, grants.go,
// skills.go, route.go for --audit-messages).

const (
	maxAuditQuery     = 500
	defaultAuditQuery = 100
)

// peerJSON is how an audit payload names a member or session.
type peerJSON struct {
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	MemberID    string `json:"memberId,omitempty"`
}

func memberJSON(m *store.Member) peerJSON {
	return peerJSON{Pubkey: m.Pubkey, DisplayName: m.DisplayName, MemberID: m.ID}
}

// actor is the key an audit entry names for an action over c: the member
// key, which holds the authority, even when a session acted for it.
func (c *conn) actor() string { return c.mem.Pubkey }

// audited runs fn and appends ev in the same group-committed transaction.
func (b *Broker) audited(meshID string, ev func() store.AuditEvent, fn func(tx *store.Tx) error) error {
	return b.store.Update(func(tx *store.Tx) error {
		if fn != nil {
			if err := fn(tx); err != nil {
				return err
			}
		}
		_, err := store.AppendAudit(tx, meshID, ev())
		return err
	})
}

func (c *conn) handleAuditQuery(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var q wire.AuditQuery
	if err := wire.Decode(data, &q); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	limit := q.Limit
	switch {
	case limit == 0:
		limit = defaultAuditQuery
	case limit < 0 || limit > maxAuditQuery:
		c.sendError(q.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("limit is 1 to %d", maxAuditQuery))
		return
	}
	if q.EventType != "" && !wire.ValidText(q.EventType, 64) {
		c.sendError(q.ReqID, wire.CodeInvalidArgument, "eventType is a snake_case event name")
		return
	}
	out := wire.AuditEntries{Type: wire.TypeAuditEntries, ReqID: q.ReqID}
	err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		out.Entries, out.More, err = store.QueryAudit(tx, c.ms.id, store.AuditQuery{Limit: limit, Before: q.Before, EventType: q.EventType})
		return err
	})
	if err != nil {
		c.b.log.Error("audit query", "mesh", c.ms.id, "err", err)
		c.sendError(q.ReqID, wire.CodeInternal, "could not read the audit log")
		return
	}
	c.reply(out)
}

func (c *conn) handleAuditCheckpoint(env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var seq uint64
	var hash string
	err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		seq, hash, err = store.AuditHead(tx, c.ms.id)
		return err
	})
	if err != nil {
		c.b.log.Error("audit head", "mesh", c.ms.id, "err", err)
		c.sendError(env.ReqID, wire.CodeInternal, "could not read the audit log")
		return
	}
	s, err := cmcrypto.AuditHeadString(c.ms.id, seq, hash)
	if err != nil {
		c.sendError(env.ReqID, wire.CodeInternal, "could not sign the audit head")
		return
	}
	c.reply(wire.AuditCheckpoint{Type: wire.TypeAuditCheckpoint, ReqID: env.ReqID, MeshID: c.ms.id,
		Seq: seq, Hash: hash, Signature: c.b.key.Sign(s), BrokerPubkey: c.b.keyHex})
}
