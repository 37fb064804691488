// Package broker is the claudemesh broker: it authenticates connections with
// signed hellos, keeps presence, routes ciphertext it cannot read, and queues
// it durably for recipients who are away (01-protocol.md).
//
// The pieces: Broker (this file) owns the listeners, the store and the
// keys; hub.go keeps each mesh's members and presences in memory; conn.go is
// one WebSocket connection with its reader and writer goroutines;
// handshake.go authenticates it; route.go handles sends, acks and delivery;
// rest.go is the HTTP API; metrics.go the Prometheus registry.
package broker

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	bolt "go.etcd.io/bbolt"

	"claudemesh/cluster"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/fsutil"
	cmmetrics "claudemesh/internal/metrics"
	"claudemesh/store"
	"claudemesh/wire"
)

// Broker is one running broker. Every field is per instance, so a test can
// run several brokers in one process.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	dbg   debugLog // --log-level debug's lines (debuglog.go)
	store store.Engine
	// node and engine are the cluster (nil on a single broker).
	node   *cluster.Node
	engine *cluster.Engine
	cpres  *clusterPresence // presence across the nodes (nil on a single broker)
	// lookups is the catch-up with the log a cluster node runs before it
	// refuses a lookup (cluster_lookup.go).
	lookups logCatchUp
	// hubReady is closed once the hub is loaded: the cluster's feed of
	// other nodes' writes waits for it.
	hubReady chan struct{}
	key      *cmcrypto.Identity
	keyHex   string
	opToken  string
	metrics  *metrics
	upgrader websocket.Upgrader
	hub      *hub

	srv, metricsSrv *http.Server
	ln, metricsLn   net.Listener
	publicURL       string
	publicURLs      []string // brokerUrls: publicURL first (Config.PublicURLs)

	admit      *admission
	restLimits *ipLimiter
	streams    *streamHub  // topic SSE streams (streams.go)
	apiLimits  apiLimiters // per API key (apikeys.go)

	// batchFlush: the store's dispatcher calls flushFanout after each
	// batch's callbacks (a single broker's store; the cluster's engine
	// does not), and fanout is what they queued frames to (fanout.go;
	// touched only on the dispatcher).
	batchFlush bool
	fanout     []*conn
	spliced    []byte // flushNow's scratch buffer for spliced frames (dispatcher only)

	shuttingDown atomic.Bool
	stop         chan struct{}
	wg           sync.WaitGroup
	closeOnce    sync.Once
	readyMu      sync.Mutex
	readyAt      time.Time
	readyErr     error
}

// New opens the store (creating the data dir, broker key and operator token
// on first start) without listening yet.
func New(cfg Config) (*Broker, error) { return NewContext(context.Background(), cfg) }

// NewContext is New that gives up when ctx ends: a cluster node waits up
// to a minute for its cluster to form, and a SIGTERM meanwhile must stop
// it (it did not: `systemctl stop` waited for the minute).
func NewContext(ctx context.Context, cfg Config) (*Broker, error) {
	def := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = def.MaxFrame
	}
	if cfg.SendBuffer <= 0 {
		cfg.SendBuffer = def.SendBuffer
	}
	if cfg.SendBuffer < minSendBuffer {
		return nil, fmt.Errorf("broker: --send-buffer must be at least %d bytes (256 KiB): the largest push must fit in it", minSendBuffer)
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = def.MaxPending
	}
	cfg.defaultQuotas(def)
	for _, d := range []*time.Duration{&cfg.PingInterval, &cfg.PongTimeout, &cfg.Grace, &cfg.RedeliverAfter, &cfg.HelloTimeout, &cfg.QueueTTL, &cfg.WorkingDecay} {
		if *d <= 0 {
			return nil, fmt.Errorf("broker: every timer must be positive")
		}
	}
	if cfg.MaxHandshakes <= 0 {
		cfg.MaxHandshakes = def.MaxHandshakes
	}
	if cfg.MaxHandshakesPerIP <= 0 {
		cfg.MaxHandshakesPerIP = def.MaxHandshakesPerIP
	}
	if cfg.MaxGroups <= 0 {
		cfg.MaxGroups = def.MaxGroups
	}
	if cfg.MaxConnsPerIP < 0 {
		cfg.MaxConnsPerIP = 0
	}
	for _, r := range []struct {
		flag string
		v    float64
	}{{"--ack-rate", cfg.AckRate}, {"--presence-rate", cfg.PresenceRate}} {
		// A limiter at +Inf has a burst of MinInt64 here (int(20*Inf)):
		// every ack of an id not in flight would be refused forever.
		if math.IsInf(r.v, 0) || math.IsNaN(r.v) || r.v < 0 {
			return nil, fmt.Errorf("broker: %s must be a finite number, 0 or more (0 = unlimited)", r.flag)
		}
	}
	if cfg.MaxRefusalsPerIP < 0 {
		cfg.MaxRefusalsPerIP = 0 // unlimited, as --max-conns-per-ip 0
	}
	if cfg.IPLimitExempt == nil {
		cfg.IPLimitExempt = def.IPLimitExempt
	}
	for _, d := range []struct{ v, def *time.Duration }{
		{&cfg.HTTPReadTimeout, &def.HTTPReadTimeout}, {&cfg.HTTPWriteTimeout, &def.HTTPWriteTimeout}, {&cfg.HTTPIdleTimeout, &def.HTTPIdleTimeout},
	} {
		if *d.v <= 0 {
			*d.v = *d.def
		}
	}
	if cfg.SSEHeartbeat <= 0 {
		cfg.SSEHeartbeat = def.SSEHeartbeat
	}
	if cfg.Version == "" {
		cfg.Version = def.Version
	}
	if err := fsutil.EnsurePrivateDir(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	dbPath := filepath.Join(cfg.DataDir, "broker.db")
	// A data directory that has a key but no broker.db lost its database:
	// starting would make an empty one and the broker would look healthy
	// with no meshes.
	// (A cluster node without one is new, or restored: it rebuilds its
	// copy from the log.)
	if _, kerr := os.Stat(filepath.Join(cfg.DataDir, "broker.key")); kerr == nil && !cfg.Init && cfg.Cluster == nil {
		if _, derr := os.Stat(dbPath); errors.Is(derr, os.ErrNotExist) {
			return nil, storeRefusal(dbPath, cfg.Init, fmt.Errorf("%w, but broker.key is there: this broker had a database", missingStore(dbPath)))
		}
	}
	key, err := loadOrCreateKey(filepath.Join(cfg.DataDir, "broker.key"))
	if err != nil {
		return nil, err
	}
	tokenPath := filepath.Join(cfg.DataDir, "operator.token")
	token, created, err := loadOrCreateToken(tokenPath)
	if err != nil {
		return nil, err
	}
	b := &Broker{
		cfg:        cfg,
		log:        cfg.Logger,
		dbg:        newDebugLog(cfg.Logger),
		key:        key,
		keyHex:     key.PublicHex(),
		opToken:    token,
		stop:       make(chan struct{}),
		restLimits: newIPLimiter(20, 60),
		streams:    newStreamHub(),
		hubReady:   make(chan struct{}),
	}
	b.metrics = newMetrics()
	b.admit = newAdmission(cfg, b.metrics)
	if cfg.Cluster != nil {
		if err := b.openClusterStore(ctx, dbPath); err != nil {
			return nil, err
		}
	} else if err := b.openLocalStore(dbPath); err != nil {
		return nil, err
	}
	st := b.store
	if err := os.WriteFile(filepath.Join(cfg.DataDir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		b.log.Warn("pid file", "err", err)
	}
	b.upgrader = websocket.Upgrader{
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		// The signed hello is the authentication; any Origin may connect
		// (01-protocol §1).
		CheckOrigin: func(*http.Request) bool { return true },
	}
	err = store.Guard(func() error {
		var err error
		b.hub, err = newHub(b)
		return err
	})
	close(b.hubReady)
	if errors.Is(err, store.ErrCorrupt) {
		st.Close()
		b.closeCluster()
		return nil, storeRefusal(dbPath, cfg.Init, err)
	}
	if err != nil {
		st.Close()
		b.closeCluster()
		return nil, err
	}
	if b.node != nil {
		if err := b.startClusterPresence(); err != nil {
			st.Close()
			b.closeCluster()
			return nil, fmt.Errorf("cluster: presence: %w", err)
		}
		b.startClusterMetrics()
	}
	if created {
		b.log.Info("operator token created", "path", tokenPath)
	} else {
		b.log.Info("operator token", "path", tokenPath)
	}
	return b, nil
}

// openLocalStore opens a single broker's bbolt file.
func (b *Broker) openLocalStore(dbPath string) error {
	cfg := b.cfg
	st, err := store.OpenLocal(dbPath, store.Options{
		Init: cfg.Init,
		// bbolt's file lock is the single-instance lock: a second broker
		// on the same data dir is told at once who holds it.
		OpenTimeout: 200 * time.Millisecond,
		Logger:      cfg.Logger,
		OnCommit: func(d time.Duration, _ int) {
			b.metrics.storeCommit.Observe(d.Seconds())
		},
		AfterBatch: b.flushFanout,
		DeferFor:   cfg.AckDefer,
		// A send's commit and fan-out do not wait for the acks being
		// applied (client_acks without reqId are deferrable).
		PreemptDeferred: true,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return dataDirInUse(cfg.DataDir)
	}
	if errors.Is(err, store.ErrEmptyFile) || errors.Is(err, store.ErrCorrupt) {
		return storeRefusal(dbPath, cfg.Init, err)
	}
	if err != nil {
		return err
	}
	b.store = st
	b.batchFlush = true // the committer's dispatcher calls flushFanout
	return nil
}

// loadTLS reads --tls-cert and --tls-key (nil without them). They are read
// before anything is bound: read by ServeTLS, an unreadable file was only
// an error in the log of a broker that had said it was listening and
// stayed up serving nothing.
func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("cannot use --tls-cert %s and --tls-key %s: %w", cfg.TLSCert, cfg.TLSKey, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
}

// Start binds the listeners and serves until Close.
func (b *Broker) Start(ctx context.Context) error {
	tlsConfig, err := loadTLS(b.cfg)
	if err != nil {
		return err
	}
	ln := b.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = listen(b.cfg.Listen, b.cfg.DeferAccept); err != nil {
			return err
		}
	}
	b.ln = ln
	b.publicURL = b.cfg.PublicURL
	if b.publicURL == "" {
		b.publicURL = derivePublicURL(ln.Addr().String(), b.cfg.Listen, b.cfg.TLSCert != "")
	}
	b.publicURLs = []string{b.publicURL}
	if len(b.cfg.PublicURLs) > 0 {
		urls, err := publicURLList(b.publicURL, b.cfg.PublicURLs)
		if err != nil {
			return err
		}
		b.publicURLs = urls
	}
	b.srv = b.newHTTPServer(b.routes())
	b.srv.TLSConfig = tlsConfig
	counted := &listener{Listener: ln, a: b.admit}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		var err error
		if tlsConfig != nil {
			err = b.srv.ServeTLS(counted, "", "")
		} else {
			err = b.srv.Serve(counted)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("serve", "err", err)
		}
	}()
	if mln := b.cfg.MetricsListener; mln != nil || (b.cfg.MetricsListen != "" && b.cfg.MetricsListen != "off") {
		if mln == nil {
			var err error
			if mln, err = net.Listen("tcp", b.cfg.MetricsListen); err != nil {
				b.srv.Close()
				return fmt.Errorf("metrics listener: %w", err)
			}
		}
		b.metricsLn = mln
		mux := http.NewServeMux()
		mux.Handle("/metrics", b.metrics.registry.Handler())
		b.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			if err := b.metricsSrv.Serve(mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				b.log.Error("metrics serve", "err", err)
			}
		}()
	}
	b.wg.Add(2)
	go func() {
		defer b.wg.Done()
		b.hub.maintain(b.stop)
	}()
	go func() {
		defer b.wg.Done()
		b.topicRetention(b.stop)
	}()
	b.log.Info("broker listening", "addr", ln.Addr().String(), "publicUrl", b.publicURL, "brokerPubkey", b.keyHex, "metrics", b.MetricsAddr())
	return nil
}

// newHTTPServer is the public server around h. The timeouts and the guard
// apply to every route, including those added later: nothing
// unauthenticated can hold a connection, a slow body or a stalled response
// longer than they allow. Serve it on a listener from admission.go.
func (b *Broker) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           b.httpGuard(h),
		ReadHeaderTimeout: b.cfg.HTTPReadTimeout,
		IdleTimeout:       b.cfg.HTTPIdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(b.log.Handler(), slog.LevelDebug),
	}
}

// derivePublicURL builds ws://host:port/ws from the bound address, using
// 127.0.0.1 when the listen host is empty or unspecified.
func derivePublicURL(bound, listen string, tls bool) string {
	_, port, _ := net.SplitHostPort(bound)
	host, _, _ := net.SplitHostPort(listen)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "ws"
	if tls {
		scheme = "wss"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/ws"
}

// publicURLList is brokerUrls for --public-urls: this node's URL first,
// then the others, each once, all ws:// or wss://, at most
// wire.MaxBrokerURLs — what clients accept.
func publicURLList(self string, urls []string) ([]string, error) {
	if err := wire.CheckBrokerURL(self); err != nil {
		return nil, fmt.Errorf("--public-url: %w", err)
	}
	list, err := wire.BrokerURLList(self, urls)
	if err != nil {
		return nil, fmt.Errorf("--public-urls: %w", err)
	}
	return list, nil
}

// URLs is every public URL of the broker (brokerUrls), URL first.
func (b *Broker) URLs() []string { return b.publicURLs }

// URL is the WebSocket URL clients dial (brokerUrl).
func (b *Broker) URL() string { return b.publicURL }

// HTTPURL is the REST base URL.
func (b *Broker) HTTPURL() string {
	u := strings.TrimSuffix(b.publicURL, "/ws")
	u = strings.Replace(u, "ws://", "http://", 1)
	return strings.Replace(u, "wss://", "https://", 1)
}

// Addr is the bound public address.
func (b *Broker) Addr() string { return b.ln.Addr().String() }

// MetricsAddr is the bound metrics address, or "" when disabled.
func (b *Broker) MetricsAddr() string {
	if b.metricsLn == nil {
		return ""
	}
	return b.metricsLn.Addr().String()
}

// OperatorToken is the bearer token of the operator REST routes.
func (b *Broker) OperatorToken() string { return b.opToken }

// PublicKey is the broker key (hex) clients pin.
func (b *Broker) PublicKey() string { return b.keyHex }

// StorePath is the bbolt file (tests grep it for plaintext).
func (b *Broker) StorePath() string { return b.store.Path() }

// Registry exposes the broker's own metrics registry.
func (b *Broker) Registry() *cmmetrics.Registry { return b.metrics.registry }

// Close shuts down gracefully: stop accepting, close every connection with
// 1001 shutting_down, commit what was accepted, close the store.
func (b *Broker) Close() error {
	var err error
	b.closeOnce.Do(func() {
		b.shuttingDown.Store(true)
		close(b.stop)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if b.srv != nil {
			// Shutdown does not wait for hijacked (WebSocket) connections;
			// the hub closes those itself.
			b.srv.Shutdown(ctx)
		}
		b.hub.closeAll()
		if b.metricsSrv != nil {
			b.metricsSrv.Shutdown(ctx)
		}
		b.wg.Wait()
		b.hub.closeSeen()
		b.cpres.close()
		err = b.store.Close()
		b.closeCluster()
		os.Remove(filepath.Join(b.cfg.DataDir, pidFile))
	})
	return err
}

// pidFile names the process holding the data dir (informational: the
// lock is bbolt's on broker.db).
const pidFile = "broker.pid"

// dataDirInUse says which broker holds dir, when its pid file tells.
func dataDirInUse(dir string) error {
	if data, err := os.ReadFile(filepath.Join(dir, pidFile)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
			return fmt.Errorf("another broker (pid %d) holds %s; stop it first or give another --data", pid, dir)
		}
	}
	return fmt.Errorf("another broker holds %s (broker.db is locked); stop it first or give another --data", dir)
}

func (b *Broker) operatorAuthorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(tok), []byte(b.opToken)) == 1
}

// missingStore is a broker.db that is not there (beside a broker.key).
type missingStore string

func (m missingStore) Error() string { return string(m) + " is missing" }

// storeRefusal is the message of a broker that will not start on its
// database, with what to do about it. Nothing was changed on disk.
func storeRefusal(path string, init bool, err error) error {
	if init && errors.Is(err, store.ErrCorrupt) {
		// --init was given, and refused: it makes a new store only where
		// the file is empty or missing. Repeating the steps that name
		// --init would send the operator round in a circle.
		return fmt.Errorf("refusing to start on %s (it is damaged): %w.\n"+
			"Nothing was changed: --init makes a new store only where broker.db is empty or missing, never over one that may still hold meshes.\n"+
			"To start empty (every mesh is gone, and every member must be invited and join again), move it aside first, then start with --init again:\n"+
			"  mv %s %s.damaged\n"+
			"or restore broker.db from your latest backup (docs/operating-a-broker.md, Backups)", path, err, path, path)
	}
	if ms := missingStore(""); errors.As(err, &ms) {
		// There is no file to keep for inspection.
		return fmt.Errorf("refusing to start on %s: %w.\n"+
			"Nothing was changed. To recover:\n"+
			"  1. stop here, and restore broker.db from your latest backup (docs/operating-a-broker.md, Backups);\n"+
			"  2. or start with --init for an empty store:\n"+
			"     every mesh is gone, and every member must be invited and join again", path, err)
	}
	var steps string
	switch {
	case errors.Is(err, store.ErrEmptyFile):
		steps = "it is empty: a crash or a failed copy truncated it"
	case errors.Is(err, store.ErrCorrupt):
		steps = "it is damaged"
	default:
		steps = "it cannot be used"
	}
	return fmt.Errorf("refusing to start on %s (%s): %w.\n"+
		"Nothing was changed. To recover:\n"+
		"  1. stop here, and restore broker.db from your latest backup (docs/operating-a-broker.md, Backups);\n"+
		"  2. or keep the file for inspection (mv %s %s.damaged) and start with --init for an empty store:\n"+
		"     every mesh is gone, and every member must be invited and join again", path, steps, err, path, path)
}

// loadOrCreateKey reads broker.key (hex seed‖pubkey) or creates it 0600.
func loadOrCreateKey(path string) (*cmcrypto.Identity, error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if err := fsutil.CheckPrivateFile(path); err != nil {
			return nil, err
		}
		id, err := cmcrypto.ParseSecretKey(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	id, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileAtomic(path, []byte(id.SecretKeyHex()+"\n"), 0o600); err != nil {
		return nil, err
	}
	return id, nil
}

func loadOrCreateToken(path string) (token string, created bool, err error) {
	data, err := os.ReadFile(path)
	if err == nil {
		if err := fsutil.CheckPrivateFile(path); err != nil {
			return "", false, err
		}
		return strings.TrimSpace(string(data)), false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	token = cmcrypto.RandomToken()
	if err := fsutil.WriteFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
		return "", false, err
	}
	return token, true, nil
}
