package web

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

// Login links and sessions. A login token is single-use and lives LoginTTL;
// using it creates a session whose id travels only in an HttpOnly,
// SameSite=Strict cookie. Both live in the daemon's memory only: a daemon
// restart logs every page out (run `claudemesh ui` again), and nothing
// secret about the page is ever written to disk.
const (
	LoginTTL   = 60 * time.Second
	SessionTTL = 7 * 24 * time.Hour

	// Bounds, so a local process minting links in a loop cannot grow the
	// daemon's memory: the oldest entry makes room for a new one.
	maxLogins   = 16
	maxSessions = 32
)

type auth struct {
	now func() time.Time

	mu       sync.Mutex
	logins   map[string]time.Time // sha256(token) → expiry
	sessions map[string]time.Time // sha256(session id) → expiry
}

func newAuth(now func() time.Time) *auth {
	return &auth{now: now, logins: map[string]time.Time{}, sessions: map[string]time.Time{}}
}

// randomToken is 32 random bytes in hex.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails (crypto/rand panics rather)
	return hex.EncodeToString(b)
}

// digest is what the maps hold: a memory dump of the daemon shows no usable
// token, and lookups do not compare secrets byte by byte.
func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// newLogin mints a login token.
func (a *auth) newLogin() (string, time.Time) {
	tok := randomToken()
	exp := a.now().Add(LoginTTL)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.prune(a.logins, maxLogins)
	a.logins[digest(tok)] = exp
	return tok, exp
}

// redeem consumes a login token and returns a new session id, or "" when
// the token is unknown, used or expired. A token is deleted on first use
// whatever the outcome, so it never works twice.
func (a *auth) redeem(tok string) (string, time.Time) {
	if tok == "" {
		return "", time.Time{}
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	d := digest(tok)
	exp, ok := a.logins[d]
	delete(a.logins, d)
	if !ok || !now.Before(exp) {
		return "", time.Time{}
	}
	a.prune(a.sessions, maxSessions)
	sid := randomToken()
	sexp := now.Add(SessionTTL)
	a.sessions[digest(sid)] = sexp
	return sid, sexp
}

// valid reports whether a session id is live.
func (a *auth) valid(sid string) bool {
	if sid == "" {
		return false
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	d := digest(sid)
	exp, ok := a.sessions[d]
	if ok && !now.Before(exp) {
		delete(a.sessions, d)
		return false
	}
	return ok
}

// prune drops expired entries and, when m is still full, the one that
// expires first. Caller holds a.mu.
func (a *auth) prune(m map[string]time.Time, limit int) {
	now := a.now()
	for k, exp := range m {
		if !now.Before(exp) {
			delete(m, k)
		}
	}
	for len(m) >= limit {
		var oldest string
		var at time.Time
		for k, exp := range m {
			if oldest == "" || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(m, oldest)
	}
}
