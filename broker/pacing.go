package broker

import (
	"time"

	"golang.org/x/time/rate"
)

// Read pacing. A frame refused with rate_limited tells its client when to
// retry (retryAfterMs); until then the connection's reader does not read
// its next frame. A client that honours the refusal loses nothing: it
// sends nothing meanwhile, and what it had already sent is read when the
// budget can take it, instead of being refused in turn. A client that
// does not is held back by TCP's own flow control: its frames wait in
// the kernel's buffers, then its writes block, and the broker spends
// nothing on them. Before this, each frame of a flood was read, peeked
// and answered rate_limited: under `bench --adversary`, ~2,000 client_ack
// frames of 500 ids (28 MB) and the 64 KiB sends past the byte budget a
// run, all on the two cores every mesh shares, until the member's refusal
// budget closed the connection (refusedForRate) and it dialled again.

// maxReadPause bounds one pause: a frame refused for a long wait (a
// large send far over the byte budget) does not hold the connection's
// pongs and close frames longer than this.
const maxReadPause = time.Second

// paceReads keeps the reader from reading the next frame for d (at most
// maxReadPause). Only the reader goroutine calls it (frames are refused
// there), and only it reads readPause.
func (c *conn) paceReads(d time.Duration) {
	c.readPause = max(c.readPause, min(d, maxReadPause))
}

// waitPaced waits out a pause set while the last frame was handled, or
// until the connection ends.
func (c *conn) waitPaced() {
	d := c.readPause
	if d <= 0 {
		return
	}
	c.readPause = 0
	c.b.metrics.limitTripped.WithLabelValues("read_paused").Inc()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.closeNow:
	case <-c.writerDone:
	}
}

// maxRetryAfter bounds the retryAfterMs untilTokens gives: a limit so
// slow that its wait would overflow a Duration still gets a true "not
// before a minute" rather than a negative wait.
const maxRetryAfter = time.Minute

// chargeInvalidFrame spends a frame refused for its shape before its type
// was known (not JSON, a bad reqId) from the connection's frame budget,
// pacing the reads once it is spent: else a stream of junk frames would
// be read and answered as fast as it came, with no limit tripped.
func (c *conn) chargeInvalidFrame() {
	// Reserved, never refused: the frame was read and answered, so it
	// is paid for, in debt if need be, and the pause is until the debt
	// is paid.
	if d := c.frames.Reserve().Delay(); d > 0 {
		c.paceReads(d)
	}
}

// chargeInvalidSend spends a send frame refused for its shape from its
// member's budgets, as an accepted one of its size would: the frame was
// read and parsed all the same, and a stream of 60 KB malformed sends was
// otherwise read at whatever rate it came (--byte-rate never charged).
// Once the budgets are spent the connection's reads are paced.
func (c *conn) chargeInvalidSend(size int) {
	if ref := c.b.reserveSend(c.mem, size); ref != nil {
		c.paceReads(ref.retry)
	}
}

// untilTokens is how long lim takes to hold n tokens (0 for no limiter),
// at most maxRetryAfter. n above the limiter's burst can never be taken
// at once; the wait for a full bucket is given instead.
func untilTokens(lim *rate.Limiter, n float64) time.Duration {
	return untilTokensAt(lim, n, time.Now())
}

// untilTokensAt is untilTokens at now.
func untilTokensAt(lim *rate.Limiter, n float64, now time.Time) time.Duration {
	if lim == nil || lim.Limit() <= 0 || lim.Limit() == rate.Inf {
		return 0
	}
	n = min(n, float64(lim.Burst()))
	missing := n - lim.TokensAt(now)
	if missing <= 0 {
		return 0
	}
	secs := missing / float64(lim.Limit())
	if secs >= maxRetryAfter.Seconds() {
		return maxRetryAfter
	}
	return time.Duration(secs * float64(time.Second))
}

// retryAfterMs is a wait as a refusal's retryAfterMs: rounded up to the
// millisecond (a client that waits a wait rounded down comes back before
// it is over) and at least 1.
func retryAfterMs(d time.Duration) int64 {
	return max(int64((d+time.Millisecond-1)/time.Millisecond), 1)
}
