package e2e

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestSquattedDaemonSocketGetsNothing (issue 12 item 8): another local
// user who creates the daemon's socket first, in a directory anyone may
// write to, must receive nothing from the CLI — it used to get a plaintext
// POST /v1/send and serve a forged inbox. The CLI checks the socket and
// its directory (and, on Linux, the listener's uid) before sending; with
// --strict it fails, without it it warns and takes the direct path.
func TestSquattedDaemonSocketGetsNothing(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]

	shared := filepath.Join(t.TempDir(), "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o1777) // like /tmp
	sock := filepath.Join(shared, "claudemesh.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o600)
	var hits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"clientMessageId":"x","status":"accepted","target":{"kind":"box","targetSpec":"` + bob.pubkey + `"}}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	alice.useDaemon = true
	alice.extraEnv = []string{"CLAUDEMESH_DAEMON_SOCK=" + sock}
	alice.fails(5, "unreachable", "send", "bob", "secret one", "--strict")
	r := alice.ok("send", "bob", "secret two")
	if !strings.Contains(r.stderr, "not safe") || !strings.Contains(r.stderr, shared) {
		t.Fatalf("no warning about the unsafe socket: %s", r)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the squatter's socket received %d requests", n)
	}
	got := bodies(bob.inbox())
	if len(got) != 1 || got[0] != "secret two" {
		t.Fatalf("bob's inbox: %q", got)
	}
}
