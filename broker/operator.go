package broker

import (
	"errors"
	"net/http"

	"claudemesh/store"
	"claudemesh/wire"
)

// Operator membership routes (docs/operating-a-broker.md "Removing a
// member"). The operator runs the broker but is not a member of its meshes:
// it can list a mesh's members and remove one, which is recorded in the
// mesh's audit chain under the broker's key so every member can see that
// the operator acted. It cannot read messages, ban, or change roles.

// meshByRef finds a mesh by id or slug.
func (h *hub) meshByRef(ref string) *meshState {
	if ms := h.mesh(ref); ms != nil {
		return ms
	}
	for _, ms := range h.meshList() {
		if ms.slug == ref {
			return ms
		}
	}
	return nil
}

func (b *Broker) operatorMesh(w http.ResponseWriter, r *http.Request) *meshState {
	if !b.operatorAuthorized(r) {
		restError(w, http.StatusUnauthorized, wire.CodeUnauthorized, "operator token required (Authorization: Bearer <operator.token>)")
		return nil
	}
	ms := b.hub.meshByRef(r.PathValue("mesh"))
	if ms == nil {
		restError(w, http.StatusNotFound, wire.CodeMeshNotFound, "this broker has no mesh with that id or slug")
		return nil
	}
	return ms
}

// handleOperatorMembers is GET /v1/admin/meshes/{mesh}/members.
func (b *Broker) handleOperatorMembers(w http.ResponseWriter, r *http.Request) {
	ms := b.operatorMesh(w, r)
	if ms == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"meshId": ms.id, "slug": ms.slug, "members": ms.memberList()})
}

// removedJSON answers a removal.
type removedJSON struct {
	MeshID            string      `json:"meshId"`
	Removed           wire.Member `json:"removed"`
	DroppedDeliveries int         `json:"droppedDeliveries"`
}

// handleRemoveMember is DELETE /v1/admin/meshes/{mesh}/members/{target}:
// target is a member id, a full pubkey, a pubkey prefix of ≥ 8 hex or a
// display name. The member is removed as by mesh_leave (record, sessions
// and queues gone; it may join again with a new invite), its connections
// end with an error frame saying so and 4001 `kicked`, so its clients stop
// reconnecting and tell their user. The owner cannot be removed.
func (b *Broker) handleRemoveMember(w http.ResponseWriter, r *http.Request) {
	ms := b.operatorMesh(w, r)
	if ms == nil {
		return
	}
	target := r.PathValue("target")
	ms.mu.Lock()
	var ts []adminTarget
	var t adminTarget
	var n int
	var sessionOf string
	if m := ms.memberByID[target]; m != nil {
		t, n = adminTarget{member: m, name: m.DisplayName}, 1
	} else {
		// Ambiguity over every match, sessions included (memberTarget).
		ts = ms.matchTargets(target)
		t, n, sessionOf = memberTarget(ts)
	}
	ms.mu.Unlock()
	switch {
	case n > 1:
		writeJSON(w, http.StatusConflict, map[string]any{"error": map[string]any{
			"code": wire.CodeAmbiguousTarget, "message": "several members or sessions match " + target + "; use a longer pubkey prefix",
			"candidates": candidatesOf(ts)}})
		return
	case n == 0 && sessionOf != "":
		restError(w, http.StatusNotFound, wire.CodeUnknownTarget, sessionOf+"; name the member to remove it")
		return
	case n == 0:
		restError(w, http.StatusNotFound, wire.CodeUnknownTarget, "no member of "+ms.slug+" matches "+target)
		return
	}
	memberID := t.member.ID
	var gone store.Member
	var dropped []store.Expired
	var sessions []string
	var refused *adminError
	done := make(chan error, 1)
	err := b.store.Submit(func(tx *store.Tx) error {
		refused, dropped, sessions = nil, nil, nil
		m, err := store.GetMember(tx, ms.id, memberID)
		if errors.Is(err, store.ErrNotFound) {
			refused = refusal(wire.CodeUnknownTarget, "that member is no longer in the mesh")
			return nil
		}
		if err != nil {
			return err
		}
		if m.Role == wire.MemberOwner {
			refused = refusal(wire.CodeForbidden, "the owner cannot be removed; the owner can hand the mesh over first (claudemesh mesh transfer)")
			return nil
		}
		if sessions, dropped, err = store.RemoveMember(tx, ms.id, m); err != nil {
			return err
		}
		_, err = store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditMemberRemoved, Actor: b.keyHex, Payload: map[string]any{
			"by": "operator", "member": memberJSON(m), "role": m.Role, "wasBanned": m.RevokedAt != 0, "droppedDeliveries": len(dropped)}})
		gone = *m
		return err
	}, func(err error) {
		if err == nil && refused == nil {
			b.afterRemoval(ms, memberID, sessions, dropped)
		}
		done <- err
	})
	if err == nil {
		err = <-done
	}
	switch {
	case err != nil:
		b.log.Error("remove member", "mesh", ms.id, "err", err)
		restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not remove the member; nothing changed")
	case refused != nil && refused.code == wire.CodeForbidden:
		restError(w, http.StatusForbidden, refused.code, refused.msg)
	case refused != nil:
		restError(w, http.StatusNotFound, refused.code, refused.msg)
	default:
		b.log.Info("member removed by the operator", "mesh", ms.id, "member", gone.ID)
		writeJSON(w, http.StatusOK, removedJSON{MeshID: ms.id, DroppedDeliveries: len(dropped), Removed: wire.Member{
			MemberID: gone.ID, Pubkey: gone.Pubkey, DisplayName: gone.DisplayName, MemberRole: gone.Role,
			JoinedAt: gone.JoinedAt, LastSeenAt: gone.LastSeenAt, RevokedAt: gone.RevokedAt}})
	}
}

// afterRemoval applies a committed removal to the hub (commit-order
// callback): counters, sessions, the member, the mesh's member_changed
// push, and the member's connections.
func (b *Broker) afterRemoval(ms *meshState, memberID string, sessions []string, dropped []store.Expired) {
	b.hub.settleExpired(ms, dropped)
	var victims []*conn
	ms.mu.Lock()
	for _, k := range sessions {
		ms.deleteSessionLocked(k)
	}
	// Sessions accepted since the removal committed: what was queued for
	// them meanwhile is dropped too (not left until --queue-ttl, counted
	// against its senders' quotas).
	if late := ms.forgetMemberSessionsLocked(memberID); len(late) > 0 {
		go b.hub.forgetSessions(ms, late) // off the dispatcher: Submit may block
	}
	var gonePubkey string
	if m := ms.memberByID[memberID]; m != nil {
		gonePubkey = m.Pubkey
		for _, set := range ms.conns {
			for cc := range set {
				if cc.mem == m {
					victims = append(victims, cc)
				}
			}
		}
		delete(ms.grants, m.Pubkey)
		ms.removeMember(m)
		ms.memberChanged(wire.MemberLeft, m, nil)
	}
	ms.mu.Unlock()
	if gonePubkey != "" {
		b.topicsMemberGone(ms, gonePubkey) // its topics get a key it never had
	}
	msg := "You were removed from \"" + ms.name + "\" by the broker's operator. Ask the mesh owner for a new invite to rejoin."
	for _, v := range victims {
		v.sendError("", wire.ReasonRemoved, msg)
		v.endPresence.Store(true)
		v.closeWith(wire.CloseKicked, wire.ReasonRemoved)
	}
}
