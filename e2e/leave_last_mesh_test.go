package e2e

// `mesh leave` of the last mesh (a new user's trial): the daemon kept
// running with no mesh, and nothing said so, while `daemon up` refuses a
// home that joined none. The daemon keeps running (the inbox and the
// outbox the leave just spoke of stay readable, a `send --wait` learns
// its row's end, and the next join is taken up; a daemon run by its
// service would only be started again by it), and every message says so:
// leave, daemon status, daemon up.

import (
	"strconv"
	"strings"
	"testing"
)

func TestLeavingTheLastMeshSaysTheDaemonRuns(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob", "carol")
	bob, carol := us[1], us[2]

	// Not the last mesh: nothing about the daemon.
	bob.ok("mesh", "create", "Bobs", "--slug", "bobs", "--broker", b.url, "--operator-token-file", b.tokenFile(), "--name", "bob")
	bob.startDaemon()
	if r := bob.ok("mesh", "leave", "test"); strings.Contains(r.stdout+r.stderr, "no mesh") {
		t.Fatalf("leave of one of two meshes: %s", r)
	}

	// The last mesh: leave says the daemon runs on, and how to stop it.
	pid := carol.startDaemon()
	carol.waitDaemonOpen()
	us[0].ok("send", "carol", "before the leave")
	eventually(t, minWait, "carol's daemon stores the DM", func() bool { return carol.daemonStatus().InboxUnread == 1 })
	r := carol.ok("mesh", "leave", "test")
	out := r.stdout + r.stderr
	if !strings.Contains(out, "left Test Mesh (test)") ||
		!strings.Contains(out, "the daemon (pid "+strconv.Itoa(pid)+") is still running, with no mesh joined") ||
		!strings.Contains(out, "claudemesh --home "+carol.home+" daemon down") {
		t.Fatalf("leave of the last mesh: %s", r)
	}
	st := carol.daemonStatus()
	if !st.Running || st.PID != pid || len(st.Meshes) != 0 {
		t.Fatalf("daemon status after the leave: %+v", st)
	}
	if s := carol.ok("daemon", "status").stdout; !strings.Contains(s, "no mesh joined: the daemon takes up the next join") {
		t.Fatalf("daemon status text with no mesh: %s", s)
	}
	if s := carol.ok("daemon", "up"); !strings.Contains(s.stdout, "daemon already running (pid "+strconv.Itoa(pid)+"), with no mesh joined") {
		t.Fatalf("daemon up with no mesh: %s", s)
	}
	// What leave said: inbox still reads what the daemon received
	// before, with the mesh it came from, and marks it read.
	var rows []struct {
		Mesh string `json:"mesh"`
		Body string `json:"body"`
	}
	carol.json(&rows, "inbox", "--unread")
	if len(rows) != 1 || rows[0].Mesh != "test" || rows[0].Body != "before the leave" {
		t.Fatalf("inbox --json --unread after leaving the last mesh: %+v", rows)
	}
	if in := carol.ok("inbox"); !strings.Contains(in.stdout, "before the leave") || !strings.Contains(in.stdout, "test") {
		t.Fatalf("inbox after leaving the last mesh: %s", in)
	}
	if st := carol.daemonStatus(); st.InboxUnread != 0 {
		t.Fatalf("inbox after the leave did not mark the DM read: %d unread", st.InboxUnread)
	}
	if in := carol.ok("inbox"); !strings.Contains(in.stdout, "no new messages") || !strings.Contains(in.stdout, "inbox --all") {
		t.Fatalf("inbox again after the leave: %s", in)
	}
	if in := carol.ok("inbox", "--all"); !strings.Contains(in.stdout, "before the leave") {
		t.Fatalf("inbox --all after the leave: %s", in)
	}
	carol.fails(4, "not_joined", "inbox", "--follow")
	// It takes up the next join.
	carol.name = "carol2"
	carol.join(us[0].invite().Link)
	carol.waitDaemonOpen()
	if st := carol.daemonStatus(); st.PID != pid {
		t.Fatalf("the join was taken up by another daemon: %+v, not pid %d", st, pid)
	}
	carol.ok("mesh", "leave", "test")
	// What the hint says: down stops it, and then up refuses the home;
	// down does not say that up starts it again.
	if r := carol.ok("daemon", "down"); !strings.Contains(r.stdout, "stays down until this home joins a mesh (claudemesh --home "+carol.home+" join <invite link>) and then") {
		t.Fatalf("daemon down with no mesh: %s", r)
	}
	carol.fails(4, "not_joined", "daemon", "up")

	// --json says it too.
	dave := newUser(t, "dave")
	dave.join(us[0].invite().Link)
	pid = dave.startDaemon()
	var js struct {
		OK            bool `json:"ok"`
		DaemonRunning bool `json:"daemonRunning"`
		DaemonPID     int  `json:"daemonPid"`
	}
	dave.json(&js, "mesh", "leave", "test")
	if !js.OK || !js.DaemonRunning || js.DaemonPID != pid {
		t.Fatalf("leave --json of the last mesh: %+v", js)
	}
}

// Leaving one mesh of two: the daemon keeps what arrived from it, as it
// does after the last mesh, and inbox reads it the same way (the plain
// listing with the mesh it came from, and --mesh of the mesh left), where
// it said mesh_not_found while daemon status counted the unread DM.
func TestLeavingOneOfTwoMeshesInboxStillReadsIt(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	bob.ok("mesh", "create", "Bobs", "--slug", "bobs", "--broker", b.url, "--operator-token-file", b.tokenFile(), "--name", "bob")
	bob.startDaemon()
	bob.waitDaemonOpen()
	alice.ok("send", "bob", "before the leave")
	eventually(t, minWait, "bob's daemon stores the DM", func() bool { return bob.daemonStatus().InboxUnread == 1 })
	bob.ok("mesh", "leave", "test")

	type row struct {
		Mesh string `json:"mesh"`
		Body string `json:"body"`
	}
	var rows []row
	bob.json(&rows, "inbox", "--unread")
	if len(rows) != 1 || rows[0].Mesh != "test" || rows[0].Body != "before the leave" {
		t.Fatalf("inbox --json --unread after leaving one of two meshes: %+v", rows)
	}
	rows = nil
	bob.json(&rows, "inbox", "--unread", "--mesh", "test")
	if len(rows) != 1 || rows[0].Mesh != "test" {
		t.Fatalf("inbox --mesh of the mesh left: %+v", rows)
	}
	rows = nil
	bob.json(&rows, "inbox", "--unread", "--mesh", "bobs")
	if len(rows) != 0 {
		t.Fatalf("inbox --mesh of the mesh still joined shows the one left: %+v", rows)
	}
	if in := bob.ok("inbox"); !strings.Contains(in.stdout, "before the leave") || !strings.Contains(in.stdout, "  test · ") {
		t.Fatalf("inbox after leaving one of two meshes: %s", in)
	}
	if st := bob.daemonStatus(); st.InboxUnread != 0 {
		t.Fatalf("inbox did not mark the DM of the mesh left read: %d unread", st.InboxUnread)
	}
	if in := bob.ok("inbox", "--mesh", "test"); !strings.Contains(in.stdout, "no new messages") || !strings.Contains(in.stdout, "inbox --all") {
		t.Fatalf("inbox --mesh of the mesh left, again: %s", in)
	}
	if in := bob.ok("inbox", "--all", "--mesh", "test"); !strings.Contains(in.stdout, "before the leave") {
		t.Fatalf("inbox --all --mesh of the mesh left: %s", in)
	}
	// A mesh it keeps nothing of is still not found, and a mesh left
	// brings no more to follow.
	bob.fails(3, "mesh_not_found", "inbox", "--mesh", "nosuch")
	bob.fails(3, "mesh_not_found", "inbox", "--mesh", "test", "--follow")
}
