package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// TestJoinRefusesALookalikeMemberName: member names were unique only after
// case folding, so "аlice" (Cyrillic а) or "a1ice" could enroll and read as
// alice in every agent's context. A name that can be taken for another
// member's is name_taken, as a session's already was; other names, and a
// re-join under the enrolled name, still work.
func TestJoinRefusesALookalikeMemberName(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	tok, c := invite(t, b, alice, "team", "member", 10, time.Hour)
	var info wire.InviteReply
	c.next(&info, wire.TypeInvite)
	for _, name := range []string{"\u0430lice", "a1ice", "ALICE", "al\u0456ce", "AL\u0130CE", "alice.", "al ice"} {
		if st, body, _ := join(t, b, tok, name); st != 409 || errCode(body) != wire.CodeNameTaken {
			t.Fatalf("join as %q: %d %v", name, st, body)
		}
	}
	st, body, bob := join(t, b, tok, "bob")
	if st != 200 {
		t.Fatalf("join as bob: %d %v", st, body)
	}
	if st, body, _ := joinWith(t, b, tok, "bob", bob.key); st != 200 {
		t.Fatalf("re-join as bob: %d %v", st, body)
	}
	if st, body, _ := join(t, b, tok, "b0b"); st != 409 || errCode(body) != wire.CodeNameTaken {
		t.Fatalf("join as b0b: %d %v", st, body)
	}
	if st, body, _ := join(t, b, tok, "alicia"); st != 200 {
		t.Fatalf("join as alicia: %d %v", st, body)
	}
}

// TestReservedNameIsRefused (a new user's trial): a member named "claudemesh"
// had its messages read "claudemesh: …" in agent sessions, the voice of
// claudemesh's own notices. That name, and any name confusable with it,
// is refused at join, at mesh create and for a session; a name merely
// containing it is not.
func TestReservedNameIsRefused(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	tok, c := invite(t, b, alice, "team", "member", 10, time.Hour)
	var info wire.InviteReply
	c.next(&info, wire.TypeInvite)
	for _, name := range []string{"claudemesh", "Claudemesh", "CLAUDEMESH", "c1audemesh", "\u0441laudemesh", "claudemesh\u200b", "claude-mesh"} {
		st, body, _ := join(t, b, tok, name)
		if name == "claudemesh\u200b" {
			if st != 400 || errCode(body) != wire.CodeMalformed { // invisible: refused before the comparison
				t.Fatalf("join as %q: %d %v", name, st, body)
			}
			continue
		}
		if st != 409 || errCode(body) != wire.CodeNameTaken || !strings.Contains(fmt.Sprint(body), "reserved") {
			t.Fatalf("join as %q: %d %v", name, st, body)
		}
	}
	if st, body, _ := join(t, b, tok, "claudemesh-bot"); st != 200 {
		t.Fatalf("join as claudemesh-bot: %d %v", st, body)
	}
	key, _ := cmcrypto.GenerateIdentity()
	if st, body := postJSON(t, b.HTTPURL()+"/v1/admin/meshes", b.OperatorToken(), map[string]any{
		"name": "Other", "slug": "other", "ownerPubkey": key.PublicHex(), "ownerDisplayName": "ClaudeMesh"}); st != 409 || errCode(body) != wire.CodeNameTaken {
		t.Fatalf("mesh create with owner ClaudeMesh: %d %v", st, body)
	}
	for _, name := range []string{"claudemesh", "Claude\u041cesh"} {
		sess, _ := cmcrypto.GenerateIdentity()
		r := dial(t, b)
		r.write(r.sessionHello(alice, sess, func(h *wire.SessionHello) { h.DisplayName = name }))
		r.expectRefusal(wire.CodeNameTaken, 1008, wire.CodeNameTaken)
	}
	sess, _ := cmcrypto.GenerateIdentity()
	sessionConnect(t, b, alice, sess, "alice-claudemesh")
}

// TestJoinRefusesAnAgentSessionsName (a new user's trial): a session may
// not be called like another member, but a newcomer could enroll under
// the name of alice's running agent session "zed", and `send zed` then
// reached the newcomer, not the session everyone addressed. A name that
// is (or looks like) the name of a session the broker knows is
// name_taken at join, while that session is online.
func TestJoinRefusesAnAgentSessionsName(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	zed, _ := connectSession(t, b, alice, "zed")
	tok, c := invite(t, b, alice, "team", "member", 10, time.Hour)
	var info wire.InviteReply
	c.next(&info, wire.TypeInvite)
	for _, name := range []string{"zed", "ZED", "z\u0435d"} {
		st, body, _ := join(t, b, tok, name)
		if st != 409 || errCode(body) != wire.CodeNameTaken || !strings.Contains(fmt.Sprint(body), "agent session") {
			t.Fatalf("join as %q while alice's session zed is known: %d %v", name, st, body)
		}
	}
	if st, body, _ := join(t, b, tok, "zedd"); st != 200 {
		t.Fatalf("join as zedd: %d %v", st, body)
	}
	// Only an online session holds its name: the broker remembers an
	// offline one's record up to --queue-ttl, and a member with many
	// sessions kept as many names from newcomers for that long.
	zed.closeClean()
	for deadline := time.Now().Add(expectWithin); ; time.Sleep(20 * time.Millisecond) {
		st, body, _ := join(t, b, tok, "zed")
		if st == 200 {
			break
		}
		if errCode(body) != wire.CodeNameTaken || time.Now().After(deadline) {
			t.Fatalf("join as zed once alice's session zed went offline: %d %v", st, body)
		}
	}
}
