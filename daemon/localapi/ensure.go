package localapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"
)

// Probe reports whether a daemon answers on home's socket.
func Probe(ctx context.Context, home string) (*Client, *Version, error) {
	c := New(ClientSocket(home))
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil {
		return nil, nil, err
	}
	return c, v, nil
}

// listening returns a checked connection to the socket when a daemon of
// this user accepts connections on it, nil when none does; an unsafe
// socket is an error (ErrUnsafeSocket).
func listening(sock string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := dialChecked(ctx, sock)
	if err != nil {
		if errors.Is(err, ErrUnsafeSocket) {
			return nil, err
		}
		return nil, nil
	}
	return c, nil
}

// ErrNoDaemon is returned by Connect when no daemon runs and none may be
// started.
var ErrNoDaemon = errors.New("the daemon is not running")

// StartError is Connect's answer when it ran `daemon up` and no daemon came
// up: Reason is what `daemon up` said (its first line: a damaged daemon.db,
// a bad flag, the daemon exiting at start), Hint what it advised. It is an
// ErrNoDaemon.
type StartError struct {
	Reason string
	Hint   string
}

func (e *StartError) Error() string { return "the daemon could not be started: " + e.Reason }

func (e *StartError) Unwrap() error { return ErrNoDaemon }

// startError reads what a failed `daemon up` printed: its "✘ …" line is
// the reason, a following "→ …" line the hint.
func startError(out []byte, err error) *StartError {
	e := &StartError{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case e.Reason == "" && strings.HasPrefix(line, "✘"):
			e.Reason = strings.TrimSpace(strings.TrimPrefix(line, "✘"))
		case e.Reason != "" && e.Hint == "" && strings.HasPrefix(line, "→"):
			e.Hint = strings.TrimSpace(strings.TrimPrefix(line, "→"))
		}
	}
	if e.Reason == "" {
		e.Reason = strings.TrimSpace(string(out))
		if i := strings.IndexByte(e.Reason, '\n'); i >= 0 {
			e.Reason = e.Reason[:i]
		}
	}
	if e.Reason == "" {
		e.Reason = "claudemesh daemon up failed (" + err.Error() + ")"
	}
	return e
}

// Connect returns a client for home's daemon. When none answers and
// autostart is true it runs `claudemesh --home HOME daemon up` (which
// detaches the daemon and waits for its socket) and tries again; the thin
// CLI verbs use this so the first `send` of the day just works.
func Connect(ctx context.Context, home string, autostart bool) (*Client, error) {
	// A daemon that accepts a connection on the socket is there (a stale
	// socket file refuses it). Dialling, rather than a version round trip,
	// keeps the warm path of every thin verb to the one request it makes,
	// and that request goes over the connection dialled here.
	sock := ClientSocket(home)
	if conn, err := listening(sock); conn != nil {
		c := New(sock)
		c.first.set(conn)
		return c, nil
	} else if err != nil {
		return nil, err // never start, or talk to, a daemon over an unsafe socket
	}
	if !autostart {
		return nil, ErrNoDaemon
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoDaemon, err)
	}
	cmd := exec.CommandContext(ctx, exe, "--home", home, "--quiet", "daemon", "up")
	cmd.Env = os.Environ()
	// The child detaches the real daemon with its own log; nothing it
	// prints is needed here, and inheriting our stdout could make a caller
	// that waits for our output wait for the daemon too.
	if out, err := cmd.CombinedOutput(); err != nil {
		// Another verb's `daemon up` may have started it at the same
		// moment: that one serves.
		if c, _, perr := Probe(ctx, home); perr == nil {
			return c, nil
		}
		return nil, startError(out, err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if c, _, err := Probe(ctx, home); err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, &StartError{Reason: "it was started but did not answer within 3s", Hint: "see " + LogPath(home)}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}
