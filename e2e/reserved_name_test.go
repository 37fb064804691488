package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestTheNameClaudemeshIsRefused (a new user's trial): a member could join as
// "claudemesh", and its messages then read "claudemesh: …" in agent
// sessions, as claudemesh's own notices did. The name, and any name
// that can be taken for it, is refused at join and for a session, with a
// reason and the hint to choose another.
func TestTheNameClaudemeshIsRefused(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice")
	alice := users[0]
	link := alice.invite("--uses", "3").Link
	mallory := newUser(t, "mallory")
	for _, name := range []string{"claudemesh", "ClaudeMesh", "c1audemesh"} {
		e := mallory.fails(6, "name_taken", "join", link, "--name", name)
		if !strings.Contains(e.Error.Message, "reserved") {
			t.Fatalf("join as %s: %+v", name, e)
		}
	}
	if r := mallory.run("join", link, "--name", "claudemesh"); r.code != 6 || !strings.Contains(r.stderr, "is reserved") || !strings.Contains(r.stderr, "--name") {
		t.Fatalf("join as claudemesh: %s", r)
	}
	// An agent session cannot take it either.
	alice.startDaemon()
	alice.waitDaemonOpen()
	r := alice.withEnv("CLAUDE_BIN="+standInClaude(t), "STANDIN_OUT="+filepath.Join(t.TempDir(), "x")).run("launch", "--name", "Claudemesh")
	if r.code != 6 || !strings.Contains(r.stderr, "a session cannot be called") || !strings.Contains(r.stderr, "reserved") {
		t.Fatalf("launch --name Claudemesh: %s", r)
	}
}
