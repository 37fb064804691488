package cliui

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Error is a failure the CLI reports to the user: a stable machine code (the
// wire error codes of 01-protocol plus the CLI's own), a message, an
// optional hint saying what to do next and, for ambiguous targets, the
// candidates. Commands return it (or any error wrapping it, or any error
// with an ErrorCode method) and Run turns it into output and an exit code
// exactly once.
type Error struct {
	// Code is the machine-readable code; ExitCode maps it to the exit code.
	Code string
	// Message says what went wrong. Empty means Cause's message.
	Message string
	// Hint says what to do about it (human output only).
	Hint string
	// Candidates are the possible matches of an ambiguous target.
	Candidates []Candidate
	// MessageID and ClientMessageID name the message an error concerns
	// (a send that timed out, failed or reused an id), so a --json reader
	// can follow it up without parsing the message.
	MessageID, ClientMessageID string
	// Exit overrides ExitCode(Code) when non-zero.
	Exit int
	// Cause is the underlying error, for errors.Is/As and debug output.
	Cause error
}

// Candidate is one possible match listed with an ambiguous_target error.
type Candidate struct {
	DisplayName  string `json:"displayName"`
	Pubkey       string `json:"pubkey"`
	Kind         string `json:"kind"`
	MemberName   string `json:"memberName,omitempty"`   // a session's member
	MemberPubkey string `json:"memberPubkey,omitempty"` // a session's member
}

// Error returns Message, or Cause's message when Message is empty.
func (e *Error) Error() string {
	if e.Message == "" && e.Cause != nil {
		return e.Cause.Error()
	}
	return e.Message
}

// Unwrap exposes Cause.
func (e *Error) Unwrap() error { return e.Cause }

// ErrorCode returns Code, so an *Error satisfies the same interface as the
// typed errors of other packages.
func (e *Error) ErrorCode() string { return e.Code }

// ErrorHint returns Hint.
func (e *Error) ErrorHint() string { return e.Hint }

// Errorf builds an *Error with code and a formatted message; a %w verb makes
// the wrapped error its Cause.
func Errorf(code, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Message: err.Error(), Cause: errors.Unwrap(err)}
}

// UsageErrorf builds a usage error (code "usage", exit 2).
func UsageErrorf(format string, args ...any) *Error {
	return Errorf(CodeUsage, format, args...)
}

// WithHint sets the hint and returns e, for one-line construction.
func (e *Error) WithHint(hint string) *Error {
	e.Hint = hint
	return e
}

// WithMessage names the message the error concerns (either id may be "").
func (e *Error) WithMessage(messageID, clientMessageID string) *Error {
	e.MessageID, e.ClientMessageID = messageID, clientMessageID
	return e
}

// Reported is what a command returns when it has already printed its
// outcome and that outcome is a failure (audit verify printing its
// findings, in --json too): Run exits with exit and prints nothing more, so
// stdout holds one document.
func Reported(exit int) error { return &reported{exit: exit} }

type reported struct{ exit int }

func (r *reported) Error() string { return fmt.Sprintf("reported (exit %d)", r.exit) }

// Codes the CLI itself produces (the others come from the broker, 01-protocol).
const (
	CodeUsage               = "usage"
	CodeInternal            = "internal"
	CodeUnreachable         = "unreachable"
	CodeWaitTimeout         = "wait_timeout"
	CodeInsecurePermissions = "insecure_permissions"
	CodeNotJoined           = "not_joined"
	CodeMeshRequired        = "mesh_required"
	CodeMeshNotFound        = "mesh_not_found"
	CodeInvalidArgument     = "invalid_argument"
	CodeInterrupted         = "interrupted"
	// CodeOutcomeUnknown is a send whose message was handed to the daemon
	// (or, on a direct connection, written to the broker) and that got no
	// answer: it may or may not have been taken.
	CodeOutcomeUnknown = "outcome_unknown"
)

// Exit codes of 04-cli "Exit codes".
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitNotFound    = 3
	ExitNotAllowed  = 4
	ExitUnreachable = 5
	ExitConflict    = 6
	ExitTimeout     = 7
	// ExitOutcomeUnknown is a send that may or may not have been taken
	// (CodeOutcomeUnknown): unlike 5, something may be queued, so a
	// script must check before it sends again.
	ExitOutcomeUnknown = 8
	// ExitInterrupted is the shell convention for death by SIGINT (128+2);
	// a command stopped with Ctrl-C ends with it, silently unless it
	// returns an *Error with code interrupted (Run).
	ExitInterrupted = 130
)

// ExitCode maps an error code to the process exit code (04-cli "Exit
// codes", ExitCodeTable); unknown codes are 1.
func ExitCode(code string) int {
	switch code {
	case "":
		return ExitOK
	case CodeUsage, CodeMeshRequired, "malformed", CodeInvalidArgument, "payload_too_large":
		return ExitUsage
	case "unknown_target", "unknown_recipient", CodeMeshNotFound, "invite_not_found", "topic_not_found", "not_found",
		"lost_by_broker", "record_purged":
		return ExitNotFound
	case "forbidden", "unauthorized", "revoked", "banned", "kicked", "removed", "not_a_member",
		"blocked_by_recipient", "issuer_not_admin", "bad_signature", "invite_expired",
		"invite_revoked", "invite_exhausted", "broker_key_mismatch", CodeNotJoined,
		CodeInsecurePermissions, "unknown_session", "left_mesh":
		return ExitNotAllowed
	case CodeUnreachable, "timeout", "connection_closed", "shutting_down", "unavailable":
		// A broker (or daemon) that stopped answering is, for the user, one
		// that cannot be reached.
		return ExitUnreachable
	case "ambiguous_target", "idempotency_key_reused", "slug_taken", "name_taken", "topic_exists",
		"invite_exists", "already_running", "installed_for_another_home", "unsent_messages", "not_failed":
		return ExitConflict
	case CodeWaitTimeout:
		return ExitTimeout
	case CodeOutcomeUnknown:
		return ExitOutcomeUnknown
	case CodeInterrupted:
		return ExitInterrupted
	default:
		return ExitFailure
	}
}

// coder is implemented by typed errors of other packages (config,
// fsutil, the client's wire errors) so cliui can map them without importing
// those packages.
type coder interface{ ErrorCode() string }

// hinter optionally adds a hint to a coder.
type hinter interface{ ErrorHint() string }

// candidater optionally adds candidates to a coder.
type candidater interface{ ErrorCandidates() []Candidate }

// classify turns any error into the *Error that is reported: the outermost
// message (it carries the most context) with the code, hint and candidates
// of the innermost typed error.
func classify(err error, interrupted bool) *Error {
	out := &Error{Code: CodeInternal, Message: err.Error(), Cause: err}
	var ce *Error
	var c coder
	var exitCoder cli.ExitCoder
	switch {
	case errors.As(err, &ce):
		out.Code, out.Hint, out.Candidates, out.Exit = ce.Code, ce.Hint, ce.Candidates, ce.Exit
		out.MessageID, out.ClientMessageID = ce.MessageID, ce.ClientMessageID
	case errors.As(err, &c):
		out.Code = c.ErrorCode()
		var h hinter
		if errors.As(err, &h) {
			out.Hint = h.ErrorHint()
		}
		var cs candidater
		if errors.As(err, &cs) {
			out.Candidates = cs.ErrorCandidates()
		}
	case interrupted && errors.Is(err, context.Canceled):
		out.Code = CodeInterrupted
	case errors.As(err, &exitCoder):
		// cli.Exit from a command, or an urfave/cli internal error.
		out.Exit = exitCoder.ExitCode()
		if out.Exit == ExitUsage {
			out.Code = CodeUsage
		} else {
			out.Code = "error"
		}
	case strings.HasPrefix(err.Error(), "Required flag"):
		// urfave/cli's required-flag check; Run normally catches missing
		// required flags first, this is the backstop.
		out.Code = CodeUsage
	}
	if out.Code == "" {
		out.Code = CodeInternal
	}
	return out
}

// exit is the exit code of a classified error.
func (e *Error) exit() int {
	if e.Exit != 0 {
		return e.Exit
	}
	return ExitCode(e.Code)
}
