package broker

import (
	"net/http"
	"strings"
	"testing"
	"time"

	json "github.com/go-json-experiment/json"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// sessionOf opens a session connection of member m.
func sessionOf(t *testing.T, b *Broker, m ident, name string) (*rawConn, ident) {
	t.Helper()
	key, _ := cmcrypto.GenerateIdentity()
	r := dial(t, b)
	r.write(r.sessionHello(m, key, func(h *wire.SessionHello) { h.DisplayName, h.SessionID = name, "s-"+name }))
	var ack wire.HelloAck
	r.next(&ack, wire.TypeHelloAck)
	return r, ident{key: key, meshID: m.meshID, memberID: m.memberID, name: name}
}

// TestGrantsBlock: a blocked sender's DMs are refused with
// blocked_by_recipient, from its member key and from its sessions; its
// broadcasts reach everyone but the blocker; the metric counts both.
func TestGrantsBlock(t *testing.T) {
	b := startBroker(t, nil)
	alice := createMesh(t, b, "grants", "alice")
	bob := addMember(t, b, alice, "grants", "bob")
	carol := addMember(t, b, alice, "grants", "carol")
	ac := connect(t, b, alice, false, nil)
	bc := connect(t, b, bob, true, nil)
	cc := connect(t, b, carol, true, nil)
	aliceSession, aliceSess := sessionOf(t, b, alice, "alice-agent")

	var g wire.Grants
	bc.request(map[string]any{"type": "grants_set", "grants": map[string]any{alice.pub(): []string{}}}, &g, wire.TypeGrants)
	if caps, ok := g.Grants[alice.pub()]; !ok || len(caps) != 0 || len(g.Defaults) != 2 {
		t.Fatalf("grants after block: %+v", g)
	}
	for _, c := range []struct {
		conn *rawConn
		from ident
	}{{ac, alice}, {aliceSession, aliceSess}} {
		ack := c.conn.sendAck(dm(t, c.from, bob.pub(), "let me in"))
		if ack.Error == nil || ack.Error.Code != wire.CodeBlockedByRecipient {
			t.Fatalf("DM from %s to a blocker: %+v", c.from.name, ack)
		}
	}
	ack := ac.sendAck(multi(t, alice, "*", "hello all", bob.pub(), carol.pub()))
	if ack.Error != nil || *ack.Pending != 1 {
		t.Fatalf("broadcast: %+v", ack)
	}
	if p := cc.nextPush(); openPush(t, &p, carol) != "hello all" {
		t.Fatal("carol did not get the broadcast")
	}
	bc.expectSilence(200 * time.Millisecond)
	if n := counterValue(t, b, "claudemesh_messages_dropped_by_grant_total", "dm"); n != 2 {
		t.Errorf("dropped dm = %v", n)
	}
	if n := counterValue(t, b, "claudemesh_messages_dropped_by_grant_total", "broadcast"); n != 1 {
		t.Errorf("dropped broadcast = %v", n)
	}
	// bob may still write to alice; carol is not affected.
	if ack := bc.sendAck(dm(t, bob, alice.pub(), "hi alice")); ack.Error != nil {
		t.Fatalf("blocker's own DM: %+v", ack.Error)
	}
	if ack := cc.sendAck(dm(t, carol, bob.pub(), "hi bob")); ack.Error != nil {
		t.Fatalf("carol's DM: %+v", ack.Error)
	}
	bc.nextPush()

	// dm only: DMs pass, broadcasts are still dropped for bob.
	g = wire.Grants{}
	bc.request(map[string]any{"type": "grants_set", "grants": map[string]any{alice.pub(): []string{"dm", "dm"}}}, &g, wire.TypeGrants)
	if caps := g.Grants[alice.pub()]; len(caps) != 1 || caps[0] != "dm" {
		t.Fatalf("grants: %+v", g)
	}
	if ack := ac.sendAck(dm(t, alice, bob.pub(), "now?")); ack.Error != nil {
		t.Fatalf("DM with dm granted: %+v", ack.Error)
	}
	if p := bc.nextPush(); openPush(t, &p, bob) != "now?" {
		t.Fatal("bob did not get the DM")
	}
	if ack := ac.sendAck(multi(t, alice, "*", "all again", bob.pub(), carol.pub())); *ack.Pending != 1 {
		t.Fatalf("broadcast with dm only: %+v", ack)
	}
	cc.nextPush()
	bc.expectSilence(200 * time.Millisecond)

	// null: back to the defaults; grants_get agrees.
	bc.request(map[string]any{"type": "grants_set", "grants": map[string]any{alice.pub(): nil}}, &g, wire.TypeGrants)
	g = wire.Grants{} // decoding merges into a map that is already there
	bc.request(map[string]any{"type": "grants_get"}, &g, wire.TypeGrants)
	if len(g.Grants) != 0 {
		t.Fatalf("grants after reset: %+v", g)
	}
	if ack := ac.sendAck(multi(t, alice, "*", "third", bob.pub(), carol.pub())); *ack.Pending != 2 {
		t.Fatalf("broadcast after reset: %+v", ack)
	}
	bc.nextPush()
	cc.nextPush()

	// Bad input.
	var e wire.Error
	for _, grants := range []map[string]any{
		{bob.pub(): []string{}},          // self
		{alice.pub(): []string{"admin"}}, // unknown capability
		{"abc": []string{}},              // not a key
		{aliceSess.pub(): []string{}},    // a session, not a member
		{strings.Repeat("ab", 32): nil},  // nobody
	} {
		bc.request(map[string]any{"type": "grants_set", "grants": grants}, &e, wire.TypeError)
		if e.Code != wire.CodeInvalidArgument && e.Code != wire.CodeUnknownTarget {
			t.Errorf("grants_set %v: %+v", grants, e)
		}
	}

	// The chain records each change without naming the blocked sender;
	// the grants survive a restart.
	bc.request(map[string]any{"type": "grants_set", "grants": map[string]any{carol.pub(): []string{"broadcast"}}}, &g, wire.TypeGrants)
	chain := auditChain(t, ac)
	checkChain(t, alice.meshID, chain)
	n := 0
	for _, en := range chain {
		if en.EventType == wire.AuditGrantsChanged {
			n++
			if en.ActorPubkey != bob.pub() || strings.Contains(string(en.Payload), alice.pub()) {
				t.Errorf("grants entry %+v", en)
			}
		}
	}
	if n != 4 {
		t.Errorf("%d grants_changed entries, want 4", n)
	}
	b.Close()
	b2 := startWith(t, b.cfg)
	ac2 := connect(t, b2, carol, false, nil)
	if ack := ac2.sendAck(dm(t, carol, bob.pub(), "dm?")); ack.Error == nil || ack.Error.Code != wire.CodeBlockedByRecipient {
		t.Fatalf("grants lost on restart: %+v", ack)
	}
}

// TestSkills: publish, list, get, replace and remove, with the author /
// owner / admin rule and the limits.
func TestSkills(t *testing.T) {
	b := startBroker(t, nil)
	alice := createMesh(t, b, "skills", "alice")
	bob := addMember(t, b, alice, "skills", "bob")
	carol := addMember(t, b, alice, "skills", "carol")
	ac := connect(t, b, alice, false, nil)
	bc := connect(t, b, bob, false, nil)
	cc := connect(t, b, carol, false, nil)
	body := "# Deploys\n\nAlways run `make check` first.\n\tTabs are fine."
	var s wire.Skill
	bc.request(map[string]any{"type": "skill_publish", "name": "deploy", "description": "how we deploy", "body": body, "tags": []string{"ops"}}, &s, wire.TypeSkill)
	if s.Name != "deploy" || s.AuthorPubkey != bob.pub() || s.AuthorName != "bob" || s.Size != len(body) || s.Body != "" {
		t.Fatalf("publish: %+v", s)
	}
	cc.request(map[string]any{"type": "skill_publish", "name": "review", "description": "code review", "body": "look twice"}, &s, wire.TypeSkill)
	var list wire.Skills
	cc.request(map[string]any{"type": "skill_list"}, &list, wire.TypeSkills)
	if len(list.Skills) != 2 || list.Skills[0].Name != "deploy" || list.Skills[1].Name != "review" {
		t.Fatalf("list: %+v", list)
	}
	cc.request(map[string]any{"type": "skill_list", "query": "OPS"}, &list, wire.TypeSkills)
	if len(list.Skills) != 1 || list.Skills[0].Name != "deploy" {
		t.Fatalf("query ops: %+v", list)
	}
	cc.request(map[string]any{"type": "skill_get", "name": "deploy"}, &s, wire.TypeSkill)
	if s.Body != body {
		t.Fatalf("get: %q", s.Body)
	}
	var e wire.Error
	cc.request(map[string]any{"type": "skill_get", "name": "nope"}, &e, wire.TypeError)
	if e.Code != wire.CodeNotFound {
		t.Fatalf("get unknown: %+v", e)
	}
	// carol (a member, not the author) can neither replace nor remove it.
	cc.request(map[string]any{"type": "skill_publish", "name": "deploy", "description": "mine", "body": "x"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden {
		t.Fatalf("carol replaces bob's skill: %+v", e)
	}
	cc.request(map[string]any{"type": "skill_remove", "name": "deploy"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden {
		t.Fatalf("carol removes bob's skill: %+v", e)
	}
	// Limits.
	for _, f := range []map[string]any{
		{"name": "Bad Name", "body": "x"},
		{"name": "big", "body": strings.Repeat("x", maxSkillBody+1)},
		{"name": "ctl", "body": "bell\x07"},
		{"name": "empty", "body": ""},
		{"name": "desc", "body": "x", "description": strings.Repeat("d", 281)},
	} {
		f["type"] = "skill_publish"
		cc.request(f, &e, wire.TypeError)
		if e.Code != wire.CodeInvalidArgument && e.Code != wire.CodePayloadTooLarge {
			t.Errorf("publish %v: %+v", f["name"], e)
		}
	}
	// The owner may remove anyone's skill; the author its own.
	var ok wire.OK
	ac.request(map[string]any{"type": "skill_remove", "name": "deploy"}, &ok, wire.TypeOK)
	cc.request(map[string]any{"type": "skill_remove", "name": "review"}, &ok, wire.TypeOK)
	cc.request(map[string]any{"type": "skill_list"}, &list, wire.TypeSkills)
	if len(list.Skills) != 0 {
		t.Fatalf("after removal: %+v", list)
	}
	chain := auditChain(t, ac)
	checkChain(t, alice.meshID, chain)
	if got := eventTypes(chain); !strings.HasSuffix(got, "skill_published,skill_published,skill_removed,skill_removed") {
		t.Fatalf("chain %s", got)
	}
}

// TestBanDropsQueueAndRefusesReturn: a ban drops what was queued for the
// member, refuses its correctly signed hello (4002) and /v1/join
// (revoked); after unban it connects again and nothing from before the
// ban comes back.
func TestBanDropsQueueAndRefusesReturn(t *testing.T) {
	b := startBroker(t, nil)
	alice := createMesh(t, b, "banq", "alice")
	token, ic := invite(t, b, alice, "banq", "member", 3, time.Hour)
	var info wire.InviteReply
	ic.next(&info, wire.TypeInvite)
	key, _ := cmcrypto.GenerateIdentity()
	st, body, bob := joinWith(t, b, token, "bob", key)
	if st != 200 {
		t.Fatalf("join: %d %v", st, body)
	}
	ac := connect(t, b, alice, false, nil)
	for i := range 3 {
		if ack := ac.sendAck(dm(t, alice, bob.pub(), "queued "+string(rune('a'+i)))); ack.Error != nil {
			t.Fatal(ack.Error)
		}
	}
	var res wire.AdminResult
	ac.request(map[string]any{"type": "ban", "target": "bob", "reason": "gone"}, &res, wire.TypeAdminResult)
	r := dial(t, b)
	r.write(r.helloFrame(bob, nil))
	var e wire.Error
	r.next(&e, wire.TypeError)
	if e.Code != wire.CodeRevoked || !strings.Contains(e.Message, "removed from") {
		t.Fatalf("banned hello: %+v", e)
	}
	r.expectClose(wire.CloseBanned, wire.ReasonBanned)
	if st, body, _ := joinWith(t, b, token, "bob", key); st != 403 || errCode(body) != wire.CodeRevoked {
		t.Fatalf("banned join: %d %v", st, body)
	}
	var dl wire.Ack
	if dl = ac.sendAck(dm(t, alice, bob.pub(), "while banned")); dl.Error == nil || dl.Error.Code != wire.CodeUnknownRecipient {
		t.Fatalf("DM to a banned member: %+v", dl)
	}
	ac.request(map[string]any{"type": "unban", "target": bob.pub()}, &res, wire.TypeAdminResult)
	bc := connect(t, b, bob, true, nil)
	var q wire.Queued
	bc.request(map[string]any{"type": "fetch_queued"}, &q, wire.TypeQueued)
	if len(q.Messages) != 0 {
		t.Fatalf("%d messages from before the ban came back", len(q.Messages))
	}
	bc.expectSilence(200 * time.Millisecond)
	if ack := ac.sendAck(dm(t, alice, bob.pub(), "welcome back")); ack.Error != nil {
		t.Fatal(ack.Error)
	}
	if p := bc.nextPush(); openPush(t, &p, bob) != "welcome back" {
		t.Fatal("no message after unban")
	}
}

// TestOperatorRemoveMember: the operator removes a member over REST; its
// connections end 4001 with the reason, the chain records it under the
// broker's key, and the owner cannot be removed.
func TestOperatorRemoveMember(t *testing.T) {
	b := startBroker(t, nil)
	alice := createMesh(t, b, "opr", "alice")
	bob := addMember(t, b, alice, "opr", "bob")
	addMember(t, b, alice, "opr", "bobby")
	bc := connect(t, b, bob, true, nil)
	del := func(path, token string) (int, map[string]any) {
		req, _ := http.NewRequest("DELETE", b.HTTPURL()+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.UnmarshalRead(resp.Body, &out)
		return resp.StatusCode, out
	}
	if st, _ := del("/v1/admin/meshes/opr/members/bob", "wrong"); st != 401 {
		t.Fatalf("bad token: %d", st)
	}
	if st, body := del("/v1/admin/meshes/nope/members/bob", b.OperatorToken()); st != 404 || errCode(body) != wire.CodeMeshNotFound {
		t.Fatalf("unknown mesh: %d %v", st, body)
	}
	if st, body := del("/v1/admin/meshes/opr/members/alice", b.OperatorToken()); st != 403 || errCode(body) != wire.CodeForbidden {
		t.Fatalf("remove owner: %d %v", st, body)
	}
	if st, body := del("/v1/admin/meshes/opr/members/"+bob.pub()[:8]+"x", b.OperatorToken()); st != 404 {
		t.Fatalf("no match: %d %v", st, body)
	}
	st, body := del("/v1/admin/meshes/"+alice.meshID+"/members/bob", b.OperatorToken())
	if st != 200 {
		t.Fatalf("remove bob: %d %v", st, body)
	}
	var e wire.Error
	bc.next(&e, wire.TypeError)
	if !strings.Contains(e.Message, "operator") {
		t.Fatalf("removal message %+v", e)
	}
	if e.Code != wire.ReasonRemoved {
		t.Fatalf("removal error code %q, want %q", e.Code, wire.ReasonRemoved)
	}
	bc.expectClose(wire.CloseKicked, wire.ReasonRemoved)
	r := dial(t, b)
	r.write(r.helloFrame(bob, nil))
	r.expectRefusal(wire.CodeUnauthorized, wire.ClosePolicy, wire.CodeUnauthorized)
	ac := connect(t, b, alice, false, nil)
	chain := auditChain(t, ac)
	checkChain(t, alice.meshID, chain)
	last := chain[len(chain)-1]
	if last.EventType != wire.AuditMemberRemoved || last.ActorPubkey != b.PublicKey() || !strings.Contains(string(last.Payload), bob.pub()) {
		t.Fatalf("last entry %+v", last)
	}
	// Listing for the operator.
	req, _ := http.NewRequest("GET", b.HTTPURL()+"/v1/admin/meshes/opr/members", nil)
	req.Header.Set("Authorization", "Bearer "+b.OperatorToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var members struct {
		Members []wire.Member `json:"members"`
	}
	json.UnmarshalRead(resp.Body, &members)
	resp.Body.Close()
	if len(members.Members) != 2 {
		t.Fatalf("members after removal: %+v", members)
	}
}
