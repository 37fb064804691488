package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/internal/ratelog"
)

// What `--log-level debug` adds (a new user's trial: it added nothing, so
// an operator asked "I can't connect" had only the metrics' counters). At
// debug the broker writes one line per
//
//   - WebSocket outcome: `connection opened` (mesh, member and session key
//     prefixes, presence, address), `connection closed` (the same, the
//     close code and reason and how long it lasted), `handshake failed`
//     (a hello refused or never sent: the error code and message, the
//     address), `websocket refused` (a request to /ws that is not a
//     WebSocket upgrade);
//   - join: `member joined` (mesh, member id, name, invite id) or
//     `join refused` (code, message, address);
//   - HTTP request other than /health, and /ws refused before the
//     upgrade: `http request` (method, path, status, the error code when
//     refused, duration, address) — an operator token or API key that
//     failed shows here as 401.
//
// Each kind of line repeats at most five times a second per key (the
// host: an IPv4 address or an IPv6 /64; the host and key of a member; for
// a request, the host and status), with `skipped` saying how many were
// left out, so that nobody can grow the log without bound by connecting
// in a loop or choosing new paths. At most 256 keys are remembered: while
// more are in use (a flood from many hosts) the rest share one key, five
// lines a second between them, and a key makes room once a second has
// passed since its last line (two when it had left lines out, which the
// shared key's next line then counts). Nothing secret is written:
// no token, no key but an 8-hex prefix, no message content (the broker
// has none). At info and above none of this costs more than a bool check.

// debugEvery and debugBurst: how many lines of one kind and key may go
// out in what interval (a user who runs three commands in a second is
// seen three times; a loop is cut after the burst).
const (
	debugEvery = time.Second
	debugBurst = 5
)

// maxLoggedPath bounds the request path written (a path is the client's).
const maxLoggedPath = 200

// clipped is s cut to at most n bytes (a client's text in a debug line).
func clipped(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}

// debugLog is the broker's debug-line state; on is fixed at New.
type debugLog struct {
	on    bool
	lines ratelog.Limiter
}

func newDebugLog(log *slog.Logger) debugLog {
	return debugLog{on: log.Enabled(context.Background(), slog.LevelDebug), lines: ratelog.Limiter{Every: debugEvery, Burst: debugBurst}}
}

// debugHost is a connection's address as the debug lines' limiter keys
// it: one host (an IPv6 /64, which one host chooses addresses from), as
// the per-address limits count it.
func debugHost(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip
	}
	return hostKey(a.Unmap())
}

// debug writes msg at debug level unless debugBurst with the same kind
// and key went out less than debugEvery ago.
func (b *Broker) debug(key, msg string, args ...any) {
	if !b.dbg.on {
		return
	}
	ok, skipped := b.dbg.lines.Allow(msg + "|" + key)
	if !ok {
		return
	}
	if skipped > 0 {
		args = append(args, "skipped", skipped)
	}
	b.log.Debug(msg, args...)
}

// connArgs names an authenticated connection: its mesh, member (and
// session) key prefixes and address.
func (c *conn) connArgs() []any {
	args := []any{"mesh", c.ms.id}
	if c.mem != nil {
		args = append(args, "member", shortHex(c.mem.Pubkey))
		if c.pubkey != c.mem.Pubkey {
			args = append(args, "session", shortHex(c.pubkey))
		}
	}
	return append(args, "presence", c.pres != nil, "ip", c.ip)
}

// debugOpened logs a hello accepted.
func (c *conn) debugOpened() {
	if c.b.dbg.on {
		c.b.debug(debugHost(c.ip)+"|"+c.pubkey, "connection opened", c.connArgs()...)
	}
}

// debugClosed logs an authenticated connection's end: the broker's close
// code and reason when it decided, else what the client's side said
// (a close frame's code, or the read error: a pong timeout, a reset).
func (c *conn) debugClosed(readErr error, since time.Time) {
	if !c.b.dbg.on {
		return
	}
	c.wmu.Lock()
	decided, code, reason := c.closing, c.closeCode, c.closeReason
	c.wmu.Unlock()
	args := c.connArgs()
	var ce *websocket.CloseError
	switch {
	case decided && code != 0:
		args = append(args, "by", "broker", "code", code, "reason", reason)
	case errors.As(readErr, &ce):
		args = append(args, "by", "client", "code", ce.Code, "reason", ce.Text)
	case readErr != nil:
		args = append(args, "by", "network", "err", readErr.Error())
	}
	args = append(args, "lastedMs", time.Since(since).Milliseconds())
	c.b.debug(debugHost(c.ip)+"|"+c.pubkey, "connection closed", args...)
}

// debugHandshakeFailed logs a connection that never got past its hello.
func (c *conn) debugHandshakeFailed(code, message string) {
	if c.b.dbg.on {
		c.b.debug(debugHost(c.ip), "handshake failed", "code", code, "message", message, "ip", c.ip)
	}
}

// statusWriter notes what a request was answered: set by WriteHeader and
// by restError (noteCode), read once the handler returned.
type statusWriter interface {
	status() (int, string)
}

// noteCode is how restError tells the debug line the error code.
type codeNoter interface{ noteCode(code string) }

// debugRequest logs one HTTP request at debug (not /ws, which logs its
// own lines, nor the health checks a load balancer polls).
func (b *Broker) debugRequest(r *http.Request, w statusWriter, started time.Time) {
	if !b.dbg.on || strings.HasPrefix(r.URL.Path, "/health") {
		return
	}
	status, code := w.status()
	if r.URL.Path == "/ws" && code == "" {
		return
	}
	if status == 0 {
		status = http.StatusOK
	}
	path := clipped(r.URL.Path, maxLoggedPath)
	addr, _ := b.clientAddr(r)
	args := []any{"method", r.Method, "path", path, "status", status}
	if code != "" {
		args = append(args, "code", code)
	}
	args = append(args, "ms", time.Since(started).Milliseconds(), "ip", addr.String())
	// Keyed by host and status, not path: a client choosing a new path a
	// request had a line for each (~260 a second from one address).
	b.debug(fmt.Sprint(hostKey(addr), "|", status), "http request", args...)
}
