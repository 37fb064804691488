package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
)

// TestClusterWithoutQuorumIsSaid: a new user's trial stopped two nodes of
// three: the daemon on the third said its mesh was "open" with rows
// "being sent" for minutes, and logged nothing, while the broker refused
// every send `unavailable`. daemon status (and doctor) now say the broker
// refuses writes, the log says when it began and when it cleared, and
// the message is delivered once the nodes are back.
func TestClusterWithoutQuorumIsSaid(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three broker processes")
	}
	t.Parallel()
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	nodes, _ := startFailoverNodes(t, key)
	alice, bob := newUser(t, "alice"), newUser(t, "bob")
	alice.createMesh(nodes[0], "Quorum", "q")
	bob.join(alice.invite().Link)
	alice.startDaemon()
	alice.waitDaemonOpen()
	bob.startDaemon() // his reads come from it: his acks need no quorum to show the message
	bob.waitDaemonOpen()
	for _, n := range nodes[1:] {
		n.cmd.Process.Signal(syscall.SIGSTOP)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			for _, n := range nodes[1:] {
				n.cmd.Process.Signal(syscall.SIGCONT)
			}
		}
	}
	t.Cleanup(resume)
	alice.ok("send", "bob", "without quorum") // accepted by the daemon
	logged := func(msg string) bool {
		data, _ := os.ReadFile(filepath.Join(alice.home, "daemon", "daemon.log"))
		return strings.Contains(string(data), msg)
	}
	eventually(t, 60*time.Second, "daemon status says the broker refuses writes", func() bool {
		out := alice.ok("daemon", "status").stdout
		return strings.Contains(out, "mesh q: the broker at") && strings.Contains(out, "is up but has refused every message since")
	})
	// It names the node its connection is on, not every node of the
	// cluster (a new user's trial: "the broker at A or B or C"), and so
	// does the mesh's line.
	var st struct {
		MeshBrokers map[string]string `json:"meshBrokers"`
		MeshErrors  map[string]struct {
			Message string `json:"message"`
		} `json:"meshErrors"`
	}
	alice.json(&st, "daemon", "status")
	via := st.MeshBrokers["q"]
	if !slices.ContainsFunc(nodes, func(n *brokerProc) bool { return n.url == via }) {
		t.Fatalf("daemon status names no node of the cluster for q: %+v", st)
	}
	msg := st.MeshErrors["q"].Message
	for _, n := range nodes {
		if n.url != via && strings.Contains(msg, n.url) {
			t.Fatalf("the refusal names %s, a node the daemon is not connected to (it is on %s): %s", n.url, via, msg)
		}
	}
	if !strings.Contains(msg, "the broker at "+via+" is up") {
		t.Fatalf("the refusal does not name the node %s: %s", via, msg)
	}
	if out := alice.ok("daemon", "status").stdout; !strings.Contains(out, "open (connected to "+via+")") {
		t.Fatalf("daemon status does not name the node: %s", out)
	}
	if !logged("the broker is up but refuses writes") {
		t.Error("the daemon log does not say the broker refuses writes")
	}
	resume()
	eventually(t, 90*time.Second, "the message delivered once the nodes are back", func() bool {
		r := bob.run("inbox", "--json")
		return r.code == 0 && strings.Count(r.stdout, "without quorum") == 1
	})
	eventually(t, 30*time.Second, "the log says writes are accepted again", func() bool { return logged("the broker accepts writes again") })
	if out := alice.ok("daemon", "status").stdout; strings.Contains(out, "refused every message") {
		t.Errorf("daemon status after the recovery: %s", out)
	}
}

// TestWaitEndsWhenTheMeshIsLeft: send --wait through the daemon waited on
// a row that became untracked (its mesh left while the broker held it)
// until --wait-timeout, then said it was not delivered "within" it. It
// ends at the leave, with what happened (exit 7: not known delivered).
func TestWaitEndsWhenTheMeshIsLeft(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	bob := us[1]
	bob.startDaemon()
	bob.waitDaemonOpen()
	done := make(chan result, 1)
	go func() { done <- bob.run("send", "alice", "waited on", "--wait", "--wait-timeout", "50s") }() // alice is offline
	eventually(t, 20*time.Second, "the row queued", func() bool {
		var rows []struct{ Status, Preview string }
		bob.json(&rows, "daemon", "outbox", "list")
		return len(rows) == 1 && rows[0].Status == "queued"
	})
	bob.ok("mesh", "leave", "test")
	r := <-done
	if r.code != 7 || !strings.Contains(r.stderr, "its mesh was left before it was delivered") {
		t.Fatalf("send --wait over a leave: %s", r)
	}
}

// TestSocketPathOfAnotherEnvironment: the socket path depends on the
// environment (CLAUDEMESH_DAEMON_SOCK, XDG_RUNTIME_DIR): a daemon started
// by a service with one value and a CLI run without it computed different
// paths, and the CLI said the running daemon's socket "was removed" and
// advised restarting it. The daemon records where it listens beside
// daemon.pid, and the CLI dials that (after the same checks).
func TestSocketPathOfAnotherEnvironment(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	dir, err := os.MkdirTemp("", "cmsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "service.sock")
	alice.withEnv("CLAUDEMESH_DAEMON_SOCK=" + sock).startDaemon()
	fi, err := os.Stat(filepath.Join(alice.home, "daemon", "daemon.sock.path"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the recorded socket path: %v %v", fi, err)
	}
	// This shell has no CLAUDEMESH_DAEMON_SOCK: it computes another path.
	r := alice.run("daemon", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "daemon running") {
		t.Fatalf("daemon status from another environment: %s", r)
	}
	alice.useDaemon = true
	var sent sendOut
	alice.json(&sent, "send", "alice", "through the recorded socket")
	if sent.Via != "daemon" {
		t.Fatalf("send from another environment: %+v", sent)
	}
	// A socket there that is not this user's daemon's is still refused:
	// the checks apply to the recorded path too (a world-writable
	// directory here).
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if r := alice.run("daemon", "status"); r.code == 0 && strings.Contains(r.stdout, "daemon running") {
		t.Fatalf("daemon status over an unsafe socket directory: %s", r)
	}
	os.Chmod(dir, 0o700)
}
