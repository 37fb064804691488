package broker

import (
	"fmt"
	"maps"
	"slices"

	json "github.com/go-json-experiment/json"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// Grants (01-protocol §6): each member decides, per sending member, which
// capabilities that sender has towards it — "dm" (box messages) and
// "broadcast" (multi messages to * and @group). A sender without an entry
// has both. Grants are keyed by member keys on both sides: a block covers
// every session of the blocked member, and protects every session of the
// blocking one, since a session is its member's agent. Topic posts are not
// affected: topic membership is their access control.

// maxGrantEntries bounds one recipient's explicit grants (one entry per
// sender member, so at most the size of a large mesh).
const maxGrantEntries = 10000

var validCaps = []string{wire.CapDM, wire.CapBroadcast}

// memberKeyOf is the member pubkey behind a recipient key: the key itself
// for a member, the parent's for a known session; "" otherwise. Caller
// holds ms.mu.
func (ms *meshState) memberKeyOf(key string) string {
	if m := ms.members[key]; m != nil {
		return m.Pubkey
	}
	if s := ms.sessions[key]; s != nil {
		if parent := ms.memberByID[s.ParentMemberID]; parent != nil {
			return parent.Pubkey
		}
	}
	return ""
}

// allows reports whether the recipient behind recipientKey lets
// senderMember use capability cap. Caller holds ms.mu.
func (ms *meshState) allows(recipientKey, senderMember, cap string) bool {
	rm := ms.memberKeyOf(recipientKey)
	if rm == "" || rm == senderMember {
		return true // a member never blocks itself (its own sessions)
	}
	caps, explicit := ms.grants[rm][senderMember]
	return !explicit || slices.Contains(caps, cap)
}

// grantsReply renders a recipient's explicit grants. Caller holds ms.mu or
// owns g.
func grantsReply(reqID string, g store.Grants) wire.Grants {
	out := wire.Grants{Type: wire.TypeGrants, ReqID: reqID, Grants: map[string][]string{}, Defaults: slices.Clone(wire.DefaultCaps)}
	for k, v := range g {
		out.Grants[k] = append([]string{}, v...)
	}
	return out
}

// grantsHash is what a grants_changed audit entry records: the SHA-256 of
// the recipient's explicit grants in canonical JSON. The recipient can
// check it against its own grants; other members learn that grants
// changed, not whom they concern.
func grantsHash(g store.Grants) string {
	raw, _ := json.Marshal(g, json.Deterministic(true))
	canon, err := cmcrypto.CanonicalJSON(raw)
	if err != nil {
		canon = raw
	}
	return cmcrypto.SHA256Hex(canon)
}

func (c *conn) handleGrantsGet(env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	ms := c.ms
	ms.mu.Lock()
	out := grantsReply(env.ReqID, ms.grants[c.mem.Pubkey])
	ms.mu.Unlock()
	c.reply(out)
}

func (c *conn) handleGrantsSet(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	var r wire.GrantsSet
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	if len(r.Grants) > maxGrantEntries {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("at most %d senders per grants_set", maxGrantEntries))
		return
	}
	me := c.mem.Pubkey
	change := map[string][]string{} // nil value: back to the defaults
	ms := c.ms
	ms.mu.Lock()
	for sender, caps := range r.Grants {
		switch {
		case !wire.IsHex(sender, 64):
			ms.mu.Unlock()
			c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("grants are keyed by 64-hex member pubkeys, not %q", sender))
			return
		case sender == me:
			ms.mu.Unlock()
			c.sendError(r.ReqID, wire.CodeInvalidArgument, "grants are for other members; you always reach yourself")
			return
		case ms.members[sender] == nil:
			ms.mu.Unlock()
			msg := "no member of this mesh has key " + sender[:8] + "…"
			if ms.sessions[sender] != nil {
				msg = sender[:8] + "… is an agent session; grants name its member, which covers all its sessions"
			}
			c.sendError(r.ReqID, wire.CodeUnknownTarget, msg)
			return
		}
		if caps == nil || *caps == nil {
			// null (a JSON decoder may leave a nil pointer or a nil
			// slice): back to the defaults.
			change[sender] = nil
			continue
		}
		norm := []string{}
		for _, cp := range *caps {
			if !slices.Contains(validCaps, cp) {
				ms.mu.Unlock()
				c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("unknown capability %q (dm, broadcast)", cp))
				return
			}
			if !slices.Contains(norm, cp) {
				norm = append(norm, cp)
			}
		}
		slices.Sort(norm)
		change[sender] = norm
	}
	ms.mu.Unlock()
	var next store.Grants
	var changed bool
	c.adminTx(r.ReqID, func(tx *store.Tx, _ *store.Member) *adminError {
		changed = false
		cur, err := store.GetGrants(tx, ms.id, me)
		if err != nil {
			return refusal(wire.CodeInternal, "could not read your grants")
		}
		next = maps.Clone(cur)
		for sender, caps := range change {
			if caps == nil {
				delete(next, sender)
			} else {
				next[sender] = caps
			}
		}
		if len(next) > maxGrantEntries {
			return refusal(wire.CodeInvalidArgument, fmt.Sprintf("at most %d explicit grants", maxGrantEntries))
		}
		if maps.EqualFunc(cur, next, slices.Equal) {
			return nil // nothing changes, nothing to record
		}
		changed = true
		if err := store.PutGrants(tx, ms.id, me, next); err != nil {
			return refusal(wire.CodeInternal, "could not save your grants")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditGrantsChanged, Actor: me,
			Payload: map[string]any{"grantsHash": grantsHash(next), "explicit": len(next)}}); err != nil {
			return refusal(wire.CodeInternal, "could not record the change")
		}
		return nil
	}, func() {
		ms.mu.Lock()
		if changed {
			if len(next) == 0 {
				delete(ms.grants, me)
			} else {
				ms.grants[me] = next
			}
		}
		out := grantsReply(r.ReqID, ms.grants[me])
		ms.mu.Unlock()
		c.reply(out)
	})
}
