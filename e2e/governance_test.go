package e2e

// Governance through the real binary (issue 9): admin verbs and their exit
// codes, kicked and banned clients and daemons, grants, ownership, the
// operator's removal, skills, and `audit verify` against a broker whose
// database was tampered with or rolled back.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/store/storetest"
)

type adminOut struct {
	Mesh     string `json:"mesh"`
	Action   string `json:"action"`
	Affected []struct {
		DisplayName, Pubkey string
	} `json:"affected"`
	Skipped []struct {
		DisplayName, Pubkey, Reason string
	} `json:"skipped"`
}

// TestAdminVerbsRoles: a plain member gets forbidden (exit 4) from every
// admin verb; an admin cannot act on the owner or another admin; an
// ambiguous session name lists candidates (exit 6); ownership moves with
// mesh transfer.
func TestAdminVerbsRoles(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]

	for _, args := range [][]string{
		{"kick", "alice"}, {"disconnect", "--all"}, {"ban", "alice"}, {"unban", "alice"}, {"bans"},
		{"role", "set", "carol", "admin"}, {"mesh", "transfer", "carol"}, {"kick", "--stale", "1h"},
	} {
		bob.fails(4, "forbidden", args...)
	}
	var res adminOut
	alice.json(&res, "role", "set", "carol", "admin")
	if len(res.Affected) != 1 || res.Affected[0].DisplayName != "carol" {
		t.Fatalf("role set: %+v", res)
	}
	alice.json(&res, "role", "set", "dave", "admin")
	carol.fails(4, "forbidden", "ban", "alice")
	carol.fails(4, "forbidden", "kick", "alice")
	carol.fails(4, "forbidden", "ban", "dave")
	carol.fails(4, "forbidden", "kick", dave.pubkey[:12])
	carol.fails(4, "forbidden", "role", "set", "bob", "admin")
	carol.fails(3, "unknown_target", "ban", "nobody")
	alice.fails(2, "usage", "kick", "bob", "--all")
	alice.fails(2, "usage", "kick")

	// Two agent sessions called "helper" (bob's and dave's): kicking by
	// that name is ambiguous and lists both.
	for _, u := range []*user{bob, dave} {
		c := dialSession(t, u, "helper")
		defer c.Close()
	}
	e := alice.fails(6, "ambiguous_target", "kick", "helper")
	if len(e.Error.Candidates) != 2 || e.Error.Candidates[0].Kind != "session" {
		t.Fatalf("candidates: %+v", e.Error.Candidates)
	}
	whose := map[string]string{}
	for _, c := range e.Error.Candidates {
		whose[c.MemberName] = c.MemberPubkey
	}
	if whose["bob"] != bob.pubkey || whose["dave"] != dave.pubkey {
		t.Fatalf("candidates' members: %+v", e.Error.Candidates)
	}
	// An admin bans a member; the ban is listed; an admin may lift it.
	carol.json(&res, "ban", "bob", "--reason", "testing")
	if len(res.Affected) != 1 {
		t.Fatalf("ban: %+v", res)
	}
	var bans []struct {
		DisplayName, Reason, BannedBy string
	}
	alice.json(&bans, "bans")
	if len(bans) != 1 || bans[0].DisplayName != "bob" || bans[0].Reason != "testing" || bans[0].BannedBy != carol.pubkey {
		t.Fatalf("bans: %+v", bans)
	}
	carol.json(&res, "unban", "bob")
	carol.json(&res, "unban", "bob")
	if len(res.Skipped) != 1 || res.Skipped[0].Reason != "not_banned" {
		t.Fatalf("second unban: %+v", res)
	}

	// Ownership: alice hands the mesh to bob; bob sets roles, alice no
	// longer can.
	alice.json(&res, "mesh", "transfer", "bob")
	bob.json(&res, "role", "set", "carol", "member")
	alice.fails(4, "forbidden", "role", "set", "carol", "admin")
	bob.json(&res, "role", "set", "alice", "member")
	alice.fails(4, "forbidden", "kick", "carol")
	// Each config.json learnt its member's role from the next connection
	// (alice: admin by the transfer, then member by bob; bob: owner), so
	// whoami and mesh list tell the truth.
	if w := alice.whoami(); w.Meshes[0].Role != "member" {
		t.Fatalf("config role after transfer: %+v", w)
	}
	if w := bob.whoami(); w.Meshes[0].Role != "owner" {
		t.Fatalf("the new owner's config role after transfer: %+v", w)
	}
}

// dialSession opens an agent-session connection for u with the given
// display name, from u's own config (what a launched agent does).
func dialSession(t *testing.T, u *user, name string) *client.Conn {
	t.Helper()
	cfg, err := config.Load(u.home)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Meshes[0]
	key, err := cmcrypto.ParseSecretKey(m.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	sess, _ := cmcrypto.GenerateIdentity()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.MeshIdentity{MeshID: m.MeshID, MemberID: m.MemberID, BrokerURL: m.BrokerURL,
		BrokerPubkey: m.BrokerPubkey, Member: key, Session: &client.SessionCreds{Key: sess, SessionID: "s-" + name + "-" + u.name, DisplayName: name}}, client.DialOptions{})
	if err != nil {
		t.Fatalf("session for %s: %v", u.name, err)
	}
	return c
}

// TestKickedFollowAndDaemon: a kicked `inbox --follow` exits 4 with the
// broker's message and does not reconnect; a kicked daemon reports kicked,
// keeps its outbox rows, and delivers them after `daemon up`. A banned
// daemon likewise comes back after unban and `daemon up`.
func TestKickedFollowAndDaemon(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]

	// inbox --follow, human output: the message goes to stderr.
	cmd := exec.Command(bin, "--home", bob.home, "inbox", "--follow")
	cmd.Env = baseEnv()
	stdout, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
		}
		exited <- cmd.Wait()
	}()
	waitPresence(t, alice, bob.pubkey, "cli")
	var res adminOut
	alice.json(&res, "kick", "bob")
	if len(res.Affected) != 1 {
		t.Fatalf("kick: %+v", res)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the kicked follower did not exit")
	}
	if code := cmd.ProcessState.ExitCode(); code != 4 || !strings.Contains(stderr.String(), "disconnected from") {
		t.Fatalf("kicked follower: exit %d, stderr %q", code, stderr.String())
	}

	// carol's daemon is kicked: it says so, refuses new sends, and keeps
	// the row that waits for dave (offline), which is delivered once the
	// daemon is back.
	carol.startDaemon()
	carol.waitDaemonOpen()
	var sent sendOut
	carol.json(&sent, "send", "dave", "waiting for dave")
	outboxStatus := func(cmid string) string {
		var rows []struct {
			ClientMessageID string `json:"clientMessageId"`
			Status          string `json:"status"`
		}
		carol.json(&rows, "daemon", "outbox", "list")
		for _, r := range rows {
			if r.ClientMessageID == cmid {
				return r.Status
			}
		}
		return ""
	}
	eventually(t, 15*time.Second, "the row to be queued at the broker", func() bool { return outboxStatus(sent.ClientMessageID) == "queued" })
	alice.json(&res, "kick", "carol")
	eventually(t, 15*time.Second, "carol's daemon to report kicked", func() bool {
		return carol.daemonStatus().Meshes["test"] == "kicked"
	})
	var full struct {
		MeshErrors map[string]struct {
			Code, Message, Hint string
		} `json:"meshErrors"`
	}
	carol.json(&full, "daemon", "status")
	// The broker's words are not the way back (for a daemon, running the
	// command again is refused again): the hint is (a new user's trial).
	if p := full.MeshErrors["test"]; p.Code != "kicked" || !strings.Contains(p.Message, "disconnected from") || !strings.Contains(p.Hint, "daemon up") ||
		strings.Contains(p.Message, "command again") {
		t.Fatalf("status while kicked: %+v", full)
	}
	carol.fails(4, "kicked", "send", "alice", "refused while kicked")
	if st := outboxStatus(sent.ClientMessageID); st != "queued" {
		t.Fatalf("the waiting row is %q while kicked", st)
	}
	// `up` with the daemon running says what its reload does.
	// (Connected, or still connecting on a slow machine after its wait.)
	if r := carol.ok("daemon", "up"); !strings.Contains(r.stdout, "daemon already running") ||
		!strings.Contains(r.stdout, "connected test") && !strings.Contains(r.stdout, "connecting test now") {
		t.Fatalf("daemon up while kicked: %s", r)
	}
	carol.waitDaemonOpen()
	if r := carol.ok("daemon", "up"); !strings.Contains(r.stdout, "daemon already running") || strings.Contains(r.stdout, "connecting") {
		t.Fatalf("daemon up with every mesh open: %s", r)
	}
	if rows := dave.inbox(); len(rows) != 1 || rows[0].body() != "waiting for dave" {
		t.Fatalf("dave: %v", bodies(rows))
	}
	eventually(t, 20*time.Second, "the kept row to be delivered", func() bool { return outboxStatus(sent.ClientMessageID) == "delivered" })

	// Banned: the daemon says banned, then comes back after unban + up.
	alice.json(&res, "ban", "carol")
	eventually(t, 15*time.Second, "carol's daemon to report banned", func() bool {
		return carol.daemonStatus().Meshes["test"] == "banned"
	})
	carol.fails(4, "banned", "send", "alice", "refused while banned")
	// `up` while still banned says the broker refused the mesh again, not
	// that it is connecting (a new user's trial).
	if r := carol.ok("daemon", "up"); !strings.Contains(r.stderr, "daemon already running") ||
		!strings.Contains(r.stderr, "the broker refused test (banned) again") || strings.Contains(r.stdout+r.stderr, "connecting") {
		t.Fatalf("daemon up while banned: %s", r)
	}
	alice.json(&res, "unban", "carol")
	var up struct {
		AlreadyRunning bool     `json:"alreadyRunning"`
		MeshesStarted  []string `json:"meshesStarted"`
	}
	carol.json(&up, "daemon", "up")
	if !up.AlreadyRunning || len(up.MeshesStarted) != 1 || up.MeshesStarted[0] != "test" {
		t.Fatalf("daemon up --json after the unban: %+v", up)
	}
	carol.waitDaemonOpen()
	carol.json(&sent, "send", "alice", "back after the unban")
	eventually(t, 20*time.Second, "carol's message to reach alice", func() bool {
		for _, r := range alice.inbox() {
			if r.body() == "back after the unban" {
				return true
			}
		}
		return false
	})
}

// TestBanRefusesAndForgets: a banned member's verbs exit 4 with the
// broker's message, it cannot join again, what was queued for it is gone
// after unban, and it connects again.
func TestBanRefusesAndForgets(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	alice.ok("send", "bob", "queued before the ban")
	var res adminOut
	alice.json(&res, "ban", "bob", "--reason", "spam")
	e := bob.fails(4, "revoked", "peer", "list")
	if !strings.Contains(e.Error.Message, "banned") || strings.Contains(e.Error.Message, "removed") {
		t.Fatalf("banned message: %+v", e)
	}
	alice.fails(3, "unknown_recipient", "send", bob.pubkey, "to a banned key")
	alice.json(&res, "unban", bob.pubkey[:10])
	if rows := bob.inbox(); len(rows) != 0 {
		t.Fatalf("messages from before the ban came back: %v", bodies(rows))
	}
	alice.ok("send", "bob", "after the unban")
	if rows := bob.inbox(); len(rows) != 1 || rows[0].body() != "after the unban" {
		t.Fatalf("after unban: %v", bodies(rows))
	}
}

// TestGrantsBlockE2E: a blocked sender's DM exits 4 blocked_by_recipient,
// from its member key and from its agent session; its broadcast reaches the
// others but not the blocker; unblock restores it.
func TestGrantsBlockE2E(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	var g struct {
		Pubkey  string   `json:"pubkey"`
		Caps    []string `json:"caps"`
		Blocked bool     `json:"blocked"`
	}
	bob.json(&g, "block", "alice")
	if !g.Blocked || g.Pubkey != alice.pubkey {
		t.Fatalf("block: %+v", g)
	}
	alice.fails(4, "blocked_by_recipient", "send", "bob", "let me in")
	// The same from one of alice's agent sessions.
	sess := dialSession(t, alice, "alice-agent")
	defer sess.Close()
	s, err := client.SealDM(bob.pubkey, []byte("from my agent"), sess.Self(), client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sess.Send(ctx, s); client.CodeOf(err) != "blocked_by_recipient" {
		t.Fatalf("session DM to a blocker: %v", err)
	}
	alice.ok("send", "*", "hello everyone")
	if rows := carol.inbox(); len(rows) != 1 || rows[0].body() != "hello everyone" {
		t.Fatalf("carol: %v", bodies(rows))
	}
	if rows := bob.inbox(); len(rows) != 0 {
		t.Fatalf("bob got a blocked broadcast: %v", bodies(rows))
	}
	var list []struct {
		DisplayName string `json:"displayName"`
		Blocked     bool   `json:"blocked"`
	}
	bob.json(&list, "grants")
	if len(list) != 1 || list[0].DisplayName != "alice" || !list[0].Blocked {
		t.Fatalf("grants: %+v", list)
	}
	bob.json(&g, "grant", "alice", "dm")
	if g.Blocked || len(g.Caps) != 1 || g.Caps[0] != "dm" {
		t.Fatalf("grant dm: %+v", g)
	}
	alice.ok("send", "bob", "a DM again")
	alice.ok("send", "*", "a second broadcast")
	if rows := bob.inbox(); len(rows) != 1 || rows[0].body() != "a DM again" {
		t.Fatalf("bob with dm only: %v", bodies(rows))
	}
	bob.json(&g, "unblock", "alice")
	bob.json(&list, "grants")
	if len(list) != 0 {
		t.Fatalf("grants after unblock: %+v", list)
	}
	bob.fails(2, "usage", "grant", "alice", "admin")
}

// TestOperatorRemovesMember: the operator, who is not a member, removes
// bob with the operator token; bob's client is told and stops; the audit
// log shows it under the broker's key. What bob's daemon and `join` then
// advise leads back into the mesh: `mesh leave`, then a new invite.
func TestOperatorRemovesMember(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	bob.startDaemon()
	bob.waitDaemonOpen()
	problem := func() (code, msg, hint string) {
		var st struct {
			MeshErrors map[string]struct{ Code, Message, Hint string } `json:"meshErrors"`
		}
		bob.json(&st, "daemon", "status")
		p := st.MeshErrors["test"]
		return p.Code, p.Message, p.Hint
	}
	op := newUser(t, "operator")
	op.fails(4, "unauthorized", "mesh", "remove-member", "bob", "--mesh", "test", "--broker", b.url, "--operator-token", "nope")
	op.fails(4, "forbidden", "mesh", "remove-member", "alice", "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile())
	var out struct {
		DisplayName string `json:"displayName"`
		Pubkey      string `json:"pubkey"`
	}
	op.json(&out, "mesh", "remove-member", "bob", "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile())
	if out.Pubkey != bob.pubkey {
		t.Fatalf("removed: %+v", out)
	}
	// The removal is reported as one (it was "kicked", told to run
	// daemon up, which the broker then refuses).
	eventually(t, 15*time.Second, "bob's daemon told of the removal", func() bool {
		code, msg, hint := problem()
		return code == "removed" && strings.Contains(msg, "removed from the mesh by the broker's operator") &&
			strings.Contains(hint, "new invite") && strings.Contains(hint, "mesh leave test") && !strings.Contains(hint, "daemon up")
	})
	if s := bob.daemonStatus().Meshes["test"]; s != "removed" {
		t.Fatalf("daemon status: mesh state %q, want removed", s)
	}
	// daemon up starts the mesh again: the broker refuses the member, and
	// the daemon says so instead of "cannot be reached".
	bob.json(&struct{}{}, "daemon", "up")
	eventually(t, 15*time.Second, "the broker's refusal in daemon status", func() bool {
		code, msg, hint := problem()
		return code == "unauthorized" && strings.Contains(msg, "refuses this member") && strings.Contains(hint, "mesh leave test")
	})
	// A send to a name the daemon cannot look up says why: the broker
	// refuses the member (not "retry once the broker is reachable").
	bob.useDaemon = true
	if r := bob.run("send", "nobody-here", "hi"); r.code != 4 || !strings.Contains(r.stderr, "refuses this member") ||
		!strings.Contains(r.stderr, "mesh leave test") || strings.Contains(r.stderr, "reachable") {
		t.Fatalf("send while refused: %s", r)
	}
	bob.useDaemon = false
	bob.fails(4, "unauthorized", "peer", "list")
	var log []struct {
		EventType   string `json:"eventType"`
		ActorPubkey string `json:"actorPubkey"`
	}
	alice.json(&log, "audit", "log", "--limit", "1")
	if len(log) != 1 || log[0].EventType != "member_removed" || log[0].ActorPubkey != b.pubkey {
		t.Fatalf("audit: %+v", log)
	}
	link := alice.invite().Link
	bob.fails(6, "already_joined", "join", link, "--name", "bob")
	if r := bob.run("join", link, "--name", "bob"); !strings.Contains(r.stderr, "mesh leave test") {
		t.Fatalf("join's hint: %s", r)
	}
}

// TestSkillsE2E: publish from a file, list and get on the direct path and
// through a daemon, the author/owner rule, and not_found (exit 3).
func TestSkillsE2E(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	dir := t.TempDir()
	path := filepath.Join(dir, "deploy", "SKILL.md")
	os.MkdirAll(filepath.Dir(path), 0o700)
	body := "---\nname: deploy\ndescription: how we ship\n---\n# Deploy\nRun make check first.\n"
	os.WriteFile(path, []byte(body), 0o600)
	var s struct {
		Name        string  `json:"name"`
		Description string  `json:"description"`
		AuthorName  string  `json:"authorName"`
		Body        *string `json:"body"`
	}
	bob.json(&s, "skill", "publish", path, "--tag", "ops")
	if s.Name != "deploy" || s.Description != "how we ship" || s.AuthorName != "bob" {
		t.Fatalf("publish: %+v", s)
	}
	// A body over 64 KiB is refused before anything is sent, also one
	// over the broker's frame limit (the broker's 1009 close read as
	// an unreachable broker); exit 2 either way.
	for _, n := range []int{64<<10 + 1, 2 << 20} {
		big := filepath.Join(dir, "big-"+strconv.Itoa(n)+".md")
		os.WriteFile(big, []byte("---\nname: big\ndescription: d\n---\n"+strings.Repeat("y", n)), 0o600)
		if e := bob.fails(2, "payload_too_large", "skill", "publish", big); !strings.Contains(e.Error.Message, "over 64 KiB") {
			t.Fatalf("publish of %d bytes: %q", n, e.Error.Message)
		}
	}
	var list []struct{ Name string }
	carol.json(&list, "skill", "list", "ops")
	if len(list) != 1 || list[0].Name != "deploy" {
		t.Fatalf("list: %+v", list)
	}
	if r := carol.ok("skill", "get", "deploy"); r.stdout != body {
		t.Fatalf("get printed %q", r.stdout)
	}
	// Through carol's daemon.
	carol.startDaemon()
	carol.waitDaemonOpen()
	carol.json(&s, "skill", "get", "deploy")
	if s.Body == nil || *s.Body != body {
		t.Fatalf("get via daemon: %+v", s)
	}
	carol.json(&list, "skill", "list")
	if len(list) != 1 {
		t.Fatalf("list via daemon: %+v", list)
	}
	carol.fails(3, "not_found", "skill", "get", "nope")
	carol.fails(4, "forbidden", "skill", "remove", "deploy")
	alice.ok("skill", "remove", "deploy")
	bob.fails(3, "not_found", "skill", "get", "deploy")
}

// TestAuditVerifyTamperAndRollback: `audit verify` passes on a sound
// chain, names the sequence number of an entry edited in broker.db,
// reports a rollback when a broker serves a shorter (valid) chain after a
// longer one was verified, and a daemon's background check shows the
// failure in `daemon status`. A broker with another key is refused.
func TestAuditVerifyTamperAndRollback(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	b := startBroker(t, data, "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	var res adminOut
	alice.json(&res, "ban", "bob", "--reason", "first")
	alice.json(&res, "unban", "bob")
	type report struct {
		Mesh        string `json:"mesh"`
		OK          bool   `json:"ok"`
		Seq         uint64 `json:"seq"`
		Problem     string `json:"problem"`
		FirstBadSeq uint64 `json:"firstBadSeq"`
		Message     string `json:"message"`
	}
	var reps []report
	alice.json(&reps, "audit", "verify")
	if len(reps) != 1 || !reps[0].OK || reps[0].Seq != 5 {
		t.Fatalf("verify: %+v", reps)
	}
	if fi, err := os.Stat(filepath.Join(alice.home, "audit-heads.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("audit-heads.json: %v %v", fi, err)
	}
	// Keep a copy of the 5-entry state, then grow the chain to 7 and
	// verify it.
	b.stop()
	old := t.TempDir()
	copyDir(t, data, old)
	b = startBroker(t, data, b.addr)
	alice.json(&res, "ban", "bob", "--reason", "second")
	alice.json(&res, "unban", "bob")
	alice.json(&reps, "audit", "verify")
	if !reps[0].OK || reps[0].Seq != 7 {
		t.Fatalf("verify 7: %+v", reps)
	}

	// Rollback: the old copy (valid, 5 entries) on the same address.
	b.stop()
	b = startBroker(t, old, b.addr)
	r := alice.run("audit", "verify", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil || r.code != 1 || reps[0].Problem != "rollback" || reps[0].FirstBadSeq != 6 {
		t.Fatalf("rollback: %s", r)
	}
	r = alice.run("audit", "verify")
	if r.code != 1 || !strings.Contains(r.stdout, "rollback at entry 6") {
		t.Fatalf("rollback, human: %s", r)
	}

	// Tamper: edit entry 3 (bob's join) in a copy of broker.db.
	b.stop()
	tampered := t.TempDir()
	copyDir(t, data, tampered)
	storetest.EditAuditEntry(t, filepath.Join(tampered, "broker.db"), 3, func(e map[string]any) {
		e["payload"] = map[string]any{"member": map[string]any{"displayName": "someone else"}, "reason": "edited"}
	})
	b = startBroker(t, tampered, b.addr)
	for _, u := range []*user{alice, bob} { // alice verified before; bob never did
		r := u.run("audit", "verify", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil || r.code != 1 || reps[0].Problem != "tampered" || reps[0].FirstBadSeq != 3 {
			t.Fatalf("tampered, %s: %s", u.name, r)
		}
	}
	// bob's daemon finds it on its own and says so in daemon status.
	bob.startDaemon()
	eventually(t, 20*time.Second, "the daemon's audit check", func() bool {
		var st struct {
			Audit map[string]struct {
				OK          bool   `json:"ok"`
				Problem     string `json:"problem"`
				FirstBadSeq uint64 `json:"firstBadSeq"`
			} `json:"audit"`
		}
		bob.json(&st, "daemon", "status")
		a, ok := st.Audit["test"]
		return ok && !a.OK && a.Problem == "tampered" && a.FirstBadSeq == 3
	})
	if r := bob.run("daemon", "status"); !strings.Contains(r.stdout, "tampered at entry 3") {
		t.Fatalf("daemon status, human: %s", r)
	}
	// doctor reports it as a failure (exit 1), naming the mesh.
	r = bob.run("doctor", "--json")
	var doc struct {
		OK     bool `json:"ok"`
		Checks []struct{ Name, Status, Message string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || r.code != 1 || doc.OK {
		t.Fatalf("doctor: %s", r)
	}
	found := false
	for _, c := range doc.Checks {
		found = found || (c.Name == "audit test" && c.Status == "fail" && strings.Contains(c.Message, "tampered at entry 3"))
	}
	if !found {
		t.Fatalf("doctor has no failing audit check: %+v", doc.Checks)
	}

	// A server with another broker key is refused before any checkpoint
	// is believed.
	b.stop()
	other := t.TempDir()
	copyDir(t, data, other)
	os.Remove(filepath.Join(other, "broker.key"))
	b = startBroker(t, other, b.addr)
	alice.fails(4, "broker_key_mismatch", "audit", "verify")
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDaemonChecksTheAuditChainAtEachConnection: a running daemon verifies
// the mesh's audit chain again whenever its connection to the broker opens
// anew, so a broker restarted from an older copy of broker.db (a rollback)
// shows in `daemon status` at the reconnection, not after the daily check.
func TestDaemonChecksTheAuditChainAtEachConnection(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	b := startBroker(t, data, "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice := us[0]
	type check struct {
		OK          bool   `json:"ok"`
		Seq         uint64 `json:"seq"`
		Problem     string `json:"problem"`
		FirstBadSeq uint64 `json:"firstBadSeq"`
		Error       string `json:"error"`
		CheckedAt   int64  `json:"checkedAt"`
	}
	auditOf := func() check {
		var st struct {
			Audit map[string]check `json:"audit"`
		}
		alice.json(&st, "daemon", "status")
		return st.Audit["test"]
	}
	alice.startDaemon()
	alice.waitDaemonOpen()
	eventually(t, 20*time.Second, "the daemon's first audit check", func() bool { return auditOf().OK })
	// The chain's length now, by the CLI's own check.
	var reps []check
	alice.json(&reps, "audit", "verify")
	if len(reps) != 1 || !reps[0].OK {
		t.Fatalf("audit verify: %+v", reps)
	}
	n := reps[0].Seq
	// Keep the chain as it is, grow it by two entries, and restart the
	// broker: the reconnected daemon verifies the longer chain.
	b.stop()
	old := t.TempDir()
	copyDir(t, data, old)
	b = startBroker(t, data, b.addr)
	var res adminOut
	alice.json(&res, "ban", "bob", "--reason", "first")
	alice.json(&res, "unban", "bob")
	b.stop()
	restarted := time.Now().UnixMilli()
	b = startBroker(t, data, b.addr)
	eventually(t, 20*time.Second, "the check after the reconnection", func() bool {
		c := auditOf()
		return c.OK && c.CheckedAt >= restarted && c.Seq >= n+2
	})
	// The older copy on the same address: a rollback, found at the
	// reconnection (the copy may hold an entry appended after n).
	b.stop()
	b = startBroker(t, old, b.addr)
	eventually(t, 20*time.Second, "the rollback in daemon status", func() bool {
		c := auditOf()
		return !c.OK && c.Problem == "rollback" && c.FirstBadSeq > n
	})

	// The operator says it restored a backup: alice accepts the broker's
	// history, naming the finding she was shown (and no other), and the
	// daemon's status clears; what was verified before is kept.
	r := alice.run("audit", "verify", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil || r.code != 1 || reps[0].Problem != "rollback" {
		t.Fatalf("audit verify after the rollback: %s", r)
	}
	bad := reps[0].FirstBadSeq
	if r := alice.run("audit", "verify"); !strings.Contains(r.stdout, fmt.Sprintf("claudemesh --home %s audit verify --mesh test --accept %d", alice.home, bad)) {
		t.Fatalf("the finding's way out: %s", r)
	}
	e := alice.fails(1, "not_accepted", "audit", "verify", "--accept", fmt.Sprint(bad+1))
	if !strings.Contains(e.Error.Message, fmt.Sprintf("from entry %d, not %d", bad, bad+1)) {
		t.Fatalf("accepting another finding: %+v", e)
	}
	var acc struct {
		Accepted   bool   `json:"accepted"`
		Seq        uint64 `json:"seq"`
		KeptHashes string `json:"keptHashes"`
		Replaced   struct {
			Problem string `json:"problem"`
		} `json:"replaced"`
	}
	alice.json(&acc, "audit", "verify", "--accept", fmt.Sprint(bad))
	if !acc.Accepted || acc.Seq != bad-1 || acc.Replaced.Problem != "rollback" {
		t.Fatalf("accept: %+v", acc)
	}
	if fi, err := os.Stat(acc.KeptHashes); err != nil || fi.Mode().Perm() != 0o600 || !strings.HasPrefix(acc.KeptHashes, alice.home) {
		t.Fatalf("the hashes verified before: %q %v %v", acc.KeptHashes, fi, err)
	}
	eventually(t, 20*time.Second, "daemon status without the finding", func() bool { return auditOf().OK })
	alice.json(&reps, "audit", "verify")
	if !reps[0].OK || reps[0].Seq != bad-1 {
		t.Fatalf("audit verify after accepting: %+v", reps)
	}
	// Nothing left to accept: said, and nothing changes.
	alice.json(&acc, "audit", "verify", "--accept", fmt.Sprint(bad))
	if acc.Accepted {
		t.Fatalf("a second accept: %+v", acc)
	}
}

// TestANameThatIsAnotherMembersKeyPrefix: a member may call itself what
// looks like a prefix of another member's key (names are free text); that
// target then names neither — on both send paths, for the broker's admin
// verbs and for the operator's remove-member — instead of reaching
// whoever the prefix rule or the name rule found first (a new user's
// trial: remove-member of the name removed the member whose key it was).
func TestANameThatIsAnotherMembersKeyPrefix(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	prefix := bob.pubkey[:8]
	imp := newUser(t, prefix)
	imp.join(alice.invite().Link)

	alice.fails(6, "ambiguous_target", "send", prefix, "for bob?")
	alice.fails(6, "ambiguous_target", "kick", prefix)
	alice.fails(6, "ambiguous_target", "mesh", "remove-member", prefix, "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile())
	alice.startDaemon()
	alice.fails(6, "ambiguous_target", "send", prefix, "for bob?")
	// A longer prefix, or the full key, is bob's alone.
	var sent struct {
		Target struct {
			TargetSpec string `json:"targetSpec"`
		} `json:"target"`
	}
	alice.json(&sent, "send", bob.pubkey[:9], "for bob")
	if sent.Target.TargetSpec != bob.pubkey {
		t.Fatalf("send to a longer prefix went to %s, want bob's key", sent.Target.TargetSpec)
	}
}

// TestASessionNamedLikeAMembersKeyPrefix: an agent session may call itself
// what looks like a prefix of another member's key. The verbs that act on
// members (ban, unban, role set, mesh transfer, the operator's
// remove-member) left sessions out before deciding ambiguity, so bob alone
// remained and was banned, promoted, removed or made owner by a name
// carol's agent chose; the target is ambiguous_target instead.
func TestASessionNamedLikeAMembersKeyPrefix(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	prefix := bob.pubkey[:8]
	carol.startDaemon()
	carol.waitDaemonOpen()
	carol.launch(standInClaude(t), prefix)
	eventually(t, 20*time.Second, "alice sees carol's session", func() bool {
		var rows []peerRow
		alice.json(&rows, "peer", "list")
		s := sessionsOf(rows, carol.pubkey)
		return len(s) == 1 && s[0].DisplayName == prefix
	})
	for _, args := range [][]string{
		{"ban", prefix}, {"unban", prefix}, {"role", "set", prefix, "admin"}, {"mesh", "transfer", prefix},
		{"mesh", "remove-member", prefix, "--mesh", "test", "--broker", b.url, "--operator-token-file", b.tokenFile()},
	} {
		alice.fails(6, "ambiguous_target", args...)
	}
	// bob was not acted on: still in, still a plain member.
	bob.ok("peer", "list")
	if w := bob.whoami(); w.Meshes[0].Role != "member" {
		t.Fatalf("bob's role: %+v", w)
	}
	// A session named alone is refused in the words of the verb typed
	// (it said "mesh_transfer acts on members", the frame's name).
	carol.launch(standInClaude(t), "carols-agent")
	eventually(t, 20*time.Second, "alice sees carols-agent", func() bool {
		var rows []peerRow
		alice.json(&rows, "peer", "list")
		return slices.ContainsFunc(sessionsOf(rows, carol.pubkey), func(r peerRow) bool { return r.DisplayName == "carols-agent" })
	})
	for verb, args := range map[string][]string{
		"mesh transfer": {"mesh", "transfer", "carols-agent"},
		"role set":      {"role", "set", "carols-agent", "admin"},
		"ban":           {"ban", "carols-agent"},
	} {
		e := alice.fails(2, "invalid_argument", args...)
		if !strings.Contains(e.Error.Message, "; "+verb+" acts on members: name the member") {
			t.Fatalf("%s: %+v", verb, e)
		}
	}
}
