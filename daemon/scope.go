package daemon

import "claudemesh/wire"

// sessionScope is what one registered agent session sees of the daemon's
// inbox and events (03-daemon "Events": "only events for its mesh, and only
// messages addressed to its session, its member, a topic it belongs to, or
// a broadcast"). It is the one place this rule lives: the inbox listing,
// the SSE stream (live and replayed), read state and the hook all ask it.
//
// Reading of the rule, in docs/protocol.md "Readings": a session sees
//   - every row addressed to its own session key: DMs to it, and the
//     copies of broadcasts and @group messages whose sender listed it;
//   - DMs addressed to its member key (kind box): one stored row that every
//     session of the member, and the human, sees;
//   - never a row addressed to a sibling session, and never the member's
//     own copy of a broadcast or group message (the session has a copy of
//     its own when the sender listed it, and would otherwise see it twice);
//   - of the rows it shares with its member (member DMs, topic posts), only
//     those stored after the session first registered (from): what came
//     before is the member's history, which a new agent session is not
//     handed as unread (its human has it in `inbox`).
//
// Topic rows extend the switch below (topics are stored once, for the
// member, and a session sees those of the topics its member belongs to).
type sessionScope struct {
	meshID  string
	session string // the session's pubkey
	member  string // its member's pubkey
	from    uint64 // rows shared with the member up to this sequence predate the session
}

// sees reports whether a stored row is the session's to see.
func (s *sessionScope) sees(r *inboxRow) bool {
	if s == nil {
		return true // not a session: the human sees everything
	}
	if r.MeshID != s.meshID {
		return false
	}
	switch {
	case r.RecipientPubkey == s.session:
		return true
	case r.RecipientPubkey == s.member:
		if r.Seq <= s.from {
			return false
		}
		switch r.Kind {
		case wire.KindBox:
			return true
		case wire.KindTopic:
			// Topic posts are stored once, for the member, and only for
			// topics it belongs to; its sessions see them all but their
			// own.
			return r.SenderPubkey != s.session
		}
	}
	return false
}

// owns reports whether the row is the session's alone (addressed to its
// key), so its read state is the row's; rows it shares with its member
// keep a read state per session.
func (s *sessionScope) owns(r *inboxRow) bool {
	return s == nil || r.RecipientPubkey == s.session
}

// seesOutbox reports whether an outbox row (its status events) is the
// session's: one it sent.
func (s *sessionScope) seesOutbox(r *outboxRow) bool {
	return s == nil || r.SenderPubkey == s.session
}

// seesMesh reports whether a mesh-level event (presence, broker status) is
// for the session's mesh.
func (s *sessionScope) seesMesh(meshID string) bool {
	return s == nil || meshID == "" || meshID == s.meshID
}
