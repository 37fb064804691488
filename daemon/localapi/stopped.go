package localapi

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"
)

// StoppedPath is daemon/stopped: written by `daemon down`, removed by
// `daemon up`. While it exists the long-lived clients that start a
// daemon when theirs goes away (`inbox --follow`, `claudemesh mcp`)
// wait for one instead: they restarted it within a second of a `daemon
// down`, with the default flags, so a stop did not stay a stop and
// `daemon down && daemon up --web ADDR` found a daemon already running
// without its flags. A verb the user types still starts one, as does a
// new MCP server; the daemon removes the file once it holds the home and
// listens (not `daemon up` before it starts: a waiting client then
// started a daemon of its own that raced the user's).
func StoppedPath(home string) string { return filepath.Join(Dir(home), "stopped") }

// ErrStoppedByUser is an ErrNoDaemon: the daemon was stopped with
// `daemon down` and is not started again by a client that lost it.
var ErrStoppedByUser = stoppedError{}

type stoppedError struct{}

func (stoppedError) Error() string {
	return "the daemon was stopped with claudemesh daemon down; waiting for claudemesh daemon up (or any verb) to start it"
}

func (stoppedError) Unwrap() error { return ErrNoDaemon }

// MarkStopped records that the user stopped the daemon. A home without
// a daemon directory never had a daemon: nothing to record.
func MarkStopped(home string) error {
	if _, err := os.Stat(Dir(home)); err != nil {
		return nil
	}
	return os.WriteFile(StoppedPath(home), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
}

// ClearStopped removes the record: the user started the daemon.
func ClearStopped(home string) error {
	if err := os.Remove(StoppedPath(home)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// StoppedByUser reports whether `daemon down` stopped the daemon and no
// start has happened since.
func StoppedByUser(home string) bool {
	_, err := os.Lstat(StoppedPath(home))
	return err == nil
}

// Reconnect is Connect for a client that had a daemon and lost it: it
// starts one only if the user did not stop it (ErrStoppedByUser then,
// until something starts it; a running daemon is always returned).
func Reconnect(ctx context.Context, home string) (*Client, error) {
	c, err := Connect(ctx, home, false)
	if !errors.Is(err, ErrNoDaemon) {
		return c, err // running (or a socket not to be used)
	}
	if StoppedByUser(home) {
		return nil, ErrStoppedByUser
	}
	return Connect(ctx, home, true)
}
