package broker

import (
	"testing"
	"time"

	"claudemesh/wire"
)

// nextMemberEvent reads until a member_changed system push arrives,
// skipping presence events and the answers of requests.
func (r *rawConn) nextMemberEvent() wire.MemberEvent {
	r.t.Helper()
	for {
		var p struct {
			wire.Push
			EventData wire.MemberEvent `json:"eventData"`
		}
		data := r.read()
		env, _ := wire.Peek(data)
		if env.Type != wire.TypePush {
			continue
		}
		if err := wire.Decode(data, &p); err != nil {
			r.t.Fatal(err)
		}
		if p.Subtype == wire.SubtypeSystem && p.Event == wire.EventMemberChanged {
			if p.MessageID == "" || p.CreatedAt == 0 {
				r.t.Fatalf("member_changed without messageId or createdAt: %s", data)
			}
			return p.EventData
		}
	}
}

// TestMemberChangesArePushed: every change of the member list (join, role
// change, ban, unban, leave) reaches connected presences as a
// member_changed system push carrying the member's new record, and never a
// transient connection.
func TestMemberChangesArePushed(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	ac := connect(t, b, alice, true, func(h *wire.Hello) { h.SessionID = "daemon"; h.Role = wire.RoleControlPlane })
	admin := connect(t, b, alice, false, nil)

	bob := addMember(t, b, alice, "team", "bob")
	ev := ac.nextMemberEvent()
	if ev.Change != wire.MemberJoined || ev.Member.Pubkey != bob.pub() || ev.Member.DisplayName != "bob" ||
		ev.Member.MemberRole != wire.MemberMember || ev.Member.MemberID != bob.memberID || ev.Member.JoinedAt == 0 || ev.Previous != nil {
		t.Fatalf("joined: %+v", ev)
	}

	carol := addMember(t, b, alice, "team", "carol")
	if ev := ac.nextMemberEvent(); ev.Change != wire.MemberJoined || ev.Member.DisplayName != "carol" {
		t.Fatalf("carol joined: %+v", ev)
	}

	var res wire.AdminResult
	admin.request(map[string]any{"type": "set_role", "target": "bob", "role": "admin"}, &res, wire.TypeAdminResult)
	ev = ac.nextMemberEvent()
	if ev.Change != wire.MemberRoleChanged || ev.Member.MemberRole != wire.MemberAdmin || ev.Previous == nil || ev.Previous.MemberRole != wire.MemberMember {
		t.Fatalf("role_changed: %+v", ev)
	}

	// bob's own presence hears of his ban before its connection closes.
	bc := connect(t, b, bob, true, nil)
	admin.request(map[string]any{"type": "ban", "target": "bob", "reason": "test"}, &res, wire.TypeAdminResult)
	ev = ac.nextMemberEvent()
	if ev.Change != wire.MemberBanned || ev.Member.Pubkey != bob.pub() || ev.Member.RevokedAt == 0 {
		t.Fatalf("banned: %+v", ev)
	}
	if ev := bc.nextMemberEvent(); ev.Change != wire.MemberBanned {
		t.Fatalf("bob's own presence: %+v", ev)
	}
	admin.request(map[string]any{"type": "unban", "target": bob.pub()}, &res, wire.TypeAdminResult)
	ev = ac.nextMemberEvent()
	if ev.Change != wire.MemberUnbanned || ev.Member.RevokedAt != 0 {
		t.Fatalf("unbanned: %+v", ev)
	}

	cc := connect(t, b, carol, false, nil)
	var ok wire.OK
	cc.request(map[string]any{"type": "mesh_leave"}, &ok, wire.TypeOK)
	ev = ac.nextMemberEvent()
	if ev.Change != wire.MemberLeft || ev.Member.Pubkey != carol.pub() {
		t.Fatalf("left: %+v", ev)
	}

	// The transient connection got answers only, never a system push.
	admin.expectNoSystemPush(100 * time.Millisecond)
}

// expectNoSystemPush checks that no system push is waiting or arrives
// within d.
func (r *rawConn) expectNoSystemPush(d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		data, err := r.readErr(time.Until(deadline))
		if err == errNoFrame {
			return
		}
		if err != nil {
			r.t.Fatalf("connection closed: %v", err)
		}
		var p wire.Push
		if wire.Decode(data, &p) == nil && p.Type == wire.TypePush && p.Subtype == wire.SubtypeSystem {
			r.t.Fatalf("transient connection got a system push: %s", data)
		}
	}
}
