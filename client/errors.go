package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"claudemesh/wire"
)

// Codes this package produces on its own, beside the broker's codes
// (wire.Code*), which pass through unchanged. Callers switch on Error.Code
// whatever its origin, so the CLI can map every failure to one exit code and
// one hint without string matching.
const (
	// CodeUnreachable: the TCP or WebSocket connection (or REST request)
	// could not be made at all — the broker is down, the URL is wrong, or a
	// proxy refused the upgrade.
	CodeUnreachable = "unreachable"
	// CodeTimeout: the context's deadline (or the handshake timeout) passed
	// before the broker answered.
	CodeTimeout = "timeout"
	// CodeCanceled: the caller's context was cancelled.
	CodeCanceled = "canceled"
	// CodeConnectionClosed: the connection ended before the answer came.
	CodeConnectionClosed = "connection_closed"
	// CodeBrokerKeyMismatch: the server could not prove it holds the pinned
	// broker key (02-crypto "Broker key"); never retried silently.
	CodeBrokerKeyMismatch = "broker_key_mismatch"
	// CodeProtocol: the broker sent something 01-protocol does not allow
	// here (wrong frame type, undecodable frame).
	CodeProtocol = "protocol_error"
	// CodeUnsupported: a message kind this client cannot open yet.
	CodeUnsupported = "unsupported"
	// CodeDecryptFailed: a box or secretbox did not open.
	CodeDecryptFailed = "decrypt_failed"
	// CodeUnverified: a signature (multi envelope or session attestation)
	// did not verify; the message must not be shown under the sender's name.
	CodeUnverified = "unverified"
	// CodeNotForUs: the message is addressed to a key this identity does
	// not hold.
	CodeNotForUs = "not_for_us"
)

// Error is the one error type this package returns for protocol-level
// failures: the broker's own code (from an `error` frame, a failed `ack` or a
// REST error body) or one of the local codes above. It is errors.As-able so
// callers can branch on Code; the underlying cause, when there is one (a
// network error, context.Canceled), is reachable through errors.Unwrap.
type Error struct {
	Code         string
	Message      string
	RetryAfterMs int64
	// Status is the HTTP status of a REST failure (0 for WebSocket errors).
	Status int
	// Candidates lists the matches of an ambiguous_target error, so the
	// CLI can show the user which names or keys to choose from.
	Candidates []wire.Candidate
	// Hint is what to do, when this error knows better than its code's
	// usual advice (an untrusted TLS certificate is no reachability
	// problem); "" otherwise.
	Hint  string
	cause error
}

// HintOf is the Hint of the *Error in err's chain ("" when none).
func HintOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Hint
	}
	return ""
}

func (e *Error) Error() string {
	msg := e.Code
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.RetryAfterMs > 0 {
		msg += fmt.Sprintf(" (retry after %d ms)", e.RetryAfterMs)
	}
	return msg
}

// ErrorCode is the stable code, for callers (the CLI) that map codes to
// exit statuses without importing this package.
func (e *Error) ErrorCode() string { return e.Code }

// Unwrap exposes the cause, so errors.Is(err, context.DeadlineExceeded)
// works on a timeout.
func (e *Error) Unwrap() error { return e.cause }

func newError(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func wrapError(code string, cause error, format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	if cause != nil {
		if msg != "" {
			msg += ": "
		}
		msg += cause.Error()
	}
	return &Error{Code: code, Message: msg, cause: cause}
}

// ctxError maps a context's end to timeout or canceled.
func ctxError(ctx context.Context, what string) *Error {
	err := ctx.Err()
	if context.Cause(ctx) != nil && !errors.Is(context.Cause(ctx), err) {
		err = fmt.Errorf("%w (%v)", err, context.Cause(ctx))
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return wrapError(CodeTimeout, err, "%s", what)
	}
	return wrapError(CodeCanceled, err, "%s", what)
}

// CodeOf returns the Code of an *Error in err's chain, or "" if there is
// none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// isUnreachable reports whether a dial error means nothing answered at the
// address (as opposed to a slow answer, which is a timeout).
func isUnreachable(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	var opErr *net.OpError
	return errors.As(err, &opErr) && opErr.Op == "dial" && !opErr.Timeout()
}

// cannotReach is the message of a connection to the broker at url that
// could not be made, with the reason in words: Go's "dial tcp
// 127.0.0.1:19499: connect: connection refused" (and net/http's "Post
// "…": …" around it) named the address two or three times and said
// nothing a user acts on.
func cannotReach(url string, err error) string {
	return "the broker at " + url + " cannot be reached (" + netReason(err) + ")"
}

// NetReason is why a connection could not be made or was lost, in a few
// words, when err holds a network error; "" otherwise (a broker's own
// refusal keeps its words).
func NetReason(err error) string {
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var errno syscall.Errno
	if err == nil || !(errors.As(err, &opErr) || errors.As(err, &dnsErr) || errors.As(err, &errno)) {
		return ""
	}
	return netReason(err)
}

// netReason is why a connection could not be made, in a few words.
func netReason(err error) string {
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused: nothing listens on that port"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to that host from here"
	case errors.Is(err, syscall.ECONNRESET):
		return "the connection was reset"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "the host name " + dnsErr.Name + " does not resolve"
		}
		if dnsErr.IsTimeout {
			return "looking up the host name " + dnsErr.Name + " timed out: this machine's DNS did not answer"
		}
		return "looking up " + dnsErr.Name + " failed"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}

// MessageOf returns the human message of the *Error in err's chain
// (without its code), or fallback when there is none.
func MessageOf(err error, fallback string) string {
	var e *Error
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	return fallback
}
