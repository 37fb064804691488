// Package cluster lets several brokers share one state through NATS
// JetStream (issue 14): each broker runs an embedded JetStream node (or
// connects to an existing NATS cluster), the brokers' writes are replicated
// as a RAFT-replicated command log (engine.go), and presence and node
// liveness live in replicated key-value buckets (presence.go).
//
// Nothing here runs unless the broker is started with --cluster or --nats:
// a single broker, and every CLI verb, never opens a NATS connection.
package cluster

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"claudemesh/internal/ratelog"
)

// Config says how a broker joins its cluster.
type Config struct {
	// Name is the cluster's name (--cluster): every node of one cluster
	// uses the same, and it names the streams and buckets, so several
	// clusters can share one NATS system (--nats).
	Name string
	// NodeID names this node (--node), unique in the cluster.
	NodeID string
	// Listen is the address for routes from the other nodes
	// (--cluster-listen), with an embedded server.
	Listen string
	// Routes are the other nodes' route addresses (--cluster-routes);
	// this node's own may be listed too.
	Routes []string
	// NATSURL connects to an existing NATS system instead of embedding a
	// server (--nats).
	NATSURL string
	// DataDir holds the embedded server's JetStream files (DataDir/jetstream).
	DataDir string
	// Replicas of the log and the buckets: 3 for a real cluster, 1 for a
	// single-node test.
	Replicas int
	// RouteSecret authenticates routes between embedded nodes: every node
	// derives the same password from the broker key they share, so only
	// holders of broker.key can join.
	RouteSecret []byte
	Logger      *slog.Logger
}

// validName reports whether s matches ^[A-Za-z0-9_-]{1,32}$ (checked by
// hand: a package-level regexp would be compiled in every process).
func validName(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Validate checks the configuration before anything starts.
func (c *Config) Validate() error {
	if !validName(c.Name) {
		return fmt.Errorf("--cluster must match ^[A-Za-z0-9_-]{1,32}$")
	}
	if !validName(c.NodeID) {
		return fmt.Errorf("--node must match ^[A-Za-z0-9_-]{1,32}$ and be unique in the cluster")
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		return fmt.Errorf("replicas must be 1, 3 or 5")
	}
	if c.NATSURL == "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return fmt.Errorf("--cluster-listen: %v", err)
		}
		for _, r := range c.Routes {
			if _, _, err := net.SplitHostPort(r); err != nil {
				return fmt.Errorf("--cluster-routes: %q: %v", r, err)
			}
		}
	}
	return nil
}

// Node is this broker's connection to the cluster: an embedded server (nil
// with --nats) and a client connection.
type Node struct {
	cfg Config
	srv *server.Server
	log *natsLogger // the embedded server's, nil with --nats
	nc  *nats.Conn
}

// Start starts the embedded server (or dials --nats) and connects to it.
func Start(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg}
	var opts []nats.Option
	opts = append(opts, nats.Name("claudemesh-broker-"+cfg.NodeID), nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond), nats.PingInterval(5*time.Second))
	if cfg.NATSURL == "" {
		srv, log, err := startServer(cfg)
		if err != nil {
			return nil, err
		}
		n.srv, n.log = srv, log
		// The handshake with the server in this process gets the time a
		// loaded start needs: nats.go's default of 2 s made a busy host's
		// node (JetStream starting, three nodes at once) exit at start.
		opts = append(opts, nats.InProcessServer(srv), nats.UserInfo("broker", clientPassword()), nats.Timeout(30*time.Second))
	}
	nc, err := nats.Connect(cfg.NATSURL, opts...)
	if err != nil {
		n.Close()
		if cfg.NATSURL == "" {
			return nil, fmt.Errorf("cluster: connecting to this node's embedded NATS server: %w", err)
		}
		return nil, fmt.Errorf("cluster: connect to %s: %w", cfg.NATSURL, err)
	}
	n.nc = nc
	return n, nil
}

// clientPassword guards the embedded server's loopback client port: one
// random value for the process, drawn when a node first needs it rather
// than by the package initialisation of every claudemesh process.
var clientPassword = sync.OnceValue(func() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
})

// RoutePassword derives the route password from the shared secret.
func RoutePassword(secret []byte) string {
	return hex.EncodeToString(derive(secret, "claudemesh/cluster-route/v1"))
}

// derive is a 32-byte value for one use of the shared secret:
// HMAC-SHA-256 keyed by the secret over the use's domain string, so the
// route password and the route authority's key never coincide.
func derive(secret []byte, domain string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(domain))
	return m.Sum(nil)
}

func startServer(cfg Config) (*server.Server, *natsLogger, error) {
	host, portStr, _ := net.SplitHostPort(cfg.Listen)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster-listen: bad port %q", portStr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if len(cfg.RouteSecret) == 0 {
		return nil, nil, errors.New("cluster: no route secret")
	}
	pass := RoutePassword(cfg.RouteSecret)
	var routes []*url.URL
	for _, r := range cfg.Routes {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: r, User: url.UserPassword("claudemesh", pass)})
	}
	o := &server.Options{
		ServerName: cfg.NodeID,
		// The broker connects in-process. The server still needs a client
		// listener (its routes wait for one): loopback, a random port, and
		// a password drawn at start that only this process knows.
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		Username: "broker", Password: clientPassword(),
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		MaxPayload: 8 << 20,
		NoSigs:     true,
	}
	if len(routes) > 0 {
		tc, err := routeTLSConfig(cfg.RouteSecret, cfg.Name, cfg.NodeID)
		if err != nil {
			return nil, nil, err
		}
		o.Cluster = server.ClusterOpts{
			Name: cfg.Name, Host: host, Port: port,
			Username: "claudemesh", Password: pass,
			ConnectRetries: -1,
			// routetls.go. The handshake gets seconds, not NATS's default
			// half second: a node starting under load is slow to answer.
			TLSConfig: tc, TLSTimeout: 5,
		}
		o.Routes = routes
	}
	// Without routes (a one-node cluster) JetStream runs standalone: a
	// JetStream cluster needs routes to form its meta group.
	srv, err := server.NewServer(o)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: %w", err)
	}
	log := &natsLogger{log: cfg.Logger.With("component", "nats"), routeHosts: routeHosts(cfg.Routes), lines: ratelog.Limiter{Every: repeatEvery}}
	srv.SetLoggerV2(log, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, nil, fmt.Errorf("cluster: the embedded NATS server did not start (route port %s in use? see the log)", cfg.Listen)
	}
	return srv, log, nil
}

// Conn is the client connection.
func (n *Node) Conn() *nats.Conn { return n.nc }

// Server is the embedded server, nil with --nats.
func (n *Node) Server() *server.Server { return n.srv }

// RouteAddr is the bound route address of the embedded server.
func (n *Node) RouteAddr() string {
	if n.srv == nil {
		return ""
	}
	if a := n.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Close closes the connection and shuts the embedded server down.
func (n *Node) Close() {
	if n.nc != nil {
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
	}
}

// notFormed says why no cluster formed before the start's deadline: which
// of the other nodes' routes answered, and what to check. err is the
// stream's last refusal, kept for errors.Is and the log.
func (n *Node) notFormed(within time.Duration, err error) error {
	others := []string{}
	for _, r := range n.cfg.Routes {
		if r != n.cfg.Listen {
			others = append(others, r)
		}
	}
	// Distinct peers: NumRoutes counts route connections, several per peer.
	connected := 0
	if n.srv != nil {
		if rz, err := n.srv.Routez(nil); err == nil {
			peers := map[string]bool{}
			for _, r := range rz.Routes {
				peers[r.RemoteID] = true
			}
			connected = len(peers)
		}
	}
	what := fmt.Sprintf("none of the other nodes (%s) answered on its --cluster-routes address", strings.Join(others, ", "))
	if hosts := n.log.foreignRoutes(); connected == 0 && len(hosts) > 0 {
		// They answered: the route handshake failed on the certificate,
		// which every node derives from broker.key and --cluster.
		return &NotFormedError{Message: fmt.Sprintf("no cluster formed within %s: nodes at %s answered on --cluster-routes, but their route "+
			"certificates are not this node's: this node's broker.key (or --cluster name) differs from theirs; copy broker.key from a running "+
			"node into this node's --data directory (every node needs the same broker.key and --cluster), then start it again",
			within.Round(time.Second), strings.Join(hosts, ", ")), Err: err}
	}
	if connected > 0 {
		what = fmt.Sprintf("%d of the other nodes (%s) connected, too few to elect a leader of the log (a majority of --cluster-replicas must run)",
			connected, strings.Join(others, ", "))
	}
	return &NotFormedError{Message: fmt.Sprintf("no cluster formed within %s: %s; start the nodes within a minute of each other, "+
		"and check --cluster-routes and that each node's route port is reachable from the others (firewalls)", within.Round(time.Second), what), Err: err}
}

// NotFormedError is a node that gave up starting because no cluster formed.
type NotFormedError struct {
	Message string
	Err     error
}

func (e *NotFormedError) Error() string { return e.Message }
func (e *NotFormedError) Unwrap() error { return e.Err }

// natsLogger sends the embedded server's log lines to slog: notices at
// debug (they are many), warnings and errors as such. A line the server
// repeats (a route it cannot reach is dialled every few milliseconds, each
// attempt numbered) is logged once per repeatEvery, with how many times it
// was repeated meanwhile.
type natsLogger struct {
	log *slog.Logger

	lines ratelog.Limiter // Every: repeatEvery

	mu sync.Mutex
	// foreign: the --cluster-routes addresses (a route this node
	// dialled) and hosts (a node's connection in) whose route TLS
	// handshake failed on the certificate (routeTLSFailure), for notFormed.
	foreign map[string]bool
	// routeHosts are the hosts of --cluster-routes and their addresses,
	// each also as host:port with its route's port:
	// a certificate failure from anywhere else (a scanner, a node of
	// another cluster) is not one of this cluster's nodes.
	routeHosts map[string]bool
}

// routeHosts resolves the hosts of routes (a name may stand for the
// address a log line shows), each within a second.
func routeHosts(routes []string) map[string]bool {
	hosts := map[string]bool{}
	for _, r := range routes {
		h, port, err := net.SplitHostPort(r)
		if err != nil {
			continue
		}
		hosts[h], hosts[net.JoinHostPort(h, port)] = true, true
		if net.ParseIP(h) != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		addrs, _ := net.DefaultResolver.LookupHost(ctx, h)
		cancel()
		for _, a := range addrs {
			hosts[a], hosts[net.JoinHostPort(a, port)] = true, true
		}
	}
	return hosts
}

// repeatEvery is how often a repeated line of the embedded server is logged.
const repeatEvery = 10 * time.Second

// withoutAttempt is a NATS line without its "(attempt N)", the part that
// changes between repeats.
func withoutAttempt(msg string) string {
	i := strings.Index(msg, "(attempt ")
	if i < 0 {
		return msg
	}
	j := strings.IndexByte(msg[i:], ')')
	if j < 0 {
		return msg
	}
	return msg[:i] + msg[i+j+1:]
}

// routeTLSFailure reads a NATS line "ADDR - rid:N - TLS route handshake
// error: ..." whose cause is the certificate (this node could not verify
// the other's, or the other refused this one's): the node at ADDR has
// another broker.key or --cluster name. It returns ADDR, its host and the
// NATS cause; ok is false for any other line. (A node with the wrong
// broker.key was told to check its firewall, and the right nodes logged
// x509 text twice a second, an address with a new port each time.)
func routeTLSFailure(msg string) (addr, host, cause string, ok bool) {
	i := strings.Index(msg, "TLS route handshake error:")
	if i < 0 {
		return "", "", "", false
	}
	cause = msg[i:]
	theirs := strings.Contains(cause, "failed to verify certificate") || strings.Contains(cause, "unknown authority")
	ours := strings.Contains(cause, "bad certificate") || strings.Contains(cause, "unknown certificate")
	if !theirs && !ours {
		return "", "", "", false
	}
	addr, _, _ = strings.Cut(msg, " - ")
	host = addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	return addr, host, cause, true
}

// foreignRoutes lists the --cluster-routes addresses (host:port) whose
// route handshakes failed on the certificate, and the hosts whose
// connections in did where no address of theirs is listed; nil on a nil
// logger (--nats).
func (l *natsLogger) foreignRoutes() []string {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	named := map[string]bool{}
	for a := range l.foreign {
		if h, _, err := net.SplitHostPort(a); err == nil {
			named[h] = true
		}
	}
	var out []string
	for a := range l.foreign {
		if _, _, err := net.SplitHostPort(a); err == nil || !named[a] {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// withoutConnection is a NATS line without the "ADDR - rid:N - " its
// connection lines start with: the address and the connection's number
// are new for every connection, so anything that reaches the route port
// (a scanner, a probe, TLS without a certificate) would make a key of its
// own each time and be logged without limit.
func withoutConnection(msg string) string {
	addr, rest, ok := strings.Cut(msg, " - ")
	if !ok || !strings.Contains(addr, ":") || strings.ContainsAny(addr, " \t") {
		return msg
	}
	id, rest, ok := strings.Cut(rest, " - ")
	kind, n, ok2 := strings.Cut(id, ":")
	if !ok || !ok2 || kind == "" || n == "" || strings.Trim(n, "0123456789") != "" ||
		strings.Trim(kind, "abcdefghijklmnopqrstuvwxyz") != "" {
		return msg
	}
	return kind + " - " + rest
}

func (l *natsLogger) emit(level slog.Level, f string, v ...any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, v...))
	key := withoutConnection(withoutAttempt(msg))
	if addr, host, cause, ok := routeTLSFailure(msg); ok {
		const another = " failed: its route certificate and this node's are not of one cluster " +
			"(the node there has another broker.key or --cluster name than this one; every node needs the same broker.key and --cluster); NATS: "
		who := ""
		switch {
		case l.routeHosts[addr]:
			// A route this node dialled: the address names the node,
			// port and all (several nodes may share a host).
			who = addr
			msg = "a cluster route with the node at " + addr + another + cause
		case l.routeHosts[host]:
			// A node's connection in: its port is an ephemeral one, not
			// its route port, and a new one each time.
			who = host
			msg = "a cluster route from a node on " + host + " (its connection in, from " + addr + ")" + another + cause
		default:
			msg = "a connection from " + host + " (not a --cluster-routes host) presented a route certificate of another cluster; NATS: " + cause
		}
		if who != "" {
			l.mu.Lock()
			if l.foreign == nil {
				l.foreign = map[string]bool{}
			}
			l.foreign[who] = true // at most the routes' addresses and hosts
			l.mu.Unlock()
		}
		key = "route certificate " + cmp.Or(who, host) // one line per route address or host, whatever port or rid
	}
	ok, n := l.lines.Allow(key)
	if !ok {
		return
	}
	if n > 0 {
		l.log.Log(context.Background(), level, msg, "repeatedSinceLastLine", n)
		return
	}
	l.log.Log(context.Background(), level, msg)
}

func (l *natsLogger) Noticef(f string, v ...any) {
	l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, v...)))
}
func (l *natsLogger) Warnf(f string, v ...any) {
	if f == plaintextPasswords {
		// The embedded server's passwords are a random one drawn at
		// start for this process's loopback client, and the route
		// password, derived from broker.key, which crosses only the
		// routes' TLS: at warn, every node's start read as a
		// misconfiguration to the operator.
		l.log.Debug(f)
		return
	}
	l.emit(slog.LevelWarn, f, v...)
}

// plaintextPasswords is the NATS server's warning at every start of a
// node (its options hold passwords, not bcrypt hashes).
const plaintextPasswords = "Plaintext passwords detected, use nkeys or bcrypt"

func (l *natsLogger) Fatalf(f string, v ...any) { l.emit(slog.LevelError, f, v...) }
func (l *natsLogger) Errorf(f string, v ...any) { l.emit(slog.LevelError, f, v...) }
func (l *natsLogger) Debugf(f string, v ...any) { l.log.Debug(strings.TrimSpace(fmt.Sprintf(f, v...))) }
func (l *natsLogger) Tracef(f string, v ...any) {}
