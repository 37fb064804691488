package broker

import (
	"fmt"
	"strings"
	"testing"

	"claudemesh/wire"
)

// longGroups returns n distinct groups with the longest names the pattern
// allows (four 32-character segments), so tests reach size limits quickly.
func longGroups(prefix string, n int) []wire.Group {
	out := make([]wire.Group, n)
	for i := range out {
		seg := fmt.Sprintf("%s%04d", prefix, i)
		seg += strings.Repeat("x", 32-len(seg))
		out[i] = wire.Group{Name: seg + "/" + strings.Repeat("y", 32) + "/" + strings.Repeat("z", 32) + "/" + strings.Repeat("w", 32), Role: strings.Repeat("r", 32)}
	}
	return out
}

// TestHelloGroupsShareTheMemberCap: groups in member hellos are added to the
// member's own under the same total cap as join_group. A hello that would
// pass it is refused with invalid_argument (before the fix, 600 hellos gave
// one member 19,200 groups), the same groups again are fine, and the cap
// holds across a restart.
func TestHelloGroupsShareTheMemberCap(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	first := longGroups("a", 32)
	connect(t, b, bob, false, func(h *wire.Hello) { h.Groups = first })
	connect(t, b, bob, false, func(h *wire.Hello) { h.Groups = first[:5] }) // nothing new

	r := dial(t, b)
	r.write(r.helloFrame(bob, func(h *wire.Hello) { h.Groups = longGroups("b", 1) }))
	r.expectRefusal(wire.CodeInvalidArgument, 1008, wire.CodeInvalidArgument)

	bc := connect(t, b, bob, true, nil)
	var e wire.Error
	bc.request(map[string]any{"type": "join_group", "name": "extra"}, &e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument {
		t.Fatalf("join_group past the cap: %+v", e)
	}
	var ok wire.OK
	bc.request(map[string]any{"type": "join_group", "name": first[3].Name, "role": "lead"}, &ok, wire.TypeOK)

	groupsOf := func(c *rawConn) []wire.Group {
		t.Helper()
		var peers wire.Peers
		c.request(map[string]any{"type": "list_peers"}, &peers, wire.TypePeers)
		for _, p := range peers.Peers {
			if p.MemberPubkey == bob.pub() {
				return p.Groups
			}
		}
		t.Fatalf("bob not listed: %+v", peers.Peers)
		return nil
	}
	if g := groupsOf(bc); len(g) != 32 || g[3].Role != "lead" {
		t.Fatalf("bob's groups: %d %+v", len(g), g[3])
	}
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "max_groups"); got < 1 {
		t.Fatalf("limit metric %v", got)
	}

	b.Close()
	b2 := startWith(t, cfg)
	if g := groupsOf(connect(t, b2, bob, true, nil)); len(g) != 32 {
		t.Fatalf("after restart bob has %d groups", len(g))
	}
}

// TestListPeersIsPaged: one member opens presences whose entries are as
// large as the limits allow; another member's list_peers must still arrive
// (in pages) instead of overflowing its send buffer and being cut off with
// 4008, and the pages together list every presence exactly once.
func TestListPeersIsPaged(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.SendBuffer = minSendBuffer })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	connect(t, b, bob, false, func(h *wire.Hello) { h.Groups = longGroups("g", 32) })
	const n = 40
	for i := range n {
		connect(t, b, bob, true, func(h *wire.Hello) {
			h.SessionID = fmt.Sprintf("big.%02d", i)
			h.Cwd = strings.Repeat("c", 1000)
			h.Hostname = strings.Repeat("h", 255)
		})
	}
	a := connect(t, b, alice, true, nil)
	seen := map[string]bool{}
	after, pages := "", 0
	for {
		req := map[string]any{"type": "list_peers"}
		if after != "" {
			req["after"] = after
		}
		var page wire.Peers
		a.request(req, &page, wire.TypePeers)
		pages++
		for _, p := range page.Peers {
			k := p.Pubkey + "|" + p.SessionID
			if seen[k] {
				t.Fatalf("%s listed twice", k)
			}
			seen[k] = true
		}
		if size := len(wire.MustEncode(page)); size > b.cfg.peersPageBytes() {
			t.Fatalf("page of %d bytes, over %d", size, b.cfg.peersPageBytes())
		}
		if !page.More {
			break
		}
		after = page.Next
	}
	if len(seen) != n+1 || pages < 2 {
		t.Fatalf("listed %d presences in %d pages, want %d in several", len(seen), pages, n+1)
	}
	var e wire.Error
	a.request(map[string]any{"type": "list_peers", "after": "junk"}, &e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument {
		t.Fatalf("bad cursor: %+v", e)
	}
	bystanderCheck(t, a)
}

// A session is in its member's groups (effective groups: the member's and
// its own), so its leave_group of one is refused invalid_argument saying
// so, never "not in group" (untrue: it keeps getting the group's
// messages); a group in neither set stays not_found.
func TestSessionCannotLeaveItsMembersGroup(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	bm := connect(t, b, bob, true, nil)
	var ok map[string]any
	bm.request(map[string]any{"type": wire.TypeJoinGroup, "name": "ops"}, &ok, wire.TypeOK)
	sc, sess := connectSession(t, b, bob, "agent1")
	var e wire.Error
	sc.request(map[string]any{"type": wire.TypeLeaveGroup, "name": "ops"}, &e, wire.TypeError, wire.TypeOK)
	if e.Code != wire.CodeInvalidArgument || !strings.Contains(e.Message, "group of your member bob") {
		t.Fatalf("a session's leave_group of its member's group: %+v, want invalid_argument saying it is bob's group", e)
	}
	// A subgroup of the member's puts the session in its parent too.
	bm.request(map[string]any{"type": wire.TypeJoinGroup, "name": "dev/db"}, &ok, wire.TypeOK)
	e = wire.Error{}
	sc.request(map[string]any{"type": wire.TypeLeaveGroup, "name": "dev"}, &e, wire.TypeError, wire.TypeOK)
	if e.Code != wire.CodeInvalidArgument || !strings.Contains(e.Message, "through @dev/db") {
		t.Fatalf("a session's leave_group of its member's subgroup's parent: %+v, want invalid_argument naming @dev/db", e)
	}
	e = wire.Error{}
	sc.request(map[string]any{"type": wire.TypeLeaveGroup, "name": "nosuch"}, &e, wire.TypeError, wire.TypeOK)
	if e.Code != wire.CodeNotFound {
		t.Fatalf("a session's leave_group of a group it is not in: %+v, want not_found", e)
	}
	// It is in @ops still, as it was told.
	ac := connect(t, b, alice, false, nil)
	ac.sendAck(multi(t, alice, "@ops", "hi ops", sess.PublicHex()))
	var p wire.Push
	sc.next(&p, wire.TypePush)
}

// TestJoinGroupWithABadRoleSaysTheRole (a new user's trial): a role with
// a newline was refused with the group name's pattern, as if the name
// were bad.
func TestJoinGroupWithABadRoleSaysTheRole(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	c := connect(t, b, alice, true, nil)
	var e wire.Error
	c.request(map[string]any{"type": wire.TypeJoinGroup, "name": "ops", "role": "lead\nfake"}, &e, wire.TypeError, wire.TypeOK)
	if e.Code != wire.CodeInvalidArgument || !strings.Contains(e.Message, "role") || strings.Contains(e.Message, "group names match") {
		t.Fatalf("join_group with a role holding a newline: %+v, want invalid_argument about the role", e)
	}
	e = wire.Error{}
	c.request(map[string]any{"type": wire.TypeJoinGroup, "name": "Ops"}, &e, wire.TypeError, wire.TypeOK)
	if e.Code != wire.CodeInvalidArgument || !strings.Contains(e.Message, "group names match") {
		t.Fatalf("join_group of a bad name: %+v", e)
	}
}
