package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"
)

// Login links and sessions. A login token is single-use and lives LoginTTL;
// using it creates a session whose id travels only in an HttpOnly,
// SameSite=Strict cookie, and a page key that the login's redirect hands
// to the tab in the URL's fragment (never sent to a server): the tab keeps
// it in sessionStorage, which belongs to the page's origin (port
// included), and sends it as a header with every API call. A cookie is
// scoped by host, not port, so every server on 127.0.0.1 receives it; the
// page key never leaves the tab, and the API needs both. Both live in the daemon's memory only: a daemon
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
	sessions map[string]session   // sha256(session id) → session
}

type session struct {
	exp time.Time
	key string // sha256(page key)
}

func newAuth(now func() time.Time) *auth {
	return &auth{now: now, logins: map[string]time.Time{}, sessions: map[string]session{}}
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
	prune(a.logins, maxLogins, a.now(), func(t time.Time) time.Time { return t })
	a.logins[digest(tok)] = exp
	return tok, exp
}

// redeem consumes a login token and returns a new session id and its page
// key, or "" when the token is unknown, used or expired. A token is deleted
// on first use whatever the outcome, so it never works twice.
func (a *auth) redeem(tok string) (sid, pageKey string, exp time.Time) {
	if tok == "" {
		return "", "", time.Time{}
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	d := digest(tok)
	lexp, ok := a.logins[d]
	delete(a.logins, d)
	if !ok || !now.Before(lexp) {
		return "", "", time.Time{}
	}
	prune(a.sessions, maxSessions, now, func(s session) time.Time { return s.exp })
	sid, pageKey = randomToken(), randomToken()
	exp = now.Add(SessionTTL)
	a.sessions[digest(sid)] = session{exp: exp, key: digest(pageKey)}
	return sid, pageKey, exp
}

// valid reports whether a session id is live.
func (a *auth) valid(sid string) bool {
	_, ok := a.lookup(sid)
	return ok
}

// validKey reports whether a session id is live and pageKey is its page
// key.
func (a *auth) validKey(sid, pageKey string) bool {
	s, ok := a.lookup(sid)
	return ok && pageKey != "" && subtle.ConstantTimeCompare([]byte(s.key), []byte(digest(pageKey))) == 1
}

func (a *auth) lookup(sid string) (session, bool) {
	if sid == "" {
		return session{}, false
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	d := digest(sid)
	s, ok := a.sessions[d]
	if ok && !now.Before(s.exp) {
		delete(a.sessions, d)
		return session{}, false
	}
	return s, ok
}

// revoke ends a session (logout).
func (a *auth) revoke(sid string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.sessions, digest(sid))
}

// prune drops expired entries and, when m is still full, the one that
// expires first. Caller holds a.mu.
func prune[V any](m map[string]V, limit int, now time.Time, expiry func(V) time.Time) {
	for k, v := range m {
		if !now.Before(expiry(v)) {
			delete(m, k)
		}
	}
	for len(m) >= limit {
		var oldest string
		var at time.Time
		for k, v := range m {
			if exp := expiry(v); oldest == "" || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(m, oldest)
	}
}
