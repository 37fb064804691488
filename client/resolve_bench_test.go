package client

import (
	"fmt"
	"testing"

	"claudemesh/wire"
)

// bigMesh is a mesh of n members, each with a daemon presence and an agent
// session, as a daemon's directory holds it.
func bigMesh(n int) ([]wire.Member, []wire.Peer) {
	members := make([]wire.Member, 0, n)
	peers := make([]wire.Peer, 0, 2*n)
	for i := range n {
		key := fmt.Sprintf("%064x", i+1)
		sess := fmt.Sprintf("%064x", n+i+1)
		members = append(members, wire.Member{Pubkey: key, DisplayName: fmt.Sprintf("member-%d", i), MemberRole: "member"})
		peers = append(peers,
			wire.Peer{Pubkey: key, MemberPubkey: key, DisplayName: fmt.Sprintf("member-%d", i), Role: wire.RoleControlPlane, Online: true},
			wire.Peer{Pubkey: sess, MemberPubkey: key, DisplayName: fmt.Sprintf("agent-%d", i), Role: wire.RoleSession, Online: true})
	}
	return members, peers
}

// BenchmarkResolve resolves a DM target in a mesh of 1,000 members (2,000
// presences): once per snapshot (the daemon keeps one Directory until its
// directory changes) and, for comparison, building the directory for
// each target as ResolveTarget does.
func BenchmarkResolve(b *testing.B) {
	members, peers := bigMesh(1000)
	targets := map[string]string{"pubkey": members[500].Pubkey, "member-name": "member-500", "session-name": "agent-500"}
	for _, kind := range []string{"pubkey", "member-name", "session-name"} {
		to := targets[kind]
		b.Run(kind+"/snapshot", func(b *testing.B) {
			d := NewDirectory(members, peers)
			for b.Loop() {
				if _, err := d.Resolve(to, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(kind+"/each", func(b *testing.B) {
			for b.Loop() {
				if _, err := ResolveTarget(to, members, peers, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
