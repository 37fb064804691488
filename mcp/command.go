package mcp

import (
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/internal/cliui"
)

// EnvTokenFile names the file holding the session token (set by launch).
const EnvTokenFile = "CLAUDEMESH_SESSION_TOKEN_FILE"

// Command is `claudemesh mcp`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "mcp",
		Usage: "the stdio MCP server Claude Code runs: pushes peer messages into the session",
		Description: cliui.WithExamples(
			"Claude Code starts it (claudemesh install registers it). It finds its agent session from\n"+
				"CLAUDEMESH_SESSION_TOKEN_FILE (set by claudemesh launch) or registers one for the claude process\n"+
				"that started it, and emits each message as a notifications/claude/channel notification. It\n"+
				"declares the claude/channel capability and no tools unless --tools. stdout carries JSON-RPC only;\n"+
				"logs go to stderr. CLAUDEMESH_MESH and CLAUDEMESH_NAME choose an ambient session's mesh and name.\n"+
				"What one sender (a member and its sessions; all unverified senders together) pushes into the session\n"+
				"is bounded: 64,000 characters at once, then 32,000 a minute, counting each notification's text, its\n"+
				"attributes and 64 for the block. A message over what is left is cut (whole in claudemesh inbox);\n"+
				"with under 2,000 left it stays unread (the prompt hook and claudemesh inbox --unread show it), and the\n"+
				"session is told, at most once a minute, that the sender is held back. Your own member is not limited.\n"+
				"In a home that joined no mesh, its instructions and its tools say so and what to run; it connects by\n"+
				"itself once a mesh is joined.",
			"claudemesh mcp",
			"claudemesh mcp --tools",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "tools", Usage: "also expose send_message, list_peers, check_messages, set_summary and set_status"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			home, err := config.ResolveHome(cliui.GlobalsFrom(c).Home)
			if err != nil {
				return err
			}
			level := slog.LevelWarn
			if os.Getenv(cliui.EnvDebug) == "1" {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			return Run(c.Context, Options{
				Home: home, Tools: c.Bool("tools"), In: os.Stdin, Out: os.Stdout, Logger: log,
				TokenFile: os.Getenv(EnvTokenFile), ParentPID: os.Getppid(), NoDaemon: cliui.GlobalsFrom(c).NoDaemon,
				Mesh: os.Getenv("CLAUDEMESH_MESH"), Name: os.Getenv("CLAUDEMESH_NAME"), Cwd: cwd(),
			})
		},
	}
}
