package localapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Unanswering is a daemon that runs for a home but cannot be reached on
// its socket: the socket file was removed while it ran (a tmp cleaner, a
// user tidying up), or it does not answer. Its pid file names it and it
// holds daemon.db's lock, so no other daemon can start for the home until
// it stops.
type Unanswering struct {
	PID    int    // DaemonPID; 0 when it cannot be told
	Socket string // the path the CLI dials
	// Missing: no file at Socket (else one is there that does not answer).
	Missing bool
	dbPath  string
}

// Message says what is wrong, in words for the user.
func (u *Unanswering) Message() string {
	who := "a daemon"
	if u.PID > 0 {
		who = fmt.Sprintf("a daemon (pid %d)", u.PID)
	}
	if u.Missing {
		return fmt.Sprintf("%s is running for this home, but its socket %s was removed while it ran, so no command can reach it (and no other daemon can start while it holds daemon.db)", who, u.Socket)
	}
	return fmt.Sprintf("%s is running for this home, but it does not answer on its socket %s (and no other daemon can start while it holds daemon.db)", who, u.Socket)
}

// Hint says how to fix it; inv is how to invoke the CLI for this home
// (config.Invocation).
func (u *Unanswering) Hint(inv string) string {
	if u.PID > 0 {
		return "stop it and start a new one: " + inv + " daemon down && " + inv + " daemon up"
	}
	return "its pid cannot be told: find it with `fuser -v " + u.dbPath + "`, stop it (kill PID), then " + inv + " daemon up"
}

// FindUnanswering reports a daemon that holds home's daemon.db while no
// daemon answers on the socket; call it only after a Probe failed. It
// says nothing (nil) while a daemon is starting (the start lock is
// held: it has daemon.db and is opening the socket) or when no process
// holds daemon.db.
func FindUnanswering(home string) *Unanswering {
	u, starting := findHolder(home)
	if starting {
		return nil
	}
	return u
}

// findHolder is FindUnanswering's finding, and whether the holder of
// daemon.db is still starting (the start lock is held: it has daemon.db
// and is opening the socket).
func findHolder(home string) (u *Unanswering, starting bool) {
	db := DBPath(home)
	if !fileLocked(db) {
		return nil, false
	}
	starting = fileLocked(filepath.Join(Dir(home), "start.lock"))
	u = &Unanswering{Socket: ClientSocket(home), dbPath: db}
	u.PID, _ = DaemonPID(home)
	if _, err := os.Lstat(u.Socket); errors.Is(err, fs.ErrNotExist) {
		u.Missing = true
	}
	return u, starting
}

// fileLocked reports whether another process holds an exclusive flock on
// path (bbolt's lock on daemon.db, the start lock).
func fileLocked(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// StillUnanswering is FindUnanswering for a verb that is about to say so:
// a daemon starting holds daemon.db (with the start lock, and a moment
// after it without) before its socket answers, so a holder is waited for
// up to patience (a few seconds, as long as daemon up waits for a socket)
// and reported only if its socket never answered and it is not starting.
// nil when none is found, or the daemon answers meanwhile (then Probe
// succeeds).
func StillUnanswering(ctx context.Context, home string, patience time.Duration) *Unanswering {
	deadline := time.Now().Add(patience)
	for {
		u, starting := findHolder(home)
		if u == nil {
			return nil
		}
		if _, _, err := Probe(ctx, home); err == nil {
			return nil
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			if starting {
				return nil // a start that takes long: not this finding
			}
			return u
		}
		select {
		case <-ctx.Done():
			return u
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ErrStarting means a daemon is starting for the home: it holds the start
// lock while it opens (perhaps creates) daemon.db.
var ErrStarting = errors.New("a daemon is starting for this home")

// WithoutStart runs fn while no daemon start can begin for home (a shared
// hold of the start lock that starts take exclusively), so what fn reads
// of daemon.db is not a file a start is creating; ErrStarting when a start
// holds the lock now. A home whose daemon directory does not exist runs
// fn as it is (no daemon ever started there).
func WithoutStart(home string, fn func() error) error {
	f, err := os.OpenFile(filepath.Join(Dir(home), "start.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		return fn()
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return ErrStarting
		}
		return err
	}
	return fn() // the lock goes with f
}
