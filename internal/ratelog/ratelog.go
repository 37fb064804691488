// Package ratelog lets a log line that something outside the process can
// make repeat without bound (a route dialled every few milliseconds,
// another user's connections) be written once per interval per key, the
// next one saying how many were left out meanwhile.
package ratelog

import (
	"sync"
	"time"
)

// maxKeys bounds the keys remembered: past it the memory starts over, so
// a flood of distinct keys costs lines, never memory.
const maxKeys = 256

// Limiter remembers, per key, when a line last went out and how many were
// left out since. The zero value is ready; Every must be set.
type Limiter struct {
	Every time.Duration

	mu   sync.Mutex
	seen map[string]*entry
}

type entry struct {
	at time.Time
	n  int
}

// Allow reports whether a line of key may be written now, and how many of
// key were left out since the last one that was.
func (l *Limiter) Allow(key string) (ok bool, skipped int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil || len(l.seen) > maxKeys {
		l.seen = map[string]*entry{}
	}
	e := l.seen[key]
	if e != nil && now.Sub(e.at) < l.Every {
		e.n++
		return false, 0
	}
	if e != nil {
		skipped = e.n
	}
	l.seen[key] = &entry{at: now}
	return true, skipped
}

// Age makes key's last line older by d (tests).
func (l *Limiter) Age(key string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.seen[key]; e != nil {
		e.at = e.at.Add(-d)
	}
}
