package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestTopicPostIDIsTakenEverywhere: through the daemon, `topic post`
// prints only the clientMessageId (the broker has not taken the post
// yet), and no verb that takes a post id accepted it: history --before
// said "no message with that id (it may have expired)", message status
// "you sent no message", and a --reply-to with it named nothing a reader
// knows. Each now takes it, on the daemon path and on the direct one.
func TestTopicPostIDIsTakenEverywhere(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	alice.ok("topic", "create", "deploys")
	bob.ok("topic", "join", "deploys")
	type sent struct {
		MessageID       string `json:"messageId"`
		ClientMessageID string `json:"clientMessageId"`
		Status          string `json:"status"`
	}
	type post struct {
		ID        string `json:"id"`
		Body      string `json:"body"`
		ReplyToID string `json:"replyToId"`
	}
	history := func(who *user, args ...string) []post {
		var page []post
		who.json(&page, append([]string{"topic", "history", "deploys"}, args...)...)
		return page
	}
	idOf := func(page []post, body string) string {
		for _, p := range page {
			if p.Body == body {
				return p.ID
			}
		}
		return ""
	}
	var first, second sent
	alice.json(&first, "topic", "post", "deploys", "first")
	alice.json(&second, "topic", "post", "deploys", "second")
	if first.MessageID != "" || first.ClientMessageID == "" {
		t.Fatalf("through the daemon a post is accepted with its clientMessageId alone: %+v", first)
	}
	var page []post
	eventually(t, 20*time.Second, "both posts at the broker", func() bool {
		r := alice.run("topic", "history", "deploys", "--json")
		page = nil
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &page) == nil && idOf(page, "second") != ""
	})
	firstID := idOf(page, "first")
	if firstID == "" || firstID == first.ClientMessageID {
		t.Fatalf("history: %+v (first's clientMessageId %s)", page, first.ClientMessageID)
	}

	// history --before the printed id, through the daemon and directly.
	for _, direct := range []bool{false, true} {
		args := []string{"--before", second.ClientMessageID}
		if direct {
			args = append(args, "--no-daemon")
		}
		if got := history(alice, args...); len(got) != 1 || got[0].ID != firstID {
			t.Errorf("history %v: %+v", args, got)
		}
	}

	// message status of the printed id says what became of the post.
	var st struct {
		MessageID  string `json:"messageId"`
		Topic      string `json:"topic"`
		Recipients []any  `json:"recipients"`
	}
	alice.json(&st, "message", "status", first.ClientMessageID)
	if st.MessageID != firstID || st.Topic != "deploys" {
		t.Errorf("message status --json: %+v", st)
	}
	if r := alice.ok("message", "status", first.ClientMessageID, "--no-daemon"); !strings.Contains(r.stdout, "post "+firstID+" to #deploys") {
		t.Errorf("message status --no-daemon: %s", r)
	}

	// A reply by the printed id answers the post readers know.
	alice.ok("topic", "post", "deploys", "reply via daemon", "--reply-to", first.ClientMessageID)
	alice.ok("topic", "post", "deploys", "reply direct", "--reply-to", first.ClientMessageID, "--no-daemon")
	eventually(t, 20*time.Second, "bob reads both replies", func() bool {
		r := bob.run("topic", "history", "deploys", "--json")
		page = nil
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &page) == nil && idOf(page, "reply via daemon") != "" && idOf(page, "reply direct") != ""
	})
	for _, p := range page {
		if strings.HasPrefix(p.Body, "reply") && p.ReplyToID != firstID {
			t.Errorf("%q answers %q, not the post %s", p.Body, p.ReplyToID, firstID)
		}
	}

	// Likewise a DM's reply by the id send printed.
	var dm sent
	alice.json(&dm, "send", "bob", "dm one")
	eventually(t, 20*time.Second, "the DM at the broker", func() bool {
		var st struct {
			MessageID string `json:"messageId"`
		}
		r := alice.run("message", "status", dm.ClientMessageID, "--json")
		return r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.MessageID != ""
	})
	alice.ok("send", "bob", "dm reply direct", "--reply-to", dm.ClientMessageID, "--no-daemon")
	alice.ok("send", "bob", "dm reply via daemon", "--reply-to", dm.ClientMessageID)
	rows := map[string]inboxRow{}
	eventually(t, 20*time.Second, "bob's DMs", func() bool {
		for _, r := range bob.inbox() {
			rows[r.body()] = r
		}
		return len(rows) == 3
	})
	dmID := rows["dm one"].MessageID
	for _, r := range rows {
		if strings.HasPrefix(r.body(), "dm reply") && (dmID == "" || r.ReplyToID != dmID) {
			t.Errorf("%q answers %q, not the message %s", r.body(), r.ReplyToID, dmID)
		}
	}
}

// TestPlainInboxShowsWhatIsNew: through the daemon a plain `inbox` printed
// every stored message, every time, and marked none read (the unread
// counts never went down). It now shows the new ones and marks them read;
// --all shows everything, and --json lists as before.
func TestPlainInboxShowsWhatIsNew(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "dave")
	alice, dave := u[0], u[1]
	dave.startDaemon()
	dave.waitDaemonOpen()
	alice.ok("send", "dave", "one")
	alice.ok("send", "dave", "two")
	eventually(t, 20*time.Second, "dave's two messages", func() bool { return len(dave.inbox()) == 2 })
	if r := dave.ok("inbox"); !strings.Contains(r.stdout, "one") || !strings.Contains(r.stdout, "two") {
		t.Fatalf("first inbox: %s", r)
	}
	if rows := dave.inbox("--unread"); len(rows) != 0 {
		t.Errorf("what inbox showed is still unread: %v", bodies(rows))
	}
	if r := dave.ok("inbox"); strings.Contains(r.stdout, "one") || !strings.Contains(r.stdout, "no new messages") || !strings.Contains(r.stdout, "claudemesh --home "+dave.home+" inbox --all") {
		t.Errorf("second inbox: %s", r)
	}
	alice.ok("send", "dave", "three")
	eventually(t, 20*time.Second, "dave's third message", func() bool { return len(dave.inbox()) == 3 })
	if r := dave.ok("inbox"); strings.Contains(r.stdout, "one") || !strings.Contains(r.stdout, "three") {
		t.Errorf("third inbox: %s", r)
	}
	if r := dave.ok("inbox", "--all"); !strings.Contains(r.stdout, "one") || !strings.Contains(r.stdout, "three") {
		t.Errorf("inbox --all: %s", r)
	}
	dave.fails(2, "usage", "inbox", "--all", "--unread")
}

// TestDaemonStatusCountsMentions: the broker's mention notifications are
// read by nothing; a mention reaches its member through the post, and now
// daemon status counts the unread posts that mention you.
func TestDaemonStatusCountsMentions(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.startDaemon()
	bob.startDaemon()
	alice.waitDaemonOpen()
	bob.waitDaemonOpen()
	alice.ok("topic", "create", "rel")
	bob.ok("topic", "join", "rel")
	eventually(t, 20*time.Second, "bob holds the key", func() bool {
		return bob.run("topic", "post", "rel", "bob is here").code == 0
	})
	alice.ok("topic", "post", "rel", "plain post")
	alice.ok("topic", "post", "rel", "hey bob", "--mention", "bob")
	var st struct {
		InboxUnread   int `json:"inboxUnread"`
		InboxMentions int `json:"inboxMentions"`
	}
	eventually(t, 20*time.Second, "bob's daemon stored the mention", func() bool {
		bob.json(&st, "daemon", "status")
		return st.InboxMentions == 1
	})
	if r := bob.ok("daemon", "status"); !strings.Contains(r.stdout, "(1 mentions you)") {
		t.Errorf("daemon status: %s", r)
	}
	bob.ok("inbox")
	st.InboxMentions = 0
	bob.json(&st, "daemon", "status")
	if st.InboxMentions != 0 {
		t.Errorf("after inbox showed it: %+v", st)
	}
}

// TestFollowJSONTellsNoticesFromMessages: inbox --follow --json printed a
// mesh in trouble as {mesh, error} among the message lines, with Go's
// socket text; every line that is not a message is now a notice
// ({schemaVersion, notice, mesh?, message}, never an id), in words.
func TestFollowJSONTellsNoticesFromMessages(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "dave")
	alice, dave := u[0], u[1]
	dave.startDaemon()
	dave.waitDaemonOpen()
	alice.ok("send", "dave", "before")
	eventually(t, 20*time.Second, "dave's message", func() bool { return len(dave.inbox()) == 1 })
	b.kill()
	eventually(t, 20*time.Second, "dave's daemon sees the broker gone", func() bool {
		return dave.daemonStatus().Meshes["test"] != "open"
	})
	f := dave.followDaemon()
	f.waitFor("before")
	var n followNotice
	eventually(t, 20*time.Second, "a notice about the mesh", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, x := range f.notices {
			if x.Mesh == "test" {
				n = x
				return true
			}
		}
		return false
	})
	if n.Notice != "unreachable" || strings.Count(n.Message, "cannot be reached") != 1 || strings.Contains(n.Message, "tcp ") {
		t.Errorf("notice: %+v", n)
	}
	// daemon status said it twice, one inside the other.
	if r := dave.ok("daemon", "status"); strings.Count(r.stdout+r.stderr, "cannot be reached") != 1 {
		t.Errorf("daemon status: %s", r)
	}
}

// TestLeavingAGroupYouAreNotInSaysSo: `status group leave nosuch` said
// "✔ left @nosuch" for a group never joined; it now says nothing was left
// (exit 3), on both paths, and a real leave still works.
func TestLeavingAGroupYouAreNotInSaysSo(t *testing.T) {
	t.Parallel()
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		alice := setupMesh(t, b, "alice")[0]
		if viaDaemon {
			alice.startDaemon()
			alice.waitDaemonOpen()
		}
		e := alice.fails(3, "not_found", "status", "group", "leave", "nosuch")
		if !strings.Contains(e.Error.Message, "not in @nosuch") {
			t.Errorf("leave of a group never joined: %+v", e.Error)
		}
		alice.ok("status", "group", "join", "dev")
		if r := alice.ok("status", "group", "leave", "dev"); !strings.Contains(r.stdout, "left @dev") {
			t.Errorf("leave: %s", r)
		}
		alice.fails(3, "not_found", "status", "group", "leave", "dev")
	})
}

// TestJoinOfAnUnusableInviteSaysWhyInWords: an invite whose fields do not
// check said "invalid invite: crypto: invalid invite: unsupported version
// 2"; the package prefixes are gone.
func TestJoinOfAnUnusableInviteSaysWhyInWords(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	link := alice.invite().Link
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(link, "ic://join/"))
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Replace(raw, []byte(`"v":1,`), []byte(`"v":2,`), 1)
	if bytes.Equal(changed, raw) {
		t.Fatalf("no v in %s", raw)
	}
	bob := newUser(t, "bob")
	e := bob.fails(2, "malformed", "join", "ic://join/"+base64.RawURLEncoding.EncodeToString(changed), "--name", "bob")
	if strings.Contains(e.Error.Message, "crypto:") || !strings.Contains(e.Error.Message, "unsupported version 2") {
		t.Errorf("join: %+v", e.Error)
	}
}

// TestMessageStatusFindsTheMesh: for a member of two meshes, the command
// send's hints print (claudemesh message status ID, no --mesh) said
// "several meshes joined; choose one with --mesh". It now finds the
// message's mesh, through the daemon and directly.
func TestMessageStatusFindsTheMesh(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "dave")
	alice, dave := u[0], u[1]
	alice.createMesh(b, "Other", "other")
	dave.join(alice.invite("--mesh", "other").Link)
	type sent struct {
		MessageID       string `json:"messageId"`
		ClientMessageID string `json:"clientMessageId"`
	}
	var direct sent
	alice.json(&direct, "send", "dave", "in other, directly", "--mesh", "other", "--no-daemon")
	alice.startDaemon()
	alice.waitDaemonOpen()
	var viaDaemon sent
	alice.json(&viaDaemon, "send", "dave", "in other, through the daemon", "--mesh", "other")
	for _, c := range []struct{ id, path string }{
		{direct.MessageID, "--no-daemon"}, {viaDaemon.ClientMessageID, "--strict"},
	} {
		var st struct {
			MessageID       string `json:"messageId"`
			ClientMessageID string `json:"clientMessageId"`
		}
		alice.json(&st, "message", "status", c.id, c.path)
		if st.MessageID == "" && st.ClientMessageID == "" {
			t.Errorf("message status %s %s: %+v", c.id, c.path, st)
		}
	}
	e := alice.fails(3, "not_found", "message", "status", "01M9NOSUCHMESSAGE000000000", "--no-daemon")
	if !strings.Contains(e.Error.Message, "any of your meshes") {
		t.Errorf("an id of no mesh: %+v", e.Error)
	}
}

// TestInstallServiceAgainKeepsItsWeb: install-service without --web (what
// doctor advises after an update, and what install runs) wrote the unit
// again without the --web an earlier install gave it, so a second home's
// daemon competed for the default port.
func TestInstallServiceAgainKeepsItsWeb(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd unit is Linux-only")
	}
	fakeHome := t.TempDir()
	u := newUser(t, "svc")
	u.extraEnv = []string{"HOME=" + fakeHome, "XDG_CONFIG_HOME=" + filepath.Join(fakeHome, ".config")}
	var res struct {
		Path string `json:"path"`
	}
	u.json(&res, "daemon", "install-service", "--allow-ci", "--no-start", "--web", "127.0.0.1:7902")
	r := u.ok("daemon", "install-service", "--allow-ci", "--no-start")
	if !strings.Contains(r.stdout, "kept --web 127.0.0.1:7902") {
		t.Errorf("install-service again: %s", r)
	}
	data, err := os.ReadFile(res.Path)
	if err != nil || !strings.Contains(string(data), " daemon up --foreground --web 127.0.0.1:7902\n") {
		t.Fatalf("the unit: %v\n%s", err, data)
	}
	u.ok("daemon", "install-service", "--allow-ci", "--no-start", "--web", "off")
	if data, _ := os.ReadFile(res.Path); !strings.Contains(string(data), "--web off") {
		t.Errorf("an explicit --web replaces it: %s", data)
	}
	u.ok("daemon", "uninstall-service", "--no-stop")
}

// TestJoinReadsTheLinkFromStdin: the bearer link had to be an argument,
// which every user's ps shows; `join -` reads it from stdin (invite's
// two-line output included).
func TestJoinReadsTheLinkFromStdin(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	link := alice.invite().Link
	bob := newUser(t, "bob")
	r := bob.runIn(link+"\n→ member invite to test; the joiner runs: claudemesh join <link>\n", "join", "-", "--name", "bob")
	if r.code != 0 || !strings.Contains(r.stdout, "test") {
		t.Fatalf("join -: %s", r)
	}
	if ms := bob.whoami().Meshes; len(ms) != 1 || ms[0].Slug != "test" {
		t.Errorf("bob's meshes: %+v", ms)
	}
	bob2 := newUser(t, "bob2")
	bob2.failsIn("", 2, "usage", "join", "-", "--name", "bob2")
}

// TestEmptyFlagValuesAreRefused: send --priority "" and --id "" (an unset
// shell variable) were taken for no flag at all, while a wrong value was
// refused; requeue of a row that did not fail was exit 1 (a failure not
// covered), not a conflict.
func TestEmptyFlagValuesAreRefused(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice := u[0]
	for _, f := range []string{"--priority", "--id", "--reply-to"} {
		e := alice.fails(2, "usage", "send", "bob", "hi", f, "")
		if !strings.Contains(e.Error.Message, f+" is empty") {
			t.Errorf("%s \"\": %+v", f, e.Error)
		}
	}
	alice.ok("send", "bob", "urgent", "--priority", "now")
	alice.ok("topic", "create", "pt", "--plaintext")
	alice.ok("topic", "post", "pt", "with a mention", "--mention", "alice")
	alice.startDaemon()
	alice.waitDaemonOpen()
	var sent struct {
		ClientMessageID string `json:"clientMessageId"`
	}
	alice.json(&sent, "send", "bob", "to requeue")
	alice.fails(6, "not_failed", "daemon", "outbox", "requeue", sent.ClientMessageID)
}

// TestNotAMemberNamesNoProtocolFrame: reading a public topic you have
// not joined said "join it first (topic_join)", a protocol frame's name,
// also on the chat page.
func TestNotAMemberNamesNoProtocolFrame(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	u[0].ok("topic", "create", "pub", "--plaintext")
	e := u[1].fails(4, "not_a_member", "topic", "history", "pub")
	if strings.Contains(e.Error.Message, "topic_join") || !strings.Contains(e.Error.Message, "join it first") {
		t.Errorf("not a member: %+v", e.Error)
	}
}
