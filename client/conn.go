package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/deadline"
	"claudemesh/internal/framebuf"
	"claudemesh/wire"

	"github.com/gorilla/websocket"
)

// Limits and timings of a connection. The read limit is the protocol's
// (clients accept broker frames up to 16 MiB, 01-protocol §1); the others are
// generous defaults for a broker across the internet.
const (
	// MaxBrokerFrame is the largest frame this client accepts from a broker.
	MaxBrokerFrame = 16 << 20
	// DefaultHandshakeTimeout bounds dial + challenge + hello_ack. It is a
	// little longer than the broker's default hello timeout (10 s) so the
	// broker's own `hello_timeout` close wins when it is the slow one.
	DefaultHandshakeTimeout = 15 * time.Second
	// DefaultIdleTimeout is how long a connection may go without any frame
	// or ping from the broker before it is presumed dead. The broker pings
	// every 30 s by default, so 90 s means three missed pings: this is what
	// detects a broker that vanished without a FIN (laptop sleep, NAT
	// timeout) instead of waiting for TCP keepalive.
	DefaultIdleTimeout = 90 * time.Second
	// DefaultAttestationTTL is the lifetime of the attestation signed on
	// every session (re)connect (02-crypto "Attestations").
	DefaultAttestationTTL = 12 * time.Hour

	writeTimeout = 15 * time.Second
	closeWait    = time.Second
	// writeQueueLen bounds the frames waiting for the writer goroutine;
	// beyond it writers block (back-pressure) instead of growing memory.
	writeQueueLen = 256
	// maxRememberedReceipts bounds the receipts kept for WaitReceipt on a
	// long-lived connection (the daemon's), oldest message first.
	maxRememberedReceipts = 4096
)

// Buffers are small because the bench holds thousands of idle connections;
// the write buffer is pooled so an idle connection holds none.
var writeBufferPool = &sync.Pool{}

// MeshIdentity is everything a connection needs to authenticate: the mesh,
// the member's key and the broker key pinned when the mesh was created or
// joined. Session is set for agent-session connections (session_hello) and
// nil for member connections (hello).
type MeshIdentity struct {
	MeshID    string
	MemberID  string
	BrokerURL string
	// BrokerURLs are the other public URLs of a clustered broker (the
	// mesh config's brokerUrls; BrokerURL may be among them). Dial and
	// Presence fail over between BrokerURL and these (failover.go).
	BrokerURLs   []string
	BrokerPubkey string
	Member       *cmcrypto.Identity
	Session      *SessionCreds
}

// SessionCreds is an agent session's own key and presence description. The
// member key signs a fresh attestation for Key on every (re)connect, so a
// long-running session never outlives its attestation.
type SessionCreds struct {
	Key            *cmcrypto.Identity
	SessionID      string
	DisplayName    string
	PeerType       string        // default "ai"
	AttestationTTL time.Duration // default 12h, at most 24h (broker rule)
}

// DialOptions describe the presence a connection announces and receive what
// the broker pushes. The callbacks run on the connection's reader goroutine,
// in arrival order; they must return quickly and must not wait for a
// response on the same connection (Request, Send, ClientAck) — that answer
// could only be read by the goroutine they are blocking. Queuing a write
// (ClientAckAsync, SendAsync) from a callback is fine.
type DialOptions struct {
	// Role is the connection role of a member hello: "cli" (default),
	// "control-plane" (the daemon) or "service" (bots). Ignored for
	// sessions.
	Role string
	// Presence makes a member connection a listed presence that receives
	// live pushes; false (the zero value) is a transient connection, what
	// one-shot verbs use. Session connections are always presences.
	Presence bool
	// SessionID defaults to "cli-<random>" for presences and
	// "oneshot-<random>" for transient connections (SessionCreds.SessionID
	// wins for sessions).
	SessionID string

	PeerType, DisplayName, Channel, Model, Cwd, Hostname string
	PID                                                  int
	Groups                                               []wire.Group

	// HandshakeTimeout bounds dial + challenge + hello_ack (default
	// DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// IdleTimeout: see DefaultIdleTimeout; negative disables.
	IdleTimeout time.Duration
	// Header is sent with the WebSocket upgrade request (User-Agent, ...).
	Header http.Header
	Logger *slog.Logger

	// CoalesceWrites makes the writer put every frame queued at once into
	// one write to the socket (one system call, one TCP segment where it
	// fits) instead of one write per frame. A daemon's drain queues its
	// sends and receipt acks in bursts; a connection that writes a frame
	// now and then gains nothing.
	CoalesceWrites bool

	// OnReady is called with the connection once its handshake is done,
	// before the first frame after hello_ack is read: whoever acks what
	// arrives on it (the daemon) knows the connection before the first
	// push, which the broker sends right behind hello_ack.
	OnReady func(c *Conn)
	// OnPush receives every message push with its raw frame bytes (which
	// the callee may keep: they are not reused). The daemon stores and then
	// acks; the push is redelivered if it never does.
	OnPush func(raw []byte, p *wire.Push)
	// OnReceipt receives delivery receipts for this identity's sends. The
	// callee settles them with ClientAck(receiptId) once recorded.
	OnReceipt func(r *wire.Receipt)
	// NoReceiptWaits says the caller never calls WaitReceipt, so the
	// connection keeps no receipts for it (it keeps those of the last
	// maxRememberedReceipts messages otherwise). A load generator whose
	// connections take hundreds of thousands of receipts kept ~4,096 a
	// connection, a live heap its GC marked again and again.
	NoReceiptWaits bool
	// OnSystem receives `push` frames with subtype "system" (peer events).
	OnSystem func(p *wire.Push)
	// OnClose is called once, after Done is closed, with the close code and
	// reason the broker sent (1006 and "" when the connection dropped
	// without a close frame).
	OnClose func(code int, reason string)
}

// Conn is one authenticated broker connection. All methods are safe for
// concurrent use.
type Conn struct {
	id        MeshIdentity
	self      *cmcrypto.Identity // the key the connection speaks as
	sessionID string
	opts      DialOptions
	log       *slog.Logger
	ws        *websocket.Conn
	helloAck  wire.HelloAck
	idle      time.Duration

	out        chan []byte
	batch      *batchConn // with CoalesceWrites (batchconn.go)
	ackQ       ackQueue   // ClientAckAsync's ids, for the writer (ackqueue.go)
	closeReq   chan struct{}
	closeOnce  sync.Once
	readerGone chan struct{}
	writerGone chan struct{}
	done       chan struct{}
	inCallback atomic.Bool
	reqSeq     atomic.Uint64

	mu             sync.Mutex
	dead           bool
	requests       map[string]chan response
	acks           map[string]chan SendResult
	sendReqIDs     map[string]string // reqId of an in-flight send -> its id
	receipts       map[string][]wire.Receipt
	receiptOrder   []string
	receiptWaiters map[string]map[chan struct{}]struct{}
	// finalError is the `error` frame that answered no request, kept
	// while it is the last frame received: the broker sends one just
	// before closing (banned), and only then is it the close's reason.
	// Touched only by the reader goroutine.
	finalError  *Error
	writeErr    error
	closeCode   int
	closeReason string
	termErr     *Error
}

type response struct {
	raw []byte
	env wire.Envelope
	err error
}

// errorFrame is an `error` frame; retryAfterMs comes with rate_limited.
type errorFrame struct {
	wire.Error
}

func (e *errorFrame) toError() *Error {
	return &Error{Code: e.Code, Message: e.Message, RetryAfterMs: e.RetryAfterMs, Candidates: e.Candidates}
}

func randomSuffix() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Dial connects, checks that the server holds the pinned broker key, and
// authenticates as a member (hello) or, when id.Session is set, as an agent
// session (session_hello with a freshly signed attestation). It returns once
// the broker's hello_ack arrived; any refusal is a *Error with the broker's
// code (timestamp_skew, unauthorized, revoked, capacity, ...) or
// unreachable, timeout, broker_key_mismatch, connection_closed. A broker
// that answers "busy, retry after N s" (Retry-After, retryAfterMs) is tried
// again after that wait, a few times, within ctx.
//
// An identity with several broker URLs tries them in turn, starting with
// the one that last worked in this process (failover.go).
func Dial(ctx context.Context, id MeshIdentity, opts DialOptions) (*Conn, error) {
	urls := id.urls()
	if len(urls) > 1 {
		urls = moveFront(urls, goodURL(id.MeshID))
	}
	return dialURLs(ctx, id, opts, urls)
}

func dialOnce(ctx context.Context, id MeshIdentity, opts DialOptions) (*Conn, error) {
	if err := checkIdentity(id); err != nil {
		return nil, err
	}
	if u, err := url.Parse(id.BrokerURL); err != nil || (u.Scheme != "ws" && u.Scheme != "wss") {
		return nil, newError(wire.CodeInvalidArgument, "broker URL %q is not a ws:// or wss:// URL", id.BrokerURL)
	}
	pinned, err := cmcrypto.ParsePublicKey(id.BrokerPubkey)
	if err != nil {
		return nil, wrapError(wire.CodeInvalidArgument, err, "pinned broker key")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	hsTimeout := opts.HandshakeTimeout
	if hsTimeout <= 0 {
		hsTimeout = DefaultHandshakeTimeout
	}
	hctx, cancel := context.WithTimeout(ctx, hsTimeout)
	defer cancel()

	c := &Conn{
		id:             id,
		opts:           opts,
		log:            log,
		out:            make(chan []byte, writeQueueLen),
		closeReq:       make(chan struct{}),
		readerGone:     make(chan struct{}),
		writerGone:     make(chan struct{}),
		done:           make(chan struct{}),
		ackQ:           ackQueue{wake: make(chan struct{}, 1)},
		requests:       make(map[string]chan response),
		acks:           make(map[string]chan SendResult),
		sendReqIDs:     make(map[string]string),
		receipts:       make(map[string][]wire.Receipt),
		receiptWaiters: make(map[string]map[chan struct{}]struct{}),
		idle:           opts.IdleTimeout,
	}
	if c.idle == 0 {
		c.idle = DefaultIdleTimeout
	}
	hello, err := c.prepareHello()
	if err != nil {
		return nil, err
	}

	dialer := websocket.Dialer{
		Proxy:            http.ProxyFromEnvironment,
		HandshakeTimeout: hsTimeout,
		ReadBufferSize:   1024, // big frames bypass it (bufio reads them directly)
		WriteBufferSize:  4096,
		WriteBufferPool:  writeBufferPool,
	}
	// connected: the TCP connection was made (a timeout after it is a
	// server that does not answer, not a host that cannot be reached).
	var connected atomic.Bool
	var nd net.Dialer
	// stop ends the watch that closes the connection when hctx ends:
	// gorilla's DialContext honours only the handshake's deadline, so a
	// cancelled context (a presence closed while its broker hangs in the
	// upgrade) waited out the whole handshake timeout, 15 s.
	var stop func() bool
	watch := func(nc net.Conn) {
		stop = context.AfterFunc(hctx, func() { nc.Close() })
	}
	dialer.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		connected.Store(true)
		watch(nc)
		// gorilla re-arms the write deadline before every frame, and the
		// reader extends the read deadline after every frame: lazily, so
		// most of them are no timer update (internal/deadline).
		lazy := deadline.Wrap(nc)
		if opts.CoalesceWrites {
			// Under TLS the batch is of TLS records: still one write.
			c.batch = &batchConn{Conn: lazy}
			return c.batch, nil
		}
		return lazy, nil
	}
	dialStart := time.Now()
	ws, resp, err := dialer.DialContext(hctx, id.BrokerURL, opts.Header)
	if err != nil {
		if stop != nil {
			stop()
		}
		return nil, dialError(hctx, id.BrokerURL, resp, err, connected.Load(), time.Since(dialStart))
	}
	c.ws = ws
	ws.SetReadLimit(MaxBrokerFrame)
	// A cancelled context must interrupt a blocked handshake read; the
	// deadline alone only covers the timeout (the watch set at the dial
	// goes on through claudemesh's own handshake).
	if stop == nil {
		stop = context.AfterFunc(hctx, func() { ws.NetConn().Close() })
	}
	if dl, ok := hctx.Deadline(); ok {
		ws.SetReadDeadline(dl)
		ws.SetWriteDeadline(dl)
	}
	if err := c.handshake(hctx, pinned, hello); err != nil {
		stop()
		ws.Close()
		return nil, err
	}
	if !stop() {
		// The context ended just as the handshake finished; the
		// connection is already closed underneath.
		ws.Close()
		return nil, ctxError(hctx, "handshake")
	}
	ws.SetWriteDeadline(time.Time{})
	c.extendReadDeadline()
	ws.SetPingHandler(c.onPing)
	go c.writeLoop()
	if opts.OnReady != nil {
		opts.OnReady(c)
	}
	go c.readLoop()
	return c, nil
}

func checkIdentity(id MeshIdentity) error {
	switch {
	case id.Member == nil:
		return newError(wire.CodeInvalidArgument, "identity has no member key")
	case id.MeshID == "" || id.MemberID == "":
		return newError(wire.CodeInvalidArgument, "identity has no mesh id or member id")
	case id.BrokerURL == "":
		return newError(wire.CodeInvalidArgument, "identity has no broker URL")
	case id.Session != nil && id.Session.Key == nil:
		return newError(wire.CodeInvalidArgument, "session credentials have no key")
	}
	return nil
}

func dialError(ctx context.Context, brokerURL string, resp *http.Response, err error, connected bool, waited time.Duration) error {
	if resp != nil {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		e := restError(resp, body)
		if resp.StatusCode == http.StatusTooManyRequests {
			return e
		}
		e.Code = CodeUnreachable
		e.Message = fmt.Sprintf("%s refused the WebSocket upgrade (HTTP %d): %s", brokerURL, resp.StatusCode, e.Message)
		return e
	}
	if e := tlsError(brokerURL, err); e != nil {
		return e
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && ctx.Err() == nil {
		// A resolver that timed out is not a host that did not answer.
		return &Error{Code: CodeUnreachable, Message: cannotReach(brokerURL, err), cause: err,
			Hint: "check the host name in the broker URL and this machine's DNS, then try again"}
	}
	var netErr net.Error
	if timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()); timedOut {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return ctxError(ctx, "connecting to "+brokerURL)
		}
		return noAnswer(brokerURL, err, connected, waited)
	}
	if ctx.Err() != nil {
		return ctxError(ctx, "connecting to "+brokerURL)
	}
	if errors.Is(err, websocket.ErrBadHandshake) {
		return wrapError(CodeUnreachable, err, "%s", brokerURL)
	}
	if isUnreachable(err) {
		return &Error{Code: CodeUnreachable, Message: cannotReach(brokerURL, err), cause: err}
	}
	return wrapError(CodeUnreachable, err, "connecting to %s", brokerURL)
}

// proxyFor is the proxy the environment names for a connection to
// brokerURL (as the dialer's http.ProxyFromEnvironment finds it), "" for
// none.
func proxyFor(brokerURL string) string {
	u, err := url.Parse(brokerURL)
	if err != nil {
		return ""
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	p, err := http.ProxyFromEnvironment(&http.Request{URL: u})
	if err != nil || p == nil {
		return ""
	}
	p.User = nil // never print a proxy's password
	return p.Redacted()
}

// noAnswer is a dial that timed out: a server that took the TCP
// connection and never answered the upgrade (hung, overloaded, or not a
// broker), or a host that never took it (down, or a firewall dropping
// the packets). "context deadline exceeded" said neither.
func noAnswer(brokerURL string, err error, connected bool, waited time.Duration) *Error {
	e := &Error{Code: CodeTimeout, cause: err}
	took := waited.Round(time.Second)
	if waited < time.Second {
		took = waited.Round(100 * time.Millisecond)
	}
	if proxy := proxyFor(brokerURL); proxy != "" {
		// The connection was to the proxy (HTTPS_PROXY and friends),
		// not to the broker: say so, not that the broker hangs.
		e.Message = fmt.Sprintf("no answer from %s in %s through the proxy %s (set by HTTPS_PROXY, HTTP_PROXY or ALL_PROXY): the proxy, or the broker behind it, did not answer",
			brokerURL, took, proxy)
		e.Hint = "check the proxy (or set NO_PROXY for the broker's host), and that the broker runs; then try again"
		return e
	}
	if connected {
		e.Message = fmt.Sprintf("the server at %s accepted the connection but did not answer in %s: the broker is hung or overloaded, "+
			"or what listens there is not a claudemesh broker (a proxy that does not pass WebSocket upgrades)", brokerURL, took)
		e.Hint = "ask the broker's operator to check it (its log, GET /health/ready); claudemesh doctor checks the connection again"
		return e
	}
	e.Message = fmt.Sprintf("nothing answered at %s in %s: the host is down or unreachable from here, or a firewall drops the connection", brokerURL, took)
	e.Hint = "check the address and this machine's network, and that the broker runs; then try again"
	return e
}

// tlsError is a dial refused because this machine does not trust the
// broker's TLS certificate, in words (Go's x509 text, with advice to check
// that the broker is reachable, was no help): nil for any other error.
func tlsError(brokerURL string, err error) *Error {
	var (
		unknown  x509.UnknownAuthorityError
		host     x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		why      string
		withHint = "if the broker's operator uses a self-signed certificate or a private CA, add that CA to this machine's trust store " +
			"(on Linux, SSL_CERT_FILE=/path/to/ca.pem in the environment of claudemesh and its daemon works too); " +
			"otherwise the broker needs a certificate from a public CA (docs/operating-a-broker.md). Never work around it by trusting a certificate you cannot check"
	)
	switch {
	case errors.As(err, &unknown):
		why = "is signed by an authority this machine does not trust (a self-signed or private-CA certificate, or something intercepting TLS on the way)"
	case errors.As(err, &host):
		why = "is not valid for that name (" + host.Error() + ")"
		withHint = "use the broker URL its certificate names (ask the broker's operator), or ask them to issue a certificate for this name"
	case errors.As(err, &invalid):
		why = "is not valid (" + invalid.Error() + ")"
		withHint = "ask the broker's operator to renew or fix its certificate; if it has expired, check this machine's clock too"
	case errors.As(err, &verify):
		why = "could not be verified (" + verify.Err.Error() + ")"
	default:
		return nil
	}
	return &Error{Code: CodeUnreachable, cause: err, Hint: withHint,
		Message: "the TLS certificate of the server at " + brokerURL + " " + why + ", so no connection was made"}
}

// CertificateHint is what to do about a dial refused because this machine
// does not trust the broker's TLS certificate, as every command says it
// (add the CA to the trust store, SSL_CERT_FILE, ...); "" for any other
// error. For callers that word their own advice for other failures
// (doctor), so the certificate's stays in one place.
func CertificateHint(err error) string {
	if e := tlsError("", err); e != nil {
		return e.Hint
	}
	return ""
}

// prepareHello fills what does not depend on the challenge, so a bad option
// fails before any network traffic.
func (c *Conn) prepareHello() (any, error) {
	id, o := c.id, c.opts
	var pid *int
	if o.PID > 0 {
		pid = &o.PID
	}
	if s := id.Session; s != nil {
		c.self = s.Key
		c.sessionID = firstNonEmpty(s.SessionID, o.SessionID)
		if c.sessionID == "" {
			c.sessionID = "session-" + randomSuffix()
		}
		h := &wire.SessionHello{
			Type:           wire.TypeSessionHello,
			Protocol:       wire.ProtocolVersion,
			MeshID:         id.MeshID,
			ParentMemberID: id.MemberID,
			ParentPubkey:   id.Member.PublicHex(),
			SessionPubkey:  s.Key.PublicHex(),
			SessionID:      c.sessionID,
			DisplayName:    firstNonEmpty(s.DisplayName, o.DisplayName),
			PeerType:       firstNonEmpty(s.PeerType, o.PeerType, wire.PeerAI),
			PID:            pid,
			Cwd:            o.Cwd,
			Hostname:       o.Hostname,
			Channel:        o.Channel,
			Model:          o.Model,
			Groups:         o.Groups,
		}
		if h.DisplayName == "" {
			return nil, newError(wire.CodeInvalidArgument, "a session needs a display name")
		}
		if !wire.ValidSessionID(c.sessionID) {
			return nil, newError(wire.CodeInvalidArgument, "invalid session id %q", c.sessionID)
		}
		return h, nil
	}
	c.self = id.Member
	c.sessionID = o.SessionID
	if c.sessionID == "" {
		if o.Presence {
			c.sessionID = "cli-" + randomSuffix()
		} else {
			c.sessionID = "oneshot-" + randomSuffix()
		}
	}
	if !wire.ValidSessionID(c.sessionID) {
		return nil, newError(wire.CodeInvalidArgument, "invalid session id %q", c.sessionID)
	}
	presence := o.Presence
	return &wire.Hello{
		Type:        wire.TypeHello,
		Protocol:    wire.ProtocolVersion,
		MeshID:      id.MeshID,
		MemberID:    id.MemberID,
		Pubkey:      id.Member.PublicHex(),
		SessionID:   c.sessionID,
		Role:        firstNonEmpty(o.Role, wire.RoleCLI),
		Presence:    &presence,
		PeerType:    o.PeerType,
		DisplayName: o.DisplayName,
		PID:         pid,
		Cwd:         o.Cwd,
		Hostname:    o.Hostname,
		Channel:     o.Channel,
		Model:       o.Model,
		Groups:      o.Groups,
	}, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// handshake runs 01-protocol §3 steps 1-2 on the raw connection, before the
// reader and writer goroutines exist.
func (c *Conn) handshake(ctx context.Context, pinned cmcrypto.PublicKey, hello any) error {
	raw, env, err := c.readHandshakeFrame(ctx)
	if err != nil {
		return err
	}
	switch env.Type {
	case wire.TypeChallenge:
	case wire.TypeError:
		return c.handshakeRefused(ctx, raw)
	default:
		return newError(CodeProtocol, "expected challenge, got %q", env.Type)
	}
	var ch wire.Challenge
	if err := wire.Decode(raw, &ch); err != nil {
		return wrapError(CodeProtocol, err, "challenge")
	}
	if ch.Protocol != wire.ProtocolVersion {
		return newError(CodeProtocol, "broker speaks protocol %d, this client %d", ch.Protocol, wire.ProtocolVersion)
	}
	// Both checks matter: the key field alone is just a claim, and the
	// signature alone would still accept a broker that announces another
	// key in hello_ack and audit checkpoints.
	if ch.BrokerPubkey != c.id.BrokerPubkey {
		c.refuse()
		return newError(CodeBrokerKeyMismatch, "the server at %s presents broker key %s, but this mesh pinned %s",
			c.id.BrokerURL, ch.BrokerPubkey, c.id.BrokerPubkey)
	}
	msg, err := cmcrypto.ChallengeString(ch.Nonce, ch.ServerTime)
	if err == nil && !wire.IsHex(ch.Nonce, 64) {
		err = errors.New("nonce is not 64 lowercase hex")
	}
	if err == nil {
		err = cmcrypto.Verify(pinned, msg, ch.Signature)
	}
	if err != nil {
		c.refuse()
		return wrapError(CodeBrokerKeyMismatch, err, "the server at %s did not sign its challenge with the pinned broker key", c.id.BrokerURL)
	}

	now := time.Now().UnixMilli()
	switch h := hello.(type) {
	case *wire.Hello:
		s, err := cmcrypto.HelloString(h.MeshID, h.MemberID, h.Pubkey, c.id.BrokerPubkey, now, ch.Nonce)
		if err != nil {
			return wrapError(wire.CodeInvalidArgument, err, "hello")
		}
		h.Timestamp, h.Challenge, h.Signature = now, ch.Nonce, c.id.Member.Sign(s)
	case *wire.SessionHello:
		ttl := c.id.Session.AttestationTTL
		if ttl <= 0 {
			ttl = DefaultAttestationTTL
		}
		exp := time.Now().Add(ttl).UnixMilli()
		as, err := cmcrypto.SessionAttestString(h.MeshID, h.ParentPubkey, h.SessionPubkey, exp)
		if err != nil {
			return wrapError(wire.CodeInvalidArgument, err, "attestation")
		}
		h.Attestation = &wire.Attestation{
			SessionPubkey: h.SessionPubkey,
			ParentPubkey:  h.ParentPubkey,
			ExpiresAt:     exp,
			Signature:     c.id.Member.Sign(as),
		}
		s, err := cmcrypto.SessionHelloString(h.MeshID, h.ParentPubkey, h.SessionPubkey, c.id.BrokerPubkey, now, ch.Nonce)
		if err != nil {
			return wrapError(wire.CodeInvalidArgument, err, "session hello")
		}
		h.Timestamp, h.Challenge, h.Signature = now, ch.Nonce, c.id.Session.Key.Sign(s)
	}
	data, err := wire.Encode(hello)
	if err != nil {
		return wrapError(wire.CodeInvalidArgument, err, "encoding hello")
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		if ctx.Err() != nil {
			return ctxError(ctx, "sending hello")
		}
		return wrapError(CodeConnectionClosed, err, "sending hello")
	}

	raw, env, err = c.readHandshakeFrame(ctx)
	if err != nil {
		return err
	}
	switch env.Type {
	case wire.TypeHelloAck:
	case wire.TypeError:
		return c.handshakeRefused(ctx, raw)
	default:
		return newError(CodeProtocol, "expected hello_ack, got %q", env.Type)
	}
	if err := wire.Decode(raw, &c.helloAck); err != nil {
		return wrapError(CodeProtocol, err, "hello_ack")
	}
	if c.helloAck.MeshID != c.id.MeshID {
		return newError(CodeProtocol, "hello_ack is for mesh %q, not %q", c.helloAck.MeshID, c.id.MeshID)
	}
	if c.helloAck.BrokerPubkey != "" && c.helloAck.BrokerPubkey != c.id.BrokerPubkey {
		c.refuse()
		return newError(CodeBrokerKeyMismatch, "hello_ack names broker key %s, pinned %s", c.helloAck.BrokerPubkey, c.id.BrokerPubkey)
	}
	return nil
}

// refuse tells the server why the client walks away; the close reason is
// the code, as 01-protocol §1 asks of both sides.
func (c *Conn) refuse() {
	c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.ClosePolicyViolation, CodeBrokerKeyMismatch),
		time.Now().Add(time.Second))
}

func (c *Conn) readHandshakeFrame(ctx context.Context) ([]byte, wire.Envelope, error) {
	_, raw, err := c.ws.ReadMessage()
	if err != nil {
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			code := ce.Text
			if code == "" {
				code = CodeConnectionClosed
			}
			return nil, wire.Envelope{}, &Error{Code: code,
				Message: fmt.Sprintf("broker closed the connection during the handshake (%d %s)", ce.Code, ce.Text), cause: err}
		}
		var ne net.Error
		if ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
			<-ctx.Done() // the read deadline is the context's deadline
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && c.id.BrokerURL != "" {
				// Connected, upgraded, and then silence: a hung broker
				// (or a WebSocket server that is not one).
				e := noAnswer(c.id.BrokerURL, ctx.Err(), true, 0)
				e.Message = fmt.Sprintf("the server at %s took the WebSocket connection but sent no handshake in time: the broker is hung or overloaded, "+
					"or what listens there is not a claudemesh broker", c.id.BrokerURL)
				return nil, wire.Envelope{}, e
			}
			return nil, wire.Envelope{}, ctxError(ctx, "waiting for the broker's handshake")
		}
		return nil, wire.Envelope{}, wrapError(CodeConnectionClosed, err, "during the handshake")
	}
	env, err := wire.Peek(raw)
	if err != nil {
		return nil, wire.Envelope{}, wrapError(CodeProtocol, err, "handshake frame")
	}
	return raw, env, nil
}

// handshakeRefused turns the broker's error frame into the returned error.
// It reads on briefly for the close frame that follows, so the broker's
// close is answered instead of being cut off by a TCP reset.
func (c *Conn) handshakeRefused(ctx context.Context, raw []byte) error {
	var ef errorFrame
	if err := wire.Decode(raw, &ef); err != nil || ef.Code == "" {
		return newError(CodeProtocol, "undecodable error frame during the handshake")
	}
	dl := time.Now().Add(closeWait)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.ws.SetReadDeadline(dl)
	for {
		if _, _, err := c.ws.ReadMessage(); err != nil {
			break
		}
	}
	return ef.toError()
}

// onPing answers the broker's ping exactly as gorilla's default handler
// does, and also counts the ping as proof of life for the idle timeout.
func (c *Conn) onPing(appData string) error {
	c.extendReadDeadline()
	err := c.ws.WriteControl(websocket.PongMessage, []byte(appData), time.Now().Add(writeTimeout))
	if err == websocket.ErrCloseSent {
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return nil
	}
	return err
}

func (c *Conn) extendReadDeadline() {
	if c.idle > 0 {
		c.ws.SetReadDeadline(time.Now().Add(c.idle))
	} else {
		c.ws.SetReadDeadline(time.Time{})
	}
}

// HelloAck is the broker's acceptance: mesh name, member role, presence id.
func (c *Conn) HelloAck() wire.HelloAck { return c.helloAck }

// Identity is the identity the connection was dialled with; its BrokerURL
// is the URL this connection reached (one of the identity's URLs).
func (c *Conn) Identity() MeshIdentity { return c.id }

// Self is the key this connection speaks as (the session key for session
// connections, else the member key): the one that signs and opens.
func (c *Conn) Self() *cmcrypto.Identity { return c.self }

// SessionID is the sessionId sent in the hello (generated if not given).
func (c *Conn) SessionID() string { return c.sessionID }

// Done is closed when the connection has ended and its goroutines have
// exited; no callback but OnClose runs after it.
func (c *Conn) Done() <-chan struct{} { return c.done }

// CloseCode is the close code and reason the broker sent (1006, "" when the
// connection dropped without one); zero before Done.
func (c *Conn) CloseCode() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeReason
}

// Err says why the connection ended (nil while it is open). Its Code is the
// broker's close reason when there was one (kicked, banned, left,
// session_replaced, slow_consumer, ...), else connection_closed; its Message
// carries the human text of the error frame the broker sent just before
// closing, which is what a banned user must be shown (01-protocol §9).
func (c *Conn) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.termErr
}

// Close ends the connection cleanly: frames already queued are written,
// then a 1000 close frame, which ends a presence at once on the broker
// (01-protocol §3) instead of after the grace period. It waits briefly for
// the broker's answering close frame and then drops the TCP connection
// regardless, so it never blocks for long. Close is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.closeReq) })
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-c.done:
		return nil
	case <-c.writerGone:
	case <-t.C:
		c.ws.NetConn().Close()
		return nil
	}
	if c.inCallback.Load() {
		// Called from one of our callbacks: the reader cannot finish
		// until it returns, so waiting would only burn closeWait.
		return nil
	}
	select {
	case <-c.done:
	case <-t.C:
		c.ws.NetConn().Close()
	}
	return nil
}

// Drop ends the connection at once: it closes the TCP connection without
// the close frame and without waiting for anything, and the connection is
// torn down in the background. Frames still queued are lost, and the
// broker ends this connection's presence after its grace period, not at
// once. It is for a command that was interrupted and must print what it
// has before a second signal can end the process, where Close could wait
// up to closeWait for the broker's close frame. Close after Drop returns
// once the teardown is done.
func (c *Conn) Drop() {
	c.ws.NetConn().Close()
}

// enqueue hands a frame to the writer goroutine, waiting for queue space
// (back-pressure) but not for the write itself.
func (c *Conn) enqueue(ctx context.Context, frame []byte) error {
	select {
	case <-c.closeReq:
		return newError(CodeConnectionClosed, "connection is closing")
	case <-c.writerGone:
		return c.closedError()
	default:
	}
	select {
	case c.out <- frame:
		return nil
	case <-c.writerGone:
		return c.closedError()
	case <-c.closeReq:
		return newError(CodeConnectionClosed, "connection is closing")
	case <-ctx.Done():
		return ctxError(ctx, "waiting to write")
	}
}

// tryEnqueue hands frame to the writer if its queue has room now and the
// connection is open, without the timer a waiting enqueue needs: a push's
// ack is queued this way on every delivery.
func (c *Conn) tryEnqueue(frame []byte) bool {
	select {
	case <-c.closeReq:
		return false
	case <-c.writerGone:
		return false
	default:
	}
	select {
	case c.out <- frame:
		return true
	default:
		return false
	}
}

func (c *Conn) closedError() *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writeErr != nil {
		return wrapError(CodeConnectionClosed, c.writeErr, "writing")
	}
	if c.dead {
		return newError(CodeConnectionClosed, "connection closed (%d %s)", c.closeCode, c.closeReason)
	}
	return newError(CodeConnectionClosed, "connection closed")
}

// writeFailed records why the writer stopped and closes the socket, which
// wakes the reader so the connection is torn down once.
func (c *Conn) writeFailed(err error) {
	c.mu.Lock()
	c.writeErr = err
	c.mu.Unlock()
	c.ws.NetConn().Close()
}

func (c *Conn) writeLoop() {
	defer close(c.writerGone)
	write := func(frame []byte) bool {
		c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
			c.writeFailed(err)
			return false
		}
		return true
	}
	for {
		select {
		case f := <-c.out:
			if c.batch != nil && (len(c.out) > 0 || c.ackQ.queued()) {
				if !c.writeBatch(f, write) {
					return
				}
				continue
			}
			// The acks queued before f go first (with any queued since):
			// a frame never overtakes an ack queued before it.
			if !c.writeAcks(write) || !write(f) {
				return
			}
		case <-c.ackQ.wake:
			if c.batch != nil && len(c.out) > 0 {
				if !c.writeBatch(nil, write) {
					return
				}
				continue
			}
			if !c.writeAcks(write) {
				return
			}
		case <-c.closeReq:
			if !c.writeAcks(write) {
				return
			}
		drain:
			for {
				select {
				case f := <-c.out:
					if !c.writeAcks(write) || !write(f) {
						return
					}
				default:
					break drain
				}
			}
			c.ws.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
				time.Now().Add(writeTimeout))
			return
		case <-c.readerGone:
			return
		}
	}
}

// readMessage is ws.ReadMessage (io.ReadAll: five allocations for a
// 900-byte push) through pooled buffers (internal/framebuf); gorilla's
// read limit bounds the frame. The frame returned is the caller's (the
// push callbacks keep it).
func (c *Conn) readMessage() ([]byte, error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	return framebuf.ReadAll(r, math.MaxInt64)
}

func (c *Conn) readLoop() {
	var readErr error
	for {
		data, err := c.readMessage()
		if err != nil {
			readErr = err
			break
		}
		c.extendReadDeadline()
		c.dispatch(data)
	}
	c.teardown(readErr)
}

// teardown runs once, on the reader goroutine: it records why the
// connection ended, fails every waiting call, and only then closes done.
func (c *Conn) teardown(readErr error) {
	close(c.readerGone)
	c.ws.NetConn().Close()
	<-c.writerGone

	code, reason := websocket.CloseAbnormalClosure, ""
	var ce *websocket.CloseError
	if errors.As(readErr, &ce) {
		code, reason = ce.Code, ce.Text
	}
	select {
	case <-c.closeReq:
		if code == websocket.CloseAbnormalClosure {
			// We closed and did not wait for the echo: still a clean
			// close from the caller's point of view.
			code = websocket.CloseNormalClosure
		}
	default:
	}

	c.mu.Lock()
	c.dead = true
	c.closeCode, c.closeReason = code, reason
	term := &Error{Code: CodeConnectionClosed, cause: readErr}
	switch {
	case reason != "":
		term.Code = reason
		term.Message = fmt.Sprintf("broker closed the connection (%d %s)", code, reason)
	case c.writeErr != nil:
		term.Message = "write failed: " + c.writeErr.Error()
	case readErr != nil && ce == nil:
		term.Message = readErr.Error()
	default:
		term.Message = fmt.Sprintf("connection closed (%d)", code)
	}
	if c.finalError != nil && c.finalError.Message != "" && reason != "" {
		term.Message = c.finalError.Message
	}
	c.termErr = term
	pendingErr := &Error{Code: CodeConnectionClosed,
		Message: fmt.Sprintf("connection closed before the answer came (%d %s)", code, reason), cause: readErr}
	requests, acks := c.requests, c.acks
	c.requests, c.acks, c.sendReqIDs = nil, nil, nil
	for _, ws := range c.receiptWaiters {
		for ch := range ws {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
	c.mu.Unlock()

	for _, ch := range requests {
		ch <- response{err: pendingErr}
	}
	for _, ch := range acks {
		ch <- SendResult{Err: pendingErr}
	}
	c.log.Debug("broker connection closed", "code", code, "reason", reason, "err", readErr)
	close(c.done)
	if c.opts.OnClose != nil {
		c.opts.OnClose(code, reason)
	}
}

// dispatch routes one inbound frame. It never blocks on a waiter: every
// waiter channel is buffered for exactly the one value it will get.
func (c *Conn) dispatch(data []byte) {
	c.finalError = nil
	var env wire.Envelope
	if typ, ok := wire.FrameType(data); ok && (typ == wire.TypeAck || typ == wire.TypePush || typ == wire.TypeReceipt) {
		// The hot frames are parsed once, by their typed decode.
		env.Type = typ
	} else {
		var err error
		if env, err = wire.Peek(data); err != nil {
			c.log.Warn("undecodable frame from broker", "err", err)
			return
		}
	}
	switch env.Type {
	case wire.TypeAck:
		var a wire.Ack
		if err := wire.Decode(data, &a); err != nil {
			c.log.Warn("undecodable ack", "err", err)
			return
		}
		c.deliverAck(&a)
	case wire.TypePush:
		if c.opts.OnSystem == nil && bytes.Contains(data, []byte(`"subtype":"system"`)) {
			// Presence events nobody listens to are not worth decoding: in
			// a large mesh they are most of what an idle presence receives.
			// (A peer cannot send subtype "system"; the broker refuses it,
			// and base64 ciphertext holds no quotes.)
			return
		}
		var p wire.Push
		if err := wire.Decode(data, &p); err != nil {
			c.log.Warn("undecodable push", "err", err)
			return
		}
		if p.Subtype == wire.SubtypeSystem {
			if c.opts.OnSystem != nil {
				c.callback(func() { c.opts.OnSystem(&p) })
			}
			return
		}
		if c.opts.OnPush != nil {
			c.callback(func() { c.opts.OnPush(data, &p) })
		} else {
			c.log.Debug("push with no OnPush handler", "messageId", p.MessageID)
		}
	case wire.TypeReceipt:
		var r wire.Receipt
		if err := wire.Decode(data, &r); err != nil {
			c.log.Warn("undecodable receipt", "err", err)
			return
		}
		c.rememberReceipts(r)
		if c.opts.OnReceipt != nil {
			c.callback(func() { c.opts.OnReceipt(&r) })
		}
	case wire.TypeError:
		var ef errorFrame
		if err := wire.Decode(data, &ef); err != nil {
			c.log.Warn("undecodable error frame", "err", err)
			return
		}
		if env.ReqID != "" && c.deliverResponse(env, data) {
			return
		}
		if env.ReqID != "" && c.failSendByReqID(env.ReqID, ef.toError()) {
			return
		}
		c.finalError = ef.toError()
		c.log.Warn("broker error", "code", ef.Code, "message", ef.Message, "reqId", ef.ReqID)
	default:
		if env.ReqID != "" && c.deliverResponse(env, data) {
			return
		}
		c.log.Debug("unsolicited frame from broker", "type", env.Type, "reqId", env.ReqID)
	}
}

func (c *Conn) callback(f func()) {
	c.inCallback.Store(true)
	defer c.inCallback.Store(false)
	f()
}

func (c *Conn) deliverResponse(env wire.Envelope, data []byte) bool {
	c.mu.Lock()
	ch, ok := c.requests[env.ReqID]
	if ok {
		delete(c.requests, env.ReqID)
	}
	c.mu.Unlock()
	if ok {
		ch <- response{raw: data, env: env}
	}
	return ok
}

func (c *Conn) deliverAck(a *wire.Ack) {
	c.mu.Lock()
	ch, ok := c.acks[a.ID]
	if ok {
		delete(c.acks, a.ID)
		if a.ReqID != "" {
			delete(c.sendReqIDs, a.ReqID)
		}
	}
	c.mu.Unlock()
	if !ok {
		c.log.Debug("ack for no waiting send", "id", a.ID)
		return
	}
	res := SendResult{Ack: a}
	if a.Error != nil {
		res.Err = &Error{Code: a.Error.Code, Message: a.Error.Message, RetryAfterMs: a.Error.RetryAfterMs}
	} else if a.MessageID == "" {
		res.Err = newError(CodeProtocol, "ack for %s has neither messageId nor error", a.ID)
	}
	ch <- res
}

func (c *Conn) failSendByReqID(reqID string, e *Error) bool {
	c.mu.Lock()
	id, ok := c.sendReqIDs[reqID]
	var ch chan SendResult
	if ok {
		delete(c.sendReqIDs, reqID)
		ch, ok = c.acks[id]
		delete(c.acks, id)
	}
	c.mu.Unlock()
	if ok {
		ch <- SendResult{Err: e}
	}
	return ok
}

// nextReqID is unique per connection, which is all 01-protocol asks.
func (c *Conn) nextReqID() string {
	return "r" + strconv.FormatUint(c.reqSeq.Add(1), 36)
}
