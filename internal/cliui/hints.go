package cliui

import (
	"reflect"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// HomeInvocation turns the --home a run was given into the start of the
// commands its hints name: "claudemesh --home DIR" (or "claudemesh" when
// DIR is the default home), "" when it cannot tell. main sets it
// (config.Invocation of the resolved home); cliui knows no config.
var HomeInvocation func(home string) string

// CommandTree returns the whole command tree, for telling the commands a
// hint names from prose when the app a run was given holds one command
// (main's quick path for a single verb). main sets it; it is called only
// when a hint names claudemesh and the run was given --home or --mesh.
var CommandTree func() []*cli.Command

// hintContext is what a run's hints need to name commands the user can
// copy: the invocation for the --home given on the line, the --mesh given,
// and the app's command tree to tell a command ("claudemesh peer list")
// from prose ("the claudemesh daemon is …").
type hintContext struct {
	invocation string // "claudemesh --home DIR", or "" (no --home given, or the default home)
	mesh       string // the --mesh given, when it is a slug
	app        *cli.App
	once       sync.Once
	cmds       []*cli.Command        // the whole tree, once a hint needs it
	groups     map[*cli.Command]bool // commands that only list their subcommands
}

// newHintContext reads --home and --mesh off the parsed line.
func newHintContext(app *cli.App, p *parsedArgs) *hintContext {
	h := &hintContext{app: app}
	if home := p.stringFlag(FlagHome); home != "" && HomeInvocation != nil {
		if inv := HomeInvocation(home); inv != "claudemesh" && strings.HasPrefix(inv, "claudemesh ") {
			h.invocation = inv
		}
	}
	if m := p.stringFlag(FlagMesh); isSlug(m) {
		h.mesh = m
	}
	return h
}

// tree loads the command tree and which of its commands are groups.
func (h *hintContext) tree() { h.once.Do(h.load) }

func (h *hintContext) load() {
	h.cmds = h.app.Commands
	if CommandTree != nil {
		h.cmds = CommandTree()
	}
	h.groups = map[*cli.Command]bool{}
	group := reflect.ValueOf(groupAction).Pointer()
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if len(c.Subcommands) > 0 && (c.Action == nil || reflect.ValueOf(c.Action).Pointer() == group) {
				h.groups[c] = true
			}
			walk(c.Subcommands)
		}
	}
	walk(h.cmds)
}

// stringFlag is the value of the value flag name as given at any level
// (the last one wins), "" when not given.
func (p *parsedArgs) stringFlag(name string) string {
	v := ""
	for _, level := range p.flags {
		for _, u := range level {
			if u.name != name {
				continue
			}
			if u.hasValue {
				v = u.value
			} else if eq := strings.IndexByte(u.tok, '='); eq >= 0 {
				v = u.tok[eq+1:]
			}
		}
	}
	return v
}

func isSlug(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// noMeshVerbs are the commands a --mesh does not belong in: they act on
// the home, the daemon or another broker, not on one mesh.
var noMeshVerbs = map[string]bool{"join": true, "daemon": true, "doctor": true, "install": true, "uninstall": true,
	"ui": true, "mesh": true, "demo": true, "mcp": true, "hook": true, "completion": true, "broker": true,
	"version": true, "help": true}

// noHomeVerbs are the commands that never read a home.
var noHomeVerbs = map[string]bool{"broker": true, "demo": true, "version": true, "help": true, "completion": true}

// commands rewrites the claudemesh commands text names ("→ claudemesh
// daemon outbox list") so that, copied as printed, they run on the home
// and mesh this run was given: "claudemesh --home DIR [--mesh SLUG]
// daemon outbox list". Copied without them, they looked at ~/.claudemesh
// (another identity, or none) or failed with "several meshes joined". A
// command already naming a --home (a daemon's hint) or a --mesh keeps it;
// one for someone else to run (after "ask", "they run", "the joiner") is
// left as it is, as are help commands and prose ("the claudemesh daemon").
func (h *hintContext) commands(text string) string {
	if h == nil || (h.invocation == "" && h.mesh == "") || !strings.Contains(text, "claudemesh ") {
		return text
	}
	h.tree()
	var b strings.Builder
	rest := text
	for {
		i := strings.Index(rest, "claudemesh ")
		if i < 0 {
			b.WriteString(rest)
			break
		}
		done := len(text) - len(rest) // bytes of text before rest
		b.WriteString(rest[:i])
		after := rest[i+len("claudemesh "):]
		b.WriteString("claudemesh ")
		if ins := h.insertion(text[:done+i], after); ins != "" {
			// After the global flags the command already has.
			n := leadingFlags(after)
			b.WriteString(after[:n] + ins + " ")
			after = after[n:]
		}
		rest = after
	}
	return b.String()
}

// insertion is what goes between "claudemesh " and after (the text that
// follows it), given before (all the text before it): "--home DIR",
// "--mesh SLUG", both, or nothing.
func (h *hintContext) insertion(before, after string) string {
	if before != "" {
		switch c := before[len(before)-1]; {
		case c == ' ', c == '(', c == '`', c == '"', c == '\'', c == '\n', c == ':':
		default:
			return "" // part of a word or a path: mcpServers.claudemesh
		}
	}
	clause := before
	for _, sep := range []string{"; ", ". ", "\n", "→ "} {
		if j := strings.LastIndex(clause, sep); j >= 0 {
			clause = clause[j+len(sep):]
		}
	}
	for _, other := range []string{"ask ", "they run", "joiner", "tell ", "someone else", "a lead "} {
		if strings.Contains(strings.ToLower(clause), other) {
			return ""
		}
	}
	words := strings.Fields(cutClause(after))
	homeGiven, meshGiven := false, false
	for _, w := range words {
		homeGiven = homeGiven || w == "--home" || strings.HasPrefix(w, "--home=")
		meshGiven = meshGiven || w == "--mesh" || strings.HasPrefix(w, "--mesh=")
		if w == "--help" || w == "-h" {
			return ""
		}
	}
	// Global flags before the verb (a daemon's hint names its --home).
	for len(words) > 0 && strings.HasPrefix(words[0], "-") {
		if (words[0] == "--home" || words[0] == "--mesh") && len(words) > 1 {
			words = words[1:]
		}
		words = words[1:]
	}
	if len(words) == 0 {
		return ""
	}
	verb := h.command(h.cmds, words[0])
	if verb == nil {
		return ""
	}
	if h.groups[verb] {
		if len(words) < 2 || h.command(verb.Subcommands, words[1]) == nil {
			return "" // "the claudemesh daemon is not reachable"
		}
	}
	var ins []string
	if h.invocation != "" && !homeGiven && !noHomeVerbs[verb.Name] {
		ins = append(ins, strings.TrimPrefix(h.invocation, "claudemesh "))
	}
	if h.mesh != "" && !meshGiven && !noMeshVerbs[verb.Name] {
		ins = append(ins, "--mesh "+h.mesh)
	}
	return strings.Join(ins, " ")
}

// leadingFlags is the length of the global flags (with their values) at
// the start of s, and the space after them: "--home /x " of
// "--home /x peer list".
func leadingFlags(s string) int {
	n := 0
	for strings.HasPrefix(s[n:], "-") {
		end := strings.IndexByte(s[n:], ' ')
		if end < 0 {
			return len(s)
		}
		tok := s[n : n+end]
		n += end + 1
		if tok == "--home" || tok == "--mesh" {
			if end = strings.IndexByte(s[n:], ' '); end < 0 {
				return len(s)
			}
			n += end + 1
		}
	}
	return n
}

// cutClause is the command at the start of s: up to the end of its
// sentence, clause or parenthesis.
func cutClause(s string) string {
	end := len(s)
	for _, sep := range []string{"; ", ", ", ". ", ")", "\n", " (", " or ", " and ", " then "} {
		if j := strings.Index(s, sep); j >= 0 && j < end {
			end = j
		}
	}
	return strings.TrimRight(s[:end], ".,:;")
}

// command is the command of cmds named (or aliased) name, nil when none.
func (h *hintContext) command(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Hidden && c.Name == "help" {
			continue
		}
		if c.Name == name || (len(c.Aliases) > 0 && containsString(c.Aliases, name)) {
			return c
		}
	}
	return nil
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Commands returns text with the claudemesh commands it names carrying the
// --home (and --mesh) this run was given, as the run's errors and warnings
// have them: for hint lines a command prints itself ("→ older: claudemesh
// topic history …").
func (o *Out) Commands(text string) string { return o.st.hints.commands(text) }
