// Package completion is `claudemesh completion bash|zsh|fish`: small shell
// scripts that ask the binary itself (`claudemesh __complete WORDS...`) for
// candidates, so verbs and flags always match this build, mesh slugs come
// from config.json and peer names from the running daemon's directory.
package completion

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// The scripts never let a shell evaluate a candidate: they hold peers'
// display names, and a member named $(touch x) must not run touch. bash
// reads the lines with read -r (compgen -W would expand every word of its
// list) and inserts each as printf %q quotes it; zsh's compadd and fish
// quote what they insert. __complete leaves out what no quoting makes
// safe to show or insert (completable).
const bashScript = `# claudemesh completion for bash: source <(claudemesh completion bash)
_claudemesh() {
  local cur=${COMP_WORDS[COMP_CWORD]} line quoted
  COMPREPLY=()
  while IFS= read -r line; do
    printf -v quoted %q "$line"
    if [[ $line == "$cur"* || $quoted == "$cur"* ]]; then
      COMPREPLY+=("$quoted")
    fi
  done < <(claudemesh __complete "${COMP_WORDS[@]:1:COMP_CWORD-1}" 2>/dev/null)
}
complete -o default -F _claudemesh claudemesh
`

const zshScript = `#compdef claudemesh
# claudemesh completion for zsh: source <(claudemesh completion zsh)
_claudemesh() {
  local -a candidates
  candidates=("${(@f)$(claudemesh __complete "${(@)words[2,CURRENT-1]}" 2>/dev/null)}")
  compadd -a candidates
}
compdef _claudemesh claudemesh
`

const fishScript = `# claudemesh completion for fish: claudemesh completion fish | source
complete -c claudemesh -f -a '(claudemesh __complete (commandline -opc)[2..-1] 2>/dev/null)'
`

// Command is `claudemesh completion`.
func Command() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: cliui.WithExamples("Completes verbs, flags, mesh slugs (config.json) and peer names (the daemon's directory).",
			"source <(claudemesh completion bash)", "claudemesh completion fish | source"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 1, 1); err != nil {
				return err
			}
			script := map[string]string{"bash": bashScript, "zsh": zshScript, "fish": fishScript}[c.Args().First()]
			if script == "" {
				return cliui.UsageErrorf("unknown shell %q: bash, zsh or fish", c.Args().First())
			}
			fmt.Fprint(cliui.OutFrom(c).Stdout(), script)
			return nil
		},
	})
}

// CompleteCommand is the hidden `__complete WORDS...` the scripts call: it
// prints one candidate per line for the word after WORDS.
func CompleteCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:            "__complete",
		Hidden:          true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			for _, s := range Candidates(c.App, c.Args().Slice(), homeFrom(c.Args().Slice(), cliui.GlobalsFrom(c).Home)) {
				fmt.Fprintln(cliui.OutFrom(c).Stdout(), s)
			}
			return nil
		},
	})
}

// homeFrom is the --home among the words being completed, else the one
// given to __complete itself (def), else the default.
func homeFrom(words []string, def string) string {
	h := def
	for i, w := range words {
		if w == "--home" && i+1 < len(words) {
			h = words[i+1]
		}
	}
	home, _ := config.ResolveHome(h)
	return home
}

// The tables below are switches rather than package-level maps, which
// every claudemesh process would build at start for a completion it
// rarely runs.

// peerVerb reports whether the command takes a peer (or a send target) as
// its first argument.
func peerVerb(name string) bool {
	switch name {
	case "send", "verify", "kick", "disconnect", "ban", "unban", "grant", "revoke", "block":
		return true
	}
	return false
}

// flagValues are the values of a flag that takes one of a few words.
func flagValues(flag string) ([]string, bool) {
	switch flag {
	case "--priority":
		return []string{"now", "next", "low"}, true
	case "--role":
		return []string{"lead", "member", "observer"}, true
	}
	return nil, false
}

// argValues are the words a command's first argument takes, by command
// path.
func argValues(path string) ([]string, bool) {
	switch path {
	case "hook":
		return []string{"working", "idle", "dnd"}, true
	case "completion":
		return []string{"bash", "zsh", "fish"}, true
	case "status set":
		return []string{"idle", "working", "dnd"}, true
	}
	return nil, false
}

// topicVerb reports whether the command path takes a topic name as its
// first argument.
func topicVerb(path string) bool {
	switch path {
	case "topic post", "topic history", "topic tail", "topic join", "topic leave", "topic members", "topic rotate", "topic read", "topic add":
		return true
	}
	return false
}

// takesValue reports whether flag name (with its dashes) of flags is
// followed by a value (any flag but a boolean one).
func takesValue(flags []cli.Flag, name string) bool {
	name = strings.TrimLeft(name, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			_, isBool := f.(*cli.BoolFlag)
			return !isBool
		}
	}
	return false
}

// Candidates completes the word after words.
func Candidates(app *cli.App, words []string, home string) []string {
	cmds, flags := app.Commands, app.Flags
	var cur *cli.Command
	var path []string
	positional := 0
	prev := ""
	for _, w := range words {
		if strings.HasPrefix(w, "-") {
			prev = w
			continue
		}
		if prev != "" && takesValue(flags, prev) {
			prev = ""
			continue
		}
		prev = ""
		found := false
		for _, c := range cmds {
			if c.Name == w || slices.Contains(c.Aliases, w) {
				cur, cmds, flags, found = c, c.Subcommands, append(slices.Clone(app.Flags), c.Flags...), true
				path = append(path, c.Name)
				break
			}
		}
		if !found {
			positional++
		}
	}
	if prev == "--mesh" {
		return meshSlugs(home)
	}
	if v, ok := flagValues(prev); ok {
		return v
	}
	cmd := strings.Join(path, " ")
	if positional == 0 {
		if v, ok := argValues(cmd); ok {
			return v
		}
		if topicVerb(cmd) {
			return topicNames(home, "")
		}
	}
	var out []string
	if positional == 1 && cmd == "topic add" {
		out = append(out, peerNames(home)...) // topic add TOPIC PEER
	}
	if positional == 0 {
		for _, c := range cmds {
			if !c.Hidden {
				out = append(out, c.Name)
			}
		}
	}
	if cur != nil && positional == 0 && peerVerb(cur.Name) {
		out = append(out, peerNames(home)...)
		if cur.Name == "send" {
			out = append(out, sendTargets(home)...)
		}
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if len(n) > 1 {
				out = append(out, "--"+n)
			}
		}
	}
	return out
}

func meshSlugs(home string) []string {
	cfg, err := config.Load(home)
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range cfg.Meshes {
		out = append(out, m.Slug)
	}
	return out
}

// sendTargets are what `send` takes beside member names, from a running
// daemon (never starting one): agent session names, @groups and #topics.
func sendTargets(home string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	api, err := localapi.Connect(ctx, home, false)
	if err != nil {
		return nil
	}
	var peers []localapi.Peer
	api.Do(ctx, "GET", "/v1/peers", nil, &peers)
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if completable(s) && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, p := range peers {
		if p.Role == wire.RoleSession {
			add(p.DisplayName)
		}
		for _, g := range p.Groups {
			add("@" + g.Name)
		}
	}
	for _, t := range topicNames(home, "#") {
		add(t)
	}
	return out
}

// topicNames are the topics a running daemon knows, each with prefix.
func topicNames(home, prefix string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	api, err := localapi.Connect(ctx, home, false)
	if err != nil {
		return nil
	}
	var topics []localapi.Topic
	if _, err := api.Do(ctx, "GET", "/v1/topics", nil, &topics); err != nil {
		return nil
	}
	var out []string
	for _, t := range topics {
		if completable(t.Name) {
			out = append(out, prefix+t.Name)
		}
	}
	return out
}

// peerNames asks a running daemon (never starting one) for the members of
// every mesh, bounded to a fraction of a second.
func peerNames(home string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	api, err := localapi.Connect(ctx, home, false)
	if err != nil {
		return nil
	}
	var members []localapi.Member
	if _, err := api.Do(ctx, "GET", "/v1/members?"+url.Values{}.Encode(), nil, &members); err != nil {
		return nil
	}
	var out []string
	for _, m := range members {
		if m.RevokedAt == 0 && completable(m.DisplayName) {
			out = append(out, m.DisplayName)
		}
	}
	return out
}

// completable reports whether a name from the daemon (a member's, a
// session's, a group's or a topic's, all chosen by peers) may be offered:
// one line of visible characters without spaces (a candidate is one line
// of __complete's output and one word of the command line; control,
// format and invisible characters could hide what is inserted), not
// starting with "-" (the verb would read it as a flag: a member named
// --all offered to kick) nor "~" (fish inserts a leading ~ unquoted, and
// the shell reads it as a home directory).
func completable(s string) bool {
	if s == "" || !utf8.ValidString(s) || s[0] == '-' || s[0] == '~' {
		return false
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || cmcrypto.IsInvisible(r) {
			return false
		}
	}
	return true
}
