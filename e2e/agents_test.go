package e2e

// Agent sessions end to end (issue 7): `claudemesh launch` with a stand-in
// `claude` (CLAUDE_BIN), sessions in peer list, scoped inboxes, the reaper,
// a daemon restart, signals and exit codes.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// standInClaude writes a script that records its arguments and
// environment, then waits; on SIGTERM or SIGINT it records the signal and
// exits 143 or 130, as claude would.
func standInClaude(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "claude")
	script := `#!/bin/sh
echo "$@" > "$STANDIN_OUT.args"
echo "$CLAUDEMESH_SESSION_TOKEN_FILE" > "$STANDIN_OUT.tokenfile"
echo "$CLAUDEMESH_HOME" > "$STANDIN_OUT.home"
trap 'echo TERM > "$STANDIN_OUT.sig"; exit 143' TERM
trap 'echo INT > "$STANDIN_OUT.sig"; exit 130' INT
echo ready > "$STANDIN_OUT.ready"
while :; do sleep 0.05; done
`
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// launched is a running `claudemesh launch`.
type launched struct {
	t    *testing.T
	cmd  *exec.Cmd
	out  string // STANDIN_OUT prefix
	done chan struct{}
	mu   sync.Mutex
	errb bytes.Buffer // written by exec's copying goroutine
}

func (l *launched) stderr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.errb.String()
}

func (u *user) launch(claude, name string, extra ...string) *launched {
	u.t.Helper()
	l := &launched{t: u.t, out: filepath.Join(u.t.TempDir(), name), done: make(chan struct{})}
	args := append([]string{"--home", u.home, "launch", "--name", name}, extra...)
	l.cmd = exec.Command(bin, args...)
	l.cmd.Env = append(u.env(), "CLAUDE_BIN="+claude, "STANDIN_OUT="+l.out)
	l.cmd.Stderr = &lockedWriter{mu: &l.mu, w: &l.errb}
	// Its own process group, so the test can also end the stand-in if
	// launch is killed.
	l.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := l.cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	go func() { l.cmd.Wait(); close(l.done) }()
	u.t.Cleanup(func() {
		syscall.Kill(-l.cmd.Process.Pid, syscall.SIGKILL)
		<-l.done
	})
	eventually(u.t, 20*time.Second, name+" stand-in started", func() bool { return fileExists(l.out + ".ready") })
	// launch wrote its banner (one write, so all of it: the session line,
	// the untrusted-input line and any warning) before it started the
	// stand-in, but this process copies the pipe in a goroutine of its
	// own: wait for the copy.
	eventually(u.t, 20*time.Second, name+"'s banner", func() bool { return strings.Contains(l.stderr(), "untrusted input") })
	return l
}

func (l *launched) read(suffix string) string {
	data, _ := os.ReadFile(l.out + suffix)
	return strings.TrimSpace(string(data))
}

// sessionEnv is the environment of a command run inside the session (as
// claude's Bash tool would run it).
func (u *user) asSession(l *launched) *user {
	cp := *u
	cp.extraEnv = append(slices.Clone(u.extraEnv), "CLAUDEMESH_SESSION_TOKEN_FILE="+l.read(".tokenfile"))
	return &cp
}

func sessionsOf(rows []peerRow, member string) []peerRow {
	var out []peerRow
	for _, r := range rows {
		if r.MemberPubkey == member && r.Role == "session" && r.Online {
			out = append(out, r)
		}
	}
	return out
}

func TestAgentSessionsLaunchAndScope(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	bob.startDaemon()
	alice.waitDaemonOpen()
	claude := standInClaude(t)

	start := time.Now()
	api := alice.launch(claude, "alice-api", "--", "--model", "opus")
	web := alice.launch(claude, "alice-web", "-y")
	var rows []peerRow
	eventually(t, 20*time.Second, "bob sees alice's two sessions", func() bool {
		rows = nil
		bob.json(&rows, "peer", "list")
		return len(sessionsOf(rows, alice.pubkey)) == 2
	})
	t.Logf("two sessions registered and visible to another member in %s", time.Since(start).Round(time.Millisecond))

	// launch passed its flags and ours through, -y only where given.
	args := api.read(".args")
	if !strings.HasPrefix(args, "--dangerously-load-development-channels server:claudemesh --session-id ") ||
		!strings.HasSuffix(args, "--model opus") || strings.Contains(args, "skip-permissions") {
		t.Fatalf("claude args: %q", args)
	}
	if !strings.Contains(web.read(".args"), "--dangerously-skip-permissions") {
		t.Fatalf("-y must add --dangerously-skip-permissions: %q", web.read(".args"))
	}
	if fi, err := os.Stat(api.read(".tokenfile")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	if !strings.Contains(api.stderr(), "untrusted input") {
		t.Fatalf("the banner must say peer messages are untrusted: %q", api.stderr())
	}

	// whoami inside the session names it.
	var who struct {
		Session struct {
			SessionID, Pubkey, Mesh string
		} `json:"session"`
	}
	alice.asSession(api).json(&who, "whoami")
	if who.Session.SessionID == "" || who.Session.Mesh != "test" || !strings.Contains(args, who.Session.SessionID) {
		t.Fatalf("whoami in a session: %+v (claude args %q)", who, args)
	}

	// Each session sees its sibling and itself as "you".
	apiUser, webUser := alice.asSession(api), alice.asSession(web)
	var mine []peerRow
	apiUser.json(&mine, "peer", "list")
	var apiKey, webKey string
	for _, r := range sessionsOf(mine, alice.pubkey) {
		switch r.DisplayName {
		case "alice-api":
			apiKey = r.Pubkey
			if !r.IsThisSession || r.PeerType != "ai" || r.Cwd == "" {
				t.Fatalf("the calling session's row: %+v", r)
			}
		case "alice-web":
			webKey = r.Pubkey
			if r.IsThisSession {
				t.Fatalf("a sibling is not 'you': %+v", r)
			}
		}
	}
	if apiKey == "" || webKey == "" {
		t.Fatalf("siblings do not see each other: %+v", mine)
	}

	// Still listed after several ping intervals (the broker pings every
	// second in these tests).
	until := time.Now().Add(3500 * time.Millisecond)
	for time.Now().Before(until) {
		rows = nil
		bob.json(&rows, "peer", "list")
		if len(sessionsOf(rows, alice.pubkey)) != 2 {
			t.Fatalf("a session dropped out of the list: %+v", rows)
		}
	}

	// A DM to one session reaches it, not its sibling; a member DM and a
	// broadcast reach both.
	bob.ok("send", apiKey, "only for api")
	bob.ok("send", "alice", "for alice")
	bob.ok("send", "*", "for everyone")
	var apiRows, webRows []inboxRow
	eventually(t, 20*time.Second, "the api session got its three", func() bool {
		apiRows = apiUser.inbox()
		return len(apiRows) == 3
	})
	eventually(t, 20*time.Second, "the web session got its two", func() bool {
		webRows = webUser.inbox()
		return len(webRows) >= 2
	})
	if got := sortedBodies(apiRows); !slices.Equal(got, []string{"for alice", "for everyone", "only for api"}) {
		t.Fatalf("api session inbox: %q", got)
	}
	if got := sortedBodies(webRows); !slices.Equal(got, []string{"for alice", "for everyone"}) {
		t.Fatalf("web session inbox: %q", got)
	}
	// The human's inbox shows the broadcast once (it is stored for alice
	// and each session) and says which DM was for a session alone (QA 7-K).
	eventually(t, 20*time.Second, "alice stored the three copies of the broadcast", func() bool {
		n := 0
		for _, r := range alice.inbox() {
			if r.body() == "for everyone" {
				n++
			}
		}
		return n == 3
	})
	humanInbox := alice.ok("inbox").stdout
	if strings.Count(humanInbox, "for everyone") != 1 || !strings.Contains(humanInbox, "for your agent session alice-api "+apiKey[:8]) {
		t.Fatalf("alice's human inbox:\n%s", humanInbox)
	}

	// A session sends as itself; bob sees it with its member.
	apiUser.ok("send", "bob", "hello from the api session")
	var got inboxRow
	eventually(t, 20*time.Second, "bob got the session's message", func() bool {
		for _, r := range bob.inbox() {
			if r.body() == "hello from the api session" {
				got = r
				return true
			}
		}
		return false
	})
	if got.SenderPubkey != apiKey || !got.Verified || got.SenderName != "alice-api" || got.SenderMemberPubkey != alice.pubkey || got.SenderMemberName != "alice" {
		t.Fatalf("bob's row: %+v", got)
	}
	human := bob.ok("inbox")
	if !strings.Contains(human.stdout, "alice-api (via alice)") {
		t.Fatalf("human inbox must name the member behind a session: %s", human.stdout)
	}

	// Killing the web session's launch: the reaper drops it.
	syscall.Kill(web.cmd.Process.Pid, syscall.SIGKILL)
	start = time.Now()
	eventually(t, 20*time.Second, "the killed session is gone", func() bool {
		rows = nil
		bob.json(&rows, "peer", "list")
		return len(sessionsOf(rows, alice.pubkey)) == 1
	})
	t.Logf("killed session removed from peer list in %s", time.Since(start).Round(time.Millisecond))

	// Restarting alice's daemon brings the live session back, same key,
	// one row.
	alice.ok("daemon", "down")
	alice.startDaemon()
	eventually(t, 20*time.Second, "the live session is back", func() bool {
		rows = nil
		bob.json(&rows, "peer", "list")
		s := sessionsOf(rows, alice.pubkey)
		return len(s) == 1 && s[0].Pubkey == apiKey
	})
	var all []peerRow
	bob.json(&all, "peer", "list", "--all")
	n := 0
	for _, r := range all {
		if r.Pubkey == apiKey {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("the revived session is listed %d times: %+v", n, all)
	}

	// SIGTERM to launch reaches claude; its exit code comes back; the
	// session is deregistered.
	syscall.Kill(api.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-api.done:
	case <-time.After(20 * time.Second):
		t.Fatal("launch did not exit after SIGTERM")
	}
	if code := api.cmd.ProcessState.ExitCode(); code != 143 || api.read(".sig") != "TERM" {
		t.Fatalf("launch exit %d, stand-in saw %q; stderr: %s", code, api.read(".sig"), api.stderr())
	}
	var sessions []struct {
		SessionID string `json:"sessionId"`
	}
	eventually(t, 10*time.Second, "no sessions left", func() bool {
		rows = nil
		bob.json(&rows, "peer", "list")
		return len(sessionsOf(rows, alice.pubkey)) == 0
	})
	_ = sessions
}

func sortedBodies(rows []inboxRow) []string {
	out := bodies(rows)
	slices.Sort(out)
	return out
}

// TestLaunchForwardsSIGINT: Ctrl-C goes to claude, and its exit code (130)
// is launch's.
func TestLaunchForwardsSIGINT(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "carol")
	carol := users[0]
	carol.startDaemon()
	carol.waitDaemonOpen()
	l := carol.launch(standInClaude(t), "carol-cli")
	syscall.Kill(l.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-l.done:
	case <-time.After(20 * time.Second):
		t.Fatal("launch did not exit after SIGINT")
	}
	if code := l.cmd.ProcessState.ExitCode(); code != 130 || l.read(".sig") != "INT" {
		t.Fatalf("launch exit %d, stand-in saw %q; stderr: %s", code, l.read(".sig"), l.stderr())
	}
	var st daemonStatus
	eventually(t, 10*time.Second, "the session deregistered", func() bool {
		r := carol.run("daemon", "status", "--json")
		var s struct {
			Sessions int `json:"sessions"`
		}
		json.Unmarshal([]byte(r.stdout), &s)
		return s.Sessions == 0
	})
	_ = st
}

// TestHookWithoutDaemon: a hook never breaks a prompt: exit 0, nothing on
// stdout, and no daemon started.
func TestHookWithoutDaemon(t *testing.T) {
	t.Parallel()
	u := newUser(t, "dave")
	u.useDaemon = true
	// A daemon ran here once (its directory and log exist), but not now.
	if err := os.MkdirAll(filepath.Join(u.home, "daemon"), 0o700); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := u.runIn(`{"session_id":"x","cwd":"/tmp","hook_event_name":"UserPromptSubmit"}`, "hook", "working")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("hook without a daemon: %s", r)
	}
	if fileExists(filepath.Join(u.home, "daemon", "daemon.pid")) {
		t.Fatal("the hook must not start the daemon")
	}
	t.Logf("hook with the daemon down took %s", time.Since(start).Round(time.Millisecond))
	if r := u.runIn("not json", "hook", "bogus"); r.code != 0 {
		t.Fatalf("a bad hook call must still exit 0: %s", r)
	}
	if r := u.runIn("garbage{", "hook", "working"); r.code != 0 || r.stdout != "" {
		t.Fatalf("hook with bad stdin: %s", r)
	}
	// Problems go to the daemon log, said as they are (QA 7-L).
	log, _ := os.ReadFile(filepath.Join(u.home, "daemon", "daemon.log"))
	for _, want := range []string{"hook working: status not set: the daemon is not running", "hook working: stdin is not the hook JSON", `unknown event \"bogus\"`} {
		if !strings.Contains(string(log), want) {
			t.Fatalf("daemon log lacks %q:\n%s", want, log)
		}
	}
}

// TestInstallIsIdempotentAndUninstallRestores: install → install →
// uninstall leaves pre-existing files byte-identical; a file that does not
// parse is refused, not overwritten.
func TestInstallIsIdempotentAndUninstallRestores(t *testing.T) {
	t.Parallel()
	u := newUser(t, "erin")
	chome := t.TempDir()
	u.extraEnv = []string{"CLAUDEMESH_CLAUDE_HOME=" + chome}
	u.atDefaultHome()
	claudeJSON := "{\n  \"numStartups\": 12,\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"/usr/bin/other\",\n      \"args\": []\n    }\n  },\n  \"projects\": {}\n}\n"
	settings := "{\n  \"model\": \"opus\",\n  \"hooks\": {\n    \"Stop\": [\n      {\n        \"hooks\": [\n          {\n            \"type\": \"command\",\n            \"command\": \"notify-send done\"\n          }\n        ]\n      }\n    ]\n  }\n}\n"
	os.MkdirAll(filepath.Join(chome, ".claude"), 0o755)
	os.WriteFile(filepath.Join(chome, ".claude.json"), []byte(claudeJSON), 0o640)
	os.WriteFile(filepath.Join(chome, ".claude", "settings.json"), []byte(settings), 0o600)

	u.ok("install", "--no-service")
	cj, _ := os.ReadFile(filepath.Join(chome, ".claude.json"))
	var parsed struct {
		MCPServers map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
		} `json:"mcpServers"`
	}
	if err := json.Unmarshal(cj, &parsed); err != nil {
		t.Fatalf("install broke .claude.json: %v\n%s", err, cj)
	}
	e := parsed.MCPServers["claudemesh"]
	if !filepath.IsAbs(e.Command) || filepath.Base(e.Command) != "claudemesh" || !slices.Equal(e.Args, []string{"mcp"}) || parsed.MCPServers["other"].Command != "/usr/bin/other" {
		t.Fatalf("mcpServers after install: %+v", parsed.MCPServers)
	}
	if fi, _ := os.Stat(filepath.Join(chome, ".claude.json")); fi.Mode().Perm() != 0o640 {
		t.Fatalf("install changed the file mode to %o", fi.Mode().Perm())
	}
	st, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	if !bytes.Contains(st, []byte(" hook working")) || !bytes.Contains(st, []byte(" hook idle")) || !bytes.Contains(st, []byte("notify-send done")) {
		t.Fatalf("settings.json after install:\n%s", st)
	}
	if !fileExists(filepath.Join(chome, ".claude", "skills", "claudemesh", "SKILL.md")) {
		t.Fatal("the skill was not installed")
	}
	afterFirst := [][]byte{cj, st}

	u.ok("install", "--no-service")
	cj2, _ := os.ReadFile(filepath.Join(chome, ".claude.json"))
	st2, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	if !bytes.Equal(cj2, afterFirst[0]) || !bytes.Equal(st2, afterFirst[1]) {
		t.Fatalf("a second install changed something:\n%s\n%s", cj2, st2)
	}

	u.ok("uninstall", "--no-service")
	cj3, _ := os.ReadFile(filepath.Join(chome, ".claude.json"))
	st3, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	if string(cj3) != claudeJSON || string(st3) != settings {
		t.Fatalf("uninstall did not restore the files:\n%s\n---\n%s", cj3, st3)
	}
	if fileExists(filepath.Join(chome, ".claude", "skills", "claudemesh")) {
		t.Fatal("uninstall left the skill")
	}
	backups, _ := os.ReadDir(filepath.Join(u.home, "backups"))
	if len(backups) < 2 {
		t.Fatalf("changed files must be backed up first: %v", backups)
	}

	// An unparsable settings.json is refused with its path, and kept.
	bad := "{\n  \"model\": \"opus\",\n"
	os.WriteFile(filepath.Join(chome, ".claude", "settings.json"), []byte(bad), 0o600)
	e2 := u.fails(1, "unparsable_file", "install", "--no-service")
	if !strings.Contains(e2.Error.Message, "settings.json") || strings.Contains(e2.Error.Message, "jsontext") || strings.Contains(e2.Error.Message, "offset") {
		t.Fatalf("the error must name the file, in words without the JSON package's: %+v", e2)
	}
	if st4, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json")); string(st4) != bad {
		t.Fatalf("an unparsable file was rewritten: %q", st4)
	}

	// On a HOME with neither file, install creates them and uninstall
	// removes them again.
	empty := t.TempDir()
	u.extraEnv = append(u.extraEnv, "CLAUDEMESH_CLAUDE_HOME="+empty)
	u.ok("install", "--no-service")
	u.ok("uninstall", "--no-service")
	if fileExists(filepath.Join(empty, ".claude.json")) || fileExists(filepath.Join(empty, ".claude", "settings.json")) {
		entries, _ := os.ReadDir(empty)
		t.Fatalf("uninstall left files it created: %v", entries)
	}
	_ = fmt.Sprint()
}

// TestSkillAndCompletion: skill prints SKILL.md; completion scripts exist
// for the three shells and complete verbs and flags.
func TestSkillAndCompletion(t *testing.T) {
	t.Parallel()
	u := newUser(t, "fay")
	r := u.ok("skill")
	if !strings.Contains(r.stdout, "name: claudemesh") || !strings.Contains(r.stdout, "never as instructions") && !strings.Contains(r.stdout, "never instructions") {
		t.Fatalf("skill: %s", r.stdout)
	}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		if r := u.ok("completion", sh); !strings.Contains(r.stdout, "__complete") {
			t.Fatalf("completion %s: %s", sh, r.stdout)
		}
	}
	u.fails(2, "usage", "completion", "tcsh")
	if r := u.ok("__complete", "peer"); !strings.Contains(r.stdout, "list\n") || !strings.Contains(r.stdout, "--json") {
		t.Fatalf("__complete peer: %q", r.stdout)
	}
	// Argument and flag values (QA 7-M).
	for _, c := range []struct {
		words []string
		want  string
	}{
		{[]string{"hook"}, "working\nidle\ndnd\n"},
		{[]string{"completion"}, "bash\nzsh\nfish\n"},
		{[]string{"status", "set"}, "idle\nworking\ndnd\n"},
		{[]string{"send", "bob", "hi", "--priority"}, "now\nnext\nlow\n"},
	} {
		if r := u.ok(append([]string{"__complete"}, c.words...)...); r.stdout != c.want {
			t.Fatalf("__complete %q: %q, want %q", c.words, r.stdout, c.want)
		}
	}
}

// TestDoctor: every check answers ok|warn|fail with a fix; a failing check
// (config readable by others) makes the exit code 1, with one JSON
// document on stdout.
func TestDoctor(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "gina")[0]
	chome := t.TempDir()
	u.extraEnv = []string{"CLAUDEMESH_CLAUDE_HOME=" + chome}
	type report struct {
		OK     bool `json:"ok"`
		Checks []struct {
			Name, Status, Message, Fix string
		} `json:"checks"`
	}
	var rep report
	u.json(&rep, "doctor")
	status := map[string]string{}
	for _, c := range rep.Checks {
		status[c.Name] = c.Status
		if c.Status != "ok" && c.Fix == "" {
			t.Fatalf("a %s check without a fix: %+v", c.Status, c)
		}
	}
	if !rep.OK || status["broker test"] != "ok" || status["clock test"] != "ok" || status["config"] != "ok" || status["claude code MCP entry"] != "warn" {
		t.Fatalf("doctor: %+v", rep)
	}
	os.Chmod(filepath.Join(u.home, "config.json"), 0o644)
	r := u.run("doctor", "--json")
	var bad report
	if err := json.Unmarshal([]byte(r.stdout), &bad); err != nil || r.code != 1 || bad.OK {
		t.Fatalf("doctor with a world-readable config: %s", r)
	}
	// QA 7-O: the broker check says it was skipped; hooks that run another
	// binary are a warning; a pinned key that is not a valid point is said
	// in words, with a fix that fits.
	find := func(rep report, name string) (c struct{ Name, Status, Message, Fix string }) {
		for _, c := range rep.Checks {
			if c.Name == name {
				return c
			}
		}
		t.Fatalf("no %q check in %+v", name, rep)
		return
	}
	if c := find(bad, "broker"); c.Status != "warn" || !strings.HasPrefix(c.Message, "skipped: the config cannot be read") {
		t.Fatalf("broker check with a bad config: %+v", c)
	}
	os.Chmod(filepath.Join(u.home, "config.json"), 0o600)
	os.MkdirAll(filepath.Join(chome, ".claude"), 0o700)
	// (gina's home is not the default one: her hooks carry it.) Another
	// claudemesh binary that is there (one that is gone fails the check).
	otherBin := filepath.Join(t.TempDir(), "my bin", "claudemesh")
	os.MkdirAll(filepath.Dir(otherBin), 0o755)
	copyBinary(t, otherBin)
	other := `{"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "'` + otherBin + `' --home ` + u.home + ` hook working"}]}],` +
		` "Stop": [{"hooks": [{"type": "command", "command": "'` + otherBin + `' --home ` + u.home + ` hook idle"}]}]}}`
	os.WriteFile(filepath.Join(chome, ".claude", "settings.json"), []byte(other), 0o600)
	cfgPath := filepath.Join(u.home, "config.json")
	cfg, _ := os.ReadFile(cfgPath)
	var doc map[string]any
	json.Unmarshal(cfg, &doc)
	doc["meshes"].([]any)[0].(map[string]any)["brokerPubkey"] = "01" + strings.Repeat("00", 31)
	cfg, _ = json.Marshal(doc)
	os.WriteFile(cfgPath, cfg, 0o600)
	r = u.run("doctor", "--json")
	var rep2 report
	if err := json.Unmarshal([]byte(r.stdout), &rep2); err != nil {
		t.Fatalf("doctor: %s", r)
	}
	if c := find(rep2, "claude code hooks"); c.Status != "warn" || !strings.Contains(c.Message, "another claudemesh binary") {
		t.Fatalf("hooks running another binary: %+v", c)
	}
	if c := find(rep2, "broker test"); c.Status != "fail" || strings.Contains(c.Message, "invalid_argument") ||
		!strings.Contains(c.Message, "cannot be used") || !strings.Contains(c.Fix, "join the mesh again") {
		t.Fatalf("a pinned key that is not a valid point: %+v", c)
	}
}
