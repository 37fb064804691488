package broker

import (
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// The send rate of one member is limited twice: in messages (--rate,
// --burst) and in bytes (--byte-rate, --byte-burst). The message limit
// alone let one member write 200 messages of 64 KiB a second, 13 MB/s of
// ciphertext, into the committer and the disk that every mesh shares
// (bench --adversary, "self": honest p99 ×1.6 on a quiet machine); the
// byte limit bounds what one member makes the broker read, store and
// fsync, whatever its messages' sizes. Both count the member key and all
// its sessions together, over all their connections, so a reconnect buys
// no fresh budget.

// newByteLimiter is a member's byte budget, nil when --byte-rate is 0.
// Its burst is at least one frame of --max-frame: a send the frame limit
// allows must be able to pass the byte limit too.
func newByteLimiter(cfg Config) *rate.Limiter {
	if cfg.ByteRate <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(cfg.ByteRate), int(max(cfg.ByteBurst, cfg.MaxFrame, 1)))
}

// sendRefusal is a send refused by a member's rate limits.
type sendRefusal struct {
	limit string // the limitTripped label: "rate" or "byte_rate"
	msg   string
	retry time.Duration
}

// reserveSend takes one message and size bytes of mem's budgets, or
// neither: a refused send spends nothing, so a client that waits the
// retryAfterMs it is told gets through. nil means the send may go ahead.
func (b *Broker) reserveSend(mem *member, size int) *sendRefusal {
	return b.checkSend(mem, size, true)
}

// refuseSendEarly is reserveSend's answer for a frame of size bytes
// without taking anything: handle asks it before decoding a send, so a
// member past its budgets does not make the broker parse every 64 KiB
// frame it goes on streaming (bench --adversary, "self": ~100 refused
// frames a run, each decoded in ~0.3–0.8 ms before this). A frame it lets
// through is decoded, validated and reserved as before.
func (b *Broker) refuseSendEarly(mem *member, size int) *sendRefusal {
	if (mem.limiter == nil || mem.limiter.Tokens() >= 1) && (mem.bytes == nil || mem.bytes.Tokens() >= float64(size)) {
		return nil // the common case, without a reservation
	}
	return b.checkSend(mem, size, false)
}

// checkSend is reserveSend, which keeps what it takes, and
// refuseSendEarly's check, which gives it back (keep false).
func (b *Broker) checkSend(mem *member, size int, keep bool) *sendRefusal {
	now := time.Now()
	var msgs *rate.Reservation
	if lim := mem.limiter; lim != nil {
		msgs = lim.ReserveN(now, 1)
		if d := msgs.DelayFrom(now); d > 0 {
			msgs.CancelAt(now)
			return &sendRefusal{limit: "rate", msg: "sending too fast; retry later", retry: d}
		}
	}
	if lim := mem.bytes; lim != nil {
		r := lim.ReserveN(now, size)
		if d := r.DelayFrom(now); !r.OK() || d > 0 {
			r.CancelAt(now)
			if msgs != nil {
				msgs.CancelAt(now)
			}
			b.metrics.limitTripped.WithLabelValues("byte_rate").Inc()
			if !r.OK() {
				d = time.Second
			}
			return &sendRefusal{limit: "byte_rate", retry: d,
				msg: fmt.Sprintf("this member is sending more than %s/s (--byte-rate); retry later", humanBytes(b.cfg.ByteRate))}
		}
		if !keep {
			r.CancelAt(now)
		}
	}
	if !keep && msgs != nil {
		msgs.CancelAt(now)
	}
	return nil
}
