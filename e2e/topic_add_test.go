package e2e

import (
	"strings"
	"testing"
	"time"
)

// A private topic gets members from the CLI: `topic join` says a lead adds
// them and how, `topic add` by a lead adds one and seals the key for it at
// once (the lead holds it), so the new member reads the history. A member
// who is not a lead cannot add. Both paths.
func TestTopicAddToAPrivateTopic(t *testing.T) {
	t.Parallel()
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		u := setupMesh(t, b, "alice", "bob", "carol")
		alice, carol := u[0], u[2]
		if viaDaemon {
			for _, x := range u {
				x.startDaemon()
				x.waitDaemonOpen()
			}
		}
		alice.ok("topic", "create", "secret", "--private")
		alice.ok("topic", "post", "secret", "for members only")
		e := carol.fails(4, "forbidden", "topic", "join", "secret")
		if !strings.Contains(e.Error.Message, "claudemesh topic add secret PEER") {
			t.Fatalf("join of a private topic: %+v", e.Error)
		}
		var row struct {
			DisplayName   string `json:"displayName"`
			Role          string `json:"role"`
			HasCurrentKey bool   `json:"hasCurrentKey"`
		}
		alice.json(&row, "topic", "add", "secret", "carol")
		if row.DisplayName != "carol" || row.Role != "member" || !row.HasCurrentKey {
			t.Fatalf("topic add: %+v", row)
		}
		if r := carol.topics()["secret"]; !r.Joined {
			t.Fatalf("carol after being added: %+v", r)
		}
		eventually(t, 20*time.Second, "carol reads the history", func() bool {
			h := carol.run("topic", "history", "secret", "--json")
			return h.code == 0 && strings.Contains(h.stdout, `"body":"for members only"`)
		})
		carol.fails(4, "forbidden", "topic", "add", "secret", "bob")
		alice.fails(3, "unknown_target", "topic", "add", "secret", "nobody")
		alice.fails(2, "usage", "topic", "add", "secret", "bob", "--role", "king")
		r := alice.ok("topic", "add", "secret", "bob", "--role", "observer")
		if !strings.Contains(r.stdout, "added bob to #secret as observer") {
			t.Fatalf("topic add (human): %s", r)
		}
	})
}

// TestTopicAddKeepsAnExistingRole: adding a member again without --role
// (to have the key sealed for them, say) keeps their role: it used to make
// a lead a member, who then could no longer add anyone. --role still
// changes it. Both paths.
func TestTopicAddKeepsAnExistingRole(t *testing.T) {
	t.Parallel()
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		u := setupMesh(t, b, "alice", "bob", "carol")
		alice, bob := u[0], u[1]
		if viaDaemon {
			alice.startDaemon()
			bob.startDaemon()
			alice.waitDaemonOpen()
			bob.waitDaemonOpen()
		}
		alice.ok("topic", "create", "secret", "--private")
		alice.ok("topic", "add", "secret", "bob", "--role", "lead")
		var row struct {
			Role string `json:"role"`
		}
		alice.json(&row, "topic", "add", "secret", "bob")
		if row.Role != "lead" {
			t.Fatalf("topic add secret bob (no --role) on a lead made bob %q", row.Role)
		}
		bob.ok("topic", "add", "secret", "carol")
		alice.json(&row, "topic", "add", "secret", "bob", "--role", "observer")
		if row.Role != "observer" {
			t.Fatalf("topic add --role observer: %q", row.Role)
		}
	})
}
