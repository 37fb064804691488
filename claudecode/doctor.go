package claudecode

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"claudemesh/client/config"
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
// and the hooks run this binary for this home (--home DIR in them for any
// home but the default), and the skill is there.
func DoctorChecks() []doctor.Check {
	return []doctor.Check{{Name: "claude code", Run: checkClaudeCode}}
}

func checkClaudeCode(e *doctor.Env) []doctor.Result {
	chome, err := claudeHome()
	if err != nil {
		return nil
	}
	pin := pinFor(e.Home)
	// The fix when the entries are another home's.
	otherFix := func(p string) string {
		return uninstallFor(p) + ", then " + config.Invocation(e.Home) + " install"
	}
	var out []doctor.Result
	var cj struct {
		MCPServers map[string]json.RawMessage `json:"mcpServers"`
	}
	var entry struct {
		Command string   `json:"command"`
		Args    []string `json:"args"`
	}
	path := filepath.Join(chome, ".claude.json")
	data, err := os.ReadFile(path)
	var raw json.RawMessage
	ok := false
	if err == nil && json.Unmarshal(data, &cj) == nil {
		raw, ok = cj.MCPServers["claudemesh"]
		json.Unmarshal(raw, &entry)
	}
	entryPin, rest := mcpEntryHome(raw)
	want := strings.Join(mcpArgs(e.Home), " ")
	switch {
	case !ok:
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.Warn, Message: "no mcpServers.claudemesh in " + path, Fix: config.Invocation(e.Home) + " install"})
	case !samePin(entryPin, pin):
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.Warn,
			Message: "mcpServers.claudemesh runs claudemesh for " + describePin(entryPin) + ", not for this home (" + e.Home + ")", Fix: otherFix(entryPin)})
	case entry.Command != e.Self && filepath.IsAbs(entry.Command) && !isFile(entry.Command):
		// The binary moved or was deleted: not a mismatch to tidy up
		// but a session that cannot start its MCP server at all.
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.Fail,
			Message: "mcpServers.claudemesh runs " + entry.Command + ", which does not exist: Claude Code cannot start the MCP server (nor run the hooks) in any session",
			Fix:     config.Invocation(e.Home) + " install (it points the entries at this binary)"})
	case entry.Command != e.Self || len(rest) == 0 || rest[0] != "mcp":
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.Warn,
			Message: "mcpServers.claudemesh runs " + entry.Command + " " + strings.Join(entry.Args, " ") + ", not " + e.Self + " " + want, Fix: config.Invocation(e.Home) + " install (it updates the entry)"})
	default:
		out = append(out, doctor.Result{Name: "claude code MCP entry", Status: doctor.OK, Message: entry.Command + " " + strings.Join(entry.Args, " ")})
	}
	settings, _ := os.ReadFile(filepath.Join(chome, ".claude", "settings.json"))
	var sj struct {
		Hooks map[string][]json.RawMessage `json:"hooks"`
	}
	json.Unmarshal(settings, &sj)
	st := loadState(e.Home)
	var missing, other, elsewhere, goneEvents, gone []string
	otherPin := ""
	for _, h := range hookEvents {
		found, foreign, stale, missingExe := false, false, false, false
		for _, el := range sj.Hooks[h.event] {
			p, a, ok := parseHook(el, e.Self, h.event, e.Home, st)
			switch {
			case !ok || a != h.arg:
			case !samePin(p, pin):
				foreign, otherPin = true, p
			default:
				found = true
				// This home, maybe spelled another way (a symlink):
				// this binary for the home as the entry names it.
				if hookRuns(el, hookCommandLine(e.Self, e.Home, h.arg)) || hookRuns(el, hookCommandLine(e.Self, homeOfPin(p), h.arg)) {
					continue
				}
				stale = true
				// A binary that is gone (moved, deleted, renamed): Claude
				// Code runs a missing command at every prompt.
				if _, exe, _, _, _ := splitHook(el); exe != e.Self && filepath.IsAbs(exe) && !isFile(exe) {
					missingExe = true
					if !slices.Contains(gone, exe) {
						gone = append(gone, exe)
					}
				}
			}
		}
		switch {
		case !found && foreign:
			elsewhere = append(elsewhere, h.event)
		case !found:
			missing = append(missing, h.event)
		case missingExe:
			goneEvents = append(goneEvents, h.event)
		case stale:
			other = append(other, h.event)
		}
	}
	switch {
	case len(elsewhere) > 0:
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.Warn,
			Message: strings.Join(elsewhere, ", ") + " run claudemesh hook for " + describePin(otherPin) + ", not for this home (" + e.Home + ")", Fix: otherFix(otherPin)})
	case len(goneEvents) > 0:
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.Fail,
			Message: strings.Join(goneEvents, ", ") + " run " + strings.Join(gone, " and ") + ", which does not exist: Claude Code cannot run them (it tries at every prompt)",
			Fix:     config.Invocation(e.Home) + " install (it points the hooks at this binary)"})
	case len(missing) > 0:
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.Warn, Message: "missing: " + strings.Join(missing, ", "), Fix: config.Invocation(e.Home) + " install"})
	case len(other) > 0:
		// The same mismatch the MCP entry check reports.
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.Warn,
			Message: strings.Join(other, ", ") + " run another claudemesh binary, not " + e.Self, Fix: config.Invocation(e.Home) + " install (it updates the hooks)"})
	case pin != "":
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.OK, Message: "UserPromptSubmit and Stop run claudemesh hook for home " + pin})
	default:
		out = append(out, doctor.Result{Name: "claude code hooks", Status: doctor.OK, Message: "UserPromptSubmit and Stop run claudemesh hook"})
	}
	if b, err := os.ReadFile(skillPath(chome)); err != nil || !isOurSkill(b) {
		out = append(out, doctor.Result{Name: "claude code skill", Status: doctor.Warn, Message: "no claudemesh skill in " + filepath.Dir(skillPath(chome)), Fix: config.Invocation(e.Home) + " install"})
	} else {
		out = append(out, doctor.Result{Name: "claude code skill", Status: doctor.OK, Message: skillPath(chome)})
	}
	return out
}

// isFile reports whether path names an existing file (not a directory).
func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}
