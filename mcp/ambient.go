package mcp

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"claudemesh/internal/fsutil"
	"claudemesh/internal/proc"
)

// An ambient session (plain `claude` after `claudemesh install`) belongs to
// the claude process that runs this server. Its session id is made of that
// process's identity (pid and start time), so a server that claude starts
// again after this one crashed registers the same id: the daemon replaces
// the stale registration with it, so the session keeps its name (not
// NAME-2, which a second live session of the name gets) and its key file
// (sessions/<slug>/<id>.json, one per claude process rather than one per
// start). A server holds its id with an flock on sessions/<slug>/<id>.lock
// for as long as it runs; a second server of the same claude process (two
// mcpServers entries) finds it held and registers a session of its own
// under a new id, as before. A clean exit (stdin closed, SIGTERM, SIGINT)
// deregisters the session, and the daemon removes an ambient session's
// key file once the session is gone.

// ambientID is the session id of claude process pid, or "" when pid does
// not run.
func ambientID(pid int) string {
	id, err := proc.Of(pid)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256([]byte(id.Start))
	return fmt.Sprintf("ambient-%d-%s", pid, hex.EncodeToString(sum[:6]))
}

// claimAmbientID locks claude process pid's session id in the mesh slug's
// sessions directory, returning the id and the held lock file, or nil
// when it cannot (another server of the same process holds it).
func claimAmbientID(home, slug string, pid int, log *slog.Logger) (string, *os.File) {
	id := ambientID(pid)
	if id == "" {
		return "", nil
	}
	dir := filepath.Join(home, "sessions", slug)
	if err := fsutil.EnsurePrivateDir(filepath.Dir(dir)); err != nil {
		return "", nil
	}
	if err := fsutil.EnsurePrivateDir(dir); err != nil {
		return "", nil
	}
	path := filepath.Join(dir, id+".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", nil
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if log != nil {
			log.Info("claudemesh: another claudemesh mcp of this claude process holds its session; registering one of our own", "lock", path)
		}
		return "", nil
	}
	return id, f
}

// close ends an ambient server's session: deregistered at the daemon, so
// its name is free and its key file goes, and the id's lock released. A
// session launch made is launch's to end.
func (l *daemonLink) close() {
	l.mu.Lock()
	reg, api, tok, claim := l.registration, l.api, l.token, l.claim
	l.claim = nil
	l.mu.Unlock()
	if reg != nil && api != nil && tok != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if _, err := api.Do(ctx, "DELETE", "/v1/sessions/"+tok, nil, nil); err != nil {
			l.o.Logger.Warn("claudemesh: could not deregister the session at exit (the daemon drops it once claude exits)", "err", err)
		}
		cancel()
	}
	if claim != nil {
		// Removed while locked: a server that opens it now finds it
		// gone or held; one that opened it before locks a file nobody
		// else can reach, which is the same.
		os.Remove(claim.Name())
		claim.Close()
	}
}
