package claudecode

import (
	"path/filepath"
	"slices"
	"testing"
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
			if pin, a, ok := parseHook(hookEntry(bin, home, arg), bin); !ok || pin != want || a != arg {
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
		if _, _, ok := parseHook([]byte("{"+c+"}"), bin); ok {
			t.Errorf("parseHook took %s for claudemesh's", c)
		}
	}
}
