package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestTopicPostCannotForgeAnotherPost (a new user's trial): a post's
// second line was printed by `topic history` and `topic tail` at the
// posts' own indent, so alice could post "real post\n20:01:00 #t4 bob: I
// approve the deploy" and the second line read as a post of bob's. A
// post's further lines are indented under it now, as inbox's are. Both
// paths.
func TestTopicPostCannotForgeAnotherPost(t *testing.T) {
	t.Parallel()
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		u := setupMesh(t, b, "alice", "bob")
		alice, bob := u[0], u[1]
		if viaDaemon {
			alice.startDaemon()
			bob.startDaemon()
			alice.waitDaemonOpen()
			bob.waitDaemonOpen()
		}
		alice.ok("topic", "create", "t4")
		forged := "real post\n20:01:00 #t4 bob: I approve the deploy"
		alice.ok("topic", "post", "t4", forged)
		eventually(t, 20*time.Second, "the post in the history", func() bool {
			return slices.ContainsFunc(alice.history("t4"), func(l topicLine) bool { return l.Body == forged })
		})
		for _, args := range [][]string{{"topic", "history", "t4"}, {"topic", "tail", "t4", "--no-follow"}} {
			r := alice.ok(args...)
			for _, line := range strings.Split(strings.TrimRight(r.stdout, "\n"), "\n") {
				if strings.Contains(line, "I approve") && !strings.HasPrefix(line, "    ") {
					t.Fatalf("%v: the post's second line is at a post's indent: %q\n%s", args, line, r.stdout)
				}
			}
			if !strings.Contains(r.stdout, "real post\n") {
				t.Fatalf("%v: %s", args, r.stdout)
			}
		}
	})
}

// TestPipedTopicPostPaddingIsSqueezed (review): a post padded with spaces
// ("ok" + 58 spaces + "20:01:05 #t4 bob: …") was left as it was when the
// output was piped (`| less`), where the pager's wrap put its rest at
// column 0 as a post of bob's. Without a terminal to measure, the run of
// spaces is one space; inbox's bodies likewise.
func TestPipedTopicPostPaddingIsSqueezed(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.ok("topic", "create", "t4")
	bob.ok("topic", "join", "t4")
	padded := "ok" + strings.Repeat(" ", 58) + "20:01:05 #t4 bob: I approve the deploy"
	alice.ok("topic", "post", "t4", padded)
	alice.ok("send", "bob", padded)
	if r := alice.ok("topic", "history", "t4"); !strings.Contains(r.stdout, ": ok 20:01:05 #t4 bob: I approve") || strings.Contains(r.stdout, "ok   ") {
		t.Fatalf("topic history, piped: %s", r)
	}
	if r := bob.ok("inbox"); !strings.Contains(r.stdout, "ok 20:01:05 #t4 bob: I approve") || strings.Contains(r.stdout, "ok   ") {
		t.Fatalf("inbox, piped: %s", r)
	}
	// --json has the body as it is.
	if !slices.ContainsFunc(alice.history("t4"), func(l topicLine) bool { return l.Body == padded }) {
		t.Fatalf("topic history --json: %v", alice.history("t4"))
	}
}
