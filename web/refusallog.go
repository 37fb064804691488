package web

import (
	"log/slog"
	"sync"
	"time"
)

// refusalLog logs the page's refusals of connections once per kind (and
// uid) per refusalEvery, with how many were refused since: another local
// user looping on the page's port wrote ~500 bytes to daemon.log per
// connection, which nothing capped (a new user's trial: 1 MB for 2,000).
type refusalLog struct {
	mu   sync.Mutex
	seen map[string]*refusals
}

type refusals struct {
	at time.Time
	n  int
}

// refusalEvery is how often one kind of refusal is logged.
const refusalEvery = time.Minute

// warn logs msg with args unless a line of key went out within
// refusalEvery; then it only counts it, and the next line says how many.
func (l *refusalLog) warn(log *slog.Logger, key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	if l.seen == nil || len(l.seen) > 256 {
		l.seen = map[string]*refusals{} // many uids or addresses: start over, bounded
	}
	r := l.seen[key]
	if r != nil && now.Sub(r.at) < refusalEvery {
		r.n++
		l.mu.Unlock()
		return
	}
	n := 0
	if r != nil {
		n = r.n
	}
	l.seen[key] = &refusals{at: now}
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "refusedSinceLastLine", n)
	}
	log.Warn(msg, args...)
}
