package e2e

// What a starting agent session is handed (QA 7-D, 7-E): a new session
// does not get its member's history as unread, a starting MCP server
// pushes at most the 20 newest waiting messages and says how many others
// there are, and its welcome counts the peers online as `peer list` does.

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNewSessionCatchUpIsBounded(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := users[0], users[1], users[2]
	alice.startDaemon()
	bob.startDaemon()
	carol.startDaemon()
	alice.waitDaemonOpen()
	bob.waitDaemonOpen()
	carol.waitDaemonOpen()

	// History: member DMs alice got before her agent sessions existed.
	bob.ok("send", "alice", "history 1")
	bob.ok("send", "alice", "history 2")
	eventually(t, 20*time.Second, "alice stored her history", func() bool { return len(alice.inbox()) == 2 })

	api := alice.launch(standInClaude(t), "alice-api")
	inAPI := alice.asSession(api)
	if rows := inAPI.inbox(); len(rows) != 0 {
		t.Fatalf("a new session was handed its member's history: %q", bodies(rows))
	}
	// 21 member DMs after it registered: all unread for it.
	const waiting = 21
	for i := 1; i <= waiting; i++ {
		bob.ok("send", "alice", fmt.Sprintf("waiting %02d", i))
	}
	eventually(t, 30*time.Second, "alice-api has the waiting messages", func() bool {
		return len(inAPI.inbox("--unread")) == waiting
	})
	eventually(t, 20*time.Second, "bob and carol online for alice", func() bool {
		var rows []peerRow
		alice.json(&rows, "peer", "list")
		on := 0
		for _, r := range rows {
			if (r.MemberPubkey == bob.pubkey || r.MemberPubkey == carol.pubkey) && r.Online {
				on++
			}
		}
		return on == 2
	})

	// A brand-new ambient session: no history, nothing pushed; online are
	// bob, carol and its sibling alice-api.
	_, ambient, _ := startMCP(t, alice)
	w := ambient.waitNote("ambient welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	if w.Meta["unread"] != "0" || !strings.Contains(w.Content, "; no unread messages") ||
		w.Meta["peers_online"] != "3" || !strings.Contains(w.Content, "; 3 other peers online") {
		t.Fatalf("ambient welcome: %+v", w)
	}

	// alice-api's own MCP server: the 20 newest of its 21 follow, oldest
	// first; the oldest stays unread and the welcome says so.
	cmd := inAPI
	_, capture, _ := startMCP(t, cmd)
	w = capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	if w.Meta["unread"] != "21" || !strings.Contains(w.Content, "21 unread messages: the 20 newest follow, 1 older one stays unread") ||
		w.Meta["peers_online"] != "3" {
		t.Fatalf("welcome: %+v", w)
	}
	bob.ok("send", "alice", "live one")
	capture.waitNote("live one", func(n channelNote) bool { return n.Content == "bob: live one" })
	var got []string
	for _, n := range capture.all() {
		if n.Meta["kind"] != "welcome" {
			got = append(got, strings.TrimPrefix(n.Content, "bob: "))
		}
	}
	var want []string
	for i := 2; i <= waiting; i++ {
		want = append(want, fmt.Sprintf("waiting %02d", i))
	}
	want = append(want, "live one")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("pushed %q, want %q", got, want)
	}
	// The MCP server marks a message seen after writing its notification,
	// so the last one may still be unread for a moment.
	eventually(t, 20*time.Second, `"waiting 01" alone left unread`, func() bool {
		unread := inAPI.inbox("--unread")
		if len(unread) == 1 && unread[0].body() == "waiting 01" {
			return true
		}
		t.Logf("unread so far: %q", bodies(unread))
		return false
	})
	// The ambient session was pushed only what came after it started.
	for _, n := range ambient.all() {
		if n.Meta["kind"] != "welcome" && n.Content != "bob: live one" {
			t.Fatalf("the ambient session was pushed %q", n.Content)
		}
	}
}
