package web

import (
	"log/slog"
	"time"

	"claudemesh/internal/ratelog"
)

// refusalLog logs the page's refusals of connections once per kind (and
// uid) per refusalEvery, with how many were refused since: another local
// user looping on the page's port wrote ~500 bytes to daemon.log per
// connection, which nothing capped (a new user's trial: 1 MB for 2,000).
type refusalLog struct{ lines ratelog.Limiter }

// refusalEvery is how often one kind of refusal is logged.
const refusalEvery = time.Minute

func newRefusalLog() *refusalLog { return &refusalLog{lines: ratelog.Limiter{Every: refusalEvery}} }

// warn logs msg with args unless a line of key went out within
// refusalEvery; then it only counts it, and the next line says how many.
func (l *refusalLog) warn(log *slog.Logger, key, msg string, args ...any) {
	ok, n := l.lines.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "refusedSinceLastLine", n)
	}
	log.Warn(msg, args...)
}
