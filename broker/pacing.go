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
	case <-c.writerDone:
	}
}

// untilTokens is how long lim takes to hold n tokens (0 for no limiter).
func untilTokens(lim *rate.Limiter, n float64) time.Duration {
	if lim == nil || lim.Limit() <= 0 || lim.Limit() == rate.Inf {
		return 0
	}
	missing := n - lim.Tokens()
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / float64(lim.Limit()) * float64(time.Second))
}
