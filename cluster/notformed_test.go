package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"claudemesh/internal/lockedbuf"
	"claudemesh/internal/ratelog"
)

// TestNoClusterFormedIsSaid: a node whose peers never start gives up at
// the start's deadline saying that no cluster formed, which routes did not
// answer and what to check, not NATS's stream error; and the route
// dialler's failures, one every few milliseconds, are logged once per
// route with a count.
func TestNoClusterFormedIsSaid(t *testing.T) {
	t.Parallel()
	var log lockedbuf.Buffer
	self, a, b := freePort(t), freePort(t), freePort(t)
	node, err := Start(Config{Name: "lone", NodeID: "n1", Listen: self, Routes: []string{self, a, b},
		DataDir: t.TempDir(), Replicas: 3, RouteSecret: testSecret,
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	_, err = OpenEngine(node, EngineOptions{Path: filepath.Join(t.TempDir(), "broker.db"), PublishTimeout: time.Second, CatchUpTimeout: 3 * time.Second})
	var nf *NotFormedError
	if !errors.As(err, &nf) {
		t.Fatalf("OpenEngine without peers: %v (%T), want a NotFormedError", err, err)
	}
	msg := err.Error()
	for _, want := range []string{"no cluster formed within 3s", "none of the other nodes (" + a + ", " + b + ")", "--cluster-routes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "create stream") || strings.Contains(msg, "err_code") {
		t.Errorf("the error names NATS internals: %q", msg)
	}
	dials := strings.Count(log.String(), "Error trying to connect to route")
	if dials == 0 || dials > 4 {
		t.Errorf("the route dialler's failures were logged %d times in 3 s (want once per route): %s", dials, log.String())
	}
}

// TestForeignBrokerKeyIsSaid (a new user's trial): a node started with
// another broker.key than the running ones (its route certificates derive
// from it) was told that none of them answered and to check its
// firewall, while they had answered and refused its certificate; and the
// running node logged NATS's x509 text twice a second, under a new port
// each time. Now the starting node says its broker.key differs and to
// copy it, and the running one logs one line per host that says so.
func TestForeignBrokerKeyIsSaid(t *testing.T) {
	t.Parallel()
	var goodLog, badLog lockedbuf.Buffer
	good, bad, third := freePort(t), freePort(t), freePort(t)
	routes := []string{good, bad, third}
	other := append([]byte(nil), testSecret...)
	other[0] ^= 1
	running, err := Start(Config{Name: "c", NodeID: "good", Listen: good, Routes: routes, DataDir: t.TempDir(), Replicas: 3,
		RouteSecret: testSecret, Logger: slog.New(slog.NewTextHandler(&goodLog, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(running.Close)
	node, err := Start(Config{Name: "c", NodeID: "bad", Listen: bad, Routes: routes, DataDir: t.TempDir(), Replicas: 3,
		RouteSecret: other, Logger: slog.New(slog.NewTextHandler(&badLog, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	_, err = OpenEngine(node, EngineOptions{Path: filepath.Join(t.TempDir(), "broker.db"), PublishTimeout: time.Second, CatchUpTimeout: 4 * time.Second})
	var nf *NotFormedError
	if !errors.As(err, &nf) {
		t.Fatalf("OpenEngine with another broker.key: %v (%T), want a NotFormedError", err, err)
	}
	msg := err.Error()
	for _, want := range []string{"no cluster formed within 4s", "answered on --cluster-routes", "broker.key", "copy broker.key from a running node"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "firewall") {
		t.Errorf("the error sends the operator to the firewall: %q", msg)
	}
	// The running node said it, once per host for the 4 s (the dialler
	// retries every few hundred milliseconds).
	said := strings.Count(goodLog.String(), "has another broker.key")
	if said == 0 || said > 2 {
		t.Errorf("the running node said the other key %d times in 4 s (want once): %s", said, goodLog.String())
	}
	if n := strings.Count(goodLog.String(), "TLS route handshake error"); n > 2 {
		t.Errorf("the running node logged %d raw TLS handshake errors: %s", n, goodLog.String())
	}
}

// TestRouteCertificateFailuresFromElsewhere (review): a certificate
// failure from a host that is not one of --cluster-routes (a scanner, a
// node of another cluster) is logged as such and never makes notFormed
// tell the operator that this node's broker.key is wrong.
func TestRouteCertificateFailuresFromElsewhere(t *testing.T) {
	var log lockedbuf.Buffer
	l := &natsLogger{log: slog.New(slog.NewTextHandler(&log, nil)), routeHosts: routeHosts([]string{"127.0.0.1:7901", "localhost:7902"})}
	l.Errorf("%s - rid:%d - TLS route handshake error: %v", "10.9.9.9:5555", 3, "tls: failed to verify certificate: x509: certificate signed by unknown authority")
	if got := l.foreignRoutes(); len(got) != 0 {
		t.Fatalf("a stranger counted as a route host: %v", got)
	}
	if !strings.Contains(log.String(), "10.9.9.9 (not a --cluster-routes host) presented a route certificate of another cluster") {
		t.Fatalf("log: %s", log.String())
	}
	l.Errorf("%s - rid:%d - TLS route handshake error: %v", "127.0.0.1:40000", 4, "remote error: tls: bad certificate")
	if got := l.foreignRoutes(); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Fatalf("foreign route hosts: %v", got)
	}
	if !strings.Contains(log.String(), "has another broker.key") || !strings.Contains(log.String(), "from a node on 127.0.0.1 (its connection in, from 127.0.0.1:40000)") {
		t.Fatalf("log: %s", log.String())
	}
	// A route this node dialled is named with its port (a trial: with
	// several nodes on one host, "the node at 127.0.0.1" said none), and
	// so is it in what notFormed lists, instead of the bare host.
	l.Errorf("%s - rid:%d - TLS route handshake error: %v", "127.0.0.1:7901", 5, "tls: failed to verify certificate: x509: certificate signed by unknown authority")
	if !strings.Contains(log.String(), "a cluster route with the node at 127.0.0.1:7901 failed") {
		t.Fatalf("log: %s", log.String())
	}
	if got := l.foreignRoutes(); len(got) != 1 || got[0] != "127.0.0.1:7901" {
		t.Fatalf("foreign routes: %v", got)
	}
}

// Anything that reaches the route port and fails the handshake for a
// reason other than the certificate (a plain TCP probe, TLS without a
// certificate) was logged once per connection: the limiter's key held the
// connection's address and number. Found by a review.
func TestRouteJunkIsLoggedOncePerInterval(t *testing.T) {
	var log lockedbuf.Buffer
	l := &natsLogger{log: slog.New(slog.NewTextHandler(&log, nil)), routeHosts: routeHosts([]string{"127.0.0.1:7901"}),
		lines: ratelog.Limiter{Every: repeatEvery}}
	for i := range 100 {
		l.Errorf("%s - rid:%d - TLS route handshake error: %v", fmt.Sprintf("10.1.%d.%d:%d", i/250, i%250, 40000+i), i,
			"tls: first record does not look like a TLS handshake")
		l.Errorf("%s - rid:%d - TLS route handshake error: %v", fmt.Sprintf("10.2.0.1:%d", 50000+i), 1000+i,
			"remote error: tls: certificate required")
	}
	if n := strings.Count(log.String(), "handshake error"); n != 2 {
		t.Fatalf("200 junk connections logged %d lines, want one per cause:\n%s", n, log.String())
	}
	if !strings.Contains(log.String(), "10.1.0.0:40000") {
		t.Fatalf("the logged line lost its address: %s", log.String())
	}
}

// TestNoPlaintextPasswordWarning (a trial): every node's start logged
// NATS's "Plaintext passwords detected, use nkeys or bcrypt" at warn,
// which read as a misconfiguration, while the passwords are a random one
// for this process's loopback client and the route password derived from
// broker.key, which crosses only the routes' TLS. It is at debug now.
func TestNoPlaintextPasswordWarning(t *testing.T) {
	t.Parallel()
	var info, debug lockedbuf.Buffer
	self, other := freePort(t), freePort(t)
	node, err := Start(Config{Name: "c", NodeID: "n1", Listen: self, Routes: []string{self, other},
		DataDir: t.TempDir(), Replicas: 1, RouteSecret: testSecret,
		Logger: slog.New(teeHandler{slog.NewTextHandler(&info, &slog.HandlerOptions{Level: slog.LevelInfo}),
			slog.NewTextHandler(&debug, &slog.HandlerOptions{Level: slog.LevelDebug})})})
	if err != nil {
		t.Fatal(err)
	}
	node.Close()
	if !strings.Contains(debug.String(), plaintextPasswords) {
		t.Fatalf("the server no longer says it (the test proves nothing): %s", debug.String())
	}
	if strings.Contains(info.String(), "Plaintext passwords") {
		t.Fatalf("logged at warn: %s", info.String())
	}
}

// teeHandler sends every record to both handlers.
type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.a.Enabled(ctx, l) || h.b.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, x := range []slog.Handler{h.a, h.b} {
		if x.Enabled(ctx, r.Level) {
			if err := x.Handle(ctx, r.Clone()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}

func (h teeHandler) WithGroup(n string) slog.Handler {
	return teeHandler{h.a.WithGroup(n), h.b.WithGroup(n)}
}
