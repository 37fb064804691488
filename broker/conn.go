package broker

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"claudemesh/internal/framebuf"
	"claudemesh/wire"
)

// conn is one WebSocket connection. Exactly one reader goroutine (serve)
// decodes and handles frames; at most one writer goroutine (writeRun)
// drains a byte-bounded queue, so a slow client only ever fills its own
// queue and is cut off with 4008 instead of slowing a fan-out. (After a
// commit the store's dispatcher writes the fan-out's frames itself while
// no writer runs, without blocking: fanout.go.) The writer
// runs while there is something to write and exits a moment after, so an
// idle connection costs one goroutine, not two.
type conn struct {
	b   *Broker
	ws  *websocket.Conn
	raw *coalescingConn
	ip  string
	// tracked is the accepted connection under the WebSocket (nil in
	// tests that bypass the listener); released from the per-address
	// count once authenticated.
	tracked *trackedConn

	// Set once by the handshake, read-only afterwards.
	ms        *meshState
	pubkey    string // the identity: session key or member key
	mem       *member
	pres      *presence // nil for transient connections
	transient bool
	// uncounted: taken off the mesh's and its member's connection counts
	// already (uncountConnLocked), when it was replaced or when it
	// detached. Guarded by ms.mu.
	uncounted bool
	authed    atomic.Bool
	// cut: a frame before the hello was junk or over the limit, with more
	// of it unread; the connection is closed without reading the rest
	// (reader goroutine only).
	cut bool
	// throttled: the hello was refused by one of the broker's own
	// per-member throttles (rate_limited, capacity), which tell a member
	// to retry later. Every other failed handshake (junk, bad framing,
	// nothing or no hello in time, a refused hello, a client gone before
	// its hello without a clean close) counts against the address's budget;
	// a clean close before the hello counts as an eighth (strikes.go).
	// Reader goroutine only.
	throttled bool
	// leftClean: the client closed cleanly (1000) before any hello, as
	// a client checking the broker's key does: an eighth of a failed
	// handshake (strikeParts).
	// Reader goroutine only.
	leftClean bool

	// Writer queue.
	wmu     sync.Mutex
	queue   []outFrame
	qbytes  int
	closing bool
	// closeDecided mirrors closing for the reader, which checks it at
	// every frame without taking wmu.
	closeDecided atomic.Bool
	// closeNow is closed with closing (once): it ends a paced reader's
	// wait (pacing.go) so a closed connection is detached at once.
	closeNow    chan struct{}
	closeCode   int
	closeReason string
	closeSent   bool
	wake        chan struct{}
	writing     atomic.Bool // a writer goroutine is running
	needPing    atomic.Bool
	pingTimer   *time.Timer
	writerDone  chan struct{}
	readerDone  chan struct{}
	needRefill  atomic.Bool
	// fanoutMarked: c is in b.fanout (fanout.go; dispatcher only).
	fanoutMarked bool
	endPresence  atomic.Bool // set when this close ends the presence at once

	// lines: this connection's sends held behind a refused one
	// (sendorder.go).
	lines sendLines

	// Delivery bookkeeping, guarded by ms.mu.
	inflight      map[string]inflight
	inflightBytes int
	backlog       bool
	// senders counts the pushes in flight per sending member (receipts
	// aside), and waiting the sending members with queued entries held
	// back by their share of the window (deliver.go: fair shares).
	senders map[string]senderFlight
	waiting map[string]uint64 // → the seq of its first entry not pushed (0: not known)
	// scanned is refill's cursor: up to this queue seq every entry is in
	// flight or a waiting sender's (deliver.go refill); 0: read all.
	scanned uint64
	// window, when not 0, is this connection's resumed push window in
	// messages (deliver.go): its recipient left pushes unacknowledged.
	window int
	// ackedAt is when this connection last settled a push it was sent
	// (expireInflightLocked: one that acked nothing since its expired
	// pushes went out is re-sent --resume-window of them, not all).
	ackedAt time.Time
	// windowedAt is when such a connection was last re-sent its
	// --resume-window of them: at most once per --redeliver-after.
	windowedAt time.Time
	// origins are the messages this (transient) connection sent that
	// still wait for receipts (ms.origin), guarded by ms.mu.
	origins map[string]struct{}
	closed  bool

	eventSeen uint64 // the last presence event handed to it (events.go), guarded by ms.mu

	frames *rate.Limiter // non-send frames
	acks   *rate.Limiter // client_ack frames (--ack-rate); nil = unlimited
	// refusalClosed: refusedForRate closed it (once).
	refusalClosed atomic.Bool
	// readPause: how long the reader waits before reading the next frame
	// (pacing.go); the reader goroutine's alone.
	readPause  time.Duration
	lastActive atomic.Int64 // unix ms of the last frame read (for kick --stale)
	// strikeKey is the address a failed handshake counts against ("" for
	// none: exempt, strikes.go).
	strikeKey string
}

// inflight is a push awaiting its client_ack.
type inflight struct {
	size   int
	sentAt time.Time
	// from is the sending member whose share it counts in; receipt: none.
	from    string
	receipt bool
}

// senderFlight is one sending member's pushes in flight on a connection.
type senderFlight struct{ n, bytes int }

func (b *Broker) handleWS(w http.ResponseWriter, r *http.Request) {
	client, forwarded := b.clientAddr(r)
	ip := clientIP(r)
	if forwarded {
		ip = client.String()
	}
	if b.shuttingDown.Load() {
		http.Error(w, `{"error":{"code":"shutting_down","message":"broker is shutting down"}}`, http.StatusServiceUnavailable)
		return
	}
	tracked := trackedFrom(r.Context())
	// Failed handshakes count against the address they came from: the TCP
	// peer's, held back at accept (admission.go), or the client a trusted
	// proxy names, held back here.
	strikeKey := ""
	if tracked != nil && !forwarded {
		strikeKey = tracked.key
	}
	if forwarded && !b.admit.isExempt(client) {
		// Never the proxy's key: one client's failures would hold
		// back every client behind it.
		strikeKey = hostKey(client)
		if b.admit.heldBack(strikeKey) {
			b.metrics.limitTripped.WithLabelValues("handshake_failures_per_ip").Inc()
			w.Header().Set("Retry-After", "1")
			restError(w, http.StatusTooManyRequests, wire.CodeRateLimited, "too many failed handshakes from this address; retry later")
			return
		}
	}
	// Take a handshake slot before spending a goroutine pair on the
	// connection (admission.go: global, per address, fair per network).
	handshakeDone, status, code, limit := b.admit.acquireHandshake(client)
	if handshakeDone == nil {
		b.metrics.connsRejected.WithLabelValues("handshake_capacity").Inc()
		b.metrics.limitTripped.WithLabelValues(limit).Inc()
		w.Header().Set("Retry-After", "1")
		restError(w, status, code, "too many connections are handshaking ("+limit+"); retry in a moment")
		return
	}
	var raw *coalescingConn
	hw := hijackWrapper{ResponseWriter: w, wrap: func(nc net.Conn) net.Conn {
		// The HTTP server's request deadlines stay on a hijacked
		// connection; from here the connection's own reader and writer
		// set theirs.
		nc.SetDeadline(time.Time{})
		raw = &coalescingConn{Conn: nc, rc: rawOf(nc)}
		return raw
	}}
	ws, err := b.upgrader.Upgrade(hw, r, nil)
	if err != nil {
		handshakeDone()
		b.debug(debugHost(ip), "websocket refused", "err", err.Error(), "ip", ip)
		return
	}
	c := &conn{
		b: b, ws: ws, raw: raw, ip: ip, tracked: tracked, strikeKey: strikeKey,
		wake:       make(chan struct{}, 1),
		closeNow:   make(chan struct{}),
		writerDone: make(chan struct{}),
		readerDone: make(chan struct{}),
		inflight:   map[string]inflight{},
		frames:     rate.NewLimiter(frameRate, frameBurst),
	}
	if b.cfg.AckRate > 0 {
		c.acks = rate.NewLimiter(rate.Limit(b.cfg.AckRate), max(int(b.cfg.AckRate), 1))
	}
	// The reader runs on a goroutine of its own and the HTTP handler
	// returns: net/http's per-connection state (its bufio buffers, the
	// response, the handler's grown stack) becomes garbage instead of
	// living as long as the WebSocket, which matters at thousands of idle
	// connections.
	// The timer is armed only once c.pingTimer is set: with a short
	// interval it could fire first, and its writer reads c.pingTimer.
	c.pingTimer = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		c.needPing.Store(true)
		c.signal()
	})
	c.pingTimer.Reset(b.cfg.PingInterval)
	go c.serve(handshakeDone)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// serve is the reader goroutine: handshake, then frames until the
// connection ends; it owns the cleanup.
func (c *conn) serve(handshakeDone func()) {
	ok := c.handshake()
	handshakeDone()
	if ok && c.tracked != nil {
		// A member's connection no longer counts toward its address's
		// cap of unauthenticated connections.
		c.tracked.release()
	}
	c.lastActive.Store(time.Now().UnixMilli())
	if ok {
		c.debugOpened()
		// The frames are read on a fresh goroutine: the handshake's
		// signature checks grew this one's stack, and an idle connection
		// would keep that stack for as long as it stays open.
		go c.readLoop()
		return
	}
	switch {
	case c.leftClean:
		c.b.admit.strike(c.strikeKey, 1)
	case !c.throttled:
		c.b.admit.strike(c.strikeKey, strikeParts)
	}
	// The handshake failed and the writer is sending the error and close
	// frames: wait (a second at most) for the client to answer the close,
	// but read nothing else of substance. Draining whatever came let a
	// stranger stream junk for that second at every connection (bench
	// --adversary: 53 MB read per connection, the honest peers' p99 ×4).
	// A connection cut for junk skips even that: waiting for a frame
	// reads (and drops) the rest of the one in progress, however large
	// its header says it is, for that second.
	if !c.cut {
		c.awaitCloseAnswer()
	}
	c.finish()
}

// readLoop reads and handles frames until the connection ends.
func (c *conn) readLoop() {
	c.ws.SetPongHandler(func(string) error {
		return c.ws.SetReadDeadline(time.Now().Add(c.b.cfg.PongTimeout))
	})
	since := time.Now()
	var readErr error
	for {
		c.ws.SetReadDeadline(time.Now().Add(c.b.cfg.PongTimeout))
		c.lines.wait(true) // the holds on its lines age meanwhile (sendorder.go)
		data, err := c.readFrame()
		c.lines.wait(false)
		if err != nil {
			readErr = err
			var ce *websocket.CloseError
			if errors.As(err, &ce) && ce.Code == websocket.CloseNormalClosure {
				// A clean close from the client ends its presence now.
				c.endPresence.Store(true)
			}
			break
		}
		if c.closeDecided.Load() {
			// Closed by the broker (a policy close, a kick, a slow
			// consumer): what still comes is not acted on.
			c.awaitCloseAnswer()
			break
		}
		if data != nil {
			c.lastActive.Store(time.Now().UnixMilli())
			c.handle(data)
			c.waitPaced()
		}
	}
	c.b.hub.detach(c)
	c.debugClosed(readErr, since)
	c.finish()
}

// awaitCloseAnswer waits, once the broker has decided to close, for the
// client to answer the close: a second at most, four frames of at most
// closeAnswerLimit bytes, none acted on.
func (c *conn) awaitCloseAnswer() {
	c.ws.SetReadDeadline(time.Now().Add(time.Second))
	c.ws.SetReadLimit(closeAnswerLimit)
	for range 4 {
		if _, _, err := c.ws.NextReader(); err != nil {
			return
		}
	}
}

// finish ends the connection once its reader is done.
func (c *conn) finish() {
	c.closeWith(0, "")
	close(c.readerDone)
	c.waitClosed(2 * time.Second)
	c.raw.Close()
}

var errTooBig = errors.New("frame too big")

// readFrame reads one message, enforcing --max-frame itself so the close
// carries the spec's `frame_too_big` reason (gorilla's own limit closes with
// an empty reason). A nil frame with nil error means "skip" (binary frame
// already answered).
func (c *conn) readFrame() ([]byte, error) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	limit := c.b.cfg.MaxFrame
	authed := c.authed.Load()
	if !authed {
		limit = min(limit, c.b.cfg.helloFrameLimit())
	}
	if !authed && mt == websocket.TextMessage {
		head, junk, err := readHelloHead(r)
		if err != nil {
			return nil, err
		}
		if junk {
			// Not the start of a JSON object: answered malformed
			// (handshake) from these bytes, the rest never read.
			c.cutPreHello()
			return head, nil
		}
		r = io.MultiReader(bytes.NewReader(head), r)
	}
	data, err := readAll(r, limit+1)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		c.closeWith(wire.CloseTooBig, wire.ReasonFrameTooBig)
		// Swallow the rest of the frame (bounded in bytes and time) so the
		// socket closes with a FIN after our close frame rather than a RST
		// that could destroy it before the client reads the reason.
		c.ws.SetReadDeadline(time.Now().Add(time.Second))
		swallow := int64(16 << 20)
		if !authed {
			swallow = helloFrameSwallow
		}
		if n, _ := io.CopyN(io.Discard, r, swallow); n == swallow && !authed {
			// More than a hello a little too large: a stranger's.
			c.cutPreHello()
		}
		return nil, errTooBig
	}
	if mt != websocket.TextMessage {
		code := wire.CodeInvalidArgument
		if !c.authed.Load() {
			code = wire.CodeMalformed
		}
		c.sendError("", code, "frames must be JSON text frames")
		return nil, nil
	}
	return data, nil
}

// cutPreHello marks a connection whose frame before the hello is junk:
// it is closed without reading the rest (serve).
func (c *conn) cutPreHello() {
	c.cut = true
	c.b.metrics.limitTripped.WithLabelValues("pre_hello_cut").Inc()
}

// readHelloHead reads the first bytes of a frame before the hello, as
// far as it takes to tell whether they can begin a JSON object with a
// member (or an empty one): optional whitespace, '{', optional
// whitespace, then '"' or '}'. Anything else there is junk (bench
// --adversary's stranger writes frames of '{'), which need not be read
// to its end. Whitespace alone for 64 bytes decides nothing.
func readHelloHead(r io.Reader) (head []byte, junk bool, err error) {
	buf := make([]byte, 0, 64)
	open := false
	for len(buf) < cap(buf) {
		n, err := r.Read(buf[len(buf):cap(buf)])
		for _, ch := range buf[len(buf) : len(buf)+n] {
			switch {
			case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n':
			case !open && ch == '{':
				open = true
			case open && (ch == '"' || ch == '}'):
				return buf[:len(buf)+n], false, nil
			default:
				return buf[:len(buf)+n], true, nil
			}
		}
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	return buf, false, nil
}

// readAll is io.ReadAll(io.LimitReader(r, limit)) through pooled
// buffers (internal/framebuf).
func readAll(r io.Reader, limit int64) ([]byte, error) { return framebuf.ReadAll(r, limit) }

// enqueue adds a frame to the writer queue. Past --send-buffer bytes the
// client is too slow: drop the queue and close 4008 rather than buffer
// without bound or block the caller (a fan-out, the committer).
func (c *conn) enqueue(frame []byte) bool { return c.enqueueOut(outFrame{b: frame}) }

// enqueueOut is enqueue for a frame that may be spliced (outFrame).
func (c *conn) enqueueOut(f outFrame) bool {
	c.wmu.Lock()
	if c.closing {
		c.wmu.Unlock()
		return false
	}
	if c.qbytes+f.size() > c.b.cfg.SendBuffer {
		c.queue, c.qbytes = nil, 0
		c.closing, c.closeCode, c.closeReason = true, wire.CloseSlowConsumer, wire.ReasonSlowConsumer
		c.closeDecided.Store(true)
		c.endPause()
		c.wmu.Unlock()
		c.b.metrics.slowConsumerDrops.Inc()
		c.signal()
		return false
	}
	c.queue = append(c.queue, f)
	c.qbytes += f.size()
	c.wmu.Unlock()
	c.signal()
	return true
}

// signal wakes the writer, starting one if none is running.
func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
	if c.writing.CompareAndSwap(false, true) {
		go c.writeRun()
	}
}

// closeWith asks the writer to flush what is queued, send a close frame
// with code and reason, and end the connection. The first reason wins.
func (c *conn) closeWith(code int, reason string) {
	c.wmu.Lock()
	if !c.closing {
		c.closing, c.closeCode, c.closeReason = true, code, reason
		c.closeDecided.Store(true)
		c.endPause()
	}
	c.wmu.Unlock()
	c.signal()
}

// closeExplained is closeWith after an error frame that says why (errCode,
// text), queued in the same step and only if it fits in the send buffer:
// an explanation must never turn the close into slow_consumer, after
// which a client reconnects (a replaced daemon would take the connection
// back, and the two would take it from each other in a loop).
func (c *conn) closeExplained(code int, reason, errCode, text string) {
	frame := wire.MustEncode(wire.Error{Type: wire.TypeError, Code: errCode, Message: text})
	c.wmu.Lock()
	if !c.closing {
		if c.qbytes+len(frame) <= c.b.cfg.SendBuffer {
			c.queue = append(c.queue, outFrame{b: frame})
			c.qbytes += len(frame)
		}
		c.closing, c.closeCode, c.closeReason = true, code, reason
		c.closeDecided.Store(true)
		c.endPause()
	}
	c.wmu.Unlock()
	c.signal()
}

// waitClosed waits for the writer to finish (bounded).
func (c *conn) waitClosed(d time.Duration) {
	select {
	case <-c.writerDone:
	case <-time.After(d):
		c.raw.Close()
		<-c.writerDone
	}
}

// A connection may be refused for rate refusalBurst times at once and
// refusalRate times a second after that before it is closed.
const (
	refusalRate  = 20
	refusalBurst = 200
)

// endPause ends a paced reader's wait (pacing.go) when the connection is
// closing. Caller holds wmu, with closing just set.
func (c *conn) endPause() {
	if c.closeNow != nil { // nil in tests that build a conn by hand
		close(c.closeNow)
	}
}

// newRefusalLimiter is a member's budget of rate_limited answers.
func newRefusalLimiter(cfg Config) *rate.Limiter {
	if cfg.refusalBurst > 0 {
		return rate.NewLimiter(rate.Limit(cfg.refusalRate), cfg.refusalBurst)
	}
	return rate.NewLimiter(refusalRate, refusalBurst)
}

// closeAnswerLimit bounds a data frame read after a failed handshake,
// while the broker waits for the answer to its close (a close frame is a
// control frame, 125 bytes at most, and not subject to it).
const closeAnswerLimit = 128

// writerLinger is how long a writer waits for more work before it exits:
// long enough that a busy connection keeps its writer, short enough that
// the connections of an idle mesh hold none.
const writerLinger = 50 * time.Millisecond

// writeRun is the writer goroutine: it coalesces everything queued into
// one syscall, sends pings, performs refills and writes the close frame,
// for as long as work keeps coming.
func (c *conn) writeRun() {
	linger := time.NewTimer(writerLinger)
	defer linger.Stop()
	for {
		if c.writeOnce() {
			c.pingTimer.Stop()
			close(c.writerDone) // c.writing stays set: no writer ever again
			return
		}
		linger.Reset(writerLinger)
		select {
		case <-c.wake:
			continue
		case <-linger.C:
		}
		c.writing.Store(false)
		// A signal between the timeout and the flag found the flag still
		// set and started nothing: its token is in wake.
		select {
		case <-c.wake:
			if c.writing.CompareAndSwap(false, true) {
				continue
			}
		default:
		}
		return
	}
}

// writeOnce does what is pending; it reports true when the connection is
// finished (closed, or the socket failed).
func (c *conn) writeOnce() bool {
	if c.needPing.Swap(false) {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeTimeout)); err != nil {
			c.raw.Close()
			return true
		}
		c.pingTimer.Reset(c.b.cfg.PingInterval)
	}
	if c.needRefill.Swap(false) {
		if h := c.b.cfg.testHookBeforeRefill; h != nil {
			h(c.pubkey)
		}
		c.refill()
	}
	closing, err := c.writePending()
	if err != nil {
		c.raw.Close()
		return true
	}
	if closing {
		// Give the peer a moment to answer the close, then cut the TCP
		// connection so the reader unblocks.
		select {
		case <-c.readerDone:
		case <-time.After(time.Second):
			c.raw.Close()
		}
		return true
	}
	return false
}

// writePending writes every queued frame in one flush and, when the
// connection is closing, the close frame after them.
func (c *conn) writePending() (closing bool, err error) {
	c.wmu.Lock()
	batch := c.queue
	c.queue, c.qbytes = nil, 0
	closing, code, reason := c.closing, c.closeCode, c.closeReason
	sent := closing && code != 0 && !c.closeSent
	if sent {
		c.closeSent = true
	}
	c.wmu.Unlock()
	if len(batch) > 0 {
		c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		c.raw.hold()
		var scratch []byte
		for _, f := range batch {
			if err = writeFrame(c.ws, f, &scratch); err != nil {
				break
			}
		}
		if ferr := c.raw.flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return closing, err
		}
	}
	if sent {
		msg := websocket.FormatCloseMessage(code, reason)
		c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	}
	return closing, nil
}

// requestRefill asks the writer goroutine to pull queued deliveries from
// the store (after acks free window space, a status change releases held
// messages, a redelivery timeout, or a connect).
func (c *conn) requestRefill() {
	c.needRefill.Store(true)
	c.signal()
}

// hijackWrapper lets the broker wrap the hijacked net.Conn, so gorilla's
// per-frame writes land in a buffer the writer flushes once per batch.
type hijackWrapper struct {
	http.ResponseWriter
	wrap func(net.Conn) net.Conn
}

func (h hijackWrapper) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := h.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return h.wrap(nc), brw, nil
}

// coalescingConn buffers writes between hold and flush. Outside a batch it
// writes through, so control frames written by gorilla (close replies) go
// out at once. The batch buffer is borrowed from a pool for the length of
// one flush, so an idle connection holds none (a connect storm would
// otherwise leave every connection with a grown buffer).
type coalescingConn struct {
	net.Conn
	rc      syscall.RawConn // the socket, for tryFlush (nil: none)
	mu      sync.Mutex
	buf     *[]byte
	holding bool
	// pending is what tryFlush could not write without blocking (in
	// pendingBuf, a pooled buffer): written before anything else.
	pending    []byte
	pendingBuf *[]byte
	// try is tryFlush's state for its write callback (guarded by mu).
	try struct {
		fn  func(fd uintptr) bool
		p   []byte
		n   int
		err error
	}
}

var batchBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		if err := c.writePendingLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	*c.buf = append(*c.buf, p...)
	return len(p), nil
}

func (c *coalescingConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.buf = batchBuffers.Get().(*[]byte)
	c.mu.Unlock()
}

func (c *coalescingConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	buf := c.buf
	c.buf = nil
	err := c.writePendingLocked()
	if buf == nil {
		return err
	}
	if err == nil && len(*buf) > 0 {
		_, err = c.Conn.Write(*buf)
	}
	c.release(buf)
	return err
}
