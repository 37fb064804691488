package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestRemovedMemberRefusesSendsAndFailsAccepted (a new user's trial): a member
// the operator removed, whose daemon meets the broker's refusal
// (unauthorized) only later: the row it accepted while the broker was
// away fails member_removed instead of staying accepted for good, daemon
// status says removed, and new sends are refused (exit 4) with the
// daemon's words, not accepted as if the broker were only unreachable.
func TestRemovedMemberRefusesSendsAndFailsAccepted(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	b := startBroker(t, data, "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	bob := us[1]
	bob.startDaemon()
	bob.waitDaemonOpen() // its directory knows alice from now on
	bob.ok("daemon", "down")
	op := newUser(t, "operator")
	op.ok("mesh", "remove-member", "bob", "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile())
	b.kill()
	// Refusals alone fail accepted rows only once they have lasted (10
	// minutes by default; the operator's close fails them at once).
	bob = bob.withEnv("CLAUDEMESH_REMOVED_AFTER=1s")
	bob.startDaemon()
	var sent sendOut
	bob.json(&sent, "send", "alice", "accepted while the broker was away")
	if sent.Status != "accepted" {
		t.Fatalf("send while the broker is down: %+v", sent)
	}
	startBroker(t, data, b.addr)
	outbox := func() (status, errText string) {
		var rows []struct {
			ClientMessageID string `json:"clientMessageId"`
			Status          string `json:"status"`
			Error           string `json:"error"`
		}
		bob.json(&rows, "daemon", "outbox", "list")
		for _, r := range rows {
			if r.ClientMessageID == sent.ClientMessageID {
				return r.Status, r.Error
			}
		}
		return "", ""
	}
	eventually(t, 20*time.Second, "the accepted row to fail member_removed", func() bool {
		st, text := outbox()
		return st == "failed" && strings.HasPrefix(text, "member_removed: ") && strings.Contains(text, "no longer knows this member")
	})
	if st := bob.daemonStatus().Meshes["test"]; st != "removed" {
		t.Fatalf("daemon status says %q, want removed", st)
	}
	r := bob.run("send", "alice", "after the refusal")
	if r.code != 4 || !strings.Contains(r.stderr, "refuses this member") || !strings.Contains(r.stderr, "mesh leave test") ||
		strings.Contains(r.stderr+r.stdout, "accepted") {
		t.Fatalf("send by a removed member: %s", r)
	}
}
