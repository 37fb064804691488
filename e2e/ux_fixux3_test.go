package e2e

// The eighteenth session's fixes of what a new user's trial found.

import (
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestBannedTopicTailSaysBanned: a banned member's `topic tail` went
// silent, following nothing, with nothing said; it ends (exit 4) and says
// banned, in words that do not call the ban a removal, and so does
// `topic list` (it listed the topics as if still joined).
func TestBannedTopicTailSaysBanned(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	bob.useDaemon = true
	alice.ok("topic", "create", "bots", "--plaintext")
	bob.ok("topic", "join", "bots")
	tl := bob.tail("bots")
	alice.ok("topic", "post", "bots", "before the ban")
	tl.waitBody("before the ban")
	var res adminOut
	alice.json(&res, "ban", "bob")
	select {
	case <-tl.done:
	case <-time.After(minWait):
		t.Fatalf("a banned member's topic tail goes on, silent; printed %+v", tl.all())
	}
	lines := tl.all()
	last := lines[len(lines)-1]
	if code := tl.cmd.ProcessState.ExitCode(); code != 4 || last.Error == nil || last.Error.Code != "banned" ||
		!strings.Contains(last.Error.Message, "banned") || strings.Contains(last.Error.Message, "removed") {
		t.Fatalf("the banned member's tail ended with exit %d and %+v, want exit 4 saying banned", tl.cmd.ProcessState.ExitCode(), last.Error)
	}
	e := bob.fails(4, "banned", "topic", "list")
	if !strings.Contains(e.Error.Message, "banned") || strings.Contains(e.Error.Message, "removed") {
		t.Fatalf("topic list of a banned member: %+v", e.Error)
	}
}

// TestPlaintextTopicPostNamesItsSender: a --plaintext topic's post in the
// inbox (through the daemon) had no sender name at all, only "unverified
// sender KEY"; it has the name the broker gives, said to be unproven, as
// topic tail says it.
func TestPlaintextTopicPostNamesItsSender(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	alice.useDaemon = true
	bob.ok("topic", "create", "bots", "--plaintext")
	alice.ok("topic", "join", "bots")
	bob.ok("topic", "post", "bots", "beep from a bot")
	var row inboxRow
	eventually(t, minWait, "the post in alice's inbox", func() bool {
		var rows []inboxRow
		alice.json(&rows, "inbox", "--all")
		for _, r := range rows {
			if r.body() == "beep from a bot" {
				row = r
				return true
			}
		}
		return false
	})
	if row.SenderName != "bob" || !row.Plaintext || row.Verified || row.SenderPubkey != bob.pubkey {
		t.Fatalf("the plaintext topic post in inbox --json: %+v", row)
	}
	out := alice.ok("inbox", "--all").stdout
	if !strings.Contains(out, "bob "+bob.pubkey[:8]+" (plaintext topic: sender not verified)") {
		t.Fatalf("inbox shows the plaintext topic post as:\n%s", out)
	}
}

// TestListsSayRemovedAndInviteState: a removed member's API key whose
// expiry had also passed was listed "expired" (it never works again,
// whatever its expiry); `invite list --json` gave no state, which only
// the text's STATE column said.
func TestListsSayRemovedAndInviteState(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	var key struct{ ID string }
	bob.json(&key, "apikey", "create", "bot", "--cap", "read", "--expires", "1s")
	op := newUser(t, "operator")
	var out struct{ Pubkey string }
	op.json(&out, "mesh", "remove-member", "bob", "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile())
	eventually(t, minWait, "bob's key listed as its removed member's", func() bool {
		for _, line := range strings.Split(alice.ok("apikey", "list").stdout, "\n") {
			if strings.Contains(line, key.ID) {
				if strings.Contains(line, "expired") {
					t.Fatalf("a removed member's key is listed as expired: %q", line)
				}
				return strings.Contains(line, "refused: its member was removed")
			}
		}
		return false
	})

	var inv struct{ InviteID string }
	alice.json(&inv, "invite", "--uses", "1")
	var revoked struct{ InviteID string }
	alice.json(&revoked, "invite")
	alice.ok("invite", "revoke", revoked.InviteID)
	var rows []struct{ InviteID, State string }
	alice.json(&rows, "invite", "list")
	states := map[string]string{}
	for _, r := range rows {
		states[r.InviteID] = r.State
	}
	if states[inv.InviteID] != "active" || states[revoked.InviteID] != "revoked" {
		t.Fatalf("invite list --json states: %+v", rows)
	}
}

// TestInboxMaxBytesRefusesNonsense: --inbox-max-bytes 0 and -1 became
// the default without a word, and 1 a cap no message fits in (the inbox
// full for good); each is refused with the valid range (exit 2).
func TestInboxMaxBytesRefusesNonsense(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	for _, v := range []string{"0", "-1", "1", "1048575"} {
		r := alice.run("daemon", "up", "--inbox-max-bytes="+v)
		if r.code != 2 || !strings.Contains(r.stderr, "--inbox-max-bytes "+v+" is not a cap the inbox can work with: it is at least 1048576 (1 MiB") {
			t.Fatalf("daemon up --inbox-max-bytes=%s: %s", v, r)
		}
	}
	if r := alice.run("daemon", "status", "--json"); !strings.Contains(r.stdout, `"running":false`) {
		t.Fatalf("a refused daemon up started a daemon: %s", r)
	}
}

// TestQuietKeepsResultsAndDropsTheRest: with -q, topic history and topic
// tail printed nothing at all (their posts went out as informational
// lines), and doctor printed every passing check as well.
func TestQuietKeepsResultsAndDropsTheRest(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.ok("topic", "create", "ops", "--plaintext")
	alice.ok("topic", "post", "ops", "a quiet post")
	for _, args := range [][]string{{"topic", "history", "ops", "-q"}, {"topic", "tail", "ops", "--no-follow", "-q"}} {
		if r := alice.ok(args...); !strings.Contains(r.stdout, "a quiet post") {
			t.Fatalf("%q printed no post: %s", args, r)
		}
	}
	loud, quiet := alice.run("doctor"), alice.run("doctor", "-q")
	if !strings.Contains(loud.stdout, "✔") || strings.Contains(quiet.stdout, "✔") || quiet.code != loud.code ||
		strings.Count(quiet.stdout, "⚠")+strings.Count(quiet.stdout, "✘") != strings.Count(loud.stdout, "⚠")+strings.Count(loud.stdout, "✘") {
		t.Fatalf("doctor -q:\n%s\ndoctor:\n%s", quiet.stdout, loud.stdout)
	}
}

// TestInstallSaysTheDaemonRunsAndClaudeIsMissing (a new user's trial):
// install in a joined home whose daemon ran, where the service could not
// start, said "run claudemesh daemon up once a mesh is joined", and
// nothing said that claude was not installed.
func TestInstallSaysTheDaemonRunsAndClaudeIsMissing(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd unit is Linux-only")
	}
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice")[0]
	fake := newFakeSystemctl(t) // its enable fails: no user bus
	fakeHome := t.TempDir()
	u.extraEnv = []string{"HOME=" + fakeHome, "XDG_CONFIG_HOME=" + filepath.Join(fakeHome, ".config"),
		"PATH=" + fake.dir, // nothing else: no claude either
		"CI=", "GITHUB_ACTIONS=", "GITLAB_CI=", "BUILDKITE=", "JENKINS_URL="}
	u.startDaemon()
	u.waitDaemonOpen()
	var v struct{ PID int }
	u.json(&v, "daemon", "status")
	r := u.run("install", "--no-hooks", "--no-skill")
	want := fmt.Sprintf("the daemon is running now (pid %d), but nothing starts it at login", v.PID)
	if v.PID == 0 || !strings.Contains(r.stdout, want) || strings.Contains(r.stdout, "once a mesh is joined") ||
		!strings.Contains(r.stderr, "claude (Claude Code) is not on PATH") {
		t.Fatalf("install in a joined home with its daemon running, without claude:\nwant %q\n%s", want, r)
	}
}

// TestSendHintsKeepTheHome (a new user's trial): a send's hints named
// claudemesh peer list / daemon outbox list without the --home the send
// ran with, so copying one looked at ~/.claudemesh (another identity, or
// none).
func TestSendHintsKeepTheHome(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	cm := "claudemesh --home " + alice.home + " "
	if r := alice.run("send", "nobody", "x"); r.code != 3 || !strings.Contains(r.stderr, cm+"peer list --all") {
		t.Fatalf("send to nobody: %s", r)
	}
	alice.useDaemon = true
	bob.ok("block", "alice")
	if r := alice.run("send", "bob", "blocked", "--wait"); r.code == 0 || !strings.Contains(r.stderr, cm+"daemon outbox list --status failed") {
		t.Fatalf("a refused send --wait: %s", r)
	}
}

// TestSoleMemberLeaveSaysTheWayOut (a new user's trial): the only member
// of a mesh (its owner) was told to hand it over with mesh transfer PEER,
// with no PEER to hand it to.
func TestSoleMemberLeaveSaysTheWayOut(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	r := alice.run("mesh", "leave", "test")
	if r.code != 4 || !strings.Contains(r.stderr, "you are the only member (and owner) of test") ||
		!strings.Contains(r.stderr, "invite --mesh test") || strings.Contains(r.stderr, "transfer PEER") {
		t.Fatalf("the sole member's mesh leave: %s", r)
	}
}

// TestUnjoinedHomeHintsCanWork (a new user's trial): in a home that
// joined nothing, doctor and ui sent the user to daemon up, which refuses
// such a home; ui stacked three prefixes and exited 5 (unreachable), and
// doctor's join hint dropped the --home.
func TestUnjoinedHomeHintsCanWork(t *testing.T) {
	t.Parallel()
	u := newUser(t, "empty")
	cm := "claudemesh --home " + u.home + " "
	r := u.run("doctor")
	if !strings.Contains(r.stdout, "→ "+cm+"join LINK") || strings.Contains(r.stdout, "daemon up") ||
		!strings.Contains(r.stdout, "not needed until this home joins a mesh") {
		t.Fatalf("doctor in a home that joined nothing: %s", r)
	}
	e := u.fails(4, "not_joined", "ui")
	if !strings.Contains(e.Error.Message, "has joined no mesh") || strings.Contains(e.Error.Message, "could not be started") {
		t.Fatalf("ui in a home that joined nothing: %+v", e.Error)
	}
	if r := u.run("ui"); !strings.Contains(r.stderr, "→ join one first: "+cm+"join LINK") {
		t.Fatalf("ui's hint: %s", r)
	}
}

// TestNegativeWaitTimeoutWithoutWait: `send bob hi --wait-timeout -1s`
// (no --wait) was told to add --wait with --wait-timeout -1s, which is
// then refused too.
func TestNegativeWaitTimeoutWithoutWait(t *testing.T) {
	t.Parallel()
	u := newUser(t, "alice")
	r := u.run("send", "bob", "hi", "--wait-timeout=-1s")
	if r.code != 2 || !strings.Contains(r.stderr, "it must be positive") || strings.Contains(r.stderr, "--wait --wait-timeout -1s") {
		t.Fatalf("send --wait-timeout -1s without --wait: %s", r)
	}
}

// TestDaemonStatusShowsTheTCPListener (a new user's trial): daemon up
// --tcp ADDR was reported nowhere, so with port 0 its port could not be
// found. daemon status gives its address and the token's file.
func TestDaemonStatusShowsTheTCPListener(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice")[0]
	u.useDaemon = true
	u.extraEnv = append(u.extraEnv, "CLAUDEMESH_WEB=off")
	u.ok("daemon", "up", "--tcp", "127.0.0.1:0")
	var st struct {
		TCP *struct{ Addr, TokenFile string } `json:"tcp"`
	}
	u.json(&st, "daemon", "status")
	if st.TCP == nil || strings.HasSuffix(st.TCP.Addr, ":0") || !strings.HasPrefix(st.TCP.Addr, "127.0.0.1:") || !strings.HasSuffix(st.TCP.TokenFile, "local-token") {
		t.Fatalf("daemon status --json: tcp %+v", st.TCP)
	}
	if r := u.ok("daemon", "status"); !strings.Contains(r.stdout, "local API (tcp): http://"+st.TCP.Addr+" (bearer token in "+st.TCP.TokenFile+")") {
		t.Fatalf("daemon status: %s", r)
	}
	if code, _ := httpDo(t, "GET", "http://"+st.TCP.Addr+"/v1/version", nil, ""); code != http.StatusUnauthorized {
		t.Fatalf("the listener daemon status names answers %d without the token, want 401", code)
	}
}

// TestRemoveMemberSpeaksToTheOperator (a new user's trial): "1
// undelivered messages … were dropped"; an unknown name told the operator,
// no member, to run peer list, and the owner's refusal to ask the mesh
// owner, whom the operator is above.
func TestRemoveMemberSpeaksToTheOperator(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice := us[0]
	alice.ok("send", "bob", "queued for bob")
	op := newUser(t, "operator")
	args := func(who string) []string {
		return []string{"mesh", "remove-member", who, "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile()}
	}
	if r := op.run(args("nobody")...); r.code != 3 || strings.Contains(r.stderr, "peer list") || !strings.Contains(r.stderr, "/v1/admin/meshes/test/members") {
		t.Fatalf("remove-member of an unknown name: %s", r)
	}
	if r := op.run(args("alice")...); r.code != 4 || strings.Contains(r.stderr, "ask the mesh owner") {
		t.Fatalf("remove-member of the owner: %s", r)
	}
	if r := op.ok(args("bob")...); !strings.Contains(r.stdout, "1 undelivered message for it dropped") {
		t.Fatalf("remove-member of bob: %s", r)
	}
}

// TestInviteSaysItsID (a new user's trial): invite printed the link and
// its terms but not the id invite revoke needs.
func TestInviteSaysItsID(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	r := alice.ok("invite", "--uses", "3")
	var rows []struct{ InviteID string }
	alice.json(&rows, "invite", "list")
	if len(rows) == 0 {
		t.Fatal("no invite listed")
	}
	id := rows[len(rows)-1].InviteID
	for _, row := range rows {
		if strings.Contains(r.stdout, "id "+row.InviteID) {
			id = row.InviteID
		}
	}
	if !strings.Contains(r.stdout, "id "+id+" (to revoke it: claudemesh --home "+alice.home+" invite revoke "+id+" --mesh test)") {
		t.Fatalf("invite: %s\ninvites: %+v", r, rows)
	}
}

// TestSummaryCountsCharactersAfterNFC (a new user's trial): 200 "é"
// typed with a combining accent were refused as 400 characters.
func TestSummaryCountsCharactersAfterNFC(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.ok("status", "summary", strings.Repeat("e\u0301", 200))
	if r := alice.run("status", "summary", strings.Repeat("e\u0301", 281)); r.code != 2 || !strings.Contains(r.stderr, "the summary is 281 characters") {
		t.Fatalf("a summary of 281 accented letters: %s", r)
	}
}
