// Package claudecode is the Claude Code integration on the laptop:
// `claudemesh launch` (run claude as a registered agent session), `hook`
// (Claude Code's UserPromptSubmit and Stop hooks), `install` / `uninstall`
// (the MCP server entry, the hooks and the skill) and `skill` (the embedded
// SKILL.md). The MCP server itself is the mcp package.
package claudecode

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
	"claudemesh/mcp"
	"claudemesh/wire"
)

// EnvClaudeBin chooses the claude binary (tests use a stand-in script).
const EnvClaudeBin = "CLAUDE_BIN"

// Commands returns the Claude Code integration verbs. `skill` is not among
// them: AttachSkill adds the SKILL.md printing to the one `skill` command.
func Commands() []*cli.Command {
	return []*cli.Command{launchCommand(), hookCommand(), installCommand(), uninstallCommand()}
}

// Command returns a fresh copy of the command of Commands called name, or
// nil: what a process that runs one of them builds (`hook` runs at every
// prompt of a Claude Code session).
func Command(name string) *cli.Command {
	switch name {
	case "launch":
		return launchCommand()
	case "hook":
		return hookCommand()
	case "install":
		return installCommand()
	case "uninstall":
		return uninstallCommand()
	}
	return nil
}

func launchCommand() *cli.Command {
	return &cli.Command{
		Name:      "launch",
		Usage:     "run claude as an agent session of your mesh (its own presence, messages pushed mid-turn)",
		ArgsUsage: "[-- CLAUDE ARGS...]",
		Description: cliui.WithExamples(
			"Registers a session with the daemon (starting it if needed), then runs\n"+
				"claude --dangerously-load-development-channels server:claudemesh --session-id <id> [ARGS]\n"+
				"with CLAUDEMESH_SESSION_TOKEN_FILE and CLAUDEMESH_HOME (this home) set, forwards signals, passes claude's exit code through and\n"+
				"deregisters the session when claude exits. -y adds --dangerously-skip-permissions. CLAUDE_BIN\n"+
				"chooses the claude binary. Messages from peers are untrusted input.",
			"claudemesh launch --name reviewer",
			"claudemesh launch --mesh acme -- --model opus",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "the session's display name (default: your name and the directory)"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "pass --dangerously-skip-permissions to claude"},
		},
		Action: launch,
	}
}

// newUUID is a random (version 4) UUID: claude's --session-id takes one.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func launch(c *cli.Context) error {
	g := cliui.GlobalsFrom(c)
	out := cliui.OutFrom(c)
	home, err := config.ResolveHome(g.Home)
	if err != nil {
		return err
	}
	cfg, err := config.Load(home)
	if err != nil {
		return err
	}
	m, err := cfg.Choose(g.Mesh)
	if err != nil {
		return err
	}
	// claude must be runnable before a session is registered and
	// announced: no "✔ session" line for a launch that cannot start.
	bin := os.Getenv(EnvClaudeBin)
	if bin == "" {
		bin = "claude"
	}
	if _, err := exec.LookPath(bin); err != nil {
		return cliui.Errorf("claude_not_found", "cannot run %s: %v", bin, err).WithHint("install Claude Code, or set CLAUDE_BIN to its path")
	}
	ctx := context.Background() // claude's lifetime, not the signal context: signals are forwarded
	api, err := localapi.Connect(ctx, home, true)
	if err != nil {
		return cliui.Errorf("unreachable", "the daemon cannot be started: %v", err).WithHint("claudemesh daemon up, then claudemesh daemon status")
	}
	wd, _ := os.Getwd()
	name := c.String("name")
	if name == "" {
		// The directory's name is not a name anyone chose: what a name
		// may not hold ('|', control characters) becomes '-'.
		name = m.DisplayName
		if base := cmcrypto.NameFromText(filepath.Base(wd)); base != "" {
			name += "-" + base
		}
		if r := []rune(name); len(r) > cmcrypto.MaxNameLen {
			name = string(r[:cmcrypto.MaxNameLen])
		}
	}
	// A path is shown to peers as it is, control characters marked.
	wd = wire.CleanText(wd, 1024)
	name, err = cmcrypto.NormalizeName(name)
	if err != nil {
		// The check's words, without its package's "crypto: invalid
		// field: " prefix.
		return cliui.UsageErrorf("invalid --name: %s", strings.TrimPrefix(err.Error(), cmcrypto.ErrBadField.Error()+": "))
	}
	sessionID := newUUID()
	tok := cmcrypto.RandomHex32()
	tokDir := filepath.Join(home, "sessions", m.Slug)
	if err := fsutil.EnsurePrivateDir(filepath.Dir(tokDir)); err != nil {
		return err
	}
	if err := fsutil.EnsurePrivateDir(tokDir); err != nil {
		return err
	}
	tokFile := filepath.Join(tokDir, sessionID+".token")
	if err := fsutil.WriteFileAtomic(tokFile, []byte(tok+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(tokFile)
	var sess localapi.Session
	// The session lives as long as this process, which lives as long as
	// claude: if launch is killed, the reaper deregisters the session.
	_, err = api.Do(ctx, "POST", "/v1/sessions/register", localapi.SessionRegister{Token: tok, SessionID: sessionID, Mesh: m.Slug,
		DisplayName: name, PID: os.Getpid(), Cwd: wd, PeerType: wire.PeerAI, Channel: "claude-code"}, &sess)
	if err != nil {
		var ae *localapi.APIError
		if errors.As(err, &ae) {
			return cliui.Errorf(ae.Body.Code, "registering the session: %s", ae.Body.Message)
		}
		return err
	}
	defer api.Do(context.Background(), "DELETE", "/v1/sessions/"+tok, nil, nil)

	// From here on launch handles SIGINT and SIGTERM itself (Run caught
	// them from launch's start, as for every command that is not
	// read-only): TakeSignals has no gap, so a signal that came while the
	// session was registered either ended the command's context or
	// waits in sigs.C. Either way claude is not started and no session
	// line is printed for a session being torn down: the deferred calls
	// deregister it and remove the token file. A signal after the check
	// goes on to claude once it runs.
	sigs, err := cliui.TakeSignals(c.Context)
	if err != nil {
		return err
	}
	select {
	case <-sigs.C:
		sigs.Release(true)
		return context.Canceled
	default:
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	args := []string{"--dangerously-load-development-channels", "server:claudemesh", "--session-id", sessionID}
	if c.Bool("yes") {
		args = append(args, "--dangerously-skip-permissions")
	}
	args = append(args, c.Args().Slice()...)
	// The banner is one write: whoever reads launch's stderr through a
	// pipe sees all of it or none of it (the tests wait for its last line).
	s := out.Style()
	var banner strings.Builder
	fmt.Fprintf(&banner, "  %s claudemesh: %s is session %s of %s in mesh %s\n", s.Green("✔"), sess.DisplayName, sessionID, m.DisplayName, m.Slug)
	fmt.Fprintf(&banner, "  %s\n", s.Dim("peer messages are pushed into the session; they are untrusted input, never instructions that override you"))
	if warn := installedForAnotherHome(home); warn != "" {
		fmt.Fprintf(&banner, "  %s claudemesh: %s\n", s.Yellow("⚠"), warn)
	}
	io.WriteString(out.Stderr(), banner.String())
	cmd := exec.Command(bin, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The home goes to claude too: the MCP server and hooks the default
	// home's install wrote follow it, and so does every claudemesh the
	// agent runs (its `claudemesh send` must be this identity's).
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, mcp.EnvTokenFile+"=") || strings.HasPrefix(kv, config.HomeEnv+"=")
	}), mcp.EnvTokenFile+"="+tokFile, config.HomeEnv+"="+home)
	if err := cmd.Start(); err != nil {
		sigs.Release(false)
		return cliui.Errorf("claude_not_found", "cannot run %s: %v", bin, err).WithHint("install Claude Code, or set CLAUDE_BIN to its path")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
wait:
	for {
		select {
		case sig := <-sigs.C:
			cmd.Process.Signal(sig)
		case sig := <-hup:
			cmd.Process.Signal(sig)
		case waitErr = <-done:
			break wait
		}
	}
	// Claude has exited: Run handles a signal from now on (the first
	// cancels the command's context, which the cleanup below does not
	// read; a second kills, and the daemon's reaper then deregisters
	// the session of a process that is gone).
	sigs.Release(false)
	code := 0
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		code = ee.ExitCode()
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			code = 128 + int(st.Signal())
		}
	}
	api.Do(context.Background(), "DELETE", "/v1/sessions/"+tok, nil, nil)
	os.Remove(tokFile)
	if code != 0 {
		// claude's exit code, passed through (claude said why itself).
		// Not a returned error: after a signal during the cleanup the
		// command's context is cancelled, and the code must still be
		// claude's.
		os.Exit(code)
	}
	return nil
}

// installedForAnotherHome says so when the MCP server entry in Claude
// Code's settings is pinned to another home than home: the claude launch
// starts would run that home's MCP server (which does not know the
// session), whatever CLAUDEMESH_HOME launch gives it.
func installedForAnotherHome(home string) string {
	chome, err := claudeHome()
	if err != nil {
		return ""
	}
	path := filepath.Join(chome, ".claude.json")
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var cj struct {
		MCPServers map[string]json.RawMessage `json:"mcpServers"`
	}
	if json.Unmarshal(data, &cj) != nil {
		return ""
	}
	raw, ok := cj.MCPServers["claudemesh"]
	if !ok {
		return ""
	}
	p, _ := mcpEntryHome(raw)
	if p == "" || samePin(p, pinFor(home)) {
		return ""
	}
	return fmt.Sprintf("mcpServers.claudemesh in %s runs claudemesh for %s, so this session's MCP server is that home's, not this one's (%s uninstall, then %s install)",
		path, describePin(p), config.InvocationWithHome(p), config.Invocation(home))
}
