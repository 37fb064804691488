package claudecode

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
	"claudemesh/internal/proc"
	"claudemesh/wire"
)

func hookCommand() *cli.Command {
	return &cli.Command{
		Name:      "hook",
		Usage:     "Claude Code hook: set the session's status, and show unread messages on UserPromptSubmit",
		ArgsUsage: "working|idle|dnd",
		Description: cliui.WithExamples(
			"Run by Claude Code (claudemesh install adds it): UserPromptSubmit runs `hook working`, Stop runs\n"+
				"`hook idle`. It reads the hook's JSON on stdin, finds its session (the session id launch gave\n"+
				"claude, else the claude process that runs it), sets the status (next/low messages wait while\n"+
				"working) and, for working, prints unread messages as additional context. It exits 0, even on\n"+
				"a first SIGINT or SIGTERM (it still finishes its 2 s of work; a second one kills it), and never\n"+
				"starts the daemon:\n"+
				"problems go to the daemon log.",
			"claudemesh hook working",
		),
		Action: hook,
	}
}

// hookInput is what Claude Code writes on a hook's stdin (the fields used).
type hookInput struct {
	SessionID     string `json:"session_id"`
	Cwd           string `json:"cwd"`
	HookEventName string `json:"hook_event_name"`
}

// hookOutput is a UserPromptSubmit hook's answer: additionalContext is
// added to what the model sees with the prompt.
type hookOutput struct {
	HookSpecificOutput struct {
		HookEventName     string `json:"hookEventName"`
		AdditionalContext string `json:"additionalContext"`
	} `json:"hookSpecificOutput"`
}

// hookBudget bounds the whole hook: it runs before every prompt.
const hookBudget = 2 * time.Second

func hook(c *cli.Context) error {
	event := c.Args().First()
	home, _ := config.ResolveHome(cliui.GlobalsFrom(c).Home)
	logf := hookLogger(home)
	switch event {
	case wire.StatusWorking, wire.StatusIdle, wire.StatusDND:
	default:
		logf("hook: unknown event %q (want working, idle or dnd)", event)
		return nil // a hook must never break the user's prompt
	}
	var in hookInput
	data, _ := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
	badInput := ""
	if len(strings.TrimSpace(string(data))) > 0 {
		if err := json.Unmarshal(data, &in); err != nil {
			badInput = err.Error()
			logf("hook %s: stdin is not the hook JSON (%v); looking for the session by process ancestry only", event, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), hookBudget)
	defer cancel()
	api, err := localapi.Connect(ctx, home, false)
	if err != nil {
		// No daemon, no sessions: nothing to do, and nothing to start
		// before a prompt; but the status was not set, which is said.
		logf("hook %s: status not set: %v (start it with claudemesh daemon up)", event, err)
		return nil
	}
	req := localapi.HookRequest{Event: event, SessionID: in.SessionID, PIDs: proc.Ancestors(os.Getpid(), 8)}
	var res localapi.HookResponse
	if _, err := api.Do(ctx, "POST", "/v1/sessions/hook", req, &res); err != nil {
		if badInput != "" {
			logf("hook %s: %v (stdin was not the hook JSON, so no session id was given)", event, err)
		} else {
			logf("hook %s: %v", event, err)
		}
		return nil
	}
	if res.StatusError != "" {
		logf("hook %s: session %s: %s", event, res.Session.SessionID, res.StatusError)
	}
	if event != wire.StatusWorking {
		return nil
	}
	text := res.Context
	if text == "" && len(res.Messages) > 0 {
		// A daemon older than this binary hands over rows only.
		text, _ = agentview.HookContext(res.Messages, 0, agentview.Budget{MaxMessages: len(res.Messages), MaxChars: 1 << 30, MaxBody: agentview.DefaultHookBudget.MaxBody})
	}
	if text == "" {
		return nil
	}
	var out hookOutput
	out.HookSpecificOutput.HookEventName = "UserPromptSubmit"
	out.HookSpecificOutput.AdditionalContext = text
	enc := json.NewEncoder(os.Stdout)
	enc.Encode(out)
	return nil
}

// hookLogger appends to the daemon log (a hook's stderr is shown to the
// user only in transcript mode; the log is where problems are looked for).
func hookLogger(home string) func(format string, args ...any) {
	return func(format string, args ...any) {
		if home == "" {
			return
		}
		f, err := os.OpenFile(localapi.LogPath(home), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return
		}
		defer f.Close()
		slog.New(slog.NewJSONHandler(f, nil)).Warn(fmt.Sprintf(format, args...), "source", "hook")
	}
}
