package client

import (
	"context"
	"time"
)

// A broker that is busy says so with Retry-After (HTTP 429 or 503 before
// the WebSocket upgrade or on REST) or retryAfterMs (an error frame). The
// library waits that long and tries again, a few times, and never past the
// caller's deadline: retrying at once is what turns a crowd of clients
// into a storm, and giving up at once makes a busy broker look down.
const (
	retryAfterAttempts = 3
	retryAfterCap      = 30 * time.Second
)

// waitRetryAfter reports whether err asks to retry later and, if the
// caller's context allows the wait, waits and returns true. attempt counts
// the retries already made.
func waitRetryAfter(ctx context.Context, err error, attempt int) bool {
	d := RetryAfter(err)
	if d <= 0 || attempt >= retryAfterAttempts || ctx.Err() != nil {
		return false
	}
	d = min(d, retryAfterCap)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return false // the answer would come too late anyway
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
