package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDaemonSocketRemovedIsSaid: a daemon whose socket file was removed
// while it ran still holds daemon.db, so no other can start. `daemon
// status` said "daemon not running" (exit 0) and `daemon up` "the daemon
// exited at start; see daemon.log": both now name the running daemon, say
// its socket is gone, and give the way out, which works.
func TestDaemonSocketRemovedIsSaid(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	sock := filepath.Join(alice.home, "daemon", "daemon.sock")
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}
	want := []string{"pid " + strconv.Itoa(pid), sock, "removed", "daemon down && "}
	for _, args := range [][]string{{"daemon", "status"}, {"daemon", "up"}, {"daemon", "outbox", "list"}} {
		e := alice.fails(5, "unreachable", args...)
		for _, w := range want[:3] {
			if !strings.Contains(e.Error.Message, w) {
				t.Errorf("%q: %q does not say %q", args, e.Error.Message, w)
			}
		}
		r := alice.run(args...)
		if !strings.Contains(r.stderr, want[3]) {
			t.Errorf("%q gives no way out: %s", args, r)
		}
	}
	if r := alice.run("doctor"); !strings.Contains(r.stdout+r.stderr, "its socket "+sock+" was removed") {
		t.Errorf("doctor does not say it: %s", r)
	}
	// The way out works.
	alice.ok("daemon", "down")
	waitExit(t, pid)
	alice.startDaemon()
	alice.waitDaemonOpen()
}
