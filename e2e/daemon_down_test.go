package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestDaemonDownStaysDown (a new user's trial): with an `inbox --follow`
// and a Claude Code session's `claudemesh mcp` running, `daemon down`
// was undone within a second (each started a daemon again, with the
// default flags), so "daemon stopped" was untrue and `daemon down &&
// daemon up --web ADDR` found a daemon running without --web. Now both
// wait, say why, and come back once `daemon up` starts it with the
// flags it was given.
func TestDaemonDownStaysDown(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	f := alice.followDaemon()
	_, capture, stderr := startMCP(t, alice)
	capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	bob.ok("send", "alice", "before")
	f.waitFor("before")

	r := alice.ok("daemon", "down")
	if !strings.Contains(r.stdout, "stays down until") {
		t.Fatalf("daemon down: %s", r)
	}
	// Both clients lost their daemon and decided to wait (each says
	// so); only then is "no daemon" a fact and not a moment.
	eventually(t, 20*time.Second, "the follower's notice", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, n := range f.notices {
			if n.Notice == "daemon_unavailable" && strings.Contains(n.Message, "stopped with daemon down") {
				return true
			}
		}
		return false
	})
	eventually(t, 20*time.Second, "the MCP server's warning", func() bool {
		return strings.Contains(stderr.String(), "stopped with claudemesh ") && strings.Contains(stderr.String(), "daemon down; waiting")
	})
	if st := alice.daemonStatus(); st.Running {
		t.Fatalf("a daemon runs after daemon down: %+v", st)
	}

	// The flags given to the next `daemon up` are the running daemon's.
	r = alice.ok("daemon", "up", "--web", "127.0.0.1:0")
	if strings.Contains(r.stdout+r.stderr, "already running") || strings.Contains(r.stdout+r.stderr, "not applied") {
		t.Fatalf("daemon up after daemon down: %s", r)
	}
	alice.waitDaemonOpen()
	bob.ok("send", "alice", "after")
	f.waitFor("after")
	capture.waitNote("after", func(n channelNote) bool { return strings.HasSuffix(n.Content, ": after") })

	// At once, as a user types it: the clients waiting since the down
	// must not start a daemon between the up's start and its daemon's
	// (the record was removed before the daemon started, and a follower
	// won that race two times in twelve).
	for i := range 4 {
		alice.ok("daemon", "down")
		r := alice.ok("daemon", "up", "--web", "127.0.0.1:0")
		if strings.Contains(r.stdout+r.stderr, "already running") || strings.Contains(r.stdout+r.stderr, "not applied") {
			t.Fatalf("round %d: daemon up right after daemon down: %s", i, r)
		}
	}
	alice.waitDaemonOpen()
	bob.ok("send", "alice", "last")
	f.waitFor("last")
	capture.waitNote("last", func(n channelNote) bool { return strings.HasSuffix(n.Content, ": last") })
}
