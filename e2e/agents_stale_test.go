package e2e

// What the CLI and `claudemesh mcp` say when an agent session is gone or
// cannot start (QA 7-F, 7-I, 7-J): true messages, the right exit codes,
// nothing announced that did not happen, no bearer token left behind.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func (u *user) withEnv(kv ...string) *user {
	cp := *u
	cp.extraEnv = append(slices.Clone(u.extraEnv), kv...)
	return &cp
}

func TestStaleSessionsAndLaunchRefusals(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	claude := standInClaude(t)

	// A claude that cannot run: refused before any session is announced.
	r := alice.withEnv("CLAUDE_BIN="+filepath.Join(t.TempDir(), "no-claude")).run("launch", "--name", "x")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot run") || strings.Contains(r.stderr, "is session") {
		t.Fatalf("launch without claude: %s", r)
	}
	// A name the broker refuses: the message carries no wire code.
	r = alice.withEnv("CLAUDE_BIN="+claude, "STANDIN_OUT="+filepath.Join(t.TempDir(), "bob")).run("launch", "--name", "bob")
	if r.code != 6 || !strings.Contains(r.stderr, "registering the session: a session cannot be called") || strings.Contains(r.stderr, "name_taken") {
		t.Fatalf("launch --name bob: %s", r)
	}

	// Two live sessions asking for one name: the second is dup-2.
	first := alice.launch(claude, "dup")
	second := alice.launch(claude, "dup")
	if !strings.Contains(second.stderr(), "dup-2 is session") {
		t.Fatalf("second launch: %s", second.stderr())
	}
	eventually(t, 20*time.Second, "bob sees dup and dup-2", func() bool {
		var rows []peerRow
		bob.json(&rows, "peer", "list")
		var names []string
		for _, r := range sessionsOf(rows, alice.pubkey) {
			names = append(names, r.DisplayName)
		}
		slices.Sort(names)
		return slices.Equal(names, []string{"dup", "dup-2"})
	})

	// launch killed: the reaper deregisters the session and removes its
	// token file; a verb run with the stale variable says so, exit 4.
	tokenFile := first.read(".tokenfile")
	syscall.Kill(first.cmd.Process.Pid, syscall.SIGKILL)
	eventually(t, 20*time.Second, "the reaper removed the token file", func() bool { return !fileExists(tokenFile) })
	stale := alice.asSession(first)
	e := stale.fails(4, "unknown_session", "send", "bob", "hi")
	if !strings.Contains(e.Error.Message, "no longer exists") {
		t.Fatalf("stale token file: %+v", e)
	}
	r = stale.run("peer", "list")
	if r.code != 4 || !strings.Contains(r.stderr, "unset it to act as yourself") {
		t.Fatalf("stale token file, human: %s", r)
	}

	// A token file whose session the daemon does not know: exit 4 and the
	// hint; `claudemesh mcp` with it says the session is gone and carries
	// on as an ambient session.
	// (Under alice's home, where launch writes them: one elsewhere is
	// another home's, TestLaunchPassesTheHome.)
	unknown := filepath.Join(alice.home, "sessions", "test", "unknown.token")
	os.MkdirAll(filepath.Dir(unknown), 0o700)
	if err := os.WriteFile(unknown, []byte(strings.Repeat("ab", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ghost := alice.withEnv("CLAUDEMESH_SESSION_TOKEN_FILE=" + unknown)
	e = ghost.fails(4, "unknown_session", "send", "bob", "hi")
	if !strings.Contains(e.Error.Message, "the session ended or was deregistered") {
		t.Fatalf("unknown token: %+v", e)
	}
	_, capture, stderr := startMCP(t, ghost)
	w := capture.waitNote("welcome of the ambient fallback", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	if !strings.HasPrefix(w.Meta["display_name"], "alice-mcp") || !strings.Contains(stderr.String(), "is no longer registered") ||
		strings.Contains(stderr.String(), "waiting for the daemon") {
		t.Fatalf("welcome %+v; mcp stderr: %s", w, stderr.String())
	}

	// CLAUDEMESH_NO_DAEMON=1 (bob has no daemon): mcp does not start one,
	// says why it waits, and finds the daemon once it is started.
	_, bobCapture, bobStderr := startMCP(t, bob)
	eventually(t, 20*time.Second, "mcp says it will not start the daemon", func() bool {
		return strings.Contains(bobStderr.String(), "keeps claudemesh mcp from starting it")
	})
	if st := bob.daemonStatus(); st.Running {
		t.Fatalf("mcp started bob's daemon under CLAUDEMESH_NO_DAEMON=1: %+v", st)
	}
	bob.startDaemon()
	bobCapture.waitNote("bob's welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
}
