package cliui

import (
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// isHelpFlag reports whether name is the help flag's (-h, --help). cliui
// renders help itself (see help.go), so it is recognised at every level
// unless a command defines a flag with the same name.
func isHelpFlag(name string) bool { return name == "help" || name == "h" }

// parsedArgs is argv understood against the app's command tree: which
// commands were named, which flag tokens belong to which level, and what is
// positional. NormalizeArgs serialises it back; Run also uses it to decide
// about help, colour and --json before urfave/cli parses anything.
type parsedArgs struct {
	argv0 string
	// path are the commands named, outermost first; pathTok are the tokens
	// that named them (an alias stays an alias).
	path    []*cli.Command
	pathTok []string
	// flags[0] are the global flags given, flags[i] those of path[i-1].
	flags [][]flagUse
	// positionals are the arguments before "--", in order.
	positionals []string
	// dashdash says the user wrote "--"; afterDash is what followed it.
	dashdash  bool
	afterDash []string
	// verbatim follows a SkipFlagParsing command untouched.
	verbatim []string
	// dangling is a value flag at the end of argv with no value.
	dangling string
	// help says -h/--help was given outside "--".
	help bool
	// unknown are the "-x" tokens before "--" that are no flag of the
	// command path or the global set: Run refuses them (a typo must not
	// become message text; text starting with "-" goes after "--").
	unknown []string
	// boolValue is the first boolean flag followed by a duration
	// ("--wait 10s"): a flag that takes no value, so the duration would
	// silently become an argument (a word of send's message). Run
	// refuses it; [flag token, the duration].
	boolValue []string
}

// NormalizeArgs rewrites argv so urfave/cli v2, which stops parsing flags at
// the first positional argument and only knows a flag at the level that
// defines it, accepts flags anywhere on the line (04-cli):
//
//   - the command path (argv[1:] tokens naming commands and subcommands,
//     before the first positional argument) is found first;
//   - every token that is a known flag of a command on that path, of the
//     global set, or -h/--help, moves to right after the name of the
//     deepest command defining it (global flags right after argv[0]),
//     together with its value when it takes one ("--flag value");
//     "--flag=value" is one token;
//   - unknown "-x" tokens stay positional here (Run refuses them as usage
//     errors before anything runs), and "--" ends flag handling:
//     what follows it is passed through untouched. When the first
//     positional starts with "-", or the user wrote "--", the positionals
//     are emitted after a single "--" so urfave/cli never reads them as
//     flags (this is how a message can start with a dash);
//   - after a command with SkipFlagParsing the rest is left as is.
//
// So `send bob hi --json`, `--json send bob hi` and `send --json bob hi` all
// become `--json send bob hi`. A value flag with no value is moved to the
// very end; Run reports it as a usage error before running anything.
func NormalizeArgs(app *cli.App, argv []string) []string {
	if len(argv) == 0 {
		return argv
	}
	return parseArgs(app, argv).argv()
}

func (p *parsedArgs) argv() []string {
	out := []string{p.argv0}
	out = appendFlags(out, p.flags[0])
	for i, tok := range p.pathTok {
		out = append(out, tok)
		out = appendFlags(out, p.flags[i+1])
	}
	if p.verbatim != nil {
		return append(out, p.verbatim...)
	}
	if p.dashdash || (len(p.positionals) > 0 && looksLikeFlag(p.positionals[0])) {
		out = append(out, "--")
	}
	out = append(out, p.positionals...)
	out = append(out, p.afterDash...)
	if p.dangling != "" {
		out = append(out, p.dangling)
	}
	return out
}

// flagUse is one flag as given: its name, the token, and the separate value
// token if it has one.
type flagUse struct {
	name     string
	tok      string
	value    string
	hasValue bool // a separate value token follows tok
}

func appendFlags(out []string, uses []flagUse) []string {
	for _, u := range uses {
		out = append(out, u.tok)
		if u.hasValue {
			out = append(out, u.value)
		}
	}
	return out
}

// flagToken splits a token that looks like a flag into its name and whether
// it carries an inline value. Like the flag package, "-name" and "--name"
// are the same; "-", "--", "---x" and "-=x" are not flags.
func flagToken(tok string) (name string, inline bool, ok bool) {
	if !looksLikeFlag(tok) || tok == "--" {
		return "", false, false
	}
	name = tok[1:]
	if name[0] == '-' {
		name = name[1:]
	}
	if name == "" || name[0] == '-' || name[0] == '=' {
		return "", false, false
	}
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], true, true
	}
	return name, false, true
}

func looksLikeFlag(tok string) bool { return len(tok) > 1 && tok[0] == '-' }

// flagDef is a flag found by name: the level that defines it (0 global,
// i for path[i-1]) and whether it consumes a value.
type flagDef struct {
	level      int
	takesValue bool
	help       bool
}

func findFlag(flags []cli.Flag, name string) (cli.Flag, bool) {
	for _, f := range flags {
		for _, n := range namesOf(f) {
			if n == name {
				return f, true
			}
		}
	}
	return nil, false
}

// namesOf is f.Names() without a regular expression for the flag types
// claudemesh uses. urfave/cli's Names runs one over every name (cli.FlagNames
// cuts a v1-style "name, alias" at the first comma or space), ~1 µs a
// flag, and findFlag asks every flag it passes on every lookup: every
// global flag at every level (GlobalsFrom), every flag token (parseArgs).
// A name with a comma or a space takes urfave/cli's way.
func namesOf(f cli.Flag) []string {
	var name string
	var aliases []string
	switch f := f.(type) {
	case *cli.StringFlag:
		name, aliases = f.Name, f.Aliases
	case *cli.BoolFlag:
		name, aliases = f.Name, f.Aliases
	case *cli.IntFlag:
		name, aliases = f.Name, f.Aliases
	case *cli.DurationFlag:
		name, aliases = f.Name, f.Aliases
	case *cli.Int64Flag:
		name, aliases = f.Name, f.Aliases
	case *cli.Float64Flag:
		name, aliases = f.Name, f.Aliases
	case *cli.StringSliceFlag:
		name, aliases = f.Name, f.Aliases
	case *cli.Uint64Flag:
		name, aliases = f.Name, f.Aliases
	default:
		return f.Names()
	}
	if strings.ContainsAny(name, ", ") {
		return f.Names()
	}
	for _, a := range aliases {
		if strings.ContainsAny(a, ", ") {
			return f.Names()
		}
	}
	return append([]string{name}, aliases...)
}

// takesValue reports whether f consumes the next token. Anything that is
// not a boolean takes a value, as in the flag package.
func takesValue(f cli.Flag) bool {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.TakesValue()
	}
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}

// resolve finds name on the chain of commands (deepest first), then among
// the global flags, then as the help flag.
func resolve(app *cli.App, chain []*cli.Command, name string) (flagDef, bool) {
	for i := len(chain) - 1; i >= 0; i-- {
		if f, ok := findFlag(chain[i].Flags, name); ok {
			return flagDef{level: i + 1, takesValue: takesValue(f)}, true
		}
	}
	if f, ok := findFlag(app.Flags, name); ok {
		return flagDef{level: 0, takesValue: takesValue(f)}, true
	}
	if isHelpFlag(name) {
		return flagDef{level: len(chain), help: true}, true
	}
	return flagDef{}, false
}

// resolveBelow finds name among the flags of any command below cmds; it is
// only used while the path is still being discovered, to know whether a
// flag written before its subcommand's name swallows the next token.
func resolveBelow(cmds []*cli.Command, name string) (flagDef, bool) {
	for _, c := range cmds {
		if f, ok := findFlag(c.Flags, name); ok {
			return flagDef{takesValue: takesValue(f)}, true
		}
		if d, ok := resolveBelow(c.Subcommands, name); ok {
			return d, true
		}
	}
	return flagDef{}, false
}

func subcommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// parseArgs does the work of NormalizeArgs in two passes: the first finds
// the command path, the second assigns every flag to the deepest command on
// that path defining it.
func parseArgs(app *cli.App, argv []string) *parsedArgs {
	p := &parsedArgs{argv0: argv[0]}
	toks := argv[1:]

	// Pass 1: the command path.
	var chain []*cli.Command
	isPath := map[int]bool{}
	skipAt := -1
	children := app.Commands
pass1:
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		if tok == "--" {
			break
		}
		if name, inline, ok := flagToken(tok); ok {
			d, known := resolve(app, chain, name)
			if !known {
				d, known = resolveBelow(children, name)
			}
			if !known {
				continue // refused later; keep looking for the command
			}
			if d.takesValue && !inline && !isKnownFlag(app, chain, children, toks, i+1) {
				i++
			}
			continue
		}
		sub := subcommand(children, tok)
		if sub == nil {
			break
		}
		chain = append(chain, sub)
		isPath[i] = true
		p.pathTok = append(p.pathTok, tok)
		children = sub.Subcommands
		if sub.SkipFlagParsing {
			skipAt = i
			break pass1
		}
	}
	p.path = chain
	p.flags = make([][]flagUse, len(chain)+1)

	// Pass 2: assign flags, collect positionals.
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		if i == skipAt {
			p.verbatim = append([]string{}, toks[i+1:]...)
			break
		}
		if isPath[i] {
			continue
		}
		if tok == "--" {
			p.dashdash = true
			p.afterDash = append(p.afterDash, toks[i+1:]...)
			break
		}
		name, inline, ok := flagToken(tok)
		if !ok {
			p.positionals = append(p.positionals, tok)
			continue
		}
		d, known := resolve(app, chain, name)
		if !known {
			p.positionals = append(p.positionals, tok)
			p.unknown = append(p.unknown, tok)
			continue
		}
		if d.help {
			p.help = true
		}
		use := flagUse{name: name, tok: tok}
		if d.takesValue && !inline {
			// A flag where its value should be ("--mesh --home DIR")
			// means the value was left out: taking "--home" as the mesh
			// would run something else than what was typed.
			if i+1 >= len(toks) || isKnownFlag(app, chain, nil, toks, i+1) {
				p.dangling = tok
				continue
			}
			i++
			use.value, use.hasValue = toks[i], true
		}
		if !d.takesValue && !inline && !d.help && p.boolValue == nil && i+1 < len(toks) &&
			!isPath[i+1] && i+1 != skipAt && (looksLikeDuration(toks[i+1]) || isWholeNumber(toks[i+1]) && hasTimeout(app, chain, name)) {
			p.boolValue = []string{tok, toks[i+1]}
		}
		p.flags[d.level] = append(p.flags[d.level], use)
	}
	return p
}

// looksLikeDuration says whether tok is a duration with its unit (10s,
// 2m, 1h30m, 7d): what a user who took a boolean flag for one with a
// value writes after it. A bare number is not: it is as likely a word.
func looksLikeDuration(tok string) bool {
	if tok == "" || tok[len(tok)-1] < 'a' || tok[len(tok)-1] > 'z' {
		return false
	}
	_, err := ParseDuration(tok)
	return err == nil
}

// isWholeNumber says whether tok is digits alone ("30"): after a flag
// whose time is its -timeout flag (--wait 30), a number of seconds meant
// as its value. After another flag it is as likely a word of a message.
func isWholeNumber(tok string) bool {
	if tok == "" || len(tok) > 12 {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return false
		}
	}
	return true
}

// hasTimeout says whether the command has a --NAME-timeout flag (send's
// --wait and --wait-timeout): NAME is a flag that waits, for that long.
func hasTimeout(app *cli.App, chain []*cli.Command, name string) bool {
	_, ok := resolve(app, chain, name+"-timeout")
	return ok
}

// isKnownFlag reports whether toks[i] is a flag of the app, of the command
// chain, or (while the chain is still being found) of a command below
// children: a token that cannot be another flag's value.
func isKnownFlag(app *cli.App, chain []*cli.Command, children []*cli.Command, toks []string, i int) bool {
	if i >= len(toks) {
		return false
	}
	name, _, ok := flagToken(toks[i])
	if !ok {
		return false
	}
	if _, known := resolve(app, chain, name); known {
		return true
	}
	if children != nil {
		_, known := resolveBelow(children, name)
		return known
	}
	return false
}

// boolFlag reports the value of the boolean flag name (any of its names) as
// given at level, parsing "--name=value" like the flag package does.
func (p *parsedArgs) boolFlag(level int, names ...string) bool {
	v := false
	for _, u := range p.flags[level] {
		for _, n := range names {
			if u.name != n {
				continue
			}
			eq := strings.IndexByte(u.tok, '=')
			if eq < 0 {
				v = true
			} else if b, err := strconv.ParseBool(u.tok[eq+1:]); err == nil {
				v = b
			}
		}
	}
	return v
}

// suggestFlag returns the known flag closest to an unknown token, spelled
// as it would be typed ("--wait", "-q"), or "" when none is close enough to
// be a likely typo. A token that is a prefix of a flag name ("-w" for
// --wait) counts as close.
func suggestFlag(app *cli.App, chain []*cli.Command, tok string) string {
	name, _, ok := flagToken(tok)
	if !ok {
		return ""
	}
	levels := [][]cli.Flag{app.Flags}
	for _, c := range chain {
		levels = append(levels, c.Flags)
	}
	best, bestDist := "", max(1, len(name)/3)+1
	for _, flags := range levels {
		for _, f := range flags {
			for _, n := range f.Names() {
				d := editDistance(n, name)
				switch {
				case strings.HasPrefix(n, name):
					d = min(d, 1)
				case len(name) <= 2:
					continue // one or two letters are a prefix or nothing
				}
				if d < bestDist {
					best, bestDist = n, d
				}
			}
		}
	}
	switch {
	case best == "":
		return ""
	case len(best) == 1:
		return "-" + best
	}
	return "--" + best
}

// DirectCommand names the one top-level command argv runs, when that is
// plain from argv and the global flags alone, so that main can build only
// that command instead of the whole tree (every process would otherwise
// build ~45 commands, their flags and help texts, and urfave/cli would set
// each of them up, to run one). ok is false whenever the whole tree could
// matter, and the caller then builds all of it:
//
//   - a token before the command's name that is not a global flag (a
//     command's flag written early, a typo to suggest a flag for);
//   - -h or --help anywhere before "--" (help may list commands);
//   - --version after the command's name, or with a value (--version=false);
//   - no command name at all (the app's own help or error).
//
// `claudemesh [GLOBAL FLAGS] --version` names "version", the command that
// flag runs. The name returned may be an alias or no command at all: the
// caller falls back to the whole tree when it does not know it.
func DirectCommand(argv []string) (name string, ok bool) {
	if len(argv) == 0 {
		return "", false
	}
	globals := GlobalFlags()
	version := false
	toks := argv[1:]
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		if tok == "--" {
			break
		}
		flag, inline, isFlag := flagToken(tok)
		switch {
		case !isFlag:
			if name == "" {
				name = tok
			}
			continue
		case isHelpFlag(flag):
			return "", false
		case name != "":
			if flag == FlagVersion {
				return "", false
			}
			continue // the command's or a global flag: parsed as with the whole tree
		}
		f, known := findFlag(globals, flag)
		if !known {
			return "", false
		}
		if flag == FlagVersion {
			if inline {
				return "", false
			}
			version = true
		}
		if takesValue(f) && !inline {
			i++
		}
	}
	if version {
		if name != "" {
			return "", false
		}
		return "version", true
	}
	return name, name != ""
}
