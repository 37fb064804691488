// Package ratelog lets a log line that something outside the process can
// make repeat without bound (a route dialled every few milliseconds,
// another user's connections) be written once per interval per key, the
// next one saying how many were left out meanwhile.
package ratelog

import (
	"sync"
	"time"
)

// maxKeys bounds the keys remembered. Past it, a new key's lines share
// one overflow key (one line per interval for all of them together), so
// a flood of distinct keys (many source hosts) costs neither memory nor
// lines. Keys whose interval has passed make room first: at once when
// nothing was left out, after a second interval when something was (its
// count then goes to the overflow key's next line). Keys that only ever
// left out lines once stayed for good, so a burst of 256 keys used
// twice sent every later key to the overflow key for good.
const maxKeys = 256

// overflowKey holds the lines of keys that found no room.
const overflowKey = "\x00overflow"

// Limiter remembers, per key, when a line last went out and how many were
// left out since. The zero value is ready; Every must be set.
type Limiter struct {
	Every time.Duration
	// Burst lines of a key may go out in one interval (0 means 1): a
	// few lines in a row that mean something each (two commands run in
	// the same second) are all written; a loop is cut after them.
	Burst int

	mu   sync.Mutex
	seen map[string]*entry
}

type entry struct {
	at    time.Time // when the interval began (its first line)
	lines int       // written in the interval
	n     int       // left out since the last line written
}

// Allow reports whether a line of key may be written now, and how many of
// key were left out since the last one that was.
func (l *Limiter) Allow(key string) (ok bool, skipped int) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[string]*entry{}
	}
	e := l.seen[key]
	if e == nil && len(l.seen) >= maxKeys {
		folded := 0
		for k, old := range l.seen {
			if k == overflowKey {
				continue
			}
			if age := now.Sub(old.at); (old.n == 0 && age >= l.Every) || age >= 2*l.Every {
				folded += old.n
				delete(l.seen, k)
			}
		}
		if folded > 0 {
			o := l.seen[overflowKey]
			if o == nil {
				// Its first line is due at once, to report them.
				o = &entry{at: now.Add(-l.Every), lines: max(l.Burst, 1)}
				l.seen[overflowKey] = o
			}
			o.n += folded
		}
		if len(l.seen) >= maxKeys {
			key = overflowKey
			e = l.seen[key]
		}
	}
	if e != nil && now.Sub(e.at) < l.Every {
		if e.lines < max(l.Burst, 1) {
			e.lines++
			return true, 0
		}
		e.n++
		return false, 0
	}
	if e != nil {
		skipped = e.n
	}
	l.seen[key] = &entry{at: now, lines: 1}
	return true, skipped
}

// Keys is how many keys are remembered (tests).
func (l *Limiter) Keys() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen)
}

// Age makes key's last line older by d (tests).
func (l *Limiter) Age(key string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.seen[key]; e != nil {
		e.at = e.at.Add(-d)
	}
}
