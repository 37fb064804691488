package broker

import (
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// fetch_queued answers with up to half of --send-buffer (4 MiB) of a
// member's queue and settles nothing: only client_ack does. A member
// that fetched its own backlog of 64 KiB self-DMs in a loop, never
// acking, made the broker read, encode and write 4 MiB an answer, up to
// the 100 frames a second every connection may send: the same re-send
// amplifier --resume-window closes for pushes, two orders of magnitude
// larger. So the bytes of a member's fetch_queued answers (its key and
// sessions together, all connections) are limited by --fetch-rate (4 MiB/s,
// a burst of eight seconds' worth). A daemon syncing its inbox fetches a
// page, stores it and acks it, and pages on only while there is more:
// it stays within the burst for a backlog of 32 MiB, and pushes deliver
// the rest anyway.

// fetchFloor is the least budget a fetch is answered with: room for the
// largest push (64 KiB of ciphertext is ~88 KB of base64) or receipt, so
// an answer always carries at least one entry.
const fetchFloor = 128 << 10

// newFetchLimiter is a member's fetch budget, nil when --fetch-rate is 0.
func newFetchLimiter(cfg Config) *rate.Limiter {
	if cfg.FetchRate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(cfg.FetchRate), int(max(8*cfg.FetchRate, int64(cfg.fetchBytes()), fetchFloor)))
}

// fetchBudget is how many bytes this fetch_queued answer may carry, or
// false once it refused the fetch (rate_limited with retryAfterMs): the
// member's fetch budget is under fetchFloor.
func (c *conn) fetchBudget(reqID string) (int, bool) {
	budget := c.b.cfg.fetchBytes()
	lim := c.mem.fetches
	if lim == nil {
		return budget, true
	}
	avail := int(lim.Tokens())
	if avail < fetchFloor {
		wait := time.Duration(float64(fetchFloor-avail) / float64(lim.Limit()) * float64(time.Second))
		c.b.metrics.limitTripped.WithLabelValues("fetch_rate").Inc()
		c.sendRateLimited(reqID, fmt.Sprintf("this member fetched more than %s/s of its queue (--fetch-rate); ack what was fetched, and retry later", humanBytes(c.b.cfg.FetchRate)), wait)
		return 0, false
	}
	return min(budget, avail), true
}

// chargeFetch takes an answer's bytes from the member's fetch budget.
// Two fetches at once may both have seen the budget; the second then
// leaves it in debt, which the next fetches wait out.
func (c *conn) chargeFetch(size int) {
	if lim := c.mem.fetches; lim != nil {
		lim.ReserveN(time.Now(), min(size, lim.Burst()))
	}
}
