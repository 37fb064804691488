package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHintsCarryTheHomeAndTheMesh (a new user's trial): hints named
// claudemesh commands without the --home the user ran with (so a copied
// one looked at ~/.claudemesh: another identity, or none), and without
// the --mesh (so in a home with two meshes it failed with "several meshes
// joined"): topic history's "older" line, peer list in an empty home, a
// damaged daemon.db's refusal. Every hint's command carries them now.
func TestHintsCarryTheHomeAndTheMesh(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice := us[0]
	alice.createMesh(b, "Second", "second")
	cm := "claudemesh --home " + alice.home + " "
	alice.ok("topic", "create", "t4", "--mesh", "test")
	for _, p := range []string{"one", "two", "three"} {
		alice.ok("topic", "post", "t4", p, "--mesh", "test")
	}
	r := alice.ok("topic", "history", "t4", "--limit", "2", "--mesh", "test")
	i := strings.Index(r.stdout, "→ older: ")
	if i < 0 || !strings.HasPrefix(r.stdout[i:], "→ older: "+cm+"--mesh test topic history t4 --before ") {
		t.Fatalf("topic history --limit 2: %s", r)
	}
	// The hint, copied as printed, works in this home of two meshes.
	older := strings.Fields(strings.SplitN(r.stdout[i:], "\n", 2)[0])[3:] // after "→ older: claudemesh"
	if older[0] != "--home" {
		t.Fatalf("older: %q", older)
	}
	if r := alice.ok(older[2:]...); !strings.Contains(r.stdout, "one") || strings.Contains(r.stdout, "three") {
		t.Fatalf("the older page: %s", r)
	}
	if r := alice.run("send", "nobody", "x", "--mesh", "test"); r.code != 3 || !strings.Contains(r.stderr, cm+"--mesh test peer list --all") {
		t.Fatalf("send to nobody: %s", r)
	}

	empty := newUser(t, "empty")
	if r := empty.run("peer", "list"); !strings.Contains(r.stdout+r.stderr, "claudemesh --home "+empty.home+" join <invite link>") {
		t.Fatalf("peer list in an empty home: %s", r)
	}

	bob := us[1]
	if err := os.MkdirAll(filepath.Join(bob.home, "daemon"), 0o700); err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 70000)
	for i := range junk {
		junk[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(filepath.Join(bob.home, "daemon", "daemon.db"), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := bob.run("daemon", "up"); r.code == 0 || !strings.Contains(r.stderr, "claudemesh --home "+bob.home+" daemon up --init") {
		t.Fatalf("daemon up on a damaged daemon.db: %s", r)
	}
}

// TestJoinTakesAWrappedLink (a new user's trial): a link a mail or chat
// client wrapped (a line break inside the token) or put in <…> (Slack,
// Markdown autolinks) was refused as damaged; the pieces are joined and
// the brackets dropped (the signature still protects the content).
func TestJoinTakesAWrappedLink(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	link := alice.invite("--uses", "3").Link
	for i, given := range []string{link[:40] + "\n" + link[40:90] + "\r\n" + link[90:], "<" + link + ">", "<" + link[:50] + "\n" + link[50:] + ">"} {
		u := newUser(t, fmt.Sprintf("wrapped%d", i))
		if r := u.run("join", given, "--name", u.name); r.code != 0 {
			t.Fatalf("join of %q: %s", given, r)
		}
	}
}

// TestMeshTransferSaysWhatYouAreNow (a new user's trial): mesh transfer
// said only "handed the mesh over to bob", not that the caller is an
// admin now and cannot take it back.
func TestMeshTransferSaysWhatYouAreNow(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice := us[0]
	r := alice.ok("mesh", "transfer", "bob")
	if !strings.Contains(r.stdout, "handed the mesh over to bob") || !strings.Contains(r.stdout, "you are an admin of test now, not its owner: only bob can hand it back") {
		t.Fatalf("mesh transfer: %s", r)
	}
}

// TestWhoamiSaysTheMembershipEnded (a new user's trial): after a ban,
// whoami still said "bob in test (…), member" and mesh list "member";
// config.json keeps the mesh, but the daemon knows. Both say banned.
func TestWhoamiSaysTheMembershipEnded(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	bob.useDaemon = true
	bob.startDaemon()
	bob.waitDaemonOpen()
	alice.ok("ban", "bob")
	eventually(t, 30*time.Second, "whoami saying banned", func() bool {
		return strings.Contains(bob.ok("whoami").stdout, "member, banned: no longer a member")
	})
	if r := bob.ok("mesh", "list"); !strings.Contains(r.stdout, "member (banned)") {
		t.Fatalf("mesh list: %s", r)
	}
	if r := alice.ok("whoami"); strings.Contains(r.stdout, "banned") {
		t.Fatalf("alice's whoami: %s", r)
	}
}

// TestAPIKeyForATopicThatDoesNotExistSaysSo (a new user's trial): the
// README's own `apikey create ci-bot --cap read,send --topic builds`
// succeeded with no word when no #builds existed; a mistyped --topic
// made a key that could never do anything. It is still made, with a
// warning naming the topic.
func TestAPIKeyForATopicThatDoesNotExistSaysSo(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.ok("topic", "create", "deploys")
	r := alice.ok("apikey", "create", "ci-bot", "--cap", "read,send", "--topic", "deploys,builds")
	if !strings.Contains(r.stderr, "no topic #builds in test that you can see") || strings.Contains(r.stderr, "#deploys") {
		t.Fatalf("apikey create for #builds: %s", r)
	}
	if r := alice.ok("apikey", "create", "ok-bot", "--cap", "read", "--topic", "deploys"); r.stderr != "" {
		t.Fatalf("apikey create for #deploys: %s", r)
	}
}
