package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAmbientSessionFromAnOddDirectory (a new user's trial): a Claude
// Code session started in a directory whose name holds '|' or a tab never
// joined its mesh: the ambient name "alice-<directory>" was refused by the
// daemon, the server retried for ever, and its tools said the daemon was
// not reachable. The directory's name is now made a name ('|' and control
// characters become '-'), and the path is shown with them marked.
func TestAmbientSessionFromAnOddDirectory(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	dir := filepath.Join(t.TempDir(), "pipe|dir\tx")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// No CLAUDEMESH_NAME: the name comes from the directory, as claude's does.
	_, capture, stderr := startMCPIn(t, alice, dir)
	welcome := capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	key := welcome.Meta["pubkey"]
	var row peerRow
	eventually(t, 20*time.Second, "bob sees the session", func() bool {
		var rows []peerRow
		bob.json(&rows, "peer", "list")
		for _, r := range rows {
			if r.Pubkey == key && r.Online {
				row = r
				return true
			}
		}
		return false
	})
	if row.DisplayName != "alice-pipe-dir-x" {
		t.Fatalf("the session's name is %q, want alice-pipe-dir-x; mcp stderr: %s", row.DisplayName, stderr.String())
	}
	if strings.Contains(stderr.String(), "refused this session") {
		t.Fatalf("the daemon refused the session: %s", stderr.String())
	}
}
