package broker

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"claudemesh/internal/deadline"
	"claudemesh/wire"
)

// Admission of unauthenticated traffic (issue: a stranger on the network
// held 5,000 idle keep-alive connections, reached the fd limit, and 45
// addresses held every handshake slot). Everything here runs before a
// client has proved it is a member, so it is keyed by network address:
//
//   - per address, a cap on open TCP connections that are not (yet) an
//     authenticated WebSocket (--max-conns-per-ip; an IPv6 client counts
//     per /64, which is what one host can choose addresses from);
//   - handshake slots (upgraded, no hello yet): a global cap, a cap per
//     address, and a fair share per network (IPv4 /24, IPv6 /48) that
//     always leaves room for one more network, so no network can hold
//     every slot while others wait;
//   - addresses in --ip-limit-exempt (loopback by default: a reverse proxy
//     on the same host) skip the per-address and per-network caps, since
//     every client then shares the proxy's address; the proxy must limit
//     per client itself.

// addrOf is the client address of a remote "host:port", IPv4-mapped IPv6
// unmapped and without a zone (a link-local peer's "%eth0", which no
// prefix would contain); the zero Addr if it does not parse.
func addrOf(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		a, _ := netip.ParseAddr(remote)
		return a.Unmap().WithZone("")
	}
	return ap.Addr().Unmap().WithZone("")
}

// hostKey is what "one client" means for per-address limits: an IPv4
// address, or an IPv6 /64.
func hostKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// netKey groups addresses for the fair share of handshake slots: IPv4 /24,
// IPv6 /48.
func netKey(a netip.Addr) string {
	bits := 24
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

// admission holds the counters. One mutex: every operation is a few map
// updates, far cheaper than the TLS or WebSocket handshake it guards.
type admission struct {
	maxConns, maxHS, maxHSPerIP int
	maxRefusals                 int
	// refusalGrace is how long an over-cap connection is given to send
	// its request and read the 429 (tests lengthen it).
	refusalGrace time.Duration
	exempt       []netip.Prefix
	m            *metrics

	// strikeRate and strikeBurst: the budget of failed handshakes per
	// address (strikes.go); rate 0 disables it.
	strikeRate  float64
	strikeBurst int

	mu           sync.Mutex
	conns        map[string]int           // hostKey → unauthenticated TCP connections
	strikes      map[string]*rate.Limiter // hostKey → budget of failed handshakes
	strikesSwept time.Time
	refusing     map[string]int // hostKey → over-cap connections being answered
	hsTotal      int
	hsHost       map[string]int // hostKey → handshakes in progress
	hsNet        map[string]int // netKey → handshakes in progress
}

func newAdmission(cfg Config, m *metrics) *admission {
	return &admission{
		maxConns: cfg.MaxConnsPerIP, maxHS: cfg.MaxHandshakes, maxHSPerIP: cfg.MaxHandshakesPerIP,
		maxRefusals: cfg.MaxRefusalsPerIP, refusalGrace: time.Second,
		exempt: cfg.IPLimitExempt, m: m,
		strikeRate: cfg.HandshakeFailureRate, strikeBurst: max(cfg.HandshakeFailureBurst, 1),
		conns: map[string]int{}, refusing: map[string]int{}, hsHost: map[string]int{}, hsNet: map[string]int{},
		strikes: map[string]*rate.Limiter{},
	}
}

func (a *admission) isExempt(addr netip.Addr) bool {
	if !addr.IsValid() {
		return true // not an IP connection (tests on pipes): nothing to key on
	}
	for _, p := range a.exempt {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// dec decrements a counter and deletes it at zero, so the maps hold only
// addresses with something open (they used to grow with every address
// ever seen).
func dec(m map[string]int, k string) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

// acquireHandshake takes a handshake slot for addr, or says why not: the
// HTTP status and error code to answer, and the limit that tripped.
func (a *admission) acquireHandshake(addr netip.Addr) (release func(), status int, code, limit string) {
	exempt := a.isExempt(addr)
	var hk, nk string
	if !exempt {
		hk, nk = hostKey(addr), netKey(addr)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hsTotal >= a.maxHS {
		return nil, http.StatusServiceUnavailable, wire.CodeCapacity, "handshakes"
	}
	if !exempt {
		if a.hsHost[hk] >= a.maxHSPerIP {
			return nil, http.StatusTooManyRequests, wire.CodeRateLimited, "handshakes_per_ip"
		}
		// The fair share: the slots divided among the networks holding
		// one, this one, and one more that may yet arrive. A network past
		// it waits until its own handshakes end; even alone it can take
		// only half, so a newcomer always finds room.
		others := len(a.hsNet)
		if a.hsNet[nk] > 0 {
			others--
		}
		if a.hsNet[nk] >= max(1, a.maxHS/(others+2)) {
			return nil, http.StatusTooManyRequests, wire.CodeRateLimited, "handshakes_per_network"
		}
		a.hsHost[hk]++
		a.hsNet[nk]++
	}
	a.hsTotal++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			a.hsTotal--
			if !exempt {
				dec(a.hsHost, hk)
				dec(a.hsNet, nk)
			}
			a.mu.Unlock()
		})
	}, 0, "", ""
}

// handshakesOpen reports the slots in use (tests).
func (a *admission) handshakesOpen() (total, hosts, nets int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hsTotal, len(a.hsHost), len(a.hsNet)
}

// refusalsOpen reports the over-cap connections being answered (tests).
func (a *admission) refusalsOpen() (n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range a.refusing {
		n += k
	}
	return n
}

// connsOpen reports the counted connections and addresses (tests).
func (a *admission) connsOpen() (conns, hosts int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, n := range a.conns {
		conns += n
	}
	return conns, len(a.conns)
}

// listener counts connections per address as they are accepted.
type listener struct {
	net.Listener
	a *admission
}

// listen opens the broker's public listener without TCP keep-alive. Every
// WebSocket is pinged (--ping-interval) and an idle HTTP connection is
// closed (--http-idle-timeout), so the kernel's probes would learn nothing
// new, while turning them on costs four setsockopt calls on every accepted
// connection, paid too by each one the per-address cap cuts at once: a
// stranger dialling in a loop made that a third of what the cut cost.
//
// With deferAccept > 0 the kernel hands the broker a connection only once
// its first bytes arrive, or after about deferAccept (deferaccept_*.go).
// Every client of this port speaks first (an HTTP request, a WebSocket
// upgrade, a TLS hello), so no honest connection waits; one that sends
// nothing costs the broker nothing until then, where before each was
// accepted, counted and, over the per-address cap, closed at once, a
// loop a stranger could run as fast as the broker could accept.
func listen(addr string, deferAccept time.Duration) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	if deferAccept > 0 {
		lc.Control = deferAcceptControl(deferAccept)
	}
	return lc.Listen(context.Background(), "tcp", addr)
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc := l.a.admit(nc); tc != nil {
			return tc, nil
		}
	}
}

// admit counts an accepted connection toward its address's cap, or marks
// it over the cap (or held back for its failed handshakes, strikes.go), or
// closes it at once (nil) when its address already has
// --max-refusals-per-ip connections being told 429.
func (a *admission) admit(nc net.Conn) *trackedConn {
	tc := &trackedConn{Conn: nc, a: a}
	if a.maxConns <= 0 && a.strikeRate <= 0 {
		return tc
	}
	addr := addrOf(nc.RemoteAddr().String())
	if a.isExempt(addr) {
		return tc
	}
	key := hostKey(addr)
	tc.key = key
	limit := "conns_per_ip"
	now := time.Now()
	a.mu.Lock()
	if a.strikeRate > 0 && a.heldBackLocked(key, now) {
		limit = "handshake_failures_per_ip"
	} else if a.maxConns <= 0 || a.conns[key] < a.maxConns {
		a.conns[key]++
		a.mu.Unlock()
		tc.counted.Store(true)
		return tc
	}
	if a.maxRefusals > 0 && a.refusing[key] >= a.maxRefusals {
		a.mu.Unlock()
		// Answering costs a goroutine and a descriptor for up to a
		// second; the address has enough of those already.
		a.m.limitTripped.WithLabelValues(limit + "_cut").Inc()
		nc.Close()
		return nil
	}
	a.refusing[key]++
	a.mu.Unlock()
	// Refused: not counted, and given a second to hear why (the HTTP
	// guard answers its request with 429) before it is cut.
	tc.over, tc.overLimit, tc.until = true, limit, now.Add(a.refusalGrace)
	tc.refusing.Store(true)
	tc.Conn.SetDeadline(tc.until)
	a.m.limitTripped.WithLabelValues(limit).Inc()
	return tc
}

// trackedConn is an accepted connection. It stops counting toward its
// address's cap when it closes or becomes an authenticated WebSocket:
// members are limited per mesh, and an office behind one NAT address must
// not be capped as if it were one stranger.
type trackedConn struct {
	net.Conn
	a       *admission
	key     string
	counted atomic.Bool
	// refusing: over the cap and counted among its address's refusals
	// until it closes.
	refusing atomic.Bool
	over     bool
	// overLimit is why it is refused: conns_per_ip or
	// handshake_failures_per_ip.
	overLimit string
	until     time.Time
	// rd and wd are the read and write deadlines (see SetDeadline).
	rd, wd deadline.Lazy
}

func (c *trackedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// release stops counting the connection (idempotent).
func (c *trackedConn) release() {
	if c.counted.CompareAndSwap(true, false) {
		c.a.mu.Lock()
		dec(c.a.conns, c.key)
		c.a.mu.Unlock()
	}
	if c.refusing.CompareAndSwap(true, false) {
		c.a.mu.Lock()
		dec(c.a.refusing, c.key)
		c.a.mu.Unlock()
	}
}

// An over-cap connection keeps its short deadline whatever the HTTP
// server asks for.
func (c *trackedConn) clamp(t time.Time) time.Time {
	if c.over && (t.IsZero() || t.After(c.until)) {
		return c.until
	}
	return t
}

// The deadlines of an admitted connection are lazy (internal/deadline):
// gorilla re-arms the write deadline before every frame and the reader
// extends its read deadline after every frame, a timer update each, a
// thousand of each for a broadcast to 1,000 peers. An over-cap
// connection's are set as asked (clamped): its deadline is short on
// purpose, and set on the socket by admit.
func (c *trackedConn) SetDeadline(t time.Time) error {
	if c.over {
		return c.Conn.SetDeadline(c.clamp(t))
	}
	err := c.rd.Set(t, c.Conn.SetReadDeadline)
	if werr := c.wd.Set(t, c.Conn.SetWriteDeadline); err == nil {
		err = werr
	}
	return err
}

func (c *trackedConn) SetReadDeadline(t time.Time) error {
	if c.over {
		return c.Conn.SetReadDeadline(c.clamp(t))
	}
	return c.rd.Set(t, c.Conn.SetReadDeadline)
}

func (c *trackedConn) SetWriteDeadline(t time.Time) error {
	if c.over {
		return c.Conn.SetWriteDeadline(c.clamp(t))
	}
	return c.wd.Set(t, c.Conn.SetWriteDeadline)
}

type trackedKey struct{}

// connContext remembers each request's trackedConn (http.Server.ConnContext).
func connContext(ctx context.Context, nc net.Conn) context.Context {
	if t, ok := nc.(*tls.Conn); ok {
		nc = t.NetConn()
	}
	if tc, ok := nc.(*trackedConn); ok {
		return context.WithValue(ctx, trackedKey{}, tc)
	}
	return ctx
}

func trackedFrom(ctx context.Context) *trackedConn {
	tc, _ := ctx.Value(trackedKey{}).(*trackedConn)
	return tc
}

// httpGuard wraps every route, present and future, in the unauthenticated
// limits: an over-cap connection gets 429, a request body must arrive
// within --http-read-timeout, and a response must make progress within
// --http-write-timeout. A response that turns out to be a stream
// (Content-Type text/event-stream) lives as long as it keeps writing: its
// read deadline is lifted and each write moves the write deadline.
func (b *Broker) httpGuard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		dw := &deadlineWriter{ResponseWriter: w, rc: rc, timeout: b.cfg.HTTPWriteTimeout}
		if b.dbg.on {
			defer b.debugRequest(r, dw, time.Now()) // debuglog.go
		}
		if tc := trackedFrom(r.Context()); tc != nil && tc.over {
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1")
			msg := "too many connections from this address; retry later"
			if tc.overLimit == "handshake_failures_per_ip" {
				msg = "too many failed handshakes from this address; retry later"
			}
			restError(dw, http.StatusTooManyRequests, wire.CodeRateLimited, msg)
			return
		}
		if r.ContentLength != 0 {
			// The body's deadline (the headers had theirs). A request
			// without a body gets none: its connection's next read is
			// the next request, which the idle timeout covers — and a
			// stream's request context must not end at a read timeout.
			rc.SetReadDeadline(time.Now().Add(b.cfg.HTTPReadTimeout))
		}
		dw.extend()
		h.ServeHTTP(dw, r)
	})
}

// deadlineWriter moves the write deadline with each write (an idle-write
// timeout: a client that stops reading is cut, one that reads is not).
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	stream  bool
	// code and errCode: what the request was answered, for the debug
	// line (debuglog.go).
	code    int
	errCode string
}

func (w *deadlineWriter) status() (int, string) { return w.code, w.errCode }
func (w *deadlineWriter) noteCode(code string)  { w.errCode = code }

func (w *deadlineWriter) extend() { w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

func (w *deadlineWriter) checkStream() {
	if !w.stream && w.Header().Get("Content-Type") == "text/event-stream" {
		w.stream = true
		w.rc.SetReadDeadline(time.Time{})
	}
}

func (w *deadlineWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.checkStream()
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.checkStream()
	w.extend()
	return w.ResponseWriter.Write(p)
}

func (w *deadlineWriter) Flush() {
	w.checkStream()
	w.extend()
	w.rc.Flush()
}

// Unwrap lets http.ResponseController (and gorilla's upgrade, through
// Hijack) reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *deadlineWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// retryAfter formats a Retry-After header value (whole seconds, ≥ 1).
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(int((d+time.Second-1)/time.Second), 1))
}
