// Package cliui is the shared look and contract of the claudemesh command
// line, whatever mode a command belongs to: the global flags, flags accepted
// anywhere on the line, help that leads with examples, colour only where it
// belongs, JSON output with a schema version, and one place where an error
// becomes a message and an exit code (04-cli.md).
//
// Commands are ordinary urfave/cli v2 commands. They read the global flags
// with GlobalsFrom, print with OutFrom, and return errors: an *Error, or any
// error with an ErrorCode() string method (optionally ErrorHint() string and
// ErrorCandidates() []Candidate), anywhere in the wrapped chain. Run does the
// rest.
//
// Examples convention: every line of a command's Description that starts
// with "$ " is an example; help prints them first, before the usage. The
// other lines are prose. WithExamples builds such a Description.
package cliui

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

// Names of the global flags (04-cli "Global flags and environment").
const (
	FlagJSON     = "json"
	FlagMesh     = "mesh"
	FlagHome     = "home"
	FlagNoDaemon = "no-daemon"
	FlagStrict   = "strict"
	FlagQuiet    = "quiet"
	FlagNoColor  = "no-color"
	FlagVersion  = "version"
)

// EnvDebug turns on debug output on stderr (including the detail of errors
// that --json reports on stdout).
const EnvDebug = "CLAUDEMESH_DEBUG"

// GlobalFlags returns fresh definitions of the global flags. urfave/cli
// flags hold their parsed value, so every app gets its own.
func GlobalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: FlagJSON, Usage: "machine-readable output on stdout, errors included"},
		&cli.StringFlag{Name: FlagMesh, Usage: "choose the mesh by `SLUG`"},
		&cli.StringFlag{Name: FlagHome, Usage: "client state `DIR` (default ~/.claudemesh)", EnvVars: []string{"CLAUDEMESH_HOME"}},
		&cli.BoolFlag{Name: FlagNoDaemon, Usage: "never use or start the daemon", EnvVars: []string{"CLAUDEMESH_NO_DAEMON"}},
		&cli.BoolFlag{Name: FlagStrict, Usage: "fail instead of falling back to a direct broker connection"},
		&cli.BoolFlag{Name: FlagQuiet, Aliases: []string{"q"}, Usage: "only essential output"},
		&cli.BoolFlag{Name: FlagNoColor, Usage: "no ANSI colour (also NO_COLOR=1 or TERM=dumb)"},
		&cli.BoolFlag{Name: FlagVersion, Usage: "print the version and exit (same as the version command)"},
	}
}

// NewApp returns the claudemesh app: the global flags, the given commands
// plus a hidden `help [COMMAND...]`, and cliui's help, usage-error and
// unknown-command handling. Run it with Run, which owns argv normalisation,
// output and exit codes.
func NewApp(name, usage string, commands []*cli.Command) *cli.App {
	cmds := make([]*cli.Command, 0, len(commands)+1)
	cmds = append(cmds, commands...)
	cmds = append(cmds, ReadOnly(&cli.Command{
		Name:      "help",
		Usage:     "show help for a command",
		ArgsUsage: "[COMMAND... | exit-codes]",
		Hidden:    true,
		Action:    helpAction,
	}))
	return &cli.App{
		Name:            name,
		HelpName:        name,
		Usage:           usage,
		Commands:        cmds,
		Flags:           GlobalFlags(),
		HideHelp:        true,
		HideHelpCommand: true,
		Action:          groupAction,
		OnUsageError:    onUsageError,
		Metadata:        map[string]any{},
		// Any non-zero time: urfave/cli's App.Setup would otherwise
		// stat(2) argv[0] for a compile time that only its own help
		// templates show, which cliui replaces.
		Compiled: time.Unix(1, 0),
	}
}

// Globals are the global flags as seen by a command.
type Globals struct {
	JSON     bool
	Mesh     string
	Home     string // the flag or $CLAUDEMESH_HOME; see config.ResolveHome
	NoDaemon bool
	Strict   bool
	Quiet    bool
	NoColor  bool
}

// GlobalsFrom reads the global flags from a command's context. Run places
// global flags given anywhere on the line where urfave/cli finds them; if a
// command also defines one of them (say its own --mesh), the value given
// closest to the command wins.
func GlobalsFrom(c *cli.Context) Globals {
	return Globals{
		JSON:     lookup(c, FlagJSON, (*cli.Context).Bool),
		Mesh:     lookup(c, FlagMesh, (*cli.Context).String),
		Home:     lookup(c, FlagHome, (*cli.Context).String),
		NoDaemon: lookup(c, FlagNoDaemon, (*cli.Context).Bool),
		Strict:   lookup(c, FlagStrict, (*cli.Context).Bool),
		Quiet:    lookup(c, FlagQuiet, (*cli.Context).Bool),
		NoColor:  lookup(c, FlagNoColor, (*cli.Context).Bool),
	}
}

// lookup returns name's value from the innermost context where it was set
// explicitly, else the value visible from c (default or environment).
func lookup[T any](c *cli.Context, name string, get func(*cli.Context, string) T) T {
	for _, x := range c.Lineage() {
		if x.Command == nil {
			continue
		}
		if _, ok := findFlag(x.Command.Flags, name); ok && x.IsSet(name) {
			return get(x, name)
		}
	}
	return get(c, name)
}

// runState is what one Run knows about the terminal and the output mode; it
// travels to commands in App.Metadata.
type runState struct {
	mu     sync.Mutex // serialises writes from concurrent goroutines
	stdout io.Writer
	stderr io.Writer
	json   bool
	quiet  bool
	debug  bool
	style  Style // for stdout
	// errStyle is for stderr, which may be a terminal when stdout is not
	// (and the other way round).
	errStyle Style
	// hints puts the run's --home and --mesh into the commands its
	// errors, warnings and hint lines name (hints.go); nil adds nothing.
	hints *hintContext
}

const metaKey = "cliui.state"

func stateOf(c *cli.Context) *runState {
	if c != nil && c.App != nil {
		if st, ok := c.App.Metadata[metaKey].(*runState); ok {
			return st
		}
	}
	// Not started through Run (a test driving app.Run directly).
	g := Globals{}
	w, ew := io.Writer(os.Stdout), io.Writer(os.Stderr)
	if c != nil {
		g = GlobalsFrom(c)
		if c.App != nil && c.App.Writer != nil {
			w = c.App.Writer
		}
		if c.App != nil && c.App.ErrWriter != nil {
			ew = c.App.ErrWriter
		}
	}
	return &runState{stdout: w, stderr: ew, json: g.JSON, quiet: g.Quiet,
		debug: os.Getenv(EnvDebug) == "1", style: NewStyle(ColorEnabledFor(w, g.NoColor)),
		errStyle: NewStyle(ColorEnabledFor(ew, g.NoColor))}
}

// Run runs app on argv (argv[0] is the program name) and returns the exit
// code; main is `os.Exit(cliui.Run(app, os.Args, os.Stdout, os.Stderr))`.
// SIGINT and SIGTERM cancel the commands' context (c.Context); a second
// signal kills the process as usual, so a command that ignores its context
// can still be stopped. A command ended by a signal exits 130, silently,
// unless it returns an *Error with code interrupted: that one says what
// the command left undone. A command may take the signals for a while
// (TakeSignals, Hold) to handle them itself.
//
// Run catches the signals before it runs anything, except for the commands
// marked ReadOnly (and help, --version and a group's list of commands): it
// lets those run for signalDelay first. Catching signals costs a process
// two threads (os/signal's receiver and the runtime's signal-mask thread)
// and the hand-shakes with them, ~0.4 ms of CPU and ~45 page faults, while
// a lookup through the daemon is done in a few milliseconds. A signal in a
// read-only command's first signalDelay has the default effect, as it has
// in any program before it sets up handlers: the process ends by the
// signal, with nothing half done. Every other command (anything that
// writes a file, or asks a broker or the daemon to change something) only
// ever sees a signal as its context's cancellation (or, while it holds
// them, on TakeSignals' channel), so the sections that ignore the context
// (an install's files, a join's enrolment and saved key) run to their end.
func Run(app *cli.App, argv []string, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &signals{cancel: cancel, done: ctx.Done()}
	defer s.release()
	ctx = context.WithValue(ctx, signalsKey{}, s)
	if len(argv) == 0 {
		argv = []string{app.Name}
	}
	p := parseArgs(app, argv)
	if startsFast(app, p) {
		t := time.AfterFunc(signalDelay, s.catch)
		defer t.Stop()
	} else {
		s.catch()
	}
	return runParsed(ctx, app, argv, p, stdout, stderr)
}

// readOnly holds the commands marked ReadOnly.
var readOnly sync.Map // *cli.Command → struct{}

// ReadOnly marks commands that change nothing, locally or remotely,
// whatever their flags (a listing, a lookup, a status): Run lets them run
// for signalDelay before it catches SIGINT and SIGTERM, so that the
// quickest ones never pay for catching them. A signal in that time ends
// the process at once, which is harmless only because nothing is being
// written: a command that writes a file or asks for a change, even
// sometimes, must not be marked (the audit verbs, which record the heads
// they verified, are not). A cache refreshed in passing is not a change:
// the role a direct connection records in config.json when an owner
// changed it is written atomically (old or new, never half, at worst a
// temporary file left beside it) and recorded again by the next
// connection. Nor is starting the daemon, which the thin verbs do when
// none runs (peer list, message status, skill and topic reads): `daemon
// up` is a process of its own, which finishes starting the daemon (or
// fails cleanly) if this one is killed meanwhile. Commands are not
// read-only unless marked, so a new command catches signals from its
// start. ReadOnly returns its first argument.
func ReadOnly(cmds ...*cli.Command) *cli.Command {
	for _, c := range cmds {
		readOnly.Store(c, struct{}{})
	}
	if len(cmds) == 0 {
		return nil
	}
	return cmds[0]
}

// IsReadOnly reports whether c was marked ReadOnly.
func IsReadOnly(c *cli.Command) bool {
	_, ok := readOnly.Load(c)
	return ok
}

// startsFast says whether the command line p runs only read-only code: help,
// --version, a group's list of commands (or its unknown-command error) or
// a command marked ReadOnly.
func startsFast(app *cli.App, p *parsedArgs) bool {
	if p.dashdash && len(p.afterDash) > 0 && (len(p.path) == 0 || p.path[len(p.path)-1].Action == nil) {
		// urfave/cli still routes the first word after "--" to a
		// command ("claudemesh -- install" installs): which one is not
		// known here, so it catches signals as a writer would.
		return false
	}
	if p.help || len(p.path) == 0 {
		return true
	}
	if p.boolFlag(0, FlagVersion) && subcommand(app.Commands, "version") != nil {
		return true
	}
	leaf := p.path[len(p.path)-1]
	return leaf.Action == nil || IsReadOnly(leaf)
}

// signalDelay is how long a ReadOnly command runs before Run catches SIGINT
// and SIGTERM; a variable for the tests' child processes.
var signalDelay = 20 * time.Millisecond

// signalsCaught, when set (tests), is called once Run catches signals.
var signalsCaught func()

// signals is Run's handling of SIGINT and SIGTERM: the first one cancels
// the command's context and gives the signals their default handling back,
// so that a second one kills the process. A command may take the signals
// over for a while (TakeSignals, Hold): the watcher goroutine that does
// the above then hands every signal to the command instead, until it
// gives them back. The watcher keeps running across a take: stopping it
// and starting another (as this did) cost a send process a goroutine
// wake-up and a thread each time.
type signals struct {
	cancel context.CancelFunc
	done   <-chan struct{} // the command's context's
	mu     sync.Mutex
	ch     chan os.Signal // os/signal's; nil until caught
	closed bool           // Run returned
	// stop ends the watcher (closed once: Run returned, or the signals
	// went back to their default handling); nil while no watcher runs.
	stop chan struct{}
	// While a command holds the signals, the watcher hands each one to
	// it: to held (TakeSignals' channel, with room for what os/signal's
	// holds) or to hook (Hold's, called on the watcher's goroutine).
	held  chan os.Signal
	hook  func(n int) // n: the signals handed to it in this take, this one included
	hookN int
	st    *runState // where Hold's note goes; nil before runParsed
}

// signalsKey is the context key of the command's *signals.
type signalsKey struct{}

func (s *signals) catch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ch != nil {
		return
	}
	s.notify()
	s.watch()
	if signalsCaught != nil {
		signalsCaught()
	}
}

// notify starts catching the signals on s.ch (s.mu held). Its buffer
// holds the signals the watcher has not read yet.
func (s *signals) notify() {
	s.ch = make(chan os.Signal, 4)
	signal.Notify(s.ch, os.Interrupt, syscall.SIGTERM)
}

// watch starts the watcher on s.ch (s.mu held): while nobody holds the
// signals, the first one cancels the command's context and restores the
// default handling; while a command holds them, each goes to it.
func (s *signals) watch() {
	stop := make(chan struct{})
	s.stop = stop
	go func(ch chan os.Signal) {
		done := s.done
		for {
			select {
			case sig := <-ch:
				s.mu.Lock()
				if s.held != nil {
					select {
					case s.held <- sig:
					default: // as os/signal drops what its channel has no room for
					}
					s.mu.Unlock()
					continue
				}
				if h := s.hook; h != nil {
					s.hookN++
					n := s.hookN
					s.mu.Unlock()
					h(n)
					continue
				}
				s.cancel()
				signal.Stop(ch) // the second signal: the default handling
				s.endWatch()
				s.mu.Unlock()
				return
			case <-done:
				s.mu.Lock()
				taken := s.held != nil || s.hook != nil
				if !taken {
					s.endWatch()
				}
				s.mu.Unlock()
				if !taken {
					return
				}
				done = nil // the command holding them still gets them
			case <-stop:
				return
			}
		}
	}(s.ch)
}

// endWatch stops the watcher (s.mu held).
func (s *signals) endWatch() {
	if s.stop != nil {
		close(s.stop)
		s.stop = nil
	}
}

// take makes the watcher hand the signals to the command (on the channel
// it returns, or to hook when it is set), catching them now if Run has
// not yet (a read-only command in its signalDelay); nil once Run
// returned. A signal the watcher handled before has cancelled the context
// (and nothing arrives any more); one it had not read yet goes to the
// command.
func (s *signals) take(hook func(n int)) chan os.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.ch == nil {
		s.notify()
	}
	if s.stop == nil {
		select {
		case <-s.done:
			// The watcher cancelled the context at a signal and gave
			// the signals their default handling back: nothing will
			// arrive (the caller sees the context's error).
		default:
			s.watch()
		}
	}
	if hook != nil {
		s.hook, s.hookN = hook, 0
		return nil
	}
	s.held = make(chan os.Signal, cap(s.ch))
	return s.held
}

// giveBack ends a take: after a signal (interrupted, or one handed to
// the hook), if one had ended the context before the take, or if one the
// command did not read is waiting for it, the context is cancelled and
// the default handling restored, as the watcher would have done;
// otherwise the watcher handles the next one as before.
func (s *signals) giveBack(interrupted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || (s.held == nil && s.hook == nil) {
		return
	}
	if len(s.held) > 0 || s.hookN > 0 {
		interrupted = true
	}
	s.held, s.hook, s.hookN = nil, nil, 0
	select {
	case <-s.done:
		interrupted = true
	default:
	}
	if interrupted {
		s.cancel()
		signal.Stop(s.ch)
		s.endWatch()
	}
}

func (s *signals) state() *runState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

func (s *signals) setState(st *runState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
}

// release stops catching signals (or starting to) when Run returns.
func (s *signals) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.ch != nil {
		signal.Stop(s.ch)
	}
	s.endWatch()
}

// RunContext is Run with the caller's context and no signal handling. It
// normalises argv (NormalizeArgs), handles -h/--help itself, runs the
// command, and reports a returned error once: human mode writes
// "  ✘ message" and a dim "  → hint" to stderr; --json writes
// {"schemaVersion":1,"ok":false,"error":{code,message,candidates?}} to
// stdout and nothing to stderr (unless CLAUDEMESH_DEBUG=1). It adjusts app
// (writers, help and error hooks), so one app must not run concurrently.
func RunContext(ctx context.Context, app *cli.App, argv []string, stdout, stderr io.Writer) int {
	if len(argv) == 0 {
		argv = []string{app.Name}
	}
	return runParsed(ctx, app, argv, parseArgs(app, argv), stdout, stderr)
}

// runParsed is RunContext with argv parsed (p).
func runParsed(ctx context.Context, app *cli.App, argv []string, p *parsedArgs, stdout, stderr io.Writer) int {
	st := &runState{
		stdout: stdout,
		stderr: stderr,
		json:   p.boolFlag(0, FlagJSON),
		quiet:  p.boolFlag(0, FlagQuiet, "q"),
		debug:  os.Getenv(EnvDebug) == "1",
	}
	noColor := p.boolFlag(0, FlagNoColor)
	st.style = NewStyle(ColorEnabledFor(stdout, noColor))
	st.errStyle = NewStyle(ColorEnabledFor(stderr, noColor))
	prepare(app, st)
	st.hints = newHintContext(app, p)
	if s, ok := ctx.Value(signalsKey{}).(*signals); ok {
		s.setState(st)
	}

	if p.help {
		renderHelp(st.stdout, app, p.path, st.style)
		return ExitOK
	}
	if p.boolFlag(0, FlagVersion) {
		if v := subcommand(app.Commands, "version"); v != nil {
			// --version is the version command, whatever else is on the
			// line (like --help).
			argv := []string{p.argv0, "version"}
			if st.json {
				argv = []string{p.argv0, "--" + FlagJSON, "version"}
			}
			return st.report(app.RunContext(ctx, argv), ctx.Err() != nil)
		}
	}
	if len(p.unknown) > 0 {
		tok := p.unknown[0]
		// The -- advice is for a verb that takes text (send's message, a
		// summary): for one that takes no words (daemon install-service,
		// peer list) it was advice about a message there is none of.
		hint := helpHint(app, p.path)
		if len(p.path) > 0 && p.path[len(p.path)-1].ArgsUsage != "" {
			hint = "a message that starts with - goes after --: " + commandName(app, p.path) + " … -- " + tok
		}
		if s := suggestFlag(app, p.path, tok); s != "" {
			hint = "did you mean " + s + "? (" + hint + ")"
		}
		return st.report(UsageErrorf("unknown flag %s for %s", tok, commandName(app, p.path)).WithHint(hint), false)
	}
	if p.dangling != "" {
		return st.report(UsageErrorf("flag needs a value: %s", p.dangling).
			WithHint(helpHint(app, p.path)), false)
	}
	if p.boolValue != nil {
		flag, word := p.boolValue[0], p.boolValue[1]
		name, _, _ := flagToken(flag)
		cmd := commandName(app, p.path)
		var timeout string
		if hasTimeout(app, p.path, name) {
			d := word
			if isWholeNumber(word) {
				d += "s" // a duration has its unit
			}
			timeout = "the time " + flag + " waits is --" + name + "-timeout: " + cmd + " … " + flag + " --" + name + "-timeout " + d
		}
		usage := ""
		if len(p.path) > 0 {
			usage = p.path[len(p.path)-1].ArgsUsage
		}
		if !takesText(usage) {
			// No message for it to join (daemon status, inbox, help
			// exit-codes): putting it elsewhere is no advice.
			err := UsageErrorf("%s takes no value: %q after it would become an argument of %s, not %s's value", flag, word, cmd, flag)
			if usage == "" {
				err = UsageErrorf("%s takes no value, and %s takes no arguments: %q after %s is neither", flag, cmd, word, flag)
			}
			return st.report(err.WithHint(cmp.Or(timeout, helpHint(app, p.path))), false)
		}
		hint := "to give " + strconv.Quote(word) + " as an argument, put it before " + flag + " or after --: " + cmd + " … -- " + word
		if timeout != "" {
			hint = timeout + "; " + hint
		}
		return st.report(UsageErrorf("%s takes no value: %q after it would become an argument of %s (a word of a message), not %s's value", flag, word, cmd, flag).
			WithHint(hint), false)
	}
	if err := checkRequired(app, p); err != nil {
		return st.report(err, false)
	}
	err := app.RunContext(ctx, p.argv())
	return st.report(err, ctx.Err() != nil)
}

// silentTemplate replaces urfave/cli's help templates: cliui renders help
// itself, and urfave/cli must never print help on its own (it does so
// before returning some errors, which would corrupt --json output).
const silentTemplate = "{{/* help is rendered by cliui */}}"

// prepare installs cliui's hooks on app and every command in its tree.
func prepare(app *cli.App, st *runState) {
	app.Writer = st.stdout
	app.ErrWriter = st.stderr
	app.HideHelp = true
	app.HideHelpCommand = true
	app.CustomAppHelpTemplate = silentTemplate
	// Errors are reported by Run; urfave/cli must not print or os.Exit.
	app.ExitErrHandler = func(*cli.Context, error) {}
	if app.OnUsageError == nil {
		app.OnUsageError = onUsageError
	}
	if app.Action == nil {
		app.Action = groupAction
	}
	if app.Metadata == nil {
		app.Metadata = map[string]any{}
	}
	app.Metadata[metaKey] = st
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.HideHelp = true
			c.HideHelpCommand = true
			c.CustomHelpTemplate = silentTemplate
			if c.OnUsageError == nil {
				c.OnUsageError = onUsageError
			}
			if c.Action == nil {
				c.Action = groupAction
			}
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
}

// onUsageError turns urfave/cli's flag parsing errors into usage errors.
func onUsageError(c *cli.Context, err error, _ bool) error {
	name := c.App.HelpName
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	msg := err.Error()
	if m := badFlagValue().FindStringSubmatch(msg); m != nil {
		msg = flagValueText(c, m[2], m[1], m[3])
	}
	return &Error{Code: CodeUsage, Message: msg, Cause: err,
		Hint: "run " + name + " --help for usage"}
}

// badFlagValue is the Go flag package's refusal of a flag's value
// (`invalid value "abc" for flag -limit: parse error`), which urfave/cli
// passes on as it is. Compiled on the first refusal, not in every
// process's start.
var badFlagValue = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^invalid value "(.*)" for flag -([A-Za-z0-9-]+): (.*)$`)
})

// flagValueText says what is wrong with a flag's value in the CLI's words:
// the flag as the user writes it (--limit, not -limit) and what it takes,
// not the flag package's "parse error" or "value out of range".
func flagValueText(c *cli.Context, name, value, why string) string {
	var kind string
	for _, x := range c.Lineage() {
		var flags []cli.Flag
		switch {
		case x.Command != nil:
			flags = x.Command.Flags
		case x.App != nil:
			flags = x.App.Flags
		}
		for _, f := range flags {
			if !slices.Contains(f.Names(), name) {
				continue
			}
			switch f.(type) {
			case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
				kind = "a whole number"
			case *cli.Float64Flag:
				kind = "a number"
			case *cli.DurationFlag:
				kind = "a duration such as 90s, 15m or 2h"
			case *cli.BoolFlag:
				kind = "true or false"
			}
		}
		if kind != "" {
			break
		}
	}
	flag := "--" + name
	if len(name) == 1 {
		flag = "-" + name
	}
	switch {
	case why == "value out of range" && kind != "":
		return fmt.Sprintf("%s %s is out of range", flag, value)
	case kind != "":
		return fmt.Sprintf("%s takes %s, not %q", flag, kind, value)
	}
	return fmt.Sprintf("invalid value %q for %s: %s", value, flag, why)
}

// pathOf is the command path of c, outermost first, without the app. The
// outermost context with a command is urfave/cli's root command (the app).
func pathOf(c *cli.Context) []*cli.Command {
	var path []*cli.Command
	for _, x := range c.Lineage() {
		if x.Command != nil {
			path = append(path, x.Command)
		}
	}
	if len(path) > 0 {
		path = path[:len(path)-1]
	}
	slices.Reverse(path)
	return path
}

func commandName(app *cli.App, path []*cli.Command) string {
	parts := []string{app.Name}
	for _, c := range path {
		parts = append(parts, c.Name)
	}
	return strings.Join(parts, " ")
}

// takesText says whether a command whose ArgsUsage is usage takes free
// text (send's MESSAGE..., topic post's, summary's TEXT...): words after
// its other arguments join it.
func takesText(usage string) bool {
	return strings.Contains(usage, "MESSAGE") || strings.Contains(usage, "TEXT")
}

func helpHint(app *cli.App, path []*cli.Command) string {
	return "run " + commandName(app, path) + " --help for usage"
}

// groupAction runs when the app or a command with subcommands is invoked
// without (a known) subcommand: help when nothing follows, a usage error
// naming the unknown word otherwise.
func groupAction(c *cli.Context) error {
	path := pathOf(c)
	st := stateOf(c)
	if c.Args().Present() {
		first := c.Args().First()
		if first == "help" {
			renderHelp(st.stdout, c.App, path, st.style)
			return nil
		}
		if looksLikeFlag(first) {
			return UsageErrorf("unknown flag %s", first).WithHint(helpHint(c.App, path))
		}
		children := c.App.Commands
		if len(path) > 0 {
			children = path[len(path)-1].Subcommands
		}
		hint := helpHint(c.App, path)
		if s := suggest(children, first); s != "" {
			hint = "did you mean " + commandName(c.App, path) + " " + s + "?"
		}
		if len(children) == 0 {
			return UsageErrorf("%s takes no arguments, got %q", commandName(c.App, path), first).WithHint(hint)
		}
		return UsageErrorf("unknown command %q for %s", first, commandName(c.App, path)).WithHint(hint)
	}
	if st.json {
		return UsageErrorf("%s needs a command", commandName(c.App, path)).WithHint(helpHint(c.App, path))
	}
	renderHelp(st.stdout, c.App, path, st.style)
	return nil
}

// suggest returns the visible command name closest to name if it is close
// enough to be a likely typo (or name is a prefix of it).
func suggest(cmds []*cli.Command, name string) string {
	best, bestDist := "", max(1, len(name)/3)+1
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		for _, n := range c.Names() {
			d := editDistance(n, name)
			if len(name) >= 2 && strings.HasPrefix(n, name) {
				d = min(d, 1)
			}
			if d < bestDist {
				best, bestDist = n, d
			}
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance: insertions,
// deletions, substitutions and adjacent transpositions ("sned") cost 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// helpAction is `claudemesh help [COMMAND...]` and `claudemesh help
// TOPIC` (exit-codes).
func helpAction(c *cli.Context) error {
	if topic, ok := helpTopics[c.Args().First()]; ok && c.Args().Len() == 1 {
		st := stateOf(c)
		if st.json && topic.json != nil {
			return writeJSON(st.stdout, topic.json())
		}
		topic.text(st.stdout, st.style)
		return nil
	}
	var path []*cli.Command
	children := c.App.Commands
	for _, name := range c.Args().Slice() {
		sub := subcommand(children, name)
		if sub == nil {
			return UsageErrorf("no help for %q: unknown command", strings.Join(c.Args().Slice(), " ")).
				WithHint(helpHint(c.App, path))
		}
		path = append(path, sub)
		children = sub.Subcommands
	}
	st := stateOf(c)
	renderHelp(st.stdout, c.App, path, st.style)
	return nil
}

// checkRequired reports a missing required flag before anything runs, as a
// usage error (urfave/cli would print help to stdout first).
func checkRequired(app *cli.App, p *parsedArgs) error {
	levels := [][]cli.Flag{app.Flags}
	for _, c := range p.path {
		levels = append(levels, c.Flags)
	}
	for i, flags := range levels {
		for _, f := range flags {
			rf, ok := f.(cli.RequiredFlag)
			if !ok || !rf.IsRequired() || flagGiven(p.flags[i], f) {
				continue
			}
			return UsageErrorf("missing required flag %s", flagNames(f)).
				WithHint(helpHint(app, p.path[:max(0, i)]))
		}
	}
	return nil
}

func flagGiven(uses []flagUse, f cli.Flag) bool {
	for _, u := range uses {
		if slices.Contains(f.Names(), u.name) {
			return true
		}
	}
	if d, ok := f.(cli.DocGenerationFlag); ok {
		for _, env := range d.GetEnvVars() {
			if os.Getenv(env) != "" {
				return true
			}
		}
	}
	return false
}

// report writes err (if any) in the run's output mode and returns the exit
// code.
func (st *runState) report(err error, interrupted bool) int {
	if err == nil {
		return ExitOK
	}
	var done *reported
	if errors.As(err, &done) && !interrupted {
		return done.exit
	}
	e := classify(err, interrupted)
	code := e.exit()
	var said *Error
	if e.Code == CodeInterrupted && !(errors.As(err, &said) && said.Code == CodeInterrupted) {
		// Interrupted, with nothing to say. A command that returns an
		// *Error with code interrupted says what it left undone.
		return code
	}
	e.Message, e.Hint = st.hints.commands(e.Message), st.hints.commands(e.Hint)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.json {
		_ = writeJSON(st.stdout, errorDoc{OK: false, Error: errorBody{
			Code: e.Code, Message: e.Message, Candidates: e.Candidates,
			MessageID: e.MessageID, ClientMessageID: e.ClientMessageID}})
		if st.debug {
			st.writeHuman(e, err)
		}
		return code
	}
	st.writeHuman(e, err)
	return code
}

type errorDoc struct {
	OK    bool      `json:"ok"`
	Error errorBody `json:"error"`
}

type errorBody struct {
	Code            string      `json:"code"`
	Message         string      `json:"message"`
	Candidates      []Candidate `json:"candidates,omitzero"`
	MessageID       string      `json:"messageId,omitzero"`
	ClientMessageID string      `json:"clientMessageId,omitzero"`
}

// writeHuman prints the error block on stderr. Messages may carry text from
// the broker or peers, so they are sanitised.
func (st *runState) writeHuman(e *Error, err error) {
	s := st.errStyle
	w := st.stderr
	msg := SanitizePeerText(e.Message)
	msg = strings.ReplaceAll(msg, "\n", "\n    ")
	io.WriteString(w, "  "+s.Red("✘")+" "+msg+"\n")
	if h := SanitizePeerText(e.Hint); h != "" && !strings.Contains(e.Message, e.Hint) {
		io.WriteString(w, "  "+s.Dim("→ "+h)+"\n")
	}
	for _, c := range e.Candidates {
		line := "    · " + SanitizePeerText(c.DisplayName)
		var detail []string
		if c.Pubkey != "" {
			detail = append(detail, shortKey(SanitizePeerText(c.Pubkey)))
		}
		switch {
		case c.MemberName != "":
			// Two sessions of one name differ by whose they are.
			detail = append(detail, "session of "+SanitizePeerText(c.MemberName))
		case c.Kind != "":
			detail = append(detail, SanitizePeerText(c.Kind))
		}
		if len(detail) > 0 {
			line += " " + s.Dim("("+strings.Join(detail, ", ")+")")
		}
		io.WriteString(w, line+"\n")
	}
	if st.debug {
		io.WriteString(w, "  "+s.Dim("debug: code="+e.Code+" error="+SanitizePeerText(err.Error()))+"\n")
	}
}

// shortKey abbreviates a 64-hex key to something still long enough to type
// as an unambiguous prefix.
func shortKey(k string) string {
	if len(k) > 16 {
		return k[:16] + "…"
	}
	return k
}
