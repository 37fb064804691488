package verbs

import (
	"bytes"
	"strings"
	"testing"

	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// TestPeerListKindsAreWords (a new user's trial): peer list showed every
// person's row as KIND control-plane and the chat page's as "cli (web)",
// the roles' wire names. The text says daemon and chat page; --json keeps
// the roles.
func TestPeerListKindsAreWords(t *testing.T) {
	rows := []peerRow{
		{Mesh: "acme", Pubkey: hexKey64("a"), DisplayName: "alice", IsSelf: true, Online: true, Role: wire.RoleControlPlane},
		{Mesh: "acme", Pubkey: hexKey64("b"), DisplayName: "bob", Online: true, Role: wire.RoleControlPlane, Channel: "web"},
		{Mesh: "acme", Pubkey: hexKey64("c"), DisplayName: "carol", Online: true, Role: wire.RoleCLI, Channel: "web"},
	}
	var out bytes.Buffer
	printPeers(cliui.NewOut(&out, nil, false, false, false), rows, false)
	got := out.String()
	if strings.Contains(got, "control-plane") || strings.Contains(got, "cli (web)") ||
		!strings.Contains(got, "daemon (chat page open)") || !strings.Contains(got, "chat page") {
		t.Fatalf("peer list:\n%s", got)
	}
	for _, line := range strings.Split(got, "\n") {
		if strings.Contains(line, "alice") && !strings.Contains(line, "daemon") {
			t.Fatalf("alice's row: %q", line)
		}
	}
}
