package cliui

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// seen is what a test command's action observed.
type seen struct {
	cmd     string
	args    []string
	globals Globals
	flags   map[string]any
}

// testApp builds a command tree shaped like 04-cli's (send, status group
// join, daemon outbox list, peer list with an alias, launch with its own
// --mesh, mesh create with a required flag) whose actions record what
// urfave/cli parsed.
func testApp(got *seen) *cli.App {
	record := func(name string, flagNames ...string) cli.ActionFunc {
		return func(c *cli.Context) error {
			got.cmd = name
			got.args = c.Args().Slice()
			got.globals = GlobalsFrom(c)
			got.flags = map[string]any{}
			for _, f := range flagNames {
				got.flags[f] = c.Value(f)
			}
			return nil
		}
	}
	return NewApp("claudemesh", "test app", []*cli.Command{
		{
			Name: "send", Usage: "send a message", ArgsUsage: "TO MESSAGE...",
			Description: WithExamples("Sends a message.", `claudemesh send bob "tests pass"`),
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "priority", Usage: "now|next|low", Value: "next"},
				&cli.StringFlag{Name: "reply-to", Usage: "reply to message `ID`"},
				&cli.BoolFlag{Name: "wait"},
				&cli.DurationFlag{Name: "wait-timeout"},
				&cli.StringSliceFlag{Name: "mention"},
			},
			Action: record("send", "priority", "reply-to", "wait", "wait-timeout"),
		},
		{
			Name: "status", Usage: "presence",
			Subcommands: []*cli.Command{
				{Name: "set", ArgsUsage: "idle|working|dnd", Action: record("status set")},
				{
					Name: "group", Usage: "groups",
					Subcommands: []*cli.Command{
						{
							Name: "join", ArgsUsage: "NAME [--role R]",
							Flags:  []cli.Flag{&cli.StringFlag{Name: "role"}},
							Action: record("status group join", "role"),
						},
						{Name: "leave", ArgsUsage: "NAME", Action: record("status group leave")},
					},
				},
			},
		},
		{
			Name: "daemon", Usage: "the daemon",
			Subcommands: []*cli.Command{
				{
					Name: "up", Flags: []cli.Flag{&cli.BoolFlag{Name: "foreground"}, &cli.StringFlag{Name: "tcp"}},
					Action: record("daemon up", "foreground", "tcp"),
				},
				{
					Name: "outbox",
					Subcommands: []*cli.Command{
						{
							Name: "list", Flags: []cli.Flag{&cli.StringFlag{Name: "status"}},
							Action: record("daemon outbox list", "status"),
						},
						{Name: "requeue", ArgsUsage: "ID", Action: record("daemon outbox requeue")},
					},
				},
			},
		},
		{
			Name: "peer", Usage: "peers",
			Subcommands: []*cli.Command{{
				Name: "list", Aliases: []string{"ls"}, Usage: "list peers",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "all"}},
				Action: record("peer list", "all"),
			}},
		},
		{
			Name: "launch", Usage: "start claude",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "name"},
				&cli.StringFlag{Name: "mesh"},
				&cli.BoolFlag{Name: "y"},
			},
			Action: record("launch", "name", "mesh", "y"),
		},
		{
			Name: "mesh", Usage: "meshes",
			Subcommands: []*cli.Command{{
				Name: "create", ArgsUsage: "NAME --broker URL",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "broker", Required: true, EnvVars: []string{"TEST_CLAUDEMESH_BROKER"}},
				},
				Action: record("mesh create", "broker"),
			}},
		},
		{
			Name: "invite", Usage: "print an invite link", ArgsUsage: "[--role R]",
			Flags:  []cli.Flag{&cli.StringFlag{Name: "role"}},
			Action: record("invite", "role"),
			Subcommands: []*cli.Command{
				{Name: "list", Usage: "list invites", Action: record("invite list")},
			},
		},
		{
			Name: "hook", SkipFlagParsing: true,
			Action: record("hook"),
		},
	})
}

func TestNormalizeArgs(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{`send bob hi --json`, `--json send bob hi`},
		{`--json send bob hi`, `--json send bob hi`},
		{`send --json bob hi`, `--json send bob hi`},
		{`send bob --priority now hi`, `send --priority now bob hi`},
		{`send bob hi --priority=low -q`, `-q send --priority=low bob hi`},
		{`send bob -- -not-a-flag`, `send -- bob -not-a-flag`},
		{`send bob -- --json`, `send -- bob --json`},
		{`send -x hi`, `send -- -x hi`},
		{`send bob -5 degrees`, `send bob -5 degrees`},
		{`send bob - --json`, `--json send bob -`},
		{`send --mesh acme bob hi`, `--mesh acme send bob hi`},
		// A flag where a value should be is not that value: the value
		// was left out (reported "flag needs a value"), and --json
		// applies.
		{`send bob --mesh --json hi`, `--json send bob hi --mesh`},
		{`--mesh --json send bob hi`, `--json send bob hi --mesh`},
		{`send --reply-to -abc bob`, `send --reply-to -abc bob`},
		{`send bob hi --mention a --mention b`, `send --mention a --mention b bob hi`},
		{`status group join dev --role lead --json`, `--json status group join --role lead dev`},
		{`--role lead status group join dev`, `status group join --role lead dev`},
		{`status --json group join dev`, `--json status group join dev`},
		{`daemon outbox list --status failed`, `daemon outbox list --status failed`},
		{`daemon outbox --status failed list`, `daemon outbox list --status failed`},
		{`peer ls --all --json`, `--json peer ls --all`},
		{`launch --name x --mesh m -y -- --model opus`, `launch --name x --mesh m -y -- --model opus`},
		{`--mesh m launch`, `launch --mesh m`},
		{`hook idle --json`, `hook idle --json`},
		{`--json hook idle`, `--json hook idle`},
		{`invite --role admin --json`, `--json invite --role admin`},
		{`invite list --json`, `--json invite list`},
		{`send bob hi --help`, `send --help bob hi`},
		{`-h`, `-h`},
		{`--bogus`, `-- --bogus`},
		{`version --bogus`, `version --bogus`},
		{`send bob --priority`, `send bob --priority`},
		{``, ``},
		{`-- send bob`, `-- send bob`},
		{`send list all`, `send list all`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			app := testApp(&seen{})
			got := NormalizeArgs(app, append([]string{"claudemesh"}, strings.Fields(tc.in)...))
			want := append([]string{"claudemesh"}, strings.Fields(tc.want)...)
			if !slices.Equal(got, want) {
				t.Fatalf("NormalizeArgs(%q)\n got %q\nwant %q", tc.in, got[1:], want[1:])
			}
		})
	}
}

// TestFlagsAnywhereParse runs the real app on each spelling and checks what
// the command saw.
func TestFlagsAnywhereParse(t *testing.T) {
	clearColorEnv(t)
	for _, tc := range []struct {
		argv    []string
		cmd     string
		args    []string
		globals Globals
		flags   map[string]any
	}{
		{argv: []string{"send", "bob", "hi", "--json"}, cmd: "send", args: []string{"bob", "hi"}, globals: Globals{JSON: true}},
		{argv: []string{"--json", "send", "bob", "hi"}, cmd: "send", args: []string{"bob", "hi"}, globals: Globals{JSON: true}},
		{argv: []string{"send", "--json", "bob", "hi"}, cmd: "send", args: []string{"bob", "hi"}, globals: Globals{JSON: true}},
		{argv: []string{"send", "bob", "--", "-not-a-flag"}, cmd: "send", args: []string{"bob", "-not-a-flag"}},
		{argv: []string{"send", "bob", "--wait", "--", "-x"}, cmd: "send", args: []string{"bob", "-x"}, flags: map[string]any{"wait": true}},
		{argv: []string{"send", "bob", "hi", "--priority", "now", "--mesh", "acme", "-q"}, cmd: "send", args: []string{"bob", "hi"},
			globals: Globals{Mesh: "acme", Quiet: true}, flags: map[string]any{"priority": "now"}},
		{argv: []string{"send", "bob", "hi", "--no-daemon", "--strict", "--no-color", "--home", "/h"}, cmd: "send", args: []string{"bob", "hi"},
			globals: Globals{NoDaemon: true, Strict: true, NoColor: true, Home: "/h"}},
		{argv: []string{"status", "group", "join", "dev", "--role", "lead", "--json"}, cmd: "status group join", args: []string{"dev"},
			globals: Globals{JSON: true}, flags: map[string]any{"role": "lead"}},
		{argv: []string{"daemon", "outbox", "list", "--status", "failed"}, cmd: "daemon outbox list",
			flags: map[string]any{"status": "failed"}},
		{argv: []string{"daemon", "up", "--foreground", "--tcp=127.0.0.1:1"}, cmd: "daemon up",
			flags: map[string]any{"foreground": true, "tcp": "127.0.0.1:1"}},
		{argv: []string{"peer", "ls", "--all"}, cmd: "peer list", flags: map[string]any{"all": true}},
		{argv: []string{"--mesh", "m", "launch", "--name", "n", "--", "--model", "opus"}, cmd: "launch", args: []string{"--model", "opus"},
			globals: Globals{Mesh: "m"}, flags: map[string]any{"name": "n", "mesh": "m"}},
		{argv: []string{"hook", "idle", "--json"}, cmd: "hook", args: []string{"idle", "--json"}},
		{argv: []string{"invite", "--role", "admin"}, cmd: "invite", flags: map[string]any{"role": "admin"}},
		{argv: []string{"invite", "list"}, cmd: "invite list"},
	} {
		t.Run(strings.Join(tc.argv, " "), func(t *testing.T) {
			var got seen
			var stdout, stderr bytes.Buffer
			code := RunContext(context.Background(), testApp(&got), append([]string{"claudemesh"}, tc.argv...), &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
			}
			if got.cmd != tc.cmd {
				t.Fatalf("ran %q, want %q", got.cmd, tc.cmd)
			}
			if !slices.Equal(got.args, tc.args) && !(len(got.args) == 0 && len(tc.args) == 0) {
				t.Errorf("args = %q, want %q", got.args, tc.args)
			}
			if got.globals != tc.globals {
				t.Errorf("globals = %+v, want %+v", got.globals, tc.globals)
			}
			for k, v := range tc.flags {
				if got.flags[k] != v {
					t.Errorf("flag %s = %v, want %v", k, got.flags[k], v)
				}
			}
		})
	}
}

func TestGlobalsFromEnvironment(t *testing.T) {
	clearColorEnv(t)
	t.Setenv("CLAUDEMESH_NO_DAEMON", "1")
	t.Setenv("CLAUDEMESH_HOME", "/from/env")
	var got seen
	var stdout, stderr bytes.Buffer
	if code := RunContext(context.Background(), testApp(&got), []string{"claudemesh", "send", "a", "b"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !got.globals.NoDaemon || got.globals.Home != "/from/env" {
		t.Fatalf("globals = %+v", got.globals)
	}
}

// TestUnknownFlagsAreUsageErrors: an unknown flag before "--" is refused
// (exit 2) before the command runs, with the closest known flag; it never
// becomes message text.
func TestUnknownFlagsAreUsageErrors(t *testing.T) {
	clearColorEnv(t)
	for _, tc := range []struct {
		argv    string
		message string
		hint    string
	}{
		{"send bob typo test -w", "unknown flag -w for claudemesh send", "did you mean --wait?"},
		{"send bob hi --bogus-flag", "unknown flag --bogus-flag for claudemesh send", "claudemesh send … -- --bogus-flag"},
		{"send bob hi --priorty now", "unknown flag --priorty for claudemesh send", "did you mean --priority?"},
		{"send bob -5 degrees", "unknown flag -5 for claudemesh send", "claudemesh send … -- -5"},
		{"--jsn send bob hi", "unknown flag --jsn for claudemesh send", "did you mean --json?"},
		{"status group join dev --rol lead", "unknown flag --rol for claudemesh status group join", "did you mean --role?"},
	} {
		t.Run(tc.argv, func(t *testing.T) {
			var got seen
			var stdout, stderr bytes.Buffer
			code := RunContext(context.Background(), testApp(&got), append([]string{"claudemesh"}, strings.Fields(tc.argv)...), &stdout, &stderr)
			if code != ExitUsage || got.cmd != "" {
				t.Fatalf("exit %d, ran %q, stderr %q", code, got.cmd, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.message) || !strings.Contains(stderr.String(), tc.hint) {
				t.Fatalf("stderr %q, want %q and %q", stderr.String(), tc.message, tc.hint)
			}
		})
	}
	// After "--" anything goes, and a lone "-" (stdin) is no flag.
	for _, argv := range []string{"send bob -- -w --bogus", "send bob -"} {
		var got seen
		var stdout, stderr bytes.Buffer
		if code := RunContext(context.Background(), testApp(&got), append([]string{"claudemesh"}, strings.Fields(argv)...), &stdout, &stderr); code != 0 || got.cmd != "send" {
			t.Fatalf("%s: exit %d %q", argv, code, stderr.String())
		}
	}
}

// TestDirectCommand: the command a line names is found past global flags
// and their values; anything that may need the whole command tree is not
// answered.
func TestDirectCommand(t *testing.T) {
	for _, tc := range []struct {
		line string
		want string // "" = not ok
	}{
		{"send bob hi", "send"},
		{"--json send bob hi", "send"},
		{"--home /tmp/h --mesh acme send bob hi", "send"},
		{"--home=/tmp/h -q send bob hi --json", "send"},
		{"send bob hi --priority now --json", "send"},
		{"send bob -- --help", "send"},
		{"--mesh send bob hi", "bob"}, // send is --mesh's value
		{"--version", "version"},
		{"--json -q --version", "version"},
		{"version --json", "version"},
		{"", ""},
		{"--json", ""},
		{"--home", ""},
		{"--help", ""},
		{"send --help", ""},
		{"send bob hi -h", ""},
		{"send bob hi --version", ""},
		{"--version send", ""},
		{"--version=true", ""},
		{"--priority now send bob hi", ""},
		{"--frobnicate send", ""},
	} {
		argv := append([]string{"claudemesh"}, strings.Fields(tc.line)...)
		got, ok := DirectCommand(argv)
		if ok != (tc.want != "") || got != tc.want && ok {
			t.Errorf("%q: %q, %v; want %q", tc.line, got, ok, tc.want)
		}
	}
	if _, ok := DirectCommand(nil); ok {
		t.Error("DirectCommand(nil) is ok")
	}
}

// TestNamesOf: namesOf is what Names says, for every flag type it knows
// and for one it does not, with and without aliases, and for v1-style
// names that urfave/cli cuts at a comma or a space.
func TestNamesOf(t *testing.T) {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "mesh"},
		&cli.StringFlag{Name: "home", Aliases: []string{"H"}},
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q", "silent"}},
		&cli.IntFlag{Name: "limit"},
		&cli.DurationFlag{Name: "wait-timeout", Aliases: []string{"w"}},
		&cli.Int64Flag{Name: "max-frame"},
		&cli.Float64Flag{Name: "rate"},
		&cli.StringSliceFlag{Name: "tag", Aliases: []string{"t"}},
		&cli.Uint64Flag{Name: "keep"},
		&cli.PathFlag{Name: "file", Aliases: []string{"f"}},
		&cli.StringFlag{Name: "old, o"},
		&cli.BoolFlag{Name: "x", Aliases: []string{"y z"}},
		&cli.IntFlag{Name: "n", Aliases: []string{"count,c"}},
	}
	for _, f := range flags {
		got, want := namesOf(f), f.Names()
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%T %v: namesOf %q, Names %q", f, want, got, want)
		}
	}
}
