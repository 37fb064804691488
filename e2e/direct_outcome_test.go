package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
)

// TestDirectSendSaysWhatBecameOfTheMessage: a send without the daemon that
// failed for an unreachable broker, or one whose cluster refused it
// `unavailable`, printed no message id and did not say what became of the
// message: the broker's words said "retry with the same id", which was
// nowhere on the screen, and exit 5 said nothing was queued though the
// cluster may still store it. An unreachable broker now says the message
// was not sent (exit 5); an `unavailable` refusal names the message, says
// it may or may not have been accepted (outcome_unknown, exit 8) and how to
// retry it without a duplicate; retried so once the quorum is back, it
// arrives once.
func TestDirectSendSaysWhatBecameOfTheMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three broker processes")
	}
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	b.kill()
	r := us[0].run("send", "bob", "hello")
	if r.code != 5 || !strings.Contains(r.stderr, "cannot be reached") || !strings.Contains(r.stderr, "the message was not sent") {
		t.Fatalf("send to an unreachable broker: %s", r)
	}
	if e := us[0].fails(5, "unreachable", "send", "bob", "hello"); !strings.Contains(e.Error.Message, "the message was not sent") {
		t.Fatalf("send --json to an unreachable broker: %+v", e)
	}

	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	nodes, _ := startFailoverNodes(t, key)
	alice, bob := newUser(t, "alice"), newUser(t, "bob")
	alice.createMesh(nodes[0], "Quorum", "q")
	bob.join(alice.invite().Link)
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
	r = alice.run("send", "bob", "once without quorum")
	m := regexp.MustCompile(`did not acknowledge message (\S+) `).FindStringSubmatch(r.stderr)
	if r.code != 8 || m == nil || !strings.Contains(r.stderr, "may or may not have been accepted") ||
		!strings.Contains(r.stderr, "--id "+m[1]+" --no-daemon") {
		t.Fatalf("send refused unavailable: %s", r)
	}
	id := m[1]
	resume()
	eventually(t, 90*time.Second, "the retry with the same id taken", func() bool {
		r := alice.run("send", "bob", "once without quorum", "--id", id, "--json")
		if r.code == 0 {
			var out sendOut
			if json.Unmarshal([]byte(r.stdout), &out) != nil || out.ClientMessageID != id {
				t.Fatalf("retry: %s", r)
			}
			return true
		}
		if r.code != 8 || !strings.Contains(r.stdout, `"outcome_unknown"`) || !strings.Contains(r.stdout, `"clientMessageId":"`+id+`"`) {
			t.Fatalf("retry while the cluster recovers: %s", r)
		}
		return false
	})
	// Without a daemon, inbox takes what the broker queued (and acks it).
	got := 0
	eventually(t, 30*time.Second, "the message in bob's inbox", func() bool {
		r := bob.run("inbox", "--json")
		got += strings.Count(r.stdout, "once without quorum")
		return r.code == 0 && got > 0
	})
	r = bob.run("inbox", "--json")
	if got += strings.Count(r.stdout, "once without quorum"); got != 1 {
		t.Fatalf("bob had the message %d times", got)
	}
}
