package broker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// One sender's messages to one target keep their order (docs/protocol.md).
// The broker commits one connection's sends in the order it reads them and
// keeps FIFO per recipient from there. But a send it refuses with a code
// that says "again later" (rate_limited, recipient_queue_full, unavailable,
// internal, shutting_down) leaves that order, while the sends a pipelining
// client wrote behind it, before it read the refusal, go on: after a
// cluster fail-over a daemon's backlog of 300 DMs to one member reached it
// with a quarter out of order, each refused `unavailable` while the node
// caught up with the cluster's log and one a moment behind it accepted.
//
// So such a refusal holds its line, the connection's sends to that
// targetSpec: a send of the line read after the refused one, that the
// broker would otherwise take, is refused too, with the same code, until
// the refused one (its clientMessageId) comes again; what is read after
// that goes on. What a client sends again in order goes through in order.
// A send already queued in the committer behind the refused one is refused
// as well: the engines run the refused hook on their writer goroutine
// before they run any later write (store.Refuser).
//
// The broker cannot tell a send written before the client read the
// refusal from one written after, as a new message by a client that gave
// up on the refused one: a hold lasts Config.LineHold (2 s) at most, far
// longer than a client takes to read its acks, so a client that drops a
// refused message (or sends it again under a new id) is refused no longer
// than that. That time is the connection's reading clock (clock): only
// the time the broker waits for the client's next frame counts, not the
// time it takes over the frames the client had already written, nor the
// pauses it makes before reading on after a rate_limited (pacing.go).
// On the wall clock a stream of large sends past --byte-rate (a refusal,
// a pause of up to a second, a held send, another refusal, ...) outlasted
// the hold by the broker's own doing, as did a backlog read slowly on a
// loaded machine: a send behind the refused one was accepted ahead of
// it, and a later refusal held the refused one's resend in turn. (It
// was 10 s: a spec-built client that drops a rate-limited status line
// and sends the next was refused rate_limited that long.) A topic post's
// stale_key_gen does not hold: a client posts under the new key
// generation, and the posts behind the refused one, sealed under the old
// one, are refused for that themselves. A connection keeps holds on at
// most maxHeldLines targets (past that a new refusal holds nothing), each
// with at most maxLineHolds holds; a new connection starts with none.
const (
	maxHeldLines  = 256
	maxLineHolds  = 8
	heldRetryMsOf = 1000 // retryAfterMs of a held send whose hold has none
)

// A send refused after it was charged to its member's budgets (held
// behind a refused one of its line, or refused itself with a code that
// says to send it again, sendrate.go) is paid for: the broker read it.
// Its next read on the connection, the same clientMessageId, is not
// charged again: a pipelining client paid twice for each held send (once
// held, once taken), and, far past --byte-rate, most of its sends are held
// once. Only a send that was charged leaves such a credit, and a read
// that used one leaves none if it is refused again: each charge buys at
// most one more read, and what the broker stores stays within the budget.
// A connection keeps at most maxPrepaid credits (past that, a refused
// send is charged again when it comes again); a new connection has none.
// A credit is the message's that was charged, by its fingerprint (target,
// nonce, ciphertext, keys): another frame under its clientMessageId (to
// another recipient, another body) is charged as any send and leaves the
// credit to the message it was bought for, so a credit pays for at most
// the bytes charged and the envelope's slack.
const (
	maxPrepaid = 1024
	// prepaidSlack is how much larger than its prepaid read a send may
	// be and still use the credit: the same message sent again may carry
	// another reqId (a frame's envelope, not its body).
	prepaidSlack = 256
)

// holdsLine reports whether a refusal with code holds the line: the codes
// after which a client sends the message again.
func holdsLine(code string) bool {
	switch code {
	case wire.CodeRateLimited, wire.CodeRecipientQueueFull, wire.CodeUnavailable, wire.CodeInternal,
		wire.CodeShuttingDown:
		return true
	}
	return false
}

// lineHold is one refused send: the sends of its line read after it
// (place > from) and before it came again (place < until, once until is
// set) are refused.
type lineHold struct {
	from, until uint64
	cmid, code  string
	retryMs     int64
	size        int           // the refused send's frame, in bytes
	at          time.Duration // on the connection's reading clock
}

// sendLines is a connection's holds, by targetSpec.
type sendLines struct {
	mu    sync.Mutex
	ttl   time.Duration // Config.LineHold
	read  uint64        // places handed out (reader goroutine)
	holds map[string][]lineHold
	// prepaid: clientMessageId → the bytes of a read of it that was
	// charged and refused (maxPrepaid).
	prepaid map[string]prepaidCredit
	// The reading clock: how long the reader has waited for the client's
	// frames in all, and since when it waits now (monoNow; 0 when it
	// does not).
	idle    atomic.Int64
	waiting atomic.Int64
}

// monoBase is the origin of monoNow, the monotonic clock in nanoseconds.
var monoBase = time.Now()

func monoNow() int64 { return int64(time.Since(monoBase)) + 1 }

// wait marks the reader waiting for the client's next frame (start) or
// no longer (!start). Reader goroutine only.
func (l *sendLines) wait(start bool) {
	if start {
		l.waiting.Store(monoNow())
		return
	}
	// Swapped before the sum grows: clock may count this wait late,
	// never twice.
	if since := l.waiting.Swap(0); since != 0 {
		l.idle.Add(monoNow() - since)
	}
}

// clock is now on the connection's reading clock: how long its reader
// has waited for the client's frames, so that a hold ages only while the
// client could have sent something new.
func (l *sendLines) clock() time.Duration {
	d := l.idle.Load()
	if since := l.waiting.Load(); since != 0 {
		d += max(monoNow()-since, 0)
	}
	return time.Duration(d)
}

// sendPlace is one send's place on its connection.
type sendPlace struct {
	l          *sendLines
	line, cmid string
	n          uint64
	mem        *member // its sender's budgets (sendrate.go)
	size       int     // its frame's bytes, once read whole (handleSend)
	// paid: its frame was charged to its member's budgets (not a read
	// that used a credit, takePrepaid), so a refusal leaves a credit.
	paid bool
	// charge is what its read was charged (chargeSend, sendrate.go).
	charge sendCharge
	// fp is the fingerprint of what was read (handleSend), which its
	// credit keeps (prepay): computed on the reader goroutine, before the
	// send goes to the committer.
	fp string
}

// prepaidCredit is what a charged read that was refused paid for: its
// frame's bytes and the message's fingerprint (route.go).
type prepaidCredit struct {
	size int
	fp   string
}

// takeCredit uses credits[cmid] for a read of size bytes of the message
// whose fingerprint fp gives (asked only when there is one): the bytes
// it paid, if it is that message's and the read at most prepaidSlack
// larger. Another message's read leaves the credit. Caller holds the
// credits' lock.
func takeCredit(credits map[string]prepaidCredit, cmid string, size int, fp func() string) (int, bool) {
	c, ok := credits[cmid]
	if !ok || size > c.size+prepaidSlack || fp() != c.fp {
		return 0, false
	}
	delete(credits, cmid)
	return c.size, true
}

// putCredit leaves credits[cmid], within maxPrepaid; credits made when
// nil.
func putCredit(credits *map[string]prepaidCredit, cmid string, c prepaidCredit) {
	if _, ok := (*credits)[cmid]; !ok && len(*credits) >= maxPrepaid {
		return
	}
	if *credits == nil {
		*credits = map[string]prepaidCredit{}
	}
	(*credits)[cmid] = c
}

// takePrepaid reports whether a read of cmid of size bytes, the message
// fp fingerprints, was paid for by an earlier read of it refused on this
// connection, and uses the credit: the bytes that read paid.
func (l *sendLines) takePrepaid(cmid string, size int, fp func() string) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return takeCredit(l.prepaid, cmid, size, fp)
}

// free reports whether p was let through without its bytes as a retry of
// a stored message (chargeSend): its commit stores nothing new for it.
func (p *sendPlace) free() bool { return p != nil && p.charge.free }

// hasPrepaid is takePrepaid without using the credit (the check before a
// send is decoded, refuseSendEarly).
func (l *sendLines) hasPrepaid(cmid string, size int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.prepaid[cmid]
	return ok && size <= c.size+prepaidSlack
}

// prepay records that p, charged, was refused: its next read is not
// charged again. Once per charge. It runs on the committer or the
// dispatcher too (a send held or refused at its commit): a map insert,
// the fingerprint was computed when the send was read.
func (p *sendPlace) prepay() {
	if p == nil {
		return
	}
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	if !p.paid || p.cmid == "" || p.fp == "" {
		return
	}
	p.paid = false
	putCredit(&p.l.prepaid, p.cmid, prepaidCredit{size: p.size, fp: p.fp})
}

// place gives the send read now its place. Reader goroutine only.
func (c *conn) place(targetSpec, cmid string) *sendPlace {
	c.lines.mu.Lock()
	c.lines.ttl = c.b.cfg.LineHold
	c.lines.read++
	n := c.lines.read
	c.lines.mu.Unlock()
	return &sendPlace{l: &c.lines, line: targetSpec, cmid: cmid, n: n, mem: c.mem}
}

// heldByLocked is the hold that refuses p, if any, dropping expired ones;
// now is on the reading clock.
func (p *sendPlace) heldByLocked(now time.Duration) *lineHold {
	hs := p.l.holds[p.line]
	kept := hs[:0]
	var by *lineHold
	for _, h := range hs {
		if now-h.at >= p.l.ttl {
			continue
		}
		kept = append(kept, h)
		if by == nil && h.from < p.n && (h.until == 0 || p.n < h.until) && h.cmid != p.cmid {
			c := h
			by = &c
		}
	}
	if len(kept) == 0 {
		delete(p.l.holds, p.line)
	} else {
		clear(hs[len(kept):])
		p.l.holds[p.line] = kept
	}
	return by
}

// heldBy is the hold that refuses p now, if any (p's write, on the
// committer).
func (p *sendPlace) heldBy() *lineHold {
	if p == nil {
		return nil
	}
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	if len(p.l.holds) == 0 {
		return nil
	}
	return p.heldByLocked(p.l.clock())
}

// arrive is p as it is read: the hold that refuses it, or nil, and then p
// is the refused message come again, which ends the holds on it for the
// sends read after it.
func (p *sendPlace) arrive() *lineHold {
	if p == nil {
		return nil
	}
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	if len(p.l.holds) == 0 {
		return nil
	}
	if h := p.heldByLocked(p.l.clock()); h != nil {
		return h
	}
	hs := p.l.holds[p.line]
	for i := range hs {
		if hs[i].cmid == p.cmid && hs[i].until == 0 {
			hs[i].until = p.n
		}
	}
	return nil
}

// refuse records that p was refused with code (when the code holds the
// line).
func (p *sendPlace) refuse(code string, retryMs int64) {
	if p == nil || !holdsLine(code) {
		return
	}
	p.prepay() // it is sent again
	if p.l.ttl <= 0 {
		return
	}
	p.l.mu.Lock()
	defer p.l.mu.Unlock()
	now := p.l.clock()
	if p.l.holds == nil {
		p.l.holds = map[string][]lineHold{}
	}
	hs, ok := p.l.holds[p.line]
	for i := range hs {
		h := &hs[i]
		if now-h.at < p.l.ttl && h.from < p.n && (h.until == 0 || p.n < h.until) {
			// Behind a hold already (refused for its own reason while
			// an earlier send of the line waits to come again): covered
			// by it. A client sends that one again first, then this
			// one; a hold of its own would refuse that one. The refused
			// one refused again holds on from now.
			if h.cmid == p.cmid {
				h.at, h.code, h.retryMs, h.size = now, code, retryMs, p.size
			}
			return
		}
	}
	if !ok && len(p.l.holds) >= maxHeldLines {
		for line := range p.l.holds {
			(&sendPlace{l: p.l, line: line}).heldByLocked(now) // drops the expired ones
		}
		if len(p.l.holds) >= maxHeldLines {
			return
		}
	}
	for _, h := range hs {
		if h.from == p.n && h.code == code {
			return // recorded by an earlier run of the same write
		}
	}
	if len(hs) >= maxLineHolds {
		hs = append(hs[:0], hs[1:]...)
	}
	p.l.holds[p.line] = append(hs, lineHold{from: p.n, cmid: p.cmid, code: code, retryMs: retryMs, size: p.size, at: now})
}

// refused is p's write's store.Refuser hook: the committer could not store
// it.
func (p *sendPlace) refused(err error) {
	if errors.Is(err, store.ErrUnavailable) {
		p.refuse(wire.CodeUnavailable, unavailableRetryMs)
		return
	}
	p.refuse(wire.CodeInternal, 1000)
}

// heldText is what a send held behind h is told.
func heldText(h *lineHold, targetSpec string) string {
	return fmt.Sprintf("held behind message %q to %s, sent earlier on this connection and refused (%s): "+
		"send that one again first; the broker keeps one sender's messages to a target in order", h.cmid, targetSpec, h.code)
}

// heldRetryMs is the retryAfterMs of p, held behind h: the hold's, or
// longer if its sender's budgets need longer before they take the
// refused send again. A held send was read, so it spent its share of the
// budgets (an accepted one's; its own next read is not charged again:
// prepay), and the refusal's retryAfterMs, given before that, no longer
// says when the refused one can come again: a client that waited it had
// that one refused anew.
func (p *sendPlace) heldRetryMs(h *lineHold) int64 {
	ms := h.retryMs
	if ms <= 0 {
		ms = heldRetryMsOf
	}
	if p != nil && p.mem != nil {
		size := h.size
		if size <= 0 {
			size = p.size
		}
		now := p.mem.sendNow()
		ms = max(ms, retryAfterMs(untilTokensAt(p.mem.bytes, float64(size), now)), retryAfterMs(untilTokensAt(p.mem.limiter, 1, now)))
	}
	return ms
}
