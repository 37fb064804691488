package cliui

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// hintTestTree is a small command tree of claudemesh's shape.
func hintTestTree() []*cli.Command {
	leaf := func(name string, aliases ...string) *cli.Command {
		return &cli.Command{Name: name, Aliases: aliases, Action: func(*cli.Context) error { return nil }}
	}
	group := func(name string, sub ...*cli.Command) *cli.Command {
		return &cli.Command{Name: name, Subcommands: sub}
	}
	return []*cli.Command{
		group("daemon", leaf("up"), leaf("status"), group("outbox", leaf("list"))),
		group("peer", leaf("list"), leaf("verify")), leaf("peers"),
		group("topic", leaf("history"), leaf("rotate")),
		group("mesh", leaf("list"), leaf("transfer")),
		leaf("join"), leaf("send"), leaf("inbox"), leaf("ui"), leaf("doctor"), leaf("invite"),
		{Name: "skill", Action: func(*cli.Context) error { return nil }, Subcommands: []*cli.Command{leaf("get")}},
		{Name: "broker", Action: func(*cli.Context) error { return nil }, Subcommands: []*cli.Command{leaf("compact")}},
	}
}

// TestHintCommandsCarryTheHome (a new user's trial): hints named
// claudemesh commands without the --home (and --mesh) the user ran with,
// so copying one looked at ~/.claudemesh, another identity or none, or
// failed with "several meshes joined". Commands for someone else, help,
// commands that already name a home or a mesh, and prose are left alone.
func TestHintCommandsCarryTheHome(t *testing.T) {
	h := &hintContext{invocation: "claudemesh --home /h/bob", mesh: "acme", app: &cli.App{Commands: hintTestTree()}}
	for in, want := range map[string]string{
		"check with claudemesh daemon outbox list --status failed": "check with claudemesh --home /h/bob daemon outbox list --status failed",
		"run claudemesh peer list --all to see who is in the mesh": "run claudemesh --home /h/bob --mesh acme peer list --all to see who is in the mesh",
		"→ older: claudemesh topic history t4 --before 01M":        "→ older: claudemesh --home /h/bob --mesh acme topic history t4 --before 01M",
		"run claudemesh daemon up --init":                          "run claudemesh --home /h/bob daemon up --init",
		"claudemesh daemon up (or drop --strict)":                  "claudemesh --home /h/bob daemon up (or drop --strict)",
		"join a mesh with claudemesh join <invite link>":           "join a mesh with claudemesh --home /h/bob join <invite link>",
		"claudemesh daemon up, then claudemesh daemon status":      "claudemesh --home /h/bob daemon up, then claudemesh --home /h/bob daemon status",
		"(claudemesh ui prints a login link)":                      "(claudemesh --home /h/bob ui prints a login link)",
		"claudemesh peers --all":                                   "claudemesh --home /h/bob --mesh acme peers --all",
		"share one with claudemesh skill publish FILE":             "share one with claudemesh --home /h/bob --mesh acme skill publish FILE",
		// A daemon's hint names its home already; the mesh goes after it.
		"claudemesh --home /h/bob peer list --all": "claudemesh --home /h/bob --mesh acme peer list --all",
		// Already there.
		"claudemesh invite --mesh beta":                 "claudemesh --home /h/bob invite --mesh beta",
		"claudemesh --home /x --mesh m peer list --all": "claudemesh --home /x --mesh m peer list --all",
		// For someone else.
		"ask the mesh owner or an admin to run: claudemesh unban bob --mesh acme": "ask the mesh owner or an admin to run: claudemesh unban bob --mesh acme",
		"ask for a new invite (they run: claudemesh invite --mesh acme)":          "ask for a new invite (they run: claudemesh invite --mesh acme)",
		"→ ask alice to run claudemesh peer verify 5157de14":                      "→ ask alice to run claudemesh peer verify 5157de14",
		"the joiner runs: claudemesh join <link>":                                 "the joiner runs: claudemesh join <link>",
		// Help, prose, the operator's broker, part of a word.
		"run claudemesh peer list --help":           "run claudemesh peer list --help",
		"the claudemesh daemon is not reachable":    "the claudemesh daemon is not reachable",
		"(another claudemesh daemon?)":              "(another claudemesh daemon?)",
		"not a claudemesh broker":                   "not a claudemesh broker",
		"run claudemesh broker compact again":       "run claudemesh broker compact again",
		"mcpServers.claudemesh runs claudemesh for": "mcpServers.claudemesh runs claudemesh for",
		"no claudemesh here":                        "no claudemesh here",
	} {
		if got := h.commands(in); got != want {
			t.Errorf("commands(%q)\n got %q\nwant %q", in, got, want)
		}
	}
	// No --home and no --mesh given: nothing changes.
	var none *hintContext
	if got := none.commands("claudemesh peer list"); got != "claudemesh peer list" {
		t.Errorf("without a context: %q", got)
	}
}

// TestRunPutsTheHomeIntoHints: an error's hint and a hint line, through
// Run, carry the --home the line was given (HomeInvocation), and only
// when one was.
func TestRunPutsTheHomeIntoHints(t *testing.T) {
	old := HomeInvocation
	HomeInvocation = func(home string) string { return "claudemesh --home " + home }
	t.Cleanup(func() { HomeInvocation = old })
	app := NewApp("claudemesh", "test", []*cli.Command{{
		Name: "send",
		Action: func(c *cli.Context) error {
			OutFrom(c).Linef("%s", OutFrom(c).Commands("→ claudemesh send again"))
			return Errorf("not_found", "no such peer").WithHint("run claudemesh send --help, or claudemesh send again")
		},
	}})
	var out, errb bytes.Buffer
	Run(app, []string{"claudemesh", "--home", "/h/x", "send"}, &out, &errb)
	if !strings.Contains(out.String(), "→ claudemesh --home /h/x send again") ||
		!strings.Contains(errb.String(), "run claudemesh send --help, or claudemesh --home /h/x send again") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	Run(app, []string{"claudemesh", "send"}, &out, &errb)
	if strings.Contains(out.String()+errb.String(), "--home") {
		t.Fatalf("without --home:\nstdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
}
