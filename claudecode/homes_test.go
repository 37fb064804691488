package claudecode

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"claudemesh/internal/cliui"
	"claudemesh/internal/doctor"
)

// TestEntriesNameTheirHome: the home an MCP entry or a hook runs for is
// read back from what install writes (quoted paths included), from a
// user's env CLAUDEMESH_HOME, and is "" for the default home's.
func TestEntriesNameTheirHome(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv("CLAUDEMESH_HOME", "")
	def := filepath.Join(user, ".claudemesh")
	odd := "/tmp/my homes/it's bob"
	bin := "/opt/my bin/cm"
	for _, home := range []string{def, "/tmp/bob", odd} {
		want := pinFor(home)
		if (home == def) != (want == "") {
			t.Fatalf("pinFor(%q) = %q", home, want)
		}
		if pin, rest := mcpEntryHome(mcpEntry(bin, home)); pin != want || !slices.Equal(rest, []string{"mcp"}) {
			t.Errorf("mcpEntryHome(mcpEntry(%q)) = %q %q", home, pin, rest)
		}
		for _, arg := range []string{"working", "idle"} {
			if pin, a, ok := parseHook(hookEntry(bin, home, arg), bin, "Stop", home, installState{}); !ok || pin != want || a != arg {
				t.Errorf("parseHook(hookEntry(%q, %s)) = %q %q %v", home, arg, pin, a, ok)
			}
		}
	}
	if pin, _ := mcpEntryHome([]byte(`{"command": "cm", "args": ["mcp"], "env": {"CLAUDEMESH_HOME": "/tmp/bob"}}`)); pin != "/tmp/bob" {
		t.Errorf("an entry with env CLAUDEMESH_HOME: %q", pin)
	}
	if pin, _ := mcpEntryHome([]byte(`{"command": "cm", "args": ["--home", "` + def + `", "mcp"]}`)); pin != "" {
		t.Errorf("an entry naming the default home: %q", pin)
	}
	for _, c := range []string{`"hooks": [{"type": "command", "command": "/x/claudemesh --mesh a hook idle"}]`,
		`"hooks": [{"type": "command", "command": "/x/other hook idle"}]`,
		`"hooks": [{"type": "command", "command": "'/x/claudemesh hook idle"}]`} {
		if _, _, ok := parseHook([]byte("{"+c+"}"), bin, "Stop", def, installState{}); ok {
			t.Errorf("parseHook took %s for claudemesh's", c)
		}
	}

	// A binary not named claudemesh: its line is known by what this
	// home's install.json records, whatever the running binary is; a
	// line it does not record (another tool's) is not.
	gone := "/opt/old/cm2"
	for _, home := range []string{def, "/tmp/bob"} {
		var st installState
		st.add(hookKey("Stop") + "[claudemesh]")
		st.wrote(hookKey("Stop"), hookCommandLine(gone, home, "idle"))
		if _, a, ok := parseHook(hookEntry(gone, home, "idle"), bin, "Stop", home, st); !ok || a != "idle" {
			t.Errorf("%s: the line install.json records was not taken for ours", home)
		}
		if _, _, ok := parseHook(hookEntry("/usr/bin/othertool", home, "idle"), bin, "Stop", home, st); ok {
			t.Errorf("%s: another tool's line was taken for ours", home)
		}
		if _, _, ok := parseHook(hookEntry(gone, home, "idle"), bin, "UserPromptSubmit", home, st); ok {
			t.Errorf("%s: Stop's line was taken for UserPromptSubmit's", home)
		}
		// An install.json from before the lines were recorded: a line
		// naming this home with --home, when it records adding the hook.
		old := installState{Created: []string{hookKey("Stop") + "[claudemesh]"}}
		_, _, ok := parseHook(hookEntry(gone, home, "idle"), bin, "Stop", home, old)
		if want := home != def; ok != want {
			t.Errorf("%s: an older install.json's line taken for ours: %v, want %v", home, ok, want)
		}
		if _, _, ok := parseHook(hookEntry(gone, home, "idle"), bin, "Stop", home, installState{}); ok {
			t.Errorf("%s: a line no install.json records was taken for ours", home)
		}
	}
}

// TestASymlinkedHomeIsTheSameHome: --home through a symlink is the home
// it points to: doctor and launch do not call the entries install wrote
// for it "another home's", and install over them is no takeover.
func TestASymlinkedHomeIsTheSameHome(t *testing.T) {
	user, chome := t.TempDir(), t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv("CLAUDEMESH_HOME", "")
	t.Setenv("CLAUDEMESH_CLAUDE_HOME", chome)
	bin := "/opt/cm/claudemesh"
	real := filepath.Join(user, "real")
	link := filepath.Join(user, "link")
	def := filepath.Join(user, ".claudemesh")
	defLink := filepath.Join(user, "deflink")
	for _, d := range []string{real, def} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(def, defLink); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ installed, used string }{{real, link}, {link, real}, {def, defLink}} {
		if _, err := installFiles(c.installed, chome, bin, true, false); err != nil {
			t.Fatalf("install for %s: %v", c.installed, err)
		}
		for _, r := range checkClaudeCode(&doctor.Env{Ctx: context.Background(), Home: c.used, Self: bin}) {
			if r.Status != doctor.OK && r.Name != "claude code skill" { // (installFiles writes no skill)
				t.Errorf("doctor for %s, installed for %s: %+v", c.used, c.installed, r)
			}
		}
		if w := installedForAnotherHome(c.used); w != "" {
			t.Errorf("launch for %s, installed for %s: %s", c.used, c.installed, w)
		}
		if _, err := installFiles(c.used, chome, bin, true, false); err != nil {
			t.Errorf("install for %s over %s's: %v", c.used, c.installed, err)
		}
		if _, err := installFiles(c.used, chome, bin, true, true); err != nil {
			t.Fatalf("uninstall for %s: %v", c.used, err)
		}
	}
	// Another home is still another home.
	other := filepath.Join(user, "other")
	if _, err := installFiles(real, chome, bin, true, false); err != nil {
		t.Fatal(err)
	}
	if w := installedForAnotherHome(other); w == "" {
		t.Error("launch for another home: no warning")
	}
}

// TestNoHomeVariableReadsNoInstallJSONHere: with $HOME unset the default
// home's install.json cannot be found; it was read as ./install.json (of
// whatever directory install ran in), and an install.json there without
// the entries let another home take the default home's over. Now install
// refuses, and says why.
func TestNoHomeVariableReadsNoInstallJSONHere(t *testing.T) {
	user, chome, cwd := t.TempDir(), t.TempDir(), t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv("CLAUDEMESH_HOME", "")
	t.Setenv("CLAUDEMESH_CLAUDE_HOME", chome)
	bin := "/opt/cm/claudemesh"
	if _, err := installFiles(filepath.Join(user, ".claudemesh"), chome, bin, true, false); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", "")
	t.Chdir(cwd)
	if err := os.WriteFile("install.json", []byte(`{"created":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := installFiles(filepath.Join(user, "bob"), chome, bin, true, false)
	var ce *cliui.Error
	if !errors.As(err, &ce) || ce.Code != codeAnotherHome || !strings.Contains(ce.Hint, "$HOME is not set") || strings.Contains(ce.Hint, "--home ''") {
		t.Fatalf("install for another home with $HOME unset: %v", err)
	}
	if d := describePin(""); strings.Contains(d, "  ") || !strings.Contains(d, "not set") {
		t.Errorf("describePin: %q", d)
	}
	if u := uninstallFor(""); strings.Contains(u, "''") {
		t.Errorf("uninstallFor: %q", u)
	}
}
