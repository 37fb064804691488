// Command claudemesh is one binary for every mode: the broker, the daemon,
// the one-shot verbs and the MCP server. main only assembles the commands
// each mode defines; cliui owns argv handling, output and exit codes.
package main

import (
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"claudemesh/broker"
	"claudemesh/claudecode"
	"claudemesh/client/config"
	"claudemesh/client/verbs"
	"claudemesh/daemon"
	"claudemesh/internal/bench"
	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
	"claudemesh/internal/completion"
	"claudemesh/internal/demo"
	"claudemesh/internal/doctor"
	_ "claudemesh/internal/startstack" // initialised first: grows the main goroutine's stack once
	"claudemesh/mcp"
	"claudemesh/web"
)

func main() {
	if plainVersion(os.Args, os.Stdout) {
		os.Exit(cliui.ExitOK)
	}
	cliui.HomeInvocation = hintInvocation
	cliui.CommandTree = func() []*cli.Command { return newApp().Commands }
	os.Exit(cliui.Run(appFor(os.Args), os.Args, os.Stdout, os.Stderr))
}

// hintInvocation is how the commands in a run's hints start for the
// --home it was given: "claudemesh --home DIR", or "claudemesh" for the
// default home.
func hintInvocation(home string) string {
	resolved, err := config.ResolveHome(home)
	if err != nil {
		return ""
	}
	return config.Invocation(resolved)
}

// plainVersion prints the version line for `claudemesh --version` and
// `claudemesh version` (cliui.PlainVersion), scripts' usual probe, without
// an app: exactly what the version command prints, ~0.2 ms sooner. It
// reports whether it did; every other command line runs on an app.
func plainVersion(argv []string, stdout io.Writer) bool {
	if !cliui.PlainVersion(argv) {
		return false
	}
	io.WriteString(stdout, cliui.ResultText(versionLine()))
	return true
}

// versionLine is the version command's human output.
func versionLine() string { return "claudemesh " + buildinfo.Version }

// appFor is the app that runs argv: when argv plainly runs one member verb,
// one of claudecode's commands (`hook` runs at every prompt of a Claude
// Code session) or `version` (cliui.DirectCommand), the app holding that
// command alone,
// which runs it exactly as the whole tree would; otherwise newApp. Building
// and setting up the whole tree (~45 commands with their flags and help)
// was ~0.2 ms of every `send` and `--version`, which run one command.
func appFor(argv []string) *cli.App {
	name, ok := cliui.DirectCommand(argv)
	if !ok {
		return newApp()
	}
	var c *cli.Command
	switch name {
	case "version":
		c = versionCommand()
	case "skill":
		// newApp's skill: the verbs' skill with SKILL.md attached.
		if c = verbs.Command(name); c != nil {
			claudecode.AttachSkill(c)
		}
	default:
		// newApp's order: the verbs, then claudecode's.
		if c = verbs.Command(name); c == nil {
			c = claudecode.Command(name)
		}
	}
	if c == nil {
		return newApp()
	}
	return assemble([]*cli.Command{c})
}

// newApp assembles the whole command tree; tests run it in-process.
func newApp() *cli.App {
	// The one-shot verbs first: they are what people type every day.
	commands := verbs.Commands()
	skill := false
	for _, c := range commands {
		if c.Name == "skill" {
			claudecode.AttachSkill(c) // one `skill`: SKILL.md, and the mesh skills under it
			skill = true
		}
	}
	if !skill {
		commands = append(commands, claudecode.SkillCommand())
	}
	commands = append(commands, claudecode.Commands()...)
	commands = append(commands,
		mcp.Command(),
		doctor.Command(append(append(doctor.Builtin(), daemon.DoctorChecks()...), claudecode.DoctorChecks()...)...),
		completion.Command(),
		completion.CompleteCommand(),
		daemon.Command(),
		web.Command(),
		broker.Command(),
		demo.Command(),
		bench.Command(),
		versionCommand(),
	)
	return assemble(commands)
}

// assemble is the app around commands: newApp's with all of them, appFor's
// with the one a command line runs.
func assemble(commands []*cli.Command) *cli.App {
	app := cliui.NewApp("claudemesh", "end-to-end encrypted messaging between coding-agent sessions", commands)
	app.Description = cliui.WithExamples("",
		"claudemesh demo",
		"claudemesh join ic://join/eyJ2Ijox…",
		`claudemesh send alice "the build is green" --json`,
		"claudemesh inbox",
		"claudemesh peer list",
		"claudemesh broker --listen :7900 --data /var/lib/claudemesh",
	)
	return app
}

// versionJSON is `version --json`.
type versionJSON struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	Commit  string `json:"commit,omitzero"`
}

func versionCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:        "version",
		Usage:       "print the version",
		Description: cliui.WithExamples("", "claudemesh version", "claudemesh version --json"),
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			out := cliui.OutFrom(c)
			if out.JSONMode() {
				info := buildinfo.Read()
				return out.JSON(versionJSON{Version: info.Version, Go: info.Go, Commit: info.Commit})
			}
			out.Resultf("%s", versionLine())
			return nil
		},
	})
}
