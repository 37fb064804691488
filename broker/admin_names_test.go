package broker

import (
	"net/http"
	"strings"
	"testing"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"

	json "github.com/go-json-experiment/json"
)

// TestAdminTargetSessionNamedLikeAKeyPrefix: a session's display name is
// the connecting client's choice; one named like a prefix of a member's
// key makes that prefix ambiguous for the admin verbs too (it matched the
// member alone, so `kick 4e3adf4f` meant for the session kicked bob).
func TestAdminTargetSessionNamedLikeAKeyPrefix(t *testing.T) {
	ms := (&hub{}).newMeshState(store.Mesh{ID: "m"})
	bob := &member{Member: store.Member{ID: "b", Pubkey: "4e3adf4f" + strings.Repeat("a", 56), DisplayName: "bob", NameKey: cmcrypto.NameKey("bob")}}
	carol := &member{Member: store.Member{ID: "c", Pubkey: strings.Repeat("c", 64), DisplayName: "carol", NameKey: cmcrypto.NameKey("carol")}}
	for _, m := range []*member{bob, carol} {
		ms.members[m.Pubkey] = m
		ms.memberByID[m.ID] = m
	}
	sk := strings.Repeat("d", 64)
	ms.putSessionLocked(sk, &store.Session{Pubkey: sk, ParentMemberID: "c", DisplayName: "4e3adf4f"})
	if out := ms.matchTargets("4e3adf4f"); len(out) != 2 {
		t.Errorf("matchTargets found %d targets, want bob and carol's session (ambiguous)", len(out))
	}
	if out := ms.matchTargets("4e3adf4fa"); len(out) != 1 || out[0].member != bob {
		t.Errorf("a longer prefix: %d targets, want bob alone", len(out))
	}
}

// TestMembersOnlyVerbsSessionNamedLikeAKeyPrefix: ban, unban, set_role,
// mesh_transfer and the operator's remove-member act on members, but a
// session named like a prefix of bob's key still makes that prefix
// ambiguous for them: the sessions were left out before ambiguity was
// decided, so bob alone remained and carol's agent, by naming itself
// "4e3adf4f", had alice ban, promote, remove or hand the mesh to bob.
func TestMembersOnlyVerbsSessionNamedLikeAKeyPrefix(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "names", "alice")
	bob := addMember(t, b, alice, "names", "bob")
	carol := addMember(t, b, alice, "names", "carol")
	prefix := bob.pub()[:8]
	sess, _ := cmcrypto.GenerateIdentity()
	sessionConnect(t, b, carol, sess, prefix)
	oc := connect(t, b, alice, false, nil)
	for _, f := range []map[string]any{
		{"type": "ban", "target": prefix}, {"type": "unban", "target": prefix},
		{"type": "set_role", "target": prefix, "role": "admin"}, {"type": "mesh_transfer", "target": prefix},
	} {
		var e wire.Error
		oc.request(f, &e, wire.TypeError, wire.TypeAdminResult)
		if e.Code != wire.CodeAmbiguousTarget || len(e.Candidates) != 2 {
			t.Errorf("%s %s: %+v, want ambiguous_target naming bob and carol's session", f["type"], prefix, e)
		}
	}
	req, _ := http.NewRequest("DELETE", b.HTTPURL()+"/v1/admin/meshes/names/members/"+prefix, nil)
	req.Header.Set("Authorization", "Bearer "+b.OperatorToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.UnmarshalRead(resp.Body, &body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || errCode(body) != wire.CodeAmbiguousTarget {
		t.Errorf("operator remove-member %s: %d %v, want 409 ambiguous_target", prefix, resp.StatusCode, body)
	}
	// bob is untouched: still a plain member, not banned, not the owner.
	var members wire.Members
	oc.request(map[string]any{"type": wire.TypeMembersList}, &members, wire.TypeMembers)
	found := false
	for _, m := range members.Members {
		if m.Pubkey == bob.pub() {
			found = true
			if m.MemberRole != wire.MemberMember || m.RevokedAt != 0 {
				t.Errorf("bob was acted on: %+v", m)
			}
		}
	}
	if !found {
		t.Errorf("bob was removed: %+v", members.Members)
	}
	// A longer prefix is bob's alone.
	var res wire.AdminResult
	oc.request(map[string]any{"type": "set_role", "target": bob.pub()[:9], "role": "admin"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 || res.Affected[0].Pubkey != bob.pub() {
		t.Errorf("set_role by a longer prefix: %+v", res)
	}
}

// TestMemberTargetSessionsOfTheSameMember: a members-only verb decides
// ambiguity over every match; sessions of the one member that matched are
// that member, sessions alone are not a member.
func TestMemberTargetSessionsOfTheSameMember(t *testing.T) {
	bob := &member{Member: store.Member{ID: "b", Pubkey: strings.Repeat("b", 64), DisplayName: "bob"}}
	carol := &member{Member: store.Member{ID: "c", Pubkey: strings.Repeat("c", 64), DisplayName: "carol"}}
	self := adminTarget{member: bob, name: "bob"}
	own := adminTarget{member: bob, session: strings.Repeat("d", 64), name: "bbbbbbbb"}
	other := adminTarget{member: carol, session: strings.Repeat("e", 64), name: "bbbbbbbb"}
	if got, n, _ := memberTarget([]adminTarget{self, own}); n != 1 || got.member != bob || got.session != "" {
		t.Errorf("bob and his own session: %d %+v, want bob", n, got)
	}
	if _, n, _ := memberTarget([]adminTarget{self, other}); n != 2 {
		t.Errorf("bob and carol's session: %d, want ambiguous", n)
	}
	if _, n, why := memberTarget([]adminTarget{other}); n != 0 || !strings.Contains(why, "carol") {
		t.Errorf("carol's session alone: %d %q, want no member and why", n, why)
	}
}

// TestAdminTargetFullSessionKeyIsNeverAName: a display name may be 64 hex
// digits, someone's full key; a full key still names its holder alone
// (mallory naming a session after bob's session's key made
// `kick <that key>` ambiguous), and a full key nobody holds names nobody,
// whoever is so named. The client treats 64 hex as a key too.
func TestAdminTargetFullSessionKeyIsNeverAName(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "fullkey", "alice")
	bob := addMember(t, b, alice, "fullkey", "bob")
	mallory := addMember(t, b, alice, "fullkey", "mallory")
	bobSess, _ := cmcrypto.GenerateIdentity()
	bs := sessionConnect(t, b, bob, bobSess, "worker")
	impostor, _ := cmcrypto.GenerateIdentity()
	sessionConnect(t, b, mallory, impostor, bobSess.PublicHex())
	nobody, _ := cmcrypto.GenerateIdentity()
	other, _ := cmcrypto.GenerateIdentity()
	sessionConnect(t, b, mallory, other, nobody.PublicHex())
	oc := connect(t, b, alice, false, nil)

	var e wire.Error
	oc.request(map[string]any{"type": "kick", "target": nobody.PublicHex()}, &e, wire.TypeError, wire.TypeAdminResult)
	if e.Code != wire.CodeUnknownTarget {
		t.Errorf("kick of a full key nobody holds, a session's name: %+v, want unknown_target", e)
	}
	// In capitals too (a review: the key was read as a display name,
	// case-folded, and reached the session so named).
	e = wire.Error{}
	oc.request(map[string]any{"type": "kick", "target": strings.ToUpper(nobody.PublicHex())}, &e, wire.TypeError, wire.TypeAdminResult)
	if e.Code != wire.CodeUnknownTarget {
		t.Errorf("kick of a full key nobody holds, in capitals: %+v, want unknown_target", e)
	}
	var res wire.AdminResult
	oc.request(map[string]any{"type": "kick", "target": bobSess.PublicHex()}, &res, wire.TypeAdminResult, wire.TypeError)
	if len(res.Affected) != 1 || res.Affected[0].Pubkey != bobSess.PublicHex() {
		t.Fatalf("kick of bob's session's full key: %+v, want that session alone", res)
	}
	bs.expectRefusal(wire.ReasonKicked, wire.CloseKicked, wire.ReasonKicked)
}
