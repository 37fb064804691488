package verbs

import (
	"testing"

	"claudemesh/client/config"
	"claudemesh/wire"
)

// A member with its daemon and its chat page online is listed once, the
// same way whichever presence the broker lists first (its order follows
// connection times, which a broker restart reshuffles): the daemon's
// control-plane presence describes the member, the page adds channel web.
func TestMemberRowKindDoesNotDependOnPresenceOrder(t *testing.T) {
	m := &config.Mesh{Slug: "acme", Pubkey: "bob"}
	members := []wire.Member{{Pubkey: "alice", DisplayName: "alice", MemberRole: "owner"}}
	daemon := wire.Peer{Pubkey: "alice", MemberPubkey: "alice", Role: wire.RoleControlPlane, SessionID: "daemon",
		PeerType: wire.PeerHuman, Online: true, Status: "idle", Summary: "reviewing"}
	page := wire.Peer{Pubkey: "alice", MemberPubkey: "alice", Role: wire.RoleCLI, SessionID: "web",
		PeerType: wire.PeerHuman, Channel: "web", Online: true}
	offlineCLI := wire.Peer{Pubkey: "alice", MemberPubkey: "alice", Role: wire.RoleCLI, SessionID: "cli-1"}
	orders := [][]wire.Peer{
		{daemon, page},
		{page, daemon},
		{offlineCLI, page, daemon},
		{page, offlineCLI, daemon},
	}
	for i, peers := range orders {
		rows := groupedPeerRows(m, members, peers, false)
		if len(rows) != 1 {
			t.Fatalf("order %d: %d rows, want 1", i, len(rows))
		}
		r := rows[0]
		if r.Role != wire.RoleControlPlane || r.Channel != "web" || r.PeerType != wire.PeerHuman || !r.Online ||
			r.Status != "idle" || r.Summary != "reviewing" {
			t.Fatalf("order %d: alice's row %+v, want control-plane (web), idle, reviewing", i, r)
		}
	}
	// With only the page online, the page describes the member.
	rows := groupedPeerRows(m, members, []wire.Peer{offlineCLI, page}, false)
	if len(rows) != 1 || rows[0].Role != wire.RoleCLI || rows[0].Channel != "web" || !rows[0].Online {
		t.Fatalf("page only: %+v", rows)
	}
}
