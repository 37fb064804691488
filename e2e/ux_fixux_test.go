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

// TestDaemonUpNeedsAJoinedMesh: `daemon up` for a home that joined no
// mesh started a daemon with nothing to connect to, and for a mistyped
// --home created the directory; it now refuses (exit 4, "join a mesh
// first") and creates nothing. A verb that would start the daemon passes
// the reason on.
func TestDaemonUpNeedsAJoinedMesh(t *testing.T) {
	t.Parallel()
	typo := newUser(t, "typo")
	e := typo.fails(4, "not_joined", "daemon", "up")
	if !strings.Contains(e.Error.Message, "does not exist") || !strings.Contains(e.Error.Message, typo.home) {
		t.Errorf("the message does not name the missing home: %q", e.Error.Message)
	}
	if r := typo.run("daemon", "up"); !strings.Contains(r.stderr, "join a mesh first") {
		t.Errorf("no way forward: %s", r)
	}
	if _, err := os.Stat(typo.home); err == nil {
		t.Fatalf("daemon up created %s", typo.home)
	}
	// A home that exists and joined nothing.
	empty := newUser(t, "empty")
	os.Mkdir(empty.home, 0o700)
	e = empty.fails(4, "not_joined", "daemon", "up")
	if !strings.Contains(e.Error.Message, "joined no mesh") {
		t.Errorf("message: %q", e.Error.Message)
	}
	if ents, _ := os.ReadDir(empty.home); len(ents) != 0 {
		t.Fatalf("daemon up created %v in %s", ents, empty.home)
	}
	if pids := processesOfHome(empty.home); len(pids) != 0 {
		t.Fatalf("a daemon runs for a home that joined nothing: %v", pids)
	}
}
