package e2e

// A new user's trial of the daemon and direct paths side by side: the same
// outcome gives the same answer, code and exit code on both, and every
// line printed is true.

import (
	"strings"
	"testing"
)

// TestTrialInvalidUTF8SameOnBothPaths: a message (from stdin or an
// argument) or a topic post that is not valid UTF-8 is the same usage
// error on both paths, checked before anything is sent, not an internal
// error of the daemon's API.
func TestTrialInvalidUTF8SameOnBothPaths(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice := users[0]
	alice.startDaemon()
	alice.waitDaemonOpen()
	alice.ok("topic", "create", "ops")
	bad := "\xff\xfe x"
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		e := alice.failsIn(bad, 2, "invalid_argument", append([]string{"send", "bob", "-"}, path...)...)
		if e.Error.Message != "message is not valid UTF-8" {
			t.Fatalf("stdin %v: %+v", path, e)
		}
		alice.fails(2, "invalid_argument", append([]string{"send", "bob", bad}, path...)...)
		alice.fails(2, "invalid_argument", append([]string{"topic", "post", "ops", bad}, path...)...)
		if r := alice.runIn(bad, append([]string{"send", "bob", "-"}, path...)...); r.code != 2 ||
			!strings.Contains(r.stderr+r.stdout, "message is not valid UTF-8") || strings.Contains(r.stderr+r.stdout, "jsontext") {
			t.Fatalf("human %v: %s", path, r)
		}
	}
	var rows []map[string]any
	alice.json(&rows, "daemon", "outbox", "list")
	if len(rows) != 0 {
		t.Fatalf("something was queued: %v", rows)
	}
}

// TestTrialRevokeAllSaysBlocked: revoke … all is a block, and says so in a
// sentence.
func TestTrialRevokeAllSaysBlocked(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "mallory")
	alice := users[0]
	for _, args := range [][]string{{"revoke", "mallory", "all"}, {"block", "mallory"}, {"revoke", "mallory", "dm", "broadcast"}} {
		r := alice.ok(args...)
		if !strings.Contains(r.stdout, "mallory (") || !strings.Contains(r.stdout, ") is blocked: they cannot message you, nor can their agent sessions") ||
			strings.Contains(r.stdout, "may send you") {
			t.Fatalf("%v: %s", args, r)
		}
		alice.ok("unblock", "mallory")
	}
}
