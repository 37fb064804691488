package broker

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"claudemesh/store"
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

// sendNow is the time on the clock of mem's send budgets.
func (mem *member) sendNow() time.Time {
	if mem.sendClock != nil {
		return mem.sendClock()
	}
	return time.Now()
}

// refuseSendEarly is reserveSend's answer for a frame of size bytes
// without taking anything: handle asks it before decoding a send, so a
// member past its budgets does not make the broker parse every 64 KiB
// frame it goes on streaming (bench --adversary, "self": ~100 refused
// frames a run, each decoded in ~0.3–0.8 ms before this). A frame it lets
// through is decoded, validated and reserved as before.
func (b *Broker) refuseSendEarly(mem *member, size int) *sendRefusal {
	now := mem.sendNow()
	if (mem.limiter == nil || mem.limiter.TokensAt(now) >= 1) && (mem.bytes == nil || mem.bytes.TokensAt(now) >= float64(size)) {
		return nil // the common case, without a reservation
	}
	return b.checkSend(mem, size, false)
}

// checkSend is reserveSend, which keeps what it takes, and
// refuseSendEarly's check, which gives it back (keep false).
func (b *Broker) checkSend(mem *member, size int, keep bool) *sendRefusal {
	now := mem.sendNow()
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

// What a send costs: one rule for every way a send or topic post comes
// in (a `send` frame, a REST post). It is charged one message (--rate)
// and its bytes (--byte-rate) when it is read, except:
//
//   - A read that a refused earlier read of the same clientMessageId paid
//     for (a credit: held behind a refused send of its line, or refused
//     itself after it was charged with a code that says to send it
//     again) uses the credit instead (sendorder.go prepay; restCredits).
//   - A send the broker answers from its idempotency records (a duplicate
//     of a stored message: a retry after a lost ack) stores nothing: its
//     bytes move to the member's retry allowance (retryBytes, as large as
//     the byte budget) once the commit says so (refundBytes), and one the
//     byte budget would refuse is read against the retry allowance
//     instead when the store already holds its clientMessageId
//     (storedAlready); its commit then answers it from the record or, if
//     there is none any more, refuses it rate_limited (free), so it never
//     stores new bytes past the budget. Retries cost nothing of what the
//     member may send anew, and the work they make (read, decode, answer)
//     stays within the retry allowance and --rate, of which each is one
//     message: neither a stream of duplicates nor frames naming a stored
//     clientMessageId make the broker do more than twice --byte-rate.

// sendCharge is what one read of a send was charged.
type sendCharge struct {
	bytes int  // taken from the byte budget, now or by the credit it used
	paid  bool // taken now: a refusal to send it again leaves a credit
	free  bool // let through without its bytes as a stored message's retry
}

// chargeSend charges a read of a send of size bytes to mem's budgets by
// the rule above. credit uses a credit of the read's clientMessageId and
// returns the bytes it paid for; stored says whether the store holds the
// clientMessageId already (asked only when the byte budget refuses).
func (b *Broker) chargeSend(mem *member, size int, credit func() (int, bool), stored func() bool) (sendCharge, *sendRefusal) {
	if n, ok := credit(); ok {
		return sendCharge{bytes: n}, nil
	}
	ref := b.reserveSend(mem, size)
	if ref == nil {
		return sendCharge{bytes: size, paid: true}, nil
	}
	if ref.limit != "byte_rate" || !mayRetry(mem, size) || !stored() {
		return sendCharge{}, ref
	}
	now := mem.sendNow()
	var retry *rate.Reservation
	if lim := mem.retryBytes; lim != nil {
		if retry = lim.ReserveN(now, size); !retry.OK() || retry.DelayFrom(now) > 0 {
			retry.CancelAt(now)
			return sendCharge{}, ref
		}
	}
	if ref := b.reserveSend(mem, 0); ref != nil {
		if retry != nil {
			retry.CancelAt(now)
		}
		return sendCharge{}, ref // its message
	}
	return sendCharge{free: true}, nil
}

// mayRetry reports whether mem's retry allowance has size bytes now (a
// check without taking them: refuseSendEarly asks it before the store).
func mayRetry(mem *member, size int) bool {
	return mem.retryBytes == nil || mem.retryBytes.TokensAt(mem.sendNow()) >= float64(size)
}

// storedAlready reports whether sender's clientMessageId cmid is in the
// mesh's idempotency records (of topic posts when topic, else of
// messages): a send of it is answered from them.
func (b *Broker) storedAlready(meshID, sender, cmid string, topic bool) bool {
	if cmid == "" {
		return false
	}
	found := false
	b.store.View(func(tx *store.Tx) error {
		var err error
		if topic {
			_, err = store.LookupTopicIdempotent(tx, meshID, sender, cmid)
		} else {
			_, err = store.LookupIdempotent(tx, meshID, sender, cmid)
		}
		found = err == nil
		return nil
	})
	return found
}

// refundBytes moves n bytes charged to mem's byte budget for a send that
// stored nothing (answered from idempotency) to its retry allowance: the
// budget gets them back (never past its burst: as if it had not been
// charged) when the allowance can take them now, else they stay charged.
func (b *Broker) refundBytes(mem *member, n int) {
	lim := mem.bytes
	if lim == nil || n <= 0 {
		return
	}
	// One refund at a time reads the room and fills it; sends taken
	// meanwhile only make the room larger than what is given back.
	mem.refundMu.Lock()
	defer mem.refundMu.Unlock()
	now := mem.sendNow()
	if r := mem.retryBytes; r != nil {
		if res := r.ReserveN(now, n); !res.OK() || res.DelayFrom(now) > 0 {
			res.CancelAt(now)
			return
		}
	}
	if room := float64(lim.Burst()) - lim.TokensAt(now); room >= 1 {
		lim.ReserveN(now, -int(min(float64(n), room))) // a negative reservation adds tokens
	}
}

// sendCredits are the credits of a member's REST posts (restCredits): a
// post refused after it was charged, with a code that says to post it
// again, is not charged again when it comes again, as a send frame on
// its connection (sendLines.prepaid). At most maxPrepaid a member.
type sendCredits struct {
	mu sync.Mutex
	m  map[string]prepaidCredit
}

// take uses the credit of cmid for a read of size bytes of the message
// fp fingerprints (takeCredit).
func (sc *sendCredits) take(cmid string, size int, fp func() string) (int, bool) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return takeCredit(sc.m, cmid, size, fp)
}

// put leaves a credit of n bytes for cmid, the message fp fingerprints.
func (sc *sendCredits) put(cmid string, n int, fp string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	putCredit(&sc.m, cmid, prepaidCredit{size: n, fp: fp})
}
