package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// standIn is a process a session lives as long as (a stand-in for claude).
func standIn(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

// register registers a session of rd's member and returns an API client
// that speaks as it.
func register(t *testing.T, rd *runningDaemon, home, sessionID, name string, pid int) (*localapi.Client, localapi.Session) {
	t.Helper()
	tok := cmcrypto.RandomHex32()
	var s localapi.Session
	if _, err := rd.api.Do(context.Background(), "POST", "/v1/sessions/register",
		localapi.SessionRegister{Token: tok, SessionID: sessionID, DisplayName: name, PID: pid, Cwd: "/src/" + name}, &s); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	c := localapi.New(localapi.SocketPath(home))
	c.SessionToken = tok
	return c, s
}

func peersOf(t *testing.T, c *localapi.Client) []localapi.Peer {
	t.Helper()
	var peers []localapi.Peer
	if _, err := c.Do(context.Background(), "GET", "/v1/peers", nil, &peers); err != nil {
		t.Fatal(err)
	}
	return peers
}

func listed(peers []localapi.Peer, pubkey string) int {
	n := 0
	for _, p := range peers {
		if p.Pubkey == pubkey && p.Online {
			n++
		}
	}
	return n
}

func bodiesOf(rows []localapi.InboxRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.Body)
	}
	slices.Sort(out)
	return out
}

func inboxOf(t *testing.T, c *localapi.Client) []localapi.InboxRow {
	t.Helper()
	var rows []localapi.InboxRow
	if _, err := c.Do(context.Background(), "GET", "/v1/inbox", nil, &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

func send(t *testing.T, c *localapi.Client, to, text string) {
	t.Helper()
	if _, err := c.Send(context.Background(), localapi.SendRequest{To: to, Message: text}); err != nil {
		t.Fatalf("send %q to %s: %v", text, to, err)
	}
}

// TestSessionsArePeersWithScopedInboxes is issue 7's daemon core: two
// sessions of one member are listed to another member, each sees its own
// DMs, its member's DMs and broadcasts (once), never its sibling's; a
// session sends as its own key, shown to the recipient with its member;
// the reaper drops a dead session; a restarted daemon revives the live one
// with the same key and no duplicate.
func TestSessionsArePeersWithScopedInboxes(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	bob := e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	p1, p2 := standIn(t), standIn(t)
	s1, s1info := register(t, alice, e.homes["alice"], "sess-one", "alice-api", p1.Process.Pid)
	s2, s2info := register(t, alice, e.homes["alice"], "sess-two", "alice-web", p2.Process.Pid)
	// Registration waits (a bounded time) for the broker's verdict, so on
	// a slow machine a session may still be connecting: never closed.
	if s1info.Pubkey == s2info.Pubkey || s1info.MemberPubkey != e.owner.Pubkey || s1info.State == "closed" {
		t.Fatalf("sessions %+v %+v", s1info, s2info)
	}
	// The key file is 0600 and holds the key the session announced.
	fi, err := os.Stat(filepath.Join(e.homes["alice"], "sessions", "team", "sess-one.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session key file: %v %v", fi, err)
	}

	waitFor(t, 20*time.Second, "bob sees both sessions", func() bool {
		p := peersOf(t, bob.api)
		return listed(p, s1info.Pubkey) == 1 && listed(p, s2info.Pubkey) == 1
	})
	for _, p := range peersOf(t, s1) {
		if p.IsThisSession != (p.Pubkey == s1info.Pubkey) {
			t.Fatalf("isThisSession for s1's caller: %+v", p)
		}
		if p.Pubkey == s1info.Pubkey && (p.Cwd != "alice-api" || p.PeerType != wire.PeerAI || !p.IsSelf) {
			t.Fatalf("s1 as listed: %+v", p)
		}
	}

	send(t, bob.api, s1info.Pubkey, "for s1")
	send(t, bob.api, "alice", "for alice")
	send(t, bob.api, "*", "to all")
	waitFor(t, 20*time.Second, "alice's daemon stored every copy", func() bool {
		rows := alice.inbox(t)
		if len(rows) != 5 {
			t.Logf("alice has %d rows: %q", len(rows), bodiesOf(rows))
		}
		return len(rows) == 5 // s1 DM, member DM, broadcast ×3 (member, s1, s2)
	})
	if got := bodiesOf(inboxOf(t, s1)); !slices.Equal(got, []string{"for alice", "for s1", "to all"}) {
		t.Fatalf("s1 sees %q", got)
	}
	if got := bodiesOf(inboxOf(t, s2)); !slices.Equal(got, []string{"for alice", "to all"}) {
		t.Fatalf("s2 sees %q", got)
	}
	// The same scope holds for replayed events.
	stream, err := s2.Events(context.Background(), "0", "")
	if err != nil {
		t.Fatal(err)
	}
	var replayed []string
	for len(replayed) < 2 {
		ev, err := stream.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type == localapi.EventMessage {
			replayed = append(replayed, string(ev.Data))
		}
	}
	stream.Close()
	for _, r := range replayed {
		if contains(r, "for s1") {
			t.Fatalf("s2 replayed its sibling's DM: %s", r)
		}
	}
	// s1 reading the member DM leaves it unread for s2.
	var unread []localapi.InboxRow
	s1.Do(context.Background(), "GET", "/v1/inbox?unreadOnly=true&markSeen=true", nil, &unread)
	s2.Do(context.Background(), "GET", "/v1/inbox?unreadOnly=true", nil, &unread)
	if got := bodiesOf(unread); !slices.Equal(got, []string{"for alice", "to all"}) {
		t.Fatalf("s2's unread after s1 read: %q", got)
	}

	// s1 sends as itself; bob sees who it belongs to.
	send(t, s1, "bob", "from s1")
	var row localapi.InboxRow
	waitFor(t, 20*time.Second, "bob got s1's message", func() bool {
		for _, r := range bob.inbox(t) {
			if r.Body == "from s1" {
				row = r
				return true
			}
		}
		return false
	})
	if row.SenderPubkey != s1info.Pubkey || row.SenderMemberPubkey != e.owner.Pubkey || row.SenderMemberName != "alice" ||
		row.SenderName != "alice-api" || !row.Verified {
		t.Fatalf("bob's row of s1's message: %+v", row)
	}

	// Topics: a post to a topic the member belongs to reaches every
	// session of the member (stored once, for the member); a session posts
	// as itself and does not see its own post, its sibling does.
	ctx := context.Background()
	if _, err := bob.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "ops"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics/ops/join", localapi.TopicMeshRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "alice's daemon holds the key of #ops", func() bool {
		var list []localapi.Topic
		alice.api.Do(ctx, "GET", "/v1/topics", nil, &list)
		for _, tp := range list {
			if tp.Name == "ops" && tp.HasKey {
				return true
			}
		}
		return false
	})
	send(t, bob.api, "#ops", "topic for all sessions")
	seesTopic := func(c *localapi.Client, body string) bool {
		for _, r := range inboxOf(t, c) {
			if r.Body == body && r.Kind == wire.KindTopic && r.Topic == "ops" && r.Verified {
				return true
			}
		}
		return false
	}
	waitFor(t, 20*time.Second, "both sessions see the topic post", func() bool {
		return seesTopic(s1, "topic for all sessions") && seesTopic(s2, "topic for all sessions")
	})
	// The live events follow the same scope: s1's stream gets bob's next
	// post but not its own before it.
	s1events, err := s1.Events(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer s1events.Close()
	send(t, s1, "#ops", "s1 posts to ops")
	waitFor(t, 20*time.Second, "s2 sees its sibling's post", func() bool { return seesTopic(s2, "s1 posts to ops") })
	if seesTopic(s1, "s1 posts to ops") {
		t.Fatal("s1 sees its own topic post as news")
	}
	send(t, bob.api, "#ops", "marker")
	for {
		ev, err := s1events.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != localapi.EventMessage {
			continue
		}
		if contains(string(ev.Data), "s1 posts to ops") {
			t.Fatalf("s1's event stream carried its own topic post: %s", ev.Data)
		}
		if contains(string(ev.Data), "marker") {
			break
		}
	}
	waitFor(t, 20*time.Second, "bob reads s1's post as from s1", func() bool {
		for _, r := range bob.inbox(t) {
			if r.Body == "s1 posts to ops" {
				return r.SenderPubkey == s1info.Pubkey && r.SenderName == "alice-api" && r.SenderMemberPubkey == e.owner.Pubkey && r.Verified
			}
		}
		return false
	})

	// The reaper drops a session whose process died.
	p2.Process.Kill()
	p2.Wait()
	waitFor(t, 20*time.Second, "s2 gone from bob's peer list", func() bool {
		return listed(peersOf(t, bob.api), s2info.Pubkey) == 0
	})

	// A restarted daemon revives s1 (same key) and not s2.
	alice.stop()
	alice = e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	waitFor(t, 20*time.Second, "s1 back in bob's peer list", func() bool {
		return listed(peersOf(t, bob.api), s1info.Pubkey) == 1
	})
	var sessions []localapi.Session
	alice.api.Do(context.Background(), "GET", "/v1/sessions", nil, &sessions)
	if len(sessions) != 1 || sessions[0].Pubkey != s1info.Pubkey {
		t.Fatalf("sessions after restart: %+v", sessions)
	}
	var me localapi.Session
	if _, err := s1.Do(context.Background(), "GET", "/v1/sessions/me", nil, &me); err != nil || me.SessionID != "sess-one" {
		t.Fatalf("the revived token still works: %+v %v", me, err)
	}
	if _, err := s2.Do(context.Background(), "GET", "/v1/sessions/me", nil, &me); err == nil {
		t.Fatal("a reaped session's token must be refused")
	}
}

func contains(s, sub string) bool {
	return len(sub) > 0 && len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0)
}

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

// TestHookHoldsNextUntilIdle: the hook's working status holds a `next` DM
// for the session at the broker until idle; a `now` DM arrives at once, and
// `hook working` hands over (and marks seen) what is unread.
func TestHookHoldsNextUntilIdle(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	p := standIn(t)
	s, info := register(t, alice, e.homes["alice"], "sess-hook", "alice-hook", p.Process.Pid)
	waitFor(t, 20*time.Second, "the session connected", func() bool {
		var me localapi.Session
		s.Do(context.Background(), "GET", "/v1/sessions/me", nil, &me)
		return me.State == "open"
	})
	hook := func(event string) localapi.HookResponse {
		var res localapi.HookResponse
		if _, err := alice.api.Do(context.Background(), "POST", "/v1/sessions/hook",
			localapi.HookRequest{Event: event, SessionID: "sess-hook"}, &res); err != nil {
			t.Fatal(err)
		}
		if res.StatusError != "" {
			t.Fatalf("hook %s: %s", event, res.StatusError)
		}
		return res
	}
	hook(wire.StatusWorking)
	waitFor(t, 20*time.Second, "bob sees the session working", func() bool {
		for _, p := range peersOf(t, bob.api) {
			if p.Pubkey == info.Pubkey && p.Status == wire.StatusWorking {
				return true
			}
		}
		return false
	})
	if _, err := bob.api.Send(context.Background(), localapi.SendRequest{To: info.Pubkey, Message: "later", Priority: wire.PriorityNext}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.api.Send(context.Background(), localapi.SendRequest{To: info.Pubkey, Message: "urgent", Priority: wire.PriorityNow}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the now DM", func() bool {
		return slices.Contains(bodiesOf(inboxOf(t, s)), "urgent")
	})
	if slices.Contains(bodiesOf(inboxOf(t, s)), "later") {
		t.Fatal("a next DM reached a working session")
	}
	hook(wire.StatusIdle)
	waitFor(t, 20*time.Second, "the next DM after idle", func() bool {
		return slices.Contains(bodiesOf(inboxOf(t, s)), "later")
	})
	res := hook(wire.StatusWorking)
	if got := bodiesOf(res.Messages); !slices.Equal(got, []string{"later", "urgent"}) {
		t.Fatalf("hook working handed over %q", got)
	}
	if res := hook(wire.StatusWorking); len(res.Messages) != 0 {
		t.Fatalf("the hook showed messages twice: %+v", res.Messages)
	}
	_ = config.Mesh{}
}
