package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"claudemesh/internal/lockedbuf"
)

// ambientServer is a running ambient `claudemesh mcp` and its welcome.
type ambientServer struct {
	cmd     *exec.Cmd
	cs      *sdk.ClientSession
	welcome channelNote
	stderr  *lockedbuf.Buffer
}

// startAmbient runs `claudemesh mcp` for u (its parent, the test process,
// is the "claude" of its ambient session) and waits for its welcome.
func startAmbient(t *testing.T, u *user) *ambientServer {
	t.Helper()
	cmd := exec.Command(bin, "--home", u.home, "mcp")
	cmd.Env = append(u.env(), "CLAUDEMESH_NAME="+u.name+"-mcp")
	s := &ambientServer{cmd: cmd, stderr: &lockedbuf.Buffer{}}
	cmd.Stderr = s.stderr
	capture := newCapture(t, cmd)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "e2e-client", Version: "1"}, nil).Connect(ctx, capture, nil)
	if err != nil {
		t.Fatalf("initialize: %v; stderr: %s", err, s.stderr.String())
	}
	s.cs = cs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mcp stderr:\n%s", s.stderr.String())
		}
		cs.Close()
	})
	s.welcome = capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	return s
}

// sessionFiles lists u's session key and lock files of mesh "test".
func sessionFiles(t *testing.T, u *user) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(u.home, "sessions", "test"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// sessionCount is the number of u's daemon's sessions.
func sessionCount(u *user) int {
	var st struct {
		Sessions int `json:"sessions"`
	}
	u.json(&st, "daemon", "status")
	return st.Sessions
}

// An ambient session ends with its MCP server: stdin closed or SIGTERM
// deregisters it and its key file goes, so the next server of the same
// claude gets the name again (not NAME-2); a server killed -9 leaves its
// session, and the next one of the same claude process takes it over:
// same name, same key, one key file.
func TestMCPAmbientSessionEndsWithItsServer(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.startDaemon()
	alice.waitDaemonOpen()

	first := startAmbient(t, alice)
	if first.welcome.Meta["display_name"] != "alice-mcp" {
		t.Fatalf("first welcome: %+v", first.welcome.Meta)
	}
	// Stdin closed: the session is deregistered, its files removed.
	first.cs.Close()
	eventually(t, 20*time.Second, "the session deregistered and its files removed", func() bool {
		return sessionCount(alice) == 0 && len(sessionFiles(t, alice)) == 0
	})

	second := startAmbient(t, alice)
	if second.welcome.Meta["display_name"] != "alice-mcp" {
		t.Fatalf("after a clean exit the next server's session is %q, want alice-mcp", second.welcome.Meta["display_name"])
	}
	// Killed: its session stays registered (claude still runs), and the
	// next server of this claude takes it over.
	// Its exit is waited for by its pid, not cmd.Wait: the SDK's
	// transport waits for the process too once the pipe ends (two Waits
	// race).
	second.cmd.Process.Signal(syscall.SIGKILL)
	eventually(t, 20*time.Second, "the killed server's exit", func() bool { return exited(second.cmd.Process.Pid) })
	third := startAmbient(t, alice)
	if third.welcome.Meta["display_name"] != "alice-mcp" || third.welcome.Meta["pubkey"] != second.welcome.Meta["pubkey"] {
		t.Fatalf("after a crash the next server's session is %q %s, want alice-mcp with the crashed one's key %s",
			third.welcome.Meta["display_name"], third.welcome.Meta["pubkey"], second.welcome.Meta["pubkey"])
	}
	if n := sessionCount(alice); n != 1 {
		t.Fatalf("%d sessions after the take-over, want one", n)
	}
	var keys []string
	for _, f := range sessionFiles(t, alice) {
		if strings.HasSuffix(f, ".json") {
			keys = append(keys, f)
		}
	}
	if len(keys) != 1 {
		t.Fatalf("session key files: %v, want one", keys)
	}
	// SIGTERM: deregistered, files removed.
	third.cmd.Process.Signal(syscall.SIGTERM)
	eventually(t, 20*time.Second, "the server's exit at SIGTERM", func() bool { return exited(third.cmd.Process.Pid) })
	eventually(t, 20*time.Second, "the session deregistered at SIGTERM and its files removed", func() bool {
		return sessionCount(alice) == 0 && len(sessionFiles(t, alice)) == 0
	})
}
