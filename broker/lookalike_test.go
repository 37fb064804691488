package broker

import (
	"testing"
	"time"

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
	for _, name := range []string{"\u0430lice", "a1ice", "ALICE", "al\u0456ce"} {
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
