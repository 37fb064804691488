package e2e

// The home (--home, or CLAUDEMESH_HOME) reaches what Claude Code runs: the
// MCP server entry and the hooks install writes, the claude launch starts,
// and doctor's checks of them. (A new-user trial found install writing
// `claudemesh mcp` for --home bob, so the MCP server and the agent's own
// verbs ran against the default home: "not joined to any mesh".)

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// claudeFiles reads what install wrote into a Claude Code home: the
// claudemesh MCP entry's command and args, and the hook commands per event.
func claudeFiles(t *testing.T, chome string) (cmd string, args []string, hooks map[string][]string) {
	t.Helper()
	var cj struct {
		MCPServers map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
		} `json:"mcpServers"`
	}
	if data, err := os.ReadFile(filepath.Join(chome, ".claude.json")); err == nil {
		if err := json.Unmarshal(data, &cj); err != nil {
			t.Fatalf("%v\n%s", err, data)
		}
	}
	var sj struct {
		Hooks map[string][]struct {
			Hooks []struct{ Command string } `json:"hooks"`
		} `json:"hooks"`
	}
	if data, err := os.ReadFile(filepath.Join(chome, ".claude", "settings.json")); err == nil {
		if err := json.Unmarshal(data, &sj); err != nil {
			t.Fatalf("%v\n%s", err, data)
		}
	}
	hooks = map[string][]string{}
	for ev, gs := range sj.Hooks {
		for _, g := range gs {
			for _, h := range g.Hooks {
				hooks[ev] = append(hooks[ev], h.Command)
			}
		}
	}
	e := cj.MCPServers["claudemesh"]
	return e.Command, e.Args, hooks
}

func readBoth(t *testing.T, chome string) string {
	t.Helper()
	a, _ := os.ReadFile(filepath.Join(chome, ".claude.json"))
	b, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	return string(a) + "\n---\n" + string(b)
}

type doctorCheck struct{ Name, Status, Message, Fix string }

func claudeChecks(t *testing.T, u *user) map[string]doctorCheck {
	t.Helper()
	r := u.run("doctor", "--json")
	var rep struct {
		Checks []doctorCheck `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor: %s", r)
	}
	out := map[string]doctorCheck{}
	for _, c := range rep.Checks {
		if strings.HasPrefix(c.Name, "claude code") {
			out[c.Name] = c
		}
	}
	return out
}

// TestInstallCarriesTheHome: install for a home that is not the default
// writes --home DIR into the MCP entry and each hook (with --home or with
// CLAUDEMESH_HOME), a second install changes nothing, doctor says ✔ only
// for the home the entries are for, the default home's install is refused
// while another home's entries are there (and its uninstall leaves them),
// and each home's uninstall removes exactly its own.
func TestInstallCarriesTheHome(t *testing.T) {
	t.Parallel()
	userHome := t.TempDir() // HOME: Claude Code's files and ~/.claudemesh
	bob, def := newUser(t, "bob"), newUser(t, "def")
	bob.extraEnv = []string{"HOME=" + userHome}
	def.extraEnv, def.home = []string{"HOME=" + userHome}, filepath.Join(userHome, ".claudemesh")
	chome := userHome

	bob.ok("install", "--no-service")
	cmd, args, hooks := claudeFiles(t, chome)
	if cmd != bin || !slices.Equal(args, []string{"--home", bob.home, "mcp"}) {
		t.Fatalf("the MCP entry for --home %s: %s %q", bob.home, cmd, args)
	}
	for ev, arg := range map[string]string{"UserPromptSubmit": "working", "Stop": "idle"} {
		if want := bin + " --home " + bob.home + " hook " + arg; !slices.Equal(hooks[ev], []string{want}) {
			t.Fatalf("%s hooks %q, want [%q]", ev, hooks[ev], want)
		}
	}
	first := readBoth(t, chome)
	if r := bob.ok("install", "--no-service"); strings.Contains(r.stdout, "added") || strings.Contains(r.stdout, "updated") {
		t.Fatalf("a second install for the same home changed something:\n%s", r.stdout)
	}
	if got := readBoth(t, chome); got != first {
		t.Fatalf("a second install changed the files:\n%s", got)
	}
	// CLAUDEMESH_HOME stands for --home: the same entries, unchanged.
	c := exec.Command(bin, "install", "--no-service", "--json")
	c.Env = append(bob.env(), "CLAUDEMESH_HOME="+bob.home)
	if out, err := c.CombinedOutput(); err != nil || strings.Contains(string(out), `"added"`) || strings.Contains(string(out), `"updated"`) {
		t.Fatalf("install with CLAUDEMESH_HOME: %v\n%s", err, out)
	}
	if got := readBoth(t, chome); got != first {
		t.Fatalf("install with CLAUDEMESH_HOME=%s changed the files:\n%s", bob.home, got)
	}
	for name, c := range claudeChecks(t, bob) {
		if c.Status != "ok" {
			t.Fatalf("doctor for bob's home, %s: %+v", name, c)
		}
	}
	if c := claudeChecks(t, bob)["claude code MCP entry"]; !strings.Contains(c.Message, "--home "+bob.home+" mcp") {
		t.Fatalf("doctor's MCP entry line: %+v", c)
	}

	// The default home: doctor says the entries are bob's, install is
	// refused (exit 6) and writes nothing, uninstall leaves bob's entries.
	checks := claudeChecks(t, def)
	for _, name := range []string{"claude code MCP entry", "claude code hooks"} {
		if c := checks[name]; c.Status != "warn" || !strings.Contains(c.Message, "for home "+bob.home+", not for this home") ||
			!strings.Contains(c.Fix, "--home "+bob.home+" uninstall") {
			t.Fatalf("doctor for the default home, %s: %+v", name, c)
		}
	}
	e := def.fails(6, "installed_for_another_home", "install", "--no-service")
	if !strings.Contains(e.Error.Message, bob.home) {
		t.Fatalf("the refusal must name the other home: %+v", e)
	}
	if got := readBoth(t, chome); got != first {
		t.Fatalf("a refused install changed the files:\n%s", got)
	}
	if r := def.ok("uninstall", "--no-service"); strings.Contains(r.stdout, "removed") {
		t.Fatalf("the default home's uninstall removed bob's entries:\n%s", r.stdout)
	}
	if got := readBoth(t, chome); got != first || !fileExists(filepath.Join(chome, ".claude", "skills", "claudemesh", "SKILL.md")) {
		t.Fatalf("the default home's uninstall changed bob's files:\n%s", got)
	}

	// bob's uninstall removes what his install created.
	bob.ok("uninstall", "--no-service")
	if fileExists(filepath.Join(chome, ".claude.json")) || fileExists(filepath.Join(chome, ".claude", "settings.json")) {
		t.Fatalf("bob's uninstall left files his install created:\n%s", readBoth(t, chome))
	}

	// The default home's entries carry no home (as always), bob's doctor
	// says they are not his, his install is refused and his uninstall
	// leaves them.
	def.ok("install", "--no-service")
	cmd, args, hooks = claudeFiles(t, chome)
	if cmd != bin || !slices.Equal(args, []string{"mcp"}) || !slices.Equal(hooks["Stop"], []string{bin + " hook idle"}) ||
		!slices.Equal(hooks["UserPromptSubmit"], []string{bin + " hook working"}) {
		t.Fatalf("the default home's entries: %s %q %q", cmd, args, hooks)
	}
	defFiles := readBoth(t, chome)
	if c := claudeChecks(t, bob)["claude code MCP entry"]; c.Status != "warn" || !strings.Contains(c.Message, "for the default home "+def.home) {
		t.Fatalf("doctor for bob with the default home's entry: %+v", c)
	}
	bob.fails(6, "installed_for_another_home", "install", "--no-service")
	if r := bob.run("install", "--no-service"); r.code != 6 || !strings.Contains(r.stderr, "--home "+bob.home+" launch") {
		t.Fatalf("the refusal over the default home's entries must point at launch: %s", r)
	}
	bob.ok("uninstall", "--no-service")
	if got := readBoth(t, chome); got != defFiles {
		t.Fatalf("bob's uninstall changed the default home's entries:\n%s", got)
	}
	def.ok("uninstall", "--no-service")
	if fileExists(filepath.Join(chome, ".claude.json")) {
		t.Fatalf("the default home's uninstall left its entry:\n%s", readBoth(t, chome))
	}
}

// TestInstallPinsAnOlderInstallOfTheHome: entries an older claudemesh
// installed for --home bob without carrying it (bob's install.json
// records them) are bob's: install updates them to carry the home, and
// uninstall removes them.
func TestInstallPinsAnOlderInstallOfTheHome(t *testing.T) {
	t.Parallel()
	userHome := t.TempDir()
	bob := newUser(t, "bob")
	bob.extraEnv = []string{"HOME=" + userHome}
	os.MkdirAll(filepath.Join(userHome, ".claude"), 0o700)
	os.MkdirAll(bob.home, 0o700)
	old := func(arg string) string {
		return `[{"hooks": [{"command": "` + bin + ` hook ` + arg + `", "type": "command"}]}]`
	}
	os.WriteFile(filepath.Join(userHome, ".claude.json"), []byte(`{"mcpServers": {"claudemesh": {"args": ["mcp"], "command": "`+bin+`"}}}`+"\n"), 0o600)
	os.WriteFile(filepath.Join(userHome, ".claude", "settings.json"), []byte(`{"hooks": {"UserPromptSubmit": `+old("working")+`, "Stop": `+old("idle")+`}}`+"\n"), 0o600)
	os.WriteFile(filepath.Join(bob.home, "install.json"), []byte(`{"created": [".claude.json", ".claude.json#mcpServers", ".claude.json#mcpServers.claudemesh",`+
		` ".claude/settings.json", ".claude/settings.json#hooks", ".claude/settings.json#hooks.UserPromptSubmit", ".claude/settings.json#hooks.UserPromptSubmit[claudemesh]",`+
		` ".claude/settings.json#hooks.Stop", ".claude/settings.json#hooks.Stop[claudemesh]"]}`+"\n"), 0o600)

	bob.ok("install", "--no-service", "--no-skill")
	_, args, hooks := claudeFiles(t, userHome)
	if !slices.Equal(args, []string{"--home", bob.home, "mcp"}) || !slices.Equal(hooks["Stop"], []string{bin + " --home " + bob.home + " hook idle"}) {
		t.Fatalf("an older install's entries for bob were not given his home: %q %q", args, hooks)
	}
	bob.ok("uninstall", "--no-service")
	if fileExists(filepath.Join(userHome, ".claude.json")) || fileExists(filepath.Join(userHome, ".claude", "settings.json")) {
		t.Fatalf("uninstall left bob's entries:\n%s", readBoth(t, userHome))
	}
}

// TestLaunchPassesTheHome: the claude launch starts has CLAUDEMESH_HOME,
// so the agent's own verbs (run without --home, as claude's Bash tool
// runs them) act as this identity and this session; and launch warns when
// the MCP entry in Claude Code's settings is pinned to another home.
func TestLaunchPassesTheHome(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	chome := t.TempDir()
	bob = bob.withEnv("CLAUDEMESH_CLAUDE_HOME=" + chome)
	bob.startDaemon()
	bob.waitDaemonOpen()
	claude := standInClaude(t)

	l := bob.launch(claude, "reviewer")
	if got := l.read(".home"); got != bob.home {
		t.Fatalf("claude's CLAUDEMESH_HOME is %q, want %q", got, bob.home)
	}
	if strings.Contains(l.stderr(), "⚠") {
		t.Fatalf("a warning without an MCP entry for another home: %q", l.stderr())
	}
	// As the agent: no --home, the environment claude got.
	agent := func(args ...string) string {
		t.Helper()
		c := exec.Command(bin, args...)
		c.Env = append(bob.env(), "CLAUDEMESH_HOME="+l.read(".home"), "CLAUDEMESH_SESSION_TOKEN_FILE="+l.read(".tokenfile"))
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("the agent's claudemesh %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	var who struct {
		Session struct{ SessionID, DisplayName string } `json:"session"`
	}
	if err := json.Unmarshal([]byte(agent("whoami", "--json")), &who); err != nil || who.Session.SessionID == "" ||
		!strings.Contains(l.read(".args"), who.Session.SessionID) {
		t.Fatalf("whoami inside the session: %+v %v", who, err)
	}
	agent("send", "alice", "hello from the reviewer")
	eventually(t, 20*time.Second, "alice gets the agent's message", func() bool {
		return strings.Contains(alice.run("inbox").stdout, "hello from the reviewer")
	})

	// An MCP server of another home (alice's) in bob's launched session
	// says so, not that bob's launch ended.
	alice.startDaemon()
	alice.waitDaemonOpen()
	_, _, stderr := startMCP(t, alice.withEnv("CLAUDEMESH_SESSION_TOKEN_FILE="+l.read(".tokenfile")))
	eventually(t, 20*time.Second, "the MCP server's warning", func() bool {
		return strings.Contains(stderr.String(), "names a session launched for another home than this MCP server's ("+alice.home)
	})
	if strings.Contains(stderr.String(), "is no longer registered") {
		t.Fatalf("mcp stderr: %s", stderr.String())
	}
	// So does a verb the agent runs for alice's home: the session is
	// alive, it is bob's daemon's, and alice's daemon does not know it.
	c := exec.Command(bin, "--home", alice.home, "send", "bob", "from alice's home")
	c.Env = append(bob.env(), "CLAUDEMESH_HOME="+l.read(".home"), "CLAUDEMESH_SESSION_TOKEN_FILE="+l.read(".tokenfile"))
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || !strings.Contains(string(out), "an agent session of another home ("+bob.home+")") ||
		!strings.Contains(string(out), "env -u CLAUDEMESH_SESSION_TOKEN_FILE claudemesh --home") || strings.Contains(string(out), "ended or was deregistered") {
		t.Fatalf("a verb for another home inside bob's session: %v\n%s", err, out)
	}

	// An MCP entry pinned to another home: launch says the session's MCP
	// server will be that home's.
	other := filepath.Join(t.TempDir(), "carol")
	os.WriteFile(filepath.Join(chome, ".claude.json"), []byte(`{"mcpServers": {"claudemesh": {"command": "`+bin+`", "args": ["--home", "`+other+`", "mcp"]}}}`), 0o600)
	l2 := bob.launch(claude, "reviewer2")
	eventually(t, 10*time.Second, "launch's warning", func() bool {
		return strings.Contains(l2.stderr(), "⚠ claudemesh: mcpServers.claudemesh in") && strings.Contains(l2.stderr(), "for home "+other)
	})
}

// TestDoctorSaysTheInstalledBinaryIsGone (a new user's trial): after the
// binary install wrote into Claude Code's MCP entry was moved or deleted,
// doctor warned that the entry runs another binary, not that no session
// can start the MCP server at all. It fails the check, with install as
// the way out.
func TestDoctorSaysTheInstalledBinaryIsGone(t *testing.T) {
	t.Parallel()
	userHome := t.TempDir()
	bob := newUser(t, "bob")
	bob.extraEnv = []string{"HOME=" + userHome}
	bob.ok("install", "--no-service")
	path := filepath.Join(userHome, ".claude.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(t.TempDir(), "v1", "claudemesh")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(data), bin, gone)), 0o600); err != nil {
		t.Fatal(err)
	}
	c := claudeChecks(t, bob)["claude code MCP entry"]
	if c.Status != "fail" || !strings.Contains(c.Message, gone+", which does not exist") || !strings.Contains(c.Fix, "install") {
		t.Fatalf("doctor with the installed binary gone: %+v", c)
	}
	// The hooks run it too: a command Claude Code cannot run, not
	// "another claudemesh binary".
	settings := filepath.Join(userHome, ".claude", "settings.json")
	if data, err = os.ReadFile(settings); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(settings, []byte(strings.ReplaceAll(string(data), bin, gone)), 0o600); err != nil {
		t.Fatal(err)
	}
	c = claudeChecks(t, bob)["claude code hooks"]
	if c.Status != "fail" || !strings.Contains(c.Message, "UserPromptSubmit, Stop run "+gone+", which does not exist") || !strings.Contains(c.Fix, "install") {
		t.Fatalf("doctor's hooks check with the installed binary gone: %+v", c)
	}
}
