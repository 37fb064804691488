package claudecode

import (
	"encoding/json"
	"path/filepath"
	"strings"

	"claudemesh/client/config"
)

// Which claudemesh home the entries install writes into Claude Code's
// settings reach. The default home's entries carry no home (`BIN mcp`,
// `BIN hook ARG`, exactly as before homes were carried): they follow the
// $CLAUDEMESH_HOME of the claude that runs them, which is how `claudemesh
// launch` hands its claude the home it was started for. Any other home's
// entries carry `--home DIR` (config.HomeArgs), so a plain `claude` run
// from any shell reaches that home.
//
// Claude Code's settings hold one home's entries at a time: the MCP server
// is named claudemesh (launch loads it as the channel server:claudemesh),
// and two homes' servers in every session would make each session two
// identities. install for a home whose entries another home's install
// wrote (its install.json records them) is refused and names that home;
// uninstall removes only its own home's entries.

// pinFor is the home the entries of home carry: "" for the default home,
// else home.
func pinFor(home string) string {
	if a := config.HomeArgs(home); len(a) == 2 {
		return a[1]
	}
	return ""
}

// normPin resolves the home an entry names ("~/x" expanded); the default
// home is "".
func normPin(p string) string {
	if p == "" {
		return ""
	}
	if abs, err := config.ResolveHome(p); err == nil {
		p = abs
	}
	return pinFor(p)
}

// homeOfPin is the directory an entry's pin stands for; "" for the
// default home when it cannot be found ($HOME unset): never a path
// relative to the working directory.
func homeOfPin(pin string) string {
	if pin == "" {
		if def, err := config.DefaultHome(); err == nil {
			return def
		}
	}
	return pin
}

// uninstallFor is the command that removes the entries of the home pin
// stands for.
func uninstallFor(pin string) string {
	if dir := homeOfPin(pin); dir != "" {
		return config.InvocationWithHome(dir) + " uninstall"
	}
	return "claudemesh uninstall with $HOME set (for the default home)"
}

// canonPin is the directory a pin stands for with symlinks resolved, ""
// for the default home however it is spelled: a home reached through a
// symlink is the same home.
func canonPin(pin string) string {
	dir := homeOfPin(pin)
	if dir == "" {
		return ""
	}
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r
	}
	if def, err := config.DefaultHome(); err == nil {
		if r, err := filepath.EvalSymlinks(def); err == nil {
			def = r
		}
		if def == dir {
			return ""
		}
	}
	return dir
}

// samePin reports whether two pins stand for one home (compared resolved:
// --home through a symlink was "another home").
func samePin(a, b string) bool { return a == b || canonPin(a) == canonPin(b) }

// describePin names an entry's home for messages.
func describePin(pin string) string {
	if pin == "" {
		def := homeOfPin("")
		if def == "" {
			def = "(~/" + config.DefaultHomeDir + "; $HOME is not set here)"
		}
		return "the default home " + def + " (or the $" + config.HomeEnv + " claude runs with)"
	}
	return "home " + pin
}

// mcpArgs are the MCP server entry's args for home.
func mcpArgs(home string) []string { return append(config.HomeArgs(home), "mcp") }

// homeFlags takes the leading --home DIR / --home=DIR off args: the pin
// they name (normalised) and the rest; ok is false for any other flag.
func homeFlags(args []string) (pin string, rest []string, ok bool) {
	for len(args) > 0 && strings.HasPrefix(args[0], "-") {
		switch {
		case (args[0] == "--home" || args[0] == "-home") && len(args) > 1:
			pin, args = args[1], args[2:]
		case strings.HasPrefix(args[0], "--home="):
			pin, args = strings.TrimPrefix(args[0], "--home="), args[1:]
		default:
			return "", nil, false
		}
	}
	return normPin(pin), args, true
}

// mcpEntryHome is the home an mcpServers.claudemesh entry runs for: its
// --home argument, else the CLAUDEMESH_HOME of its env, else the default
// (""); rest is its args after the home flags.
func mcpEntryHome(entry []byte) (pin string, rest []string) {
	var e struct {
		Args []string          `json:"args"`
		Env  map[string]string `json:"env"`
	}
	json.Unmarshal(entry, &e)
	pin, rest, ok := homeFlags(e.Args)
	if !ok {
		return "", e.Args
	}
	if pin == "" && len(e.Args) == len(rest) {
		pin = normPin(e.Env[config.HomeEnv])
	}
	return pin, rest
}

// splitHook parses a hook element shaped like claudemesh's: a single
// command `EXE [--home DIR] hook ARG`; its command line, EXE, pin and ARG.
func splitHook(elem []byte) (cmd, exe, pin, arg string, ok bool) {
	var g struct {
		Hooks []struct {
			Type    string `json:"type"`
			Command string `json:"command"`
		} `json:"hooks"`
	}
	if json.Unmarshal(elem, &g) != nil || len(g.Hooks) != 1 || g.Hooks[0].Type != "command" {
		return "", "", "", "", false
	}
	cmd = g.Hooks[0].Command
	w, ok := shellWords(cmd)
	if !ok || len(w) < 3 {
		return "", "", "", "", false
	}
	pin, rest, ok := homeFlags(w[1:])
	if !ok || len(rest) != 2 || rest[0] != "hook" {
		return "", "", "", "", false
	}
	return cmd, w[0], pin, rest[1], true
}

// hookKey names an event's hook in installState.
func hookKey(event string) string { return ".claude/settings.json#hooks." + event }

// parseHook parses a hook element of claudemesh's for event: a single
// command `EXE [--home DIR] hook ARG` whose EXE is bin or has
// "claudemesh" in its path, or, whatever the binary is called, the very
// command line the install of the home it names recorded in its
// install.json (st for home; an install.json from before install recorded
// its lines: one that records adding the event's hook, for a line naming
// that home with --home; for a line without, the binary of the MCP entry
// that install recorded writing for that home). Its pin and ARG. Another tool's hook is never
// taken: a line no install wrote, under a name without "claudemesh",
// is not ours.
func parseHook(elem []byte, bin, event, home string, st installState) (pin, arg string, ok bool) {
	cmd, exe, pin, arg, ok := splitHook(elem)
	if !ok {
		return "", "", false
	}
	if exe == bin || strings.Contains(exe, "claudemesh") {
		return pin, arg, true
	}
	if !samePin(pin, pinFor(home)) {
		dir := homeOfPin(pin)
		if dir == "" {
			return "", "", false
		}
		st = loadState(dir)
	}
	key := hookKey(event)
	w, has := st.Wrote[key]
	if w == cmd || (!has && pin != "" && st.has(key+"[claudemesh]")) {
		return pin, arg, true
	}
	// An install.json from before the lines were recorded, for a line
	// without --home (the default home's): the binary of the MCP entry
	// the same install wrote for this home runs it.
	if !has && st.legacyMCP != "" && exe == st.legacyMCP {
		return pin, arg, true
	}
	return "", "", false
}

// shellWords splits a command line the way sh would for the plain words,
// 'single' and "double" quotes and backslashes that hookCommandLine and
// people write; ok is false for anything else ($, `, globs are taken
// literally, which is fine for telling our own lines apart).
func shellWords(s string) (words []string, ok bool) {
	var cur strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			if in {
				words, in = append(words, cur.String()), false
				cur.Reset()
			}
			continue
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, false
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, false
			}
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		default:
			cur.WriteByte(c)
		}
		in = true
	}
	if in {
		words = append(words, cur.String())
	}
	return words, true
}

// recorded reports whether a home's install.json says its install wrote
// (created) or took over (replaced) an entry.
func recorded(st installState, created, replaced string) bool {
	_, ok := st.Replaced[replaced]
	return st.has(created) || ok
}

// claimedBy reports whether the install of the home pin stands for wrote
// the entry (its install.json records it).
func claimedBy(pin, created, replaced string) bool {
	dir := homeOfPin(pin)
	if dir == "" {
		// The default home's install.json cannot be found ($HOME is not
		// set; it was read as ./install.json): it may have written the
		// entry, so it is not taken over.
		return true
	}
	return recorded(loadState(dir), created, replaced)
}
