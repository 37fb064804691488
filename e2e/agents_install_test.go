package e2e

// install over an existing claudemesh entry keeps the user's fields and
// uninstall gives it back; the service step says what really happened
// (QA 7-G, 7-H).

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallKeepsExistingEntriesAndTellsTheTruth(t *testing.T) {
	t.Parallel()
	u := newUser(t, "finn")
	chome := t.TempDir()
	u.extraEnv = []string{"CLAUDEMESH_CLAUDE_HOME=" + chome}
	u.atDefaultHome()
	claudeJSON := "{\n  \"mcpServers\": {\n    \"claudemesh\": {\n      \"command\": \"/old/claudemesh\",\n      \"args\": [\"mcp\"],\n      \"env\": {\"X\": \"1\"}\n    }\n  }\n}\n"
	settings := "{\n  \"hooks\": {\n    \"Stop\": [\n      {\"hooks\": [{\"type\": \"command\", \"command\": \"/old/claudemesh hook idle\"}]}\n    ]\n  }\n}\n"
	os.MkdirAll(filepath.Join(chome, ".claude"), 0o755)
	os.WriteFile(filepath.Join(chome, ".claude.json"), []byte(claudeJSON), 0o600)
	os.WriteFile(filepath.Join(chome, ".claude", "settings.json"), []byte(settings), 0o600)

	u.ok("install", "--no-service")
	cj, _ := os.ReadFile(filepath.Join(chome, ".claude.json"))
	var parsed struct {
		MCPServers map[string]struct {
			Command string            `json:"command"`
			Args    []string          `json:"args"`
			Env     map[string]string `json:"env"`
		} `json:"mcpServers"`
	}
	if err := json.Unmarshal(cj, &parsed); err != nil {
		t.Fatalf("%v\n%s", err, cj)
	}
	if e := parsed.MCPServers["claudemesh"]; e.Command != bin || e.Env["X"] != "1" {
		t.Fatalf("the entry after install (env must stay): %s", cj)
	}
	st, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	if strings.Contains(string(st), "/old/claudemesh") || !strings.Contains(string(st), bin+" hook idle") {
		t.Fatalf("settings.json after install:\n%s", st)
	}
	u.ok("install", "--no-service")
	if cj2, _ := os.ReadFile(filepath.Join(chome, ".claude.json")); string(cj2) != string(cj) {
		t.Fatalf("a second install changed .claude.json:\n%s", cj2)
	}

	// uninstall gives back what was there, byte for byte, and removes the
	// skills directory install created.
	var res struct {
		Steps []map[string]any `json:"steps"`
	}
	u.json(&res, "uninstall", "--no-service")
	for _, s := range res.Steps {
		if _, ok := s["what"]; !ok || s["What"] != nil {
			t.Fatalf("--json steps are camelCase: %+v", res.Steps)
		}
	}
	cj3, _ := os.ReadFile(filepath.Join(chome, ".claude.json"))
	st3, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	if string(cj3) != claudeJSON || string(st3) != settings {
		t.Fatalf("uninstall did not restore the user's entries:\n%s\n---\n%s", cj3, st3)
	}
	if fileExists(filepath.Join(chome, ".claude", "skills")) {
		t.Fatal("uninstall left the skills directory install created")
	}

	// The service step: refused on CI is a warning, not "done"; uninstall
	// with no service installed says "absent" (and asks no service
	// manager anything).
	fakeHome := t.TempDir()
	svc := u.withEnv("HOME="+fakeHome, "XDG_CONFIG_HOME="+filepath.Join(fakeHome, ".config"), "CI=true")
	r := svc.ok("install", "--no-hooks", "--no-skill")
	if !strings.Contains(r.stdout, "⚠ daemon service (claudemesh daemon install-service): skipped: refusing") || strings.Contains(r.stdout, "done") {
		t.Fatalf("install on CI: %s", r)
	}
	var un struct {
		Steps []struct{ What, Result string } `json:"steps"`
	}
	svc.json(&un, "uninstall")
	last := un.Steps[len(un.Steps)-1]
	if !strings.HasPrefix(last.What, "daemon service") || last.Result != "absent" {
		t.Fatalf("uninstall without a service: %+v", un.Steps)
	}
}

// SKILL.md never tells an agent that --wait means "read": it waits for the
// delivery receipt (QA 7-N).
func TestSkillSaysDeliveredNotRead(t *testing.T) {
	t.Parallel()
	out := newUser(t, "gil").ok("skill").stdout
	if strings.Contains(out, "was read") || !strings.Contains(out, "--wait` | wait until it was delivered") {
		t.Fatalf("SKILL.md on --wait:\n%s", out)
	}
}

// A binary installed under another name (here `cm`) finds its own hooks:
// a second install adds nothing and uninstall removes them. (They were
// recognised only by "claudemesh" in the path, so every install added them
// again and uninstall said "absent" and left them.)
func TestInstallUnderAnotherName(t *testing.T) {
	t.Parallel()
	u := newUser(t, "gina")
	chome := t.TempDir()
	u.extraEnv = []string{"CLAUDEMESH_CLAUDE_HOME=" + chome}
	// A hard link (or a copy made by cp): writing the executable from this
	// process could leave its fd in a child forked meanwhile by a parallel
	// test, and exec would fail with "text file busy".
	cm := filepath.Join(t.TempDir(), "cm")
	if err := os.Link(bin, cm); err != nil {
		if out, err := exec.Command("cp", bin, cm).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(cm, append([]string{"--home", u.home}, args...)...)
		cmd.Env = u.env()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("cm %q: %v\n%s", args, err, out)
		}
		return string(out)
	}
	settings := filepath.Join(chome, ".claude", "settings.json")
	hooks := func() map[string][]json.RawMessage {
		var sj struct {
			Hooks map[string][]json.RawMessage `json:"hooks"`
		}
		if data, err := os.ReadFile(settings); err == nil {
			if err := json.Unmarshal(data, &sj); err != nil {
				t.Fatalf("%v\n%s", err, data)
			}
		}
		return sj.Hooks
	}
	run("install", "--no-service")
	if out := run("install", "--no-service"); strings.Contains(out, "hook working): added") || strings.Contains(out, "hook idle): added") {
		t.Fatalf("a second install added hooks again:\n%s", out)
	}
	for _, event := range []string{"UserPromptSubmit", "Stop"} {
		if n := len(hooks()[event]); n != 1 {
			t.Fatalf("%d %s hooks after two installs, want 1", n, event)
		}
	}
	if out := run("uninstall", "--no-service"); strings.Contains(out, "absent") {
		t.Fatalf("uninstall did not find its hooks:\n%s", out)
	}
	if h := hooks(); len(h) != 0 {
		t.Fatalf("hooks left after uninstall: %v", h)
	}
}
