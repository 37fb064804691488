package client

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"time"

	"claudemesh/wire"

	"github.com/gorilla/websocket"
)

// State is where a reconnecting presence stands; the daemon reports it per
// mesh in `daemon status` (03-daemon "Lifecycle").
type State string

// Presence states. Closed, Kicked, Banned and BrokerKeyMismatch are final.
const (
	StateConnecting   State = "connecting"
	StateOpen         State = "open"
	StateReconnecting State = "reconnecting"
	StateClosed       State = "closed"
	StateKicked       State = "kicked"
	StateRemoved      State = "removed" // removed by the broker's operator
	StateBanned       State = "banned"
	// StateBrokerKeyMismatch: the server at the broker URL cannot prove it
	// holds the pinned broker key. Retrying would only keep offering our
	// hello to an impostor (or to a broker whose key really changed, which
	// needs a new invite), so the presence stops.
	StateBrokerKeyMismatch State = "broker_key_mismatch"
)

// Final reports whether the presence will not reconnect from this state.
func (s State) Final() bool {
	return s == StateClosed || s == StateKicked || s == StateRemoved || s == StateBanned || s == StateBrokerKeyMismatch
}

// BackoffEnv names the environment variable that overrides the backoff cap
// (a Go duration such as "200ms"), so tests can shrink every reconnect.
const BackoffEnv = "CLAUDEMESH_BACKOFF_MAX"

// Backoff steps of 01-protocol §9: 1, 2, 4, 8, 16 s, then the cap (30 s).
var backoffSteps = [...]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second}

// DefaultBackoffMax is the backoff cap without CLAUDEMESH_BACKOFF_MAX.
const DefaultBackoffMax = 30 * time.Second

// Backoff returns the delay before reconnect attempt n (0-based: the delay
// after the first failure is Backoff(0, ...)) with ±20 % jitter, so a
// broker restart is not met by every client in the same millisecond.
func Backoff(attempt int, max time.Duration) time.Duration {
	return time.Duration(float64(backoffStep(attempt, max)) * (0.8 + 0.4*rand.Float64()))
}

// backoffStep is the schedule's delay for attempt without jitter: 1, 2, 4,
// 8, 16 s, then max (0: DefaultBackoffMax), never above max.
func backoffStep(attempt int, max time.Duration) time.Duration {
	if max <= 0 {
		max = DefaultBackoffMax
	}
	if attempt >= 0 && attempt < len(backoffSteps) && backoffSteps[attempt] < max {
		return backoffSteps[attempt]
	}
	return max
}

// BackoffMaxFromEnv reads CLAUDEMESH_BACKOFF_MAX; 0 when unset or invalid.
func BackoffMaxFromEnv() time.Duration {
	v := os.Getenv(BackoffEnv)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0
	}
	return d
}

// PresenceOptions tune a reconnecting presence.
type PresenceOptions struct {
	// OnConnected runs after every hello_ack, before the state becomes
	// open — the daemon refreshes its member and peer cache here, so a
	// mesh never reports open with stale names (03-daemon "Outbox" step 3).
	// ctx ends when the presence is closed. It runs on the presence's own
	// goroutine, so it may use the connection's requests freely.
	OnConnected func(ctx context.Context, c *Conn)
	// OnState is told of every state change, with the error that caused
	// it (nil on open). It must not block.
	OnState func(s State, err error)
	// BackoffMax caps the reconnect backoff; 0 means CLAUDEMESH_BACKOFF_MAX
	// or, unset, DefaultBackoffMax.
	BackoffMax time.Duration
	// BeforeDial, when set, runs before every dial and may wait: the
	// daemon's session presences wait there for their mesh's own
	// connection to be open, so after a broker outage they follow the
	// mesh's backoff instead of each keeping one of its own. An error
	// stops the presence (state closed).
	BeforeDial func(ctx context.Context) error
	// PrepareDial, when set, may change the dial options before every
	// dial: the daemon puts a session's current groups into its
	// session_hello, so a reconnect restores them.
	PrepareDial func(o *DialOptions)
	// MismatchRecheck, when set, keeps a presence that met a server
	// unable to prove the pinned broker key trying, slowly: it stays in
	// StateBrokerKeyMismatch and dials again after 30 s, 1, 2, 4 min, then
	// every MismatchRecheck at most, until a connection opens (every
	// attempt must prove the pinned key again, so an impostor learns
	// nothing new). A presence cap below the default (BackoffMax,
	// CLAUDEMESH_BACKOFF_MAX) shortens these waits too. Unset, the
	// mismatch is final.
	MismatchRecheck time.Duration
}

// mismatchFirstRecheck is the first wait of MismatchRecheck.
const mismatchFirstRecheck = 30 * time.Second

// mismatchDelay is the wait before recheck n (0-based) of a presence in
// StateBrokerKeyMismatch, with the jitter of Backoff.
func (p *Presence) mismatchDelay(n int) time.Duration {
	d := min(mismatchFirstRecheck<<min(n, 8), max(p.opts.MismatchRecheck, mismatchFirstRecheck))
	if p.max < DefaultBackoffMax {
		d = min(d, p.max) // tests shrink every reconnect
	}
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// Presence keeps one identity connected: it redials with backoff after a
// drop and stops for good when 01-protocol §9 says the client must (left,
// session_replaced, kicked, banned). A session's attestation is re-signed on
// every dial, so a session lives as long as its process.
type Presence struct {
	id     MeshIdentity
	dial   DialOptions
	opts   PresenceOptions
	max    time.Duration
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	state   State
	err     error
	conn    *Conn
	changed chan struct{}
}

// StartPresence starts keeping the identity connected until ctx ends or
// Close is called (both close the connection cleanly with 1000, which ends
// the presence on the broker at once).
func StartPresence(ctx context.Context, id MeshIdentity, dial DialOptions, opts PresenceOptions) *Presence {
	ctx, cancel := context.WithCancel(ctx)
	p := &Presence{
		id: id, dial: dial, opts: opts, cancel: cancel,
		done:    make(chan struct{}),
		state:   StateConnecting,
		changed: make(chan struct{}),
		log:     dial.Logger,
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.max = opts.BackoffMax
	if p.max <= 0 {
		p.max = BackoffMaxFromEnv()
	}
	if p.max <= 0 {
		p.max = DefaultBackoffMax
	}
	if opts.OnState != nil {
		opts.OnState(StateConnecting, nil)
	}
	go p.run(ctx)
	return p
}

// State returns the current state and the error that led to it.
func (p *Presence) State() (State, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state, p.err
}

// Changed returns a channel closed at the next state change; call State
// after it fires. This lets any number of watchers wait without callbacks.
func (p *Presence) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// Conn is the open connection, or nil while (re)connecting or after the
// end. A Conn it returns may close at any moment; calls on it then fail
// with connection_closed.
func (p *Presence) Conn() *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != StateOpen {
		return nil
	}
	return p.conn
}

// Done is closed when the presence has stopped for good.
func (p *Presence) Done() <-chan struct{} { return p.done }

// Close stops reconnecting, closes the connection cleanly and waits.
func (p *Presence) Close() {
	p.cancel()
	<-p.done
}

// WaitState waits until the presence is in one of states (or a final
// state) and returns it.
func (p *Presence) WaitState(ctx context.Context, states ...State) (State, error) {
	for {
		ch := p.Changed()
		s, err := p.State()
		for _, want := range states {
			if s == want {
				return s, err
			}
		}
		if s.Final() {
			return s, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s, ctxError(ctx, "waiting for presence state")
		}
	}
}

func (p *Presence) setState(s State, err error, c *Conn) {
	p.mu.Lock()
	if p.state == s && p.err == err && p.conn == c {
		p.mu.Unlock()
		return
	}
	p.state, p.err, p.conn = s, err, c
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if c != nil {
		p.log.Info("broker presence", "mesh", p.id.MeshID, "state", string(s), "url", c.Identity().BrokerURL)
	} else {
		p.log.Info("broker presence", "mesh", p.id.MeshID, "state", string(s), "err", err)
	}
	if p.opts.OnState != nil {
		p.opts.OnState(s, err)
	}
}

// verdict is what the close-code table says to do next.
type verdict int

const (
	reconnect verdict = iota
	stopClosed
	stopKicked
	stopRemoved
	stopBanned
	stopKeyMismatch
)

// closeVerdict applies 01-protocol §9 to a connection that ended.
func closeVerdict(code int, reason string) verdict {
	switch {
	case code == websocket.CloseNormalClosure && (reason == wire.ReasonLeft || reason == wire.ReasonReplaced):
		return stopClosed
	case code == wire.CloseKicked && reason == wire.ReasonRemoved:
		return stopRemoved
	case code == wire.CloseKicked:
		return stopKicked
	case code == wire.CloseBanned:
		return stopBanned
	}
	// disconnected, shutting_down, slow_consumer, frame_too_big, network
	// loss, and 1008 handshake codes: try again later.
	return reconnect
}

// dialVerdict applies the same table to a refused handshake: a revoked
// member is banned; a server that cannot sign with the pinned broker key is
// never offered another hello; everything else (skew, capacity,
// unreachable) may change, so it is retried with backoff — never in a tight
// loop.
func dialVerdict(err error) verdict {
	switch CodeOf(err) {
	case CodeBrokerKeyMismatch:
		return stopKeyMismatch
	case wire.CodeRevoked, wire.CodeBanned:
		return stopBanned
	case wire.ReasonKicked:
		return stopKicked
	case wire.ReasonRemoved:
		return stopRemoved
	case wire.ReasonLeft, wire.ReasonReplaced, wire.CodeInvalidArgument,
		wire.CodeNameTaken, wire.CodeSessionKeyConflict:
		// A session whose name or key the broker refuses gets the same
		// answer on every retry.
		// invalid_argument here is our own validation of the identity
		// or options: retrying cannot fix it.
		return stopClosed
	}
	return reconnect
}

func (p *Presence) run(ctx context.Context) {
	defer close(p.done)
	defer p.cancel()
	attempt := 0
	state := StateConnecting
	var lastErr error
	// The URLs of the mesh's broker and the order of the next pass
	// (failover.go); dropped is the URL of the connection that ended last.
	urls := p.id.urls()
	order := moveFront(urls, goodURL(p.id.MeshID))
	dropped := ""
	backoff := Backoff
	if len(urls) > 1 {
		backoff = FailoverBackoff
	}
	// end settles a connection attempt that ended with err: the presence
	// stops in the state the verdict names, or waits its backoff and
	// reports whether to try again.
	rechecks := 0 // waits since a mismatch, while MismatchRecheck keeps trying
	end := func(v verdict, err error) bool {
		if rechecks > 0 || (v == stopKeyMismatch && p.opts.MismatchRecheck > 0) {
			// Mismatched, or trying again since: the state stays
			// broker_key_mismatch (sends stay refused) until a connection
			// proves the pinned key, whatever the attempts meanwhile
			// meet; only a refusal for good ends it.
			if v != reconnect && v != stopKeyMismatch {
				rechecks = 0
			} else {
				if v == stopKeyMismatch || lastErr == nil {
					lastErr = err
				}
				state = StateBrokerKeyMismatch
				p.setState(state, lastErr, nil)
				if !p.sleep(ctx, p.mismatchDelay(rechecks)) {
					p.setState(StateClosed, nil, nil)
					return false
				}
				rechecks++
				return true
			}
		}
		switch v {
		case stopBanned:
			p.setState(StateBanned, err, nil)
			return false
		case stopKicked:
			p.setState(StateKicked, err, nil)
			return false
		case stopRemoved:
			p.setState(StateRemoved, err, nil)
			return false
		case stopClosed:
			p.setState(StateClosed, err, nil)
			return false
		case stopKeyMismatch:
			p.setState(StateBrokerKeyMismatch, err, nil)
			return false
		}
		lastErr, state = err, StateReconnecting
		p.setState(state, lastErr, nil)
		if !p.sleep(ctx, backoff(attempt, p.max)) {
			p.setState(StateClosed, nil, nil)
			return false
		}
		attempt++
		return true
	}
	for {
		p.setState(state, lastErr, nil)
		if p.opts.BeforeDial != nil {
			if err := p.opts.BeforeDial(ctx); err != nil {
				p.setState(StateClosed, err, nil)
				return
			}
		}
		dial := p.dial
		if p.opts.PrepareDial != nil {
			p.opts.PrepareDial(&dial)
		}
		if len(order) > 1 {
			// Another presence of this process (the mesh's own, for a
			// session) may have found a working node meanwhile.
			if good := goodURL(p.id.MeshID); good != dropped {
				order = moveFront(order, good)
			}
		}
		c, err := dialURLs(ctx, p.id, dial, order)
		if err != nil {
			if ctx.Err() != nil {
				p.setState(StateClosed, nil, nil)
				return
			}
			if !end(dialVerdict(err), err) {
				return
			}
			continue
		}
		attempt, rechecks = 0, 0 // reset after a hello_ack
		if learned := c.HelloAck().BrokerURLs; len(learned) > 0 {
			// The broker's current list (hello_ack comes after the
			// challenge proved the pinned key); a bad one is ignored.
			if next, err := wire.BrokerURLList(p.id.BrokerURL, learned); err == nil && !slices.Equal(next, urls) {
				urls = next
				p.log.Info("broker URLs", "mesh", p.id.MeshID, "urls", urls)
				if len(urls) > 1 {
					backoff = FailoverBackoff
				}
			}
		}
		if p.opts.OnConnected != nil {
			p.opts.OnConnected(ctx, c)
		}
		select {
		case <-c.Done():
		default:
			p.setState(StateOpen, nil, c)
		}
		select {
		case <-c.Done():
		case <-ctx.Done():
			c.Close()
			p.setState(StateClosed, nil, nil)
			return
		}
		dropped = c.Identity().BrokerURL
		order = afterDrop(urls, dropped)
		if !end(closeVerdict(c.CloseCode()), c.Err()) {
			return
		}
	}
}

func (p *Presence) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
