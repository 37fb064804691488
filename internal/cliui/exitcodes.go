package cliui

import (
	"fmt"
	"io"
	"strings"
)

// ExitCodeRow is one line of the exit-code table.
type ExitCodeRow struct {
	Code    int
	Meaning string
}

// ExitCodeTable is the one exit-code table (04-cli "Exit codes"): what
// `claudemesh help exit-codes` prints and the README shows, and what
// ExitCode follows. A test keeps the README's copy identical.
var ExitCodeTable = []ExitCodeRow{
	{ExitOK, "success (a message accepted into the daemon's outbox, or acked by the broker, is a success)"},
	{ExitFailure, "failure not covered below (rate limited, clock skew, broker at capacity, internal error)"},
	{ExitUsage, "usage error: unknown command or flag, missing or bad argument, --mesh needed, message too large"},
	{ExitNotFound, "not found: unknown target, mesh, invite, topic, message or outbox row"},
	{ExitNotAllowed, "not allowed: forbidden, not joined, kicked, removed, banned, bad credentials or signature, invite expired, revoked or used up, broker key mismatch"},
	{ExitUnreachable, "the broker or the daemon cannot be reached (or stopped answering) and nothing could be queued"},
	{ExitConflict, "conflict: ambiguous target, already exists, idempotency key reused, `daemon up --foreground` with a daemon already running (`daemon up` then says so and exits 0), `install` into Claude Code settings another home's install wrote, `mesh leave` with messages to the mesh not sent yet"},
	{ExitTimeout, "not delivered: send --wait expired before the message was delivered, or the daemon stopped answering during the wait after it had accepted the message (it stays in its outbox: do not send it again), or it never will be (nobody could be reached, or a retry's delivery expired)"},
	{ExitOutcomeUnknown, "outcome unknown: the daemon (or, on a direct connection, the broker) stopped answering after it was handed the message, or a broker cluster without quorum refused it (`unavailable`) and may still store it: it may or may not have been queued; check (`claudemesh daemon outbox list`, `claudemesh message status ID`) before you send it again"},
	{ExitInterrupted, "interrupted (Ctrl-C, SIGINT or SIGTERM); a read-only command (a listing, a lookup, `--version`) signalled in its first 20 ms is ended by the signal instead"},
}

// ExitCodesMarkdown is the table as Markdown, as the README shows it.
func ExitCodesMarkdown() string {
	var b strings.Builder
	b.WriteString("| exit | meaning |\n|---|---|\n")
	for _, r := range ExitCodeTable {
		fmt.Fprintf(&b, "| %d | %s |\n", r.Code, r.Meaning)
	}
	return b.String()
}

// helpTopic is a `claudemesh help TOPIC` page that is not a command: its
// text, and its --json answer (nil: --json prints the text, as every
// other help page does).
type helpTopic struct {
	text func(w io.Writer, s Style)
	json func() any
}

// helpTopics are the help pages that are not commands.
var helpTopics = map[string]helpTopic{
	"exit-codes": {text: renderExitCodes, json: exitCodesJSON},
}

// exitCodesJSON is `claudemesh help exit-codes --json`.
func exitCodesJSON() any {
	type row struct {
		Exit    int    `json:"exit"`
		Meaning string `json:"meaning"`
	}
	rows := make([]row, 0, len(ExitCodeTable))
	for _, r := range ExitCodeTable {
		rows = append(rows, row{r.Code, r.Meaning})
	}
	return struct {
		ExitCodes []row `json:"exitCodes"`
	}{rows}
}

func renderExitCodes(w io.Writer, s Style) {
	var b strings.Builder
	b.WriteString(s.Brand("claudemesh exit codes") + "\n\n")
	for _, r := range ExitCodeTable {
		fmt.Fprintf(&b, "  %s  %s\n", s.Cyan(fmt.Sprintf("%3d", r.Code)), r.Meaning)
	}
	b.WriteString("\n  " + s.Dim("With --json, a failure also prints {\"ok\":false,\"error\":{\"code\",\"message\"}} on stdout;") + "\n")
	b.WriteString("  " + s.Dim("the error code decides the exit code (docs/protocol.md lists the codes).") + "\n")
	io.WriteString(w, b.String())
}
