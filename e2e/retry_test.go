package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestDirectSendRetryWithTheSameIDIsADuplicate: on the direct path
// (--no-daemon), the same message sent again with the same --id — what
// send's own hint says to do when the broker's answer was lost — is
// answered with the first messageId as a duplicate (exit 0; "already
// sent", and duplicate:true under --json), and the recipient gets it
// once; another text under the id is refused with exit 6
// idempotency_key_reused. For a DM, an @group, a * broadcast and a #topic
// post. It used to be refused as idempotency_key_reused every time: each
// send sealed the message afresh (new nonce, new content key), so the
// broker saw different bytes under the id.
func TestDirectSendRetryWithTheSameIDIsADuplicate(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	bob.json(new(any), "status", "group", "join", "ops")
	alice.ok("topic", "create", "news")
	fb := bob.follow()
	waitPresence(t, alice, bob.pubkey, "cli")

	cases := []struct{ to, id, body, human string }{
		{"bob", "dm-1", "dm retried", "already sent to bob"},
		{"@ops", "group-1", "group retried", "already sent to @ops"},
		{"*", "all-1", "broadcast retried", "already sent to everyone"},
		{"#news", "post-1", "post retried", "already posted to #news"},
	}
	for _, c := range cases {
		var first, again sendOut
		alice.json(&first, "send", c.to, c.body, "--id", c.id, "--no-daemon")
		if !first.OK || first.Duplicate || first.MessageID == "" || first.ClientMessageID != c.id || first.Via != "direct" {
			t.Fatalf("send %s: %+v", c.to, first)
		}
		r := alice.ok("send", c.to, c.body, "--id", c.id, "--no-daemon")
		if !strings.Contains(r.stdout, c.human) || !strings.Contains(r.stdout, "message "+first.MessageID) {
			t.Fatalf("retry of send %s: %s\nwant %q and the first messageId %s", c.to, r, c.human, first.MessageID)
		}
		alice.json(&again, "send", c.to, c.body, "--id", c.id, "--no-daemon")
		if !again.OK || !again.Duplicate || again.MessageID != first.MessageID || again.ClientMessageID != c.id {
			t.Fatalf("retry of send %s: %+v, want a duplicate of %s", c.to, again, first.MessageID)
		}
		alice.fails(6, "idempotency_key_reused", "send", c.to, c.body+" (edited)", "--id", c.id, "--no-daemon")
	}

	// Pushes reach bob in order: once the sentinel is in, anything sent
	// to him before is too.
	alice.ok("send", "bob", "sentinel", "--no-daemon")
	fb.waitFor("sentinel")
	count := map[string]int{}
	for _, r := range fb.all() {
		count[r.body()]++
	}
	for _, c := range cases[:3] {
		if count[c.body] != 1 || count[c.body+" (edited)"] != 0 {
			t.Fatalf("bob got %q %d times and the edit %d times, want once and never; all: %v", c.body, count[c.body], count[c.body+" (edited)"], bodies(fb.all()))
		}
	}
	posts := 0
	for line := range strings.Lines(alice.ok("topic", "history", "news", "--json").stdout) {
		var p struct {
			Body *string `json:"body"`
		}
		if err := json.Unmarshal([]byte(line), &p); err != nil {
			t.Fatalf("topic history line %q: %v", line, err)
		}
		if p.Body != nil && strings.HasPrefix(*p.Body, "post retried") {
			if *p.Body != "post retried" {
				t.Fatalf("the edited post is in the history: %q", *p.Body)
			}
			posts++
		}
	}
	if posts != 1 {
		t.Fatalf("#news holds the post %d times, want once", posts)
	}
}
