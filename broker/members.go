package broker

import (
	"time"

	"claudemesh/wire"
)

// Member-list change events (docs/protocol.md "member_changed"). Clients
// that keep a copy of the member list (the daemon resolves names from one)
// learn of every change as it happens instead of answering from a stale
// copy until their next members_list.

// memberChanged tells every presence of the mesh that member m's record
// changed: change is one of the wire.Member* constants, prev the old name
// or role of a renamed or role_changed member (nil otherwise). It is the
// one function every action that changes the member list calls — join,
// leave, ban, unban, role change, rename, ownership transfer — after the
// change is committed and applied to the hub. For MemberLeft, m is the
// record as it was before removal. Caller holds ms.mu.
//
// Like presence events it is a system push: not queued, not acked, and not
// sent to transient connections (which receive no topology events). The
// member's own presences get it too, so a daemon learns its own new role.
func (ms *meshState) memberChanged(change string, m *member, prev *wire.MemberPrevious) {
	ms.credentialsChangedLocked() // a ban, a departure: API-key streams check their member
	row := ms.memberRow(m, ms.memberOnline(m))
	frame := wire.MustEncode(wire.Push{
		Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: wire.EventMemberChanged,
		MessageID: newID(), CreatedAt: time.Now().UnixMilli(),
		EventData: wire.MemberEvent{Change: change, Member: row, Previous: prev},
	})
	for _, p := range ms.presences {
		if p.conn != nil {
			p.conn.enqueue(frame)
		}
	}
}

// memberOnline reports whether one of m's presences (member or session) is
// connected, as members_list's `online`. Caller holds ms.mu.
func (ms *meshState) memberOnline(m *member) bool {
	for _, p := range ms.presences {
		if p.member == m && p.online() {
			return true
		}
	}
	return false
}

// memberRow is a member as members_list shows it.
func (ms *meshState) memberRow(m *member, online bool) wire.Member {
	return wire.Member{
		MemberID: m.ID, Pubkey: m.Pubkey, DisplayName: m.DisplayName, MemberRole: m.Role,
		JoinedAt: m.JoinedAt, LastSeenAt: m.LastSeenAt, Online: online, RevokedAt: m.RevokedAt,
	}
}
