package claudecode

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"claudemesh/internal/doctor"
)

// hookRuns reports whether a hook element runs exactly command.
func hookRuns(elem []byte, command string) bool {
	var g struct {
		Hooks []struct {
			Command string `json:"command"`
		} `json:"hooks"`
	}
	return json.Unmarshal(elem, &g) == nil && len(g.Hooks) == 1 && g.Hooks[0].Command == command
}

// DoctorChecks are the Claude Code integration's checks: the MCP entry
// runs this binary, the hooks and the skill are there.
func DoctorChecks() []doctor.Check {
	return []doctor.Check{{Name: "claude code", Run: checkClaudeCode}}
}

func checkClaudeCode(e *doctor.Env) []doctor.Result {
	chome, err := claudeHome()
	if err != nil {
		return nil
	}
	var out []doctor.Result
	var cj struct {
		MCPServers map[string]struct {
			Command string   `json:"command"`
			Args    []string `json:"args"`
		} `json:"mcpServers"`
	}
	path := filepath.Join(chome, ".claude.json")
	data, err := os.ReadFile(path)
	entry, ok := cj.MCPServers["claudemesh"], false
	if err == nil && json.Unmarshal(data, &cj) == nil {
		entry, ok = cj.MCPServers["claudemesh"]
	}
	switch {
	case !ok:
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.Warn, Message: "no mcpServers.claudemesh in " + path, Fix: "claudemesh install"})
	case entry.Command != e.Self || len(entry.Args) == 0 || entry.Args[0] != "mcp":
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.Warn,
			Message: "mcpServers.claudemesh runs " + entry.Command + " " + strings.Join(entry.Args, " ") + ", not " + e.Self + " mcp", Fix: "claudemesh install (it updates the entry)"})
	default:
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.OK, Message: entry.Command + " mcp"})
	}
	settings, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	var sj struct {
		Hooks map[string][]json.RawMessage `json:"hooks"`
	}
	json.Unmarshal(settings, &sj)
	var missing, other []string
	for _, h := range hookEvents {
		found, ours := false, false
		for _, el := range sj.Hooks[h.event] {
			if isOurHook(el, h.arg, e.Self) {
				found = true
				ours = ours || hookRuns(el, hookCommandLine(e.Self, h.arg))
			}
		}
		switch {
		case !found:
			missing = append(missing, h.event)
		case !ours:
			other = append(other, h.event)
		}
	}
	switch {
	case len(missing) > 0:
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.Warn, Message: "missing: " + strings.Join(missing, ", "), Fix: "claudemesh install"})
	case len(other) > 0:
		// The same mismatch the MCP entry check reports.
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.Warn,
			Message: strings.Join(other, ", ") + " run another claudemesh binary, not " + e.Self, Fix: "claudemesh install (it updates the hooks)"})
	default:
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.OK, Message: "UserPromptSubmit and Stop run claudemesh hook"})
	}
	if b, err := os.ReadFile(skillPath(chome)); err != nil || !isOurSkill(b) {
		out = append(out, doctor.Result{Name: "claude code skill", Status: doctor.Warn, Message: "no claudemesh skill in " + filepath.Dir(skillPath(chome)), Fix: "claudemesh install"})
	} else {
		out = append(out, doctor.Result{Name: "claude code skill", Status: doctor.OK, Message: skillPath(chome)})
	}
	return out
}
