package e2e

// A session's profile (status, summary, groups) survives its connection:
// the broker forgets a session presence's status and summary when the
// connection ends, so the daemon sends them again after every
// session_hello and keeps them with the registration (QA 7-C).

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestSessionProfileSurvivesReconnectAndDaemonRestart(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	api := alice.launch(standInClaude(t), "alice-api")
	inAPI := alice.asSession(api)
	inAPI.ok("status", "summary", "api summary v2")
	inAPI.ok("status", "set", "dnd")
	inAPI.ok("status", "group", "join", "apigroup")

	// profiled waits until bob lists alice-api with its whole profile on
	// a connection other than `previous` (0: any), and returns the row.
	profiled := func(what string, previous int64) peerRow {
		t.Helper()
		var got peerRow
		eventually(t, 20*time.Second, what, func() bool {
			var rows []peerRow
			bob.json(&rows, "peer", "list")
			for _, r := range sessionsOf(rows, alice.pubkey) {
				if r.DisplayName != "alice-api" || r.ConnectedAt == previous {
					continue
				}
				got = r
				return r.Status == "dnd" && r.Summary == "api summary v2" &&
					slices.ContainsFunc(r.Groups, func(g struct{ Name, Role string }) bool { return g.Name == "apigroup" })
			}
			return false
		})
		return got
	}
	first := profiled("bob sees alice-api's profile", 0)

	// The human views (QA 7-K): a session row names its directory and
	// reads the same in both views; alice's --all marks her own presences
	// "(you)", not her agent session; daemon status counts sessions.
	line := func(out, name string) string {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, name) {
				return l
			}
		}
		t.Fatalf("no %s line in:\n%s", name, out)
		return ""
	}
	for _, who := range []*user{bob, alice} {
		for _, args := range [][]string{{"peer", "list"}, {"peer", "list", "--all"}} {
			l := line(who.ok(args...).stdout, "alice-api")
			if !strings.Contains(l, "session (ai) (claude-code)") || !strings.Contains(l, " e2e ") || strings.Contains(l, "(you)") {
				t.Fatalf("%s %q: alice-api's row: %q", who.name, args, l)
			}
		}
	}
	if out := alice.ok("daemon", "status").stdout; !strings.Contains(out, ", 1 agent session)") {
		t.Fatalf("daemon status: %s", out)
	}
	// send completes session names and groups from the daemon (QA 7-M).
	if out := alice.ok("__complete", "send").stdout; !strings.Contains(out, "\nalice-api\n") || !strings.Contains(out, "\n@apigroup\n") {
		t.Fatalf("__complete send: %q", out)
	}

	// The broker restarts: it knows nothing of the session's presence.
	addr, data := b.addr, b.data
	b.kill()
	b = startBroker(t, data, addr)
	second := profiled("alice-api's profile after a broker restart", first.ConnectedAt)

	// alice's daemon restarts: the registration revives with its profile.
	alice.ok("daemon", "down")
	alice.startDaemon()
	profiled("alice-api's profile after a daemon restart", second.ConnectedAt)

	// @apigroup still reaches the session (now: dnd holds next and low).
	bob.ok("send", "--priority", "now", "@apigroup", "to apigroup")
	eventually(t, 20*time.Second, "the @apigroup message reached alice-api", func() bool {
		return slices.Contains(bodies(inAPI.inbox()), "to apigroup")
	})
}
