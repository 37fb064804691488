package e2e

// Claude Code's hooks written by a binary that is not named claudemesh (a
// new user's trial: `go build -o cm`, `cp cm cm2`, `cm2 install`, cm2
// deleted): doctor said "hooks: missing" although they were there, stale;
// uninstall said "absent" and left them (every prompt then ran a missing
// command); install added a second pair beside them.

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// copyBinary makes path (a name without "claudemesh" in it) the binary
// under test: a hard link, or a copy made by cp (writing the executable
// from this process could leave its fd in a child forked meanwhile by a
// parallel test, and exec would fail with "text file busy").
func copyBinary(t *testing.T, path string) {
	t.Helper()
	if err := os.Link(bin, path); err != nil {
		if out, err := exec.Command("cp", bin, path).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
}

// runWith runs exe (another copy of the binary) as u.
func (u *user) runWith(exe string, args ...string) result {
	u.t.Helper()
	cmd := exec.Command(exe, append([]string{"--home", u.home}, args...)...)
	cmd.Env = u.env()
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), args: args}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("%s %q: %v", exe, args, err)
	}
	return r
}

// hookCommands lists the commands of settings.json's hooks for event.
func hookCommands(t *testing.T, path, event string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Hooks map[string][]struct {
			Hooks []struct {
				Command string `json:"command"`
			} `json:"hooks"`
		} `json:"hooks"`
	}
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	var out []string
	for _, g := range s.Hooks[event] {
		for _, h := range g.Hooks {
			out = append(out, h.Command)
		}
	}
	return out
}

func TestInstallKnowsItsHooksWhateverTheBinaryIsCalled(t *testing.T) {
	t.Parallel()
	for _, defaultHome := range []bool{false, true} {
		name := "home"
		if defaultHome {
			name = "default home"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if strings.Contains(dir, "claudemesh") {
				t.Skipf("the temp dir %s names claudemesh", dir)
			}
			cm, cm2 := filepath.Join(dir, "cm"), filepath.Join(dir, "cm2")
			copyBinary(t, cm)
			copyBinary(t, cm2)
			u := newUser(t, "uma")
			chome := t.TempDir()
			if defaultHome {
				u.atDefaultHome()
			}
			u.extraEnv = append(u.extraEnv, "CLAUDEMESH_CLAUDE_HOME="+chome)
			settings := filepath.Join(chome, ".claude", "settings.json")
			// Another tool's hooks, one of them shaped like ours, stay
			// whatever install and uninstall do.
			if err := os.MkdirAll(filepath.Dir(settings), 0o755); err != nil {
				t.Fatal(err)
			}
			stranger := `{"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "/usr/bin/othertool hook working"}]}]}}` + "\n"
			if err := os.WriteFile(settings, []byte(stranger), 0o600); err != nil {
				t.Fatal(err)
			}
			if r := u.runWith(cm2, "install", "--no-service"); r.code != 0 {
				t.Fatalf("%s", r)
			}
			if err := os.Remove(cm2); err != nil {
				t.Fatal(err)
			}

			// doctor: the hooks are there and stale, not missing.
			r := u.runWith(cm, "doctor", "--json")
			var rep struct {
				Checks []doctorCheck `json:"checks"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatalf("doctor: %s", r)
			}
			var hooks doctorCheck
			for _, c := range rep.Checks {
				if c.Name == "claude code hooks" {
					hooks = c
				}
			}
			if hooks.Status != "fail" || strings.HasPrefix(hooks.Message, "missing") || !strings.Contains(hooks.Message, cm2) ||
				!strings.Contains(hooks.Message, "does not exist") || !strings.Contains(hooks.Fix, "install") {
				t.Fatalf("doctor's hooks check with cm2 gone: %+v", hooks)
			}
			r = u.runWith(cm, "doctor")
			if !strings.Contains(r.stdout, "✘ claude code hooks:") || !strings.Contains(r.stdout, "→ claudemesh") {
				t.Fatalf("doctor's text: %s", r)
			}

			// install replaces them: one pair, running cm; the stranger stays.
			if r := u.runWith(cm, "install", "--no-service"); r.code != 0 || !strings.Contains(r.stdout, "UserPromptSubmit hook (claudemesh hook working): updated") {
				t.Fatalf("install over cm2's hooks: %s", r)
			}
			for _, ev := range []string{"UserPromptSubmit", "Stop"} {
				cmds := hookCommands(t, settings, ev)
				var ours []string
				for _, c := range cmds {
					if strings.HasPrefix(c, dir) {
						ours = append(ours, c)
					}
				}
				if len(ours) != 1 || !strings.HasPrefix(ours[0], cm+" ") {
					t.Fatalf("%s hooks after install with cm: %q", ev, cmds)
				}
			}
			if !slices.Contains(hookCommands(t, settings, "UserPromptSubmit"), "/usr/bin/othertool hook working") {
				t.Fatalf("install took another tool's hook: %q", hookCommands(t, settings, "UserPromptSubmit"))
			}

			// Rename again: uninstall with yet another name removes the
			// hooks cm wrote, and leaves the stranger's.
			cm3 := filepath.Join(dir, "cm3")
			if err := os.Rename(cm, cm3); err != nil {
				t.Fatal(err)
			}
			r = u.runWith(cm3, "uninstall", "--no-service")
			if r.code != 0 || strings.Contains(r.stdout, "hook working): absent") || strings.Contains(r.stdout, "hook idle): absent") {
				t.Fatalf("uninstall of cm's hooks: %s", r)
			}
			if got := hookCommands(t, settings, "UserPromptSubmit"); len(got) != 1 || got[0] != "/usr/bin/othertool hook working" {
				t.Fatalf("UserPromptSubmit after uninstall: %q", got)
			}
			if got := hookCommands(t, settings, "Stop"); len(got) != 0 {
				t.Fatalf("Stop after uninstall: %q", got)
			}
		})
	}
}

// TestInstallTidiesThePairAnOlderInstallAdded: an install.json from before
// install recorded its lines, after the old bug (cm2 installed, cm2
// deleted, cm installed: two pairs). install with cm keeps one pair;
// doctor is ✔ after it.
func TestInstallTidiesThePairAnOlderInstallAdded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if strings.Contains(dir, "claudemesh") {
		t.Skipf("the temp dir %s names claudemesh", dir)
	}
	cm, cm2 := filepath.Join(dir, "cm"), filepath.Join(dir, "cm2")
	copyBinary(t, cm)
	copyBinary(t, cm2)
	u := newUser(t, "vic")
	chome := t.TempDir()
	u.extraEnv = append(u.extraEnv, "CLAUDEMESH_CLAUDE_HOME="+chome)
	if r := u.runWith(cm2, "install", "--no-service", "--no-skill"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	os.Remove(cm2)
	// What the older install left: its install.json without the lines,
	// and the second pair it added beside cm2's.
	statePath := filepath.Join(u.home, "install.json")
	var st map[string]any
	data, err := os.ReadFile(statePath)
	if err != nil || json.Unmarshal(data, &st) != nil {
		t.Fatalf("install.json: %v %s", err, data)
	}
	if _, ok := st["wrote"]; !ok {
		t.Fatalf("install.json records no lines: %s", data)
	}
	delete(st, "wrote")
	data, _ = json.Marshal(st)
	if err := os.WriteFile(statePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	settings := filepath.Join(chome, ".claude", "settings.json")
	s, err := os.ReadFile(settings)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string][]any
	if err := json.Unmarshal(s, &doc); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []struct{ event, arg string }{{"UserPromptSubmit", "working"}, {"Stop", "idle"}} {
		doc["hooks"][ev.event] = append(doc["hooks"][ev.event], map[string]any{"hooks": []any{map[string]any{"type": "command", "command": cm + " --home " + u.home + " hook " + ev.arg}}})
	}
	s, _ = json.Marshal(doc)
	if err := os.WriteFile(settings, s, 0o600); err != nil {
		t.Fatal(err)
	}

	if r := u.runWith(cm, "install", "--no-service", "--no-skill"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	for _, ev := range []string{"UserPromptSubmit", "Stop"} {
		if got := hookCommands(t, settings, ev); len(got) != 1 || !strings.HasPrefix(got[0], cm+" ") {
			t.Fatalf("%s hooks after install: %q", ev, got)
		}
	}
	r := u.runWith(cm, "doctor", "--json")
	var rep struct {
		Checks []doctorCheck `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor: %s", r)
	}
	for _, c := range rep.Checks {
		if (c.Name == "claude code hooks" || c.Name == "claude code MCP entry") && c.Status != "ok" {
			t.Fatalf("doctor after install: %+v", c)
		}
	}
}

// legacyInstall is, for u at the default home, what an install by a
// binary not named claudemesh (cm2, since deleted) left when install.json
// did not record its lines yet: Claude Code's settings with cm2's hooks
// (and another tool's hook shaped like ours), an install.json without
// "wrote". It returns the settings.json path.
func legacyInstall(t *testing.T, u *user, cm2, chome string) string {
	t.Helper()
	settings := filepath.Join(chome, ".claude", "settings.json")
	if err := os.MkdirAll(filepath.Dir(settings), 0o755); err != nil {
		t.Fatal(err)
	}
	stranger := `{"hooks": {"UserPromptSubmit": [{"hooks": [{"type": "command", "command": "/usr/bin/othertool hook working"}]}]}}` + "\n"
	if err := os.WriteFile(settings, []byte(stranger), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := u.runWith(cm2, "install", "--no-service", "--no-skill"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	os.Remove(cm2)
	statePath := filepath.Join(u.home, "install.json")
	var st map[string]any
	data, err := os.ReadFile(statePath)
	if err != nil || json.Unmarshal(data, &st) != nil {
		t.Fatalf("install.json: %v %s", err, data)
	}
	delete(st, "wrote")
	data, _ = json.Marshal(st)
	if err := os.WriteFile(statePath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return settings
}

// With the default home, whose hook lines carry no --home, the hooks an
// older install wrote under a binary not named claudemesh were not known
// as claudemesh's: uninstall said "absent" and left them (Claude Code ran
// a missing command at every prompt), install added a second pair. They
// are known now by the binary of the MCP entry the same install recorded
// writing; another tool's line of the same shape still is not.
func TestDefaultHomeKnowsTheHooksAnOlderInstallWrote(t *testing.T) {
	t.Parallel()
	for _, verb := range []string{"install", "uninstall"} {
		t.Run(verb, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if strings.Contains(dir, "claudemesh") {
				t.Skipf("the temp dir %s names claudemesh", dir)
			}
			cm, cm2 := filepath.Join(dir, "cm"), filepath.Join(dir, "cm2")
			copyBinary(t, cm)
			copyBinary(t, cm2)
			u := newUser(t, "wes").atDefaultHome()
			chome := t.TempDir()
			u.extraEnv = append(u.extraEnv, "CLAUDEMESH_CLAUDE_HOME="+chome)
			settings := legacyInstall(t, u, cm2, chome)
			args := []string{verb, "--no-service"}
			if verb == "install" {
				args = append(args, "--no-skill")
			}
			r := u.runWith(cm, args...)
			if r.code != 0 || strings.Contains(r.stdout, "): absent") || strings.Contains(r.stdout, "): added") {
				t.Fatalf("%s over cm2's hooks: %s", verb, r)
			}
			want := map[string][]string{"UserPromptSubmit": {"/usr/bin/othertool hook working"}, "Stop": nil}
			if verb == "install" {
				want = map[string][]string{"UserPromptSubmit": {"/usr/bin/othertool hook working", cm + " hook working"}, "Stop": {cm + " hook idle"}}
			}
			for ev, w := range want {
				if got := hookCommands(t, settings, ev); !slices.Equal(got, w) {
					t.Fatalf("%s hooks after %s: %q, want %q", ev, verb, got, w)
				}
			}
		})
	}
}

// uninstall removes ~/.claude when install created it and it is empty
// again (it left an empty one behind), and never one the user had. A
// warning (claude not on PATH, here) shows ⚠, not the failure's ✘.
func TestUninstallRemovesTheClaudeDirItCreated(t *testing.T) {
	t.Parallel()
	for _, had := range []bool{false, true} {
		t.Run(map[bool]string{false: "created", true: "the user's"}[had], func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "xia").atDefaultHome()
			claude := filepath.Join(filepath.Dir(u.home), ".claude")
			if had {
				if err := os.Mkdir(claude, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			r := u.run("install", "--no-service")
			if r.code != 0 {
				t.Fatalf("%s", r)
			}
			if _, err := os.Stat(filepath.Join(claude, "settings.json")); err != nil {
				t.Fatalf("install wrote no settings.json: %v %s", err, r)
			}
			if strings.Contains(r.stderr, "not on PATH") && (!strings.Contains(r.stderr, "⚠ claude (Claude Code) is not on PATH") || strings.Contains(r.stderr, "✘")) {
				t.Fatalf("install's warning: %q", r.stderr)
			}
			if r := u.run("uninstall", "--no-service"); r.code != 0 {
				t.Fatalf("%s", r)
			}
			_, err := os.Stat(claude)
			if had && err != nil {
				t.Fatalf("uninstall removed the user's ~/.claude: %v", err)
			}
			if !had && !errors.Is(err, fs.ErrNotExist) {
				entries, _ := os.ReadDir(claude)
				t.Fatalf("uninstall left ~/.claude it created: %v %v", err, entries)
			}
		})
	}
}

// install created ~/.claude; the user then moved it into a dotfiles
// repository and left a symlink in its place. uninstall keeps the symlink
// (removing it would cut Claude Code off from the user's settings) and
// forgets that it created ~/.claude: what is there now is the user's.
func TestUninstallKeepsAClaudeDirSymlink(t *testing.T) {
	t.Parallel()
	u := newUser(t, "yan").atDefaultHome()
	claude := filepath.Join(filepath.Dir(u.home), ".claude")
	if r := u.run("install", "--no-service", "--no-skill"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	dot := filepath.Join(t.TempDir(), "dotfiles-claude")
	if err := os.Rename(claude, dot); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dot, claude); err != nil {
		t.Fatal(err)
	}
	if r := u.run("uninstall", "--no-service"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	if fi, err := os.Lstat(claude); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("uninstall removed the user's ~/.claude symlink: %v", err)
	}
	if _, err := os.Stat(filepath.Join(u.home, "install.json")); !errors.Is(err, fs.ErrNotExist) {
		data, _ := os.ReadFile(filepath.Join(u.home, "install.json"))
		t.Fatalf("uninstall kept install.json (%v): %s", err, data)
	}
}
