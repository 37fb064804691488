// Package daemon is `claudemesh daemon`: one long-lived process per user that
// keeps a broker connection per joined mesh, a durable outbox and inbox in
// daemon.db, and a local API on a Unix socket that the CLI and the MCP server
// use (03-daemon.md).
//
// Pieces: daemon.go (lifecycle of one running daemon, mesh attachment,
// config reload), outbox.go (accept and drain), inbox.go (store then ack),
// events.go (SSE fan-out and replay), api.go (HTTP handlers), command.go
// (the `daemon` verbs: up, down, status, services, outbox).
package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/time/rate"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
	"claudemesh/store"
	"claudemesh/wire"
)

// Options configure a daemon.
type Options struct {
	Home   string
	TCP    string // optional TCP listener (requires the local token)
	Logger *slog.Logger
	// ConfigPoll is how often config.json is checked for changes (a new
	// join is attached without a restart even if nobody calls /v1/reload).
	ConfigPoll time.Duration
	// AckTimeout is how long the drain waits for a broker ack before it
	// counts a failed attempt (03-daemon: 30 s).
	AckTimeout time.Duration
	// StatusCheckEvery is how soon the daemon first asks the broker's
	// message_status about a row acked as queued or sent (then less and
	// less often, up to hourly), to learn of deliveries that expired
	// (expiry.go); default 1 minute.
	StatusCheckEvery time.Duration
	// PruneAfter is the inbox retention, and that of finished outbox rows
	// (30 days).
	PruneAfter time.Duration
	// InboxMaxBytes caps the inbox's rows (inboxcap.go); 0 takes
	// DefaultInboxMaxBytes.
	InboxMaxBytes int64
	// ReapInterval is how often the reaper checks that each registered
	// session's process still runs (03-daemon: 5 s; tests shrink it).
	ReapInterval time.Duration
	// TCPAllowRemote lets TCP be a non-loopback address; it needs
	// TCPTLSCert and TCPTLSKey (CheckTCP).
	TCPAllowRemote        bool
	TCPTLSCert, TCPTLSKey string
	// Web is the chat page's address ("" or "off": no page); see package
	// web for WebAllowRemote and the TLS files.
	Web                   string
	WebAllowRemote        bool
	WebTLSCert, WebTLSKey string
	// WebAnyLocalUser turns off the page's check that a local connection
	// is this user's (web.Options.AnyLocalUser).
	WebAnyLocalUser bool
	// AuditInterval is how often each mesh's audit chain is verified in
	// the background (a day); the first check runs when the mesh opens.
	AuditInterval time.Duration

	// refreshDelay and refreshMinInterval time the full list_peers that
	// follows presence events (directory.go; tests change them).
	refreshDelay, refreshMinInterval time.Duration
	// TopicSweep is how often each mesh's topics are maintained when no
	// event said to (03-daemon: 30 s); TopicJitter bounds the random wait
	// before acting on a topic event (200 ms).
	TopicSweep, TopicJitter time.Duration
	// topicScanPages bounds how many pages of a topic's history a
	// catch-up from its start reads back to find its oldest post
	// (defaultTopicScanPages; tests lower it).
	topicScanPages int
	// topicRoundPages bounds the pages of a topic's history one catch-up
	// round reads (defaultTopicRoundPages; tests lower it).
	topicRoundPages int

	// journalScrubAfter is the accept journal's ScrubAfter (tests keep
	// released records on disk to replay them, as a kill -9 would).
	journalScrubAfter time.Duration
	// journalSize and journalSpaceWait shrink the accept journal, and
	// testHookApply fails its copies into daemon.db (the full-journal test).
	journalSize      int64
	journalSpaceWait time.Duration
	testHookApply    func() error
	// testJournalSync replaces the accept journal's fdatasync (the
	// durability test makes it fail or holds it).
	testJournalSync func(f *os.File) error
	// testOnCommit observes daemon.db's commits (BenchmarkAccept counts
	// them per message).
	testOnCommit func(d time.Duration, writes int)
	// testSeenWritten runs in markSeen between the write that stamps rows
	// seen and the chat page cache's update (threadsSeen).
	testSeenWritten func()
	// testNoSenderShare lifts each sender's share of the inbox
	// (inboxshare.go), for the tests of the cap and the hard limit that
	// one sender fills.
	testNoSenderShare bool
	// testCatchUpRead runs in a topic's catch-up once it has noted the
	// topic's held state, before it reads the history (tests hold it to
	// post while it runs).
	testCatchUpRead func(topicID string)
	// testTopicOpened is told how many topic posts a page of a catch-up
	// (or a live batch) opened (decrypted and verified).
	testTopicOpened func(n int)
	// testPresenceStarted runs in a mesh's start between the presence's
	// start and its store (a test holds it until the presence is open);
	// testBlockedSkipped runs when refreshBlocked found no connection.
	testPresenceStarted func()
	testBlockedSkipped  func()

	// Init lets Open make a new daemon.db where the file is empty
	// (0 bytes); without it Open refuses (DBRefusal).
	Init bool

	// testHookConnected runs at every hello_ack, first in OnConnected
	// (before the role is noted and the directory fetched); tests use it
	// to widen the window before "open", in which pushes already arrive.
	testHookConnected func()
	// testHookStatusCheck runs before each message_status request of the
	// check of rows left queued (expiry.go), with the row's seq.
	testHookStatusCheck func(seq uint64)
	// testHookState runs first in each mesh's OnState, before the mesh
	// notes the new state (tests hold it to open the window in which the
	// presence has left a state the mesh still shows).
	testHookState func(s client.State)
}

// Daemon is one running daemon.
type Daemon struct {
	// threads is the chat page's conversation list per mesh (webthreads.go).
	threads threadCache

	opts    Options
	home    string
	log     *slog.Logger
	db      *store.Store
	acc     *acceptLog // the accept journal (acceptlog.go)
	started time.Time
	events  *eventHub
	audit   auditState

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	reloadMu  sync.Mutex         // one Reload at a time
	meshes    map[string]*meshRT // by meshId
	cfgStamp  string
	listeners []net.Listener
	srv       *http.Server
	token     string // TCP bearer token
	inbox     chan inboxItem
	failpoint string
	killAfter int64 // from failDrainKillAfter; 0 = off
	// shutdownErr is set when requests were still running when the
	// shutdown timeout expired (the tests check it never is).
	shutdownErr error
	acked       atomic.Int64           // rows acked by the broker in this run
	icap        inboxCap               // the inbox's size cap (inboxcap.go)
	parked      parkedPushes           // pushes refused for room, kept for when there is (inboxshare.go)
	roomWake    chan struct{}          // rows were read or deleted: store what parked holds
	tcpAddr     atomic.Pointer[string] // the --tcp listener's bound address

	// claims are the claimed outbox rows (by seq, unique across meshes):
	// being sent by a drain ("inflight" lives here, not in daemon.db),
	// held by a failer, or recorded and waiting for the release by their
	// mesh's next drain round (sendclaim.go).
	claimsMu sync.Mutex
	claims   map[uint64]rowClaim
	// cmids says which clientMessageIds are certainly not in the outbox
	// (cmidfilter.go).
	cmids *cmidFilter

	sessMu   sync.Mutex
	sessions map[string]*sessionRT // by token hash
	// recMu orders the writes of session records (bSessions) with the
	// decisions whether a session is still registered; never held by
	// anyone waiting for sessMu's holders (sessions.go, recordProfile).
	recMu sync.Mutex
	// departing are the sessions that ended with rows still to send, by
	// session key (departing.go); departWake wakes the reaper for them.
	departing  map[string]*sessionRT
	departWake chan struct{}
	// registering serializes the registrations of one session id
	// (sessions.go, lockRegistration); under sessMu.
	registering map[string]*regLock
	web         webState
}

// Failpoints (CLAUDEMESH_FAILPOINT) let the crash tests kill the daemon at
// an exact point of a protocol, which no timing-based kill can hit
// reliably. They are inert unless the variable is set.
const (
	envFailpoint        = "CLAUDEMESH_FAILPOINT"
	failInboxAfterStore = "inbox-after-store"
	// failDrainKillAfter ("drain-kill-after:N") dies once N rows have
	// been acked by the broker: a kill in the middle of a drain.
	failDrainKillAfter = "drain-kill-after:"
	// failAcceptHold ("accept-hold") never copies accepted rows from the
	// accept journal into daemon.db: they are only in the journal when
	// the crash test kills the daemon.
	failAcceptHold = "accept-hold"
	// failAcceptKill ("accept-kill") dies after a send's row is durable
	// and before its 202 is written: the CLI is left not knowing whether
	// the message was taken.
	failAcceptKill = "accept-kill"
	// failServeSlow ("serve-slow") waits a second between opening
	// daemon.db and listening on the socket: a start caught in the moment
	// when it holds daemon.db and does not answer yet.
	failServeSlow = "serve-slow"
	// failServeHold ("serve-hold") waits, listening but not serving,
	// while daemon/serve-hold exists: a daemon caught between opening
	// daemon.db and answering on its socket.
	failServeHold = "serve-hold"
)

// DBRefusal is the message of a daemon that will not start on its
// daemon.db, with what to do about it. Nothing was changed on disk.
func DBRefusal(home string, init bool, err error) error {
	path := localapi.DBPath(home)
	what := store.Why(err)
	if what == "" {
		what = "it cannot be used: " + err.Error()
	}
	cm := config.Invocation(home)
	if init && errors.Is(err, store.ErrCorrupt) {
		// --init was given, and refused: it replaces only an empty file.
		// The steps that name --init again would be a circle.
		return (&cliui.Error{Code: "store_damaged", Message: fmt.Sprintf("refusing to start on %s (%s): --init makes a new daemon.db only where the file is empty or missing, "+
			"never over one that may still hold messages; nothing was changed", path, what), Cause: err}).
			WithHint("move it aside first, then run --init again: mv " + config.ShellQuote(path) + " " + config.ShellQuote(path+".damaged") + " && " + cm + " daemon up --init " +
				"(an empty inbox and outbox: messages already received are gone, messages accepted but not yet sent are lost, and anything still queued on the broker arrives again); " +
				"or restore daemon.db from a backup")
	}
	// bbolt's own text (an assertion about page ids) stays in the cause,
	// shown with CLAUDEMESH_DEBUG=1 and in the daemon's log.
	return (&cliui.Error{Code: "store_damaged", Message: fmt.Sprintf("refusing to start on %s (%s)", path, what), Cause: err}).
		WithHint("nothing was changed. Restore daemon.db from a backup if you have one; or keep it for inspection (mv " + config.ShellQuote(path) + " " + config.ShellQuote(path+".damaged") + ") " +
			"and run " + cm + " daemon up --init, which starts with an empty inbox and outbox: messages already received are gone, " +
			"messages accepted but not yet sent are lost (the accept journal is set aside as daemon.journal.set-aside-<time>, so nothing already sent is sent again), " +
			"and anything still queued on the broker arrives again")
}

// startWait is how long a start waits for another one to have opened
// daemon.db (it then finds it locked: ErrAlreadyRunning).
const startWait = 5 * time.Second

// ErrAlreadyRunning means another daemon holds daemon.db's lock.
var ErrAlreadyRunning = errors.New("another daemon is already running for this home")

// Open prepares a daemon: the 0700 dir, daemon.db (whose bbolt lock is the
// single-instance lock) and crash recovery of the outbox. It does not listen
// yet.
func Open(opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConfigPoll <= 0 {
		opts.ConfigPoll = 2 * time.Second
	}
	if opts.AckTimeout <= 0 {
		opts.AckTimeout = 30 * time.Second
	}
	if opts.StatusCheckEvery <= 0 {
		opts.StatusCheckEvery = time.Minute
	}
	if opts.PruneAfter <= 0 {
		opts.PruneAfter = 30 * 24 * time.Hour
	}
	if opts.InboxMaxBytes <= 0 {
		opts.InboxMaxBytes = DefaultInboxMaxBytes
	}
	if opts.ReapInterval <= 0 {
		opts.ReapInterval = 5 * time.Second
	}
	if opts.refreshDelay <= 0 {
		opts.refreshDelay = defaultRefreshDelay
	}
	if opts.refreshMinInterval <= 0 {
		opts.refreshMinInterval = defaultRefreshMinInterval
	}
	if opts.TopicSweep <= 0 {
		opts.TopicSweep = 30 * time.Second
	}
	if opts.topicScanPages <= 0 {
		opts.topicScanPages = defaultTopicScanPages
	}
	if opts.topicRoundPages <= 0 {
		opts.topicRoundPages = defaultTopicRoundPages
	}
	if opts.AuditInterval <= 0 {
		opts.AuditInterval = 24 * time.Hour
	}
	if err := fsutil.EnsurePrivateDir(opts.Home); err != nil {
		return nil, err
	}
	if err := fsutil.EnsurePrivateDir(localapi.Dir(opts.Home)); err != nil {
		return nil, err
	}
	// The checks of daemon.db below and its opening happen under the start
	// lock: another start creating the file must not look like a
	// truncated one. A start still busy after startWait is taken for a
	// daemon starting (or hung starting): this one does not.
	release, err := startLock(opts.Home, startWait)
	if errors.Is(err, errStartBusy) {
		return nil, ErrAlreadyRunning
	}
	if err != nil {
		return nil, err
	}
	defer release() // once daemon.db's own lock is held (or the start failed)
	// A daemon.db that does not exist yet or is empty (--init) is made
	// new: the accept journal beside it belongs to another daemon.db.
	fresh := false
	if st, err := os.Stat(localapi.DBPath(opts.Home)); errors.Is(err, fs.ErrNotExist) || (err == nil && st.Size() == 0) {
		fresh = true
	}
	db, err := store.Open(localapi.DBPath(opts.Home), store.Options{
		OpenTimeout: 500 * time.Millisecond, Migrations: daemonMigrations, Logger: opts.Logger, Init: opts.Init,
		DeferFor: commitLinger, OnCommit: opts.testOnCommit,
	})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, ErrAlreadyRunning
		}
		if errors.Is(err, store.ErrEmptyFile) || errors.Is(err, store.ErrCorrupt) {
			opts.Logger.Error("daemon.db cannot be opened", "err", err)
			return nil, DBRefusal(opts.Home, opts.Init, err)
		}
		return nil, err
	}
	d := &Daemon{
		opts: opts, home: opts.Home, log: opts.Logger, db: db, started: time.Now(),
		meshes: map[string]*meshRT{}, inbox: make(chan inboxItem, 4096), roomWake: make(chan struct{}, 1), sessions: map[string]*sessionRT{}, departing: map[string]*sessionRT{}, departWake: make(chan struct{}, 1), claims: map[uint64]rowClaim{},
		failpoint: os.Getenv(envFailpoint), cmids: newCMIDFilter(),
	}
	if n, ok := strings.CutPrefix(d.failpoint, failDrainKillAfter); ok {
		d.killAfter, _ = strconv.ParseInt(n, 10, 64)
	}
	d.events = newEventHub()
	if err := d.recoverOutbox(); err != nil {
		db.Close()
		return nil, err
	}
	acc, err := d.openAcceptLog(fresh, d.failpoint == failAcceptHold)
	if err != nil {
		db.Close()
		return nil, err
	}
	d.acc = acc
	go d.cmids.build(d)
	if err := d.loadInboxSize(); err != nil {
		acc.close()
		db.Close()
		return nil, err
	}
	return d, nil
}

// recoverOutbox puts rows a crash left inflight back to pending: the
// broker's idempotency makes the resend safe (03-daemon "Drain"). Only a
// daemon.db written by an earlier version has such rows: inflight is no
// longer stored (outbox.go, drain).
func (d *Daemon) recoverOutbox() error {
	return d.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(bOutbox).Cursor()
		var fix []*outboxRow
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if state, err := outboxRowState(v); err != nil || state != stateInflight {
				continue // a corrupt row is left as it is, not fatal here
			}
			r, err := getOutbox(tx, seqOf(k))
			if err != nil {
				return err
			}
			fix = append(fix, r)
		}
		for _, r := range fix {
			r.State = statePending
			if err := putOutbox(tx, r); err != nil {
				return err
			}
			if err := setPendingIndex(tx, r, true); err != nil {
				return err
			}
		}
		return nil
	})
}

// Serve listens on the socket (and optional TCP address) and runs until ctx
// ends or Shutdown is called; then it stops accepting, finishes in-flight
// store writes, closes the broker connections with 1000 and returns.
func (d *Daemon) Serve(ctx context.Context) error {
	d.ctx, d.cancel = context.WithCancel(ctx)
	defer d.cancel()
	// Until its socket answers the daemon holds the start lock again
	// (Open let it go once daemon.db was open): a verb that finds
	// daemon.db locked and no answer takes a held start lock for a daemon
	// starting, not for one that runs and does not answer
	// (localapi.FindUnanswering), which `daemon up` right after a verb
	// started the daemon was told.
	serving := func() {}
	if release, err := startLock(d.home, 0); err == nil {
		var once sync.Once
		serving = func() { once.Do(release) }
		defer serving()
	}
	sock := localapi.SocketPath(d.home)
	// The socket's directory is the user's own (created 0700, refused if
	// anyone else owns it or may write to it), so nobody else can have
	// created the socket's name first or replace it.
	if err := localapi.PrepareSocketDir(sock); err != nil {
		return fmt.Errorf("daemon socket: %w", err)
	}
	if d.failpoint == failServeSlow {
		time.Sleep(time.Second)
	}
	// We hold the database lock, so a socket file left here is stale.
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen %s: %w", sock, err)
	}
	os.Chmod(sock, 0o600)
	d.listeners = append(d.listeners, ln)
	// Where this daemon listens, for a CLI whose environment computes
	// another path (localapi.ClientSocket).
	if err := localapi.WriteSocketPath(d.home, sock); err != nil {
		d.log.Warn("could not record the socket path", "err", err)
	}
	if err := CheckTCP(d.opts.TCP, d.opts.TCPAllowRemote, d.opts.TCPTLSCert, d.opts.TCPTLSKey); err != nil {
		ln.Close()
		return err
	}
	if d.opts.TCP != "" {
		tok, err := d.loadOrCreateToken()
		if err != nil {
			return err
		}
		d.token = tok
		tln, err := net.Listen("tcp", d.opts.TCP)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen %s: %w", d.opts.TCP, err)
		}
		d.listeners = append(d.listeners, tln)
		addr := tln.Addr().String()
		d.tcpAddr.Store(&addr)
	}
	if err := os.WriteFile(localapi.PIDPath(d.home), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		d.log.Warn("pid file", "err", err)
	}
	// A daemon runs again: the record of a `daemon down` goes. Only now,
	// when this daemon holds the home and listens, so a client waiting
	// since the down (localapi.Reconnect) finds this daemon and never
	// starts one of its own that races it (with the default flags, where
	// `daemon up --web ADDR` was asked for).
	if err := localapi.ClearStopped(d.home); err != nil {
		d.log.Warn("stop record", "err", err)
	}
	// Meshes are attached before the first request is served: a client
	// that saw the socket answer (as `daemon up` does) must find them.
	d.wg.Add(3)
	go func() { defer d.wg.Done(); d.inboxLoop() }()
	go func() { defer d.wg.Done(); d.watchConfig() }()
	go func() { defer d.wg.Done(); d.pruneLoop() }()
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.statusLoop() }()
	if _, err := d.Reload(); err != nil {
		d.log.Warn("config", "err", err)
	}
	d.reviveSessions()
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.reapLoop() }()
	// The page's server is up before the socket answers, so `claudemesh
	// ui` right after `daemon up` gets a link (or the reason there is none).
	d.startWeb()
	d.srv = &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	if d.failpoint == failServeHold {
		d.log.Info("failpoint: holding before serving")
	}
	for d.failpoint == failServeHold && d.ctx.Err() == nil {
		if _, err := os.Stat(filepath.Join(localapi.Dir(d.home), "serve-hold")); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, l := range d.listeners {
		tcp := i > 0
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			srv := d.srv
			var err error
			if tcp {
				h := d.routes()
				if d.opts.TCPAllowRemote {
					h = remoteHost(h)
				}
				srv = &http.Server{Handler: d.tcpGuard(h), ReadHeaderTimeout: 10 * time.Second,
					ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
				go func() { <-d.ctx.Done(); srv.Close() }()
			}
			if tcp && d.opts.TCPTLSCert != "" {
				err = srv.ServeTLS(l, d.opts.TCPTLSCert, d.opts.TCPTLSKey)
			} else {
				err = srv.Serve(l)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				d.log.Error("serve", "err", err)
			}
		}()
	}
	if a := d.tcpAddr.Load(); a != nil {
		d.log.Info("daemon listening", "socket", sock, "tcp", *a, "pid", os.Getpid(), "version", buildinfo.Version)
	} else {
		d.log.Info("daemon listening", "socket", sock, "pid", os.Getpid(), "version", buildinfo.Version)
	}
	serving()
	<-d.ctx.Done()
	return d.shutdown()
}

func (d *Daemon) shutdown() error {
	d.log.Info("shutting down")
	// Event streams first: an SSE request (an attached inbox --follow, an
	// MCP server) never ends on its own, so Shutdown would wait its whole
	// timeout for it.
	d.events.closeAll()
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := d.srv.Shutdown(sctx); err != nil {
		d.shutdownErr = err
		d.log.Warn("requests still running at shutdown", "err", err)
	}
	d.stopWeb()
	d.stopSessions()
	d.mu.Lock()
	meshes := make([]*meshRT, 0, len(d.meshes))
	for _, m := range d.meshes {
		meshes = append(meshes, m)
	}
	d.mu.Unlock()
	// Each mesh closes its broker connection cleanly (1000), in parallel:
	// one slow broker must not delay the others.
	var stops sync.WaitGroup
	for _, m := range meshes {
		stops.Go(m.stop)
	}
	stops.Wait()
	d.wg.Wait()
	// Accepts that were journaled are copied into daemon.db before it
	// closes (the next start would copy them otherwise).
	d.acc.close()
	os.Remove(localapi.SocketPath(d.home))
	os.Remove(localapi.SocketPathFile(d.home))
	os.Remove(localapi.PIDPath(d.home))
	return d.db.Close()
}

// Shutdown stops a serving daemon.
func (d *Daemon) Shutdown() {
	if d.cancel != nil {
		d.cancel()
	}
}

func (d *Daemon) loadOrCreateToken() (string, error) {
	path := localapi.TokenPath(d.home)
	if data, err := fsutil.ReadPrivateFile(path); err == nil {
		return string(trimSpace(data)), nil
	}
	tok := cmcrypto.RandomHex32()
	if err := fsutil.WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", err
	}
	return tok, nil
}

// Reload re-reads config.json and attaches new meshes / detaches removed
// ones, without touching meshes that did not change. It returns the slugs
// of the meshes it (re)started, so `daemon up` can say what it did.
func (d *Daemon) Reload() ([]string, error) {
	cfg, err := config.Load(d.home)
	if err != nil {
		return nil, err
	}
	want := map[string]config.Mesh{}
	for _, m := range cfg.Meshes {
		want[m.MeshID] = m
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.mu.Lock()
	var stop []*meshRT
	for id, rt := range d.meshes {
		// A mesh that was kicked or banned is started afresh: a reload is
		// how the user says "try again" (`daemon up` sends one).
		if m, ok := want[id]; !ok || !sameMeshConfig(m, rt.cfg) || rt.stopped() {
			stop = append(stop, rt)
			delete(d.meshes, id)
		}
	}
	var start []config.Mesh
	var started []string
	for id, m := range want {
		if rt, ok := d.meshes[id]; !ok {
			start = append(start, m)
		} else {
			// The audit history may have changed under the daemon (audit
			// verify --accept): check again, so status says what holds.
			select {
			case rt.auditWake <- struct{}{}:
			default:
			}
		}
	}
	d.mu.Unlock()
	for _, rt := range stop {
		rt.stop()
	}
	ids := map[string]bool{}
	for id := range want {
		ids[id] = true
	}
	d.failLeftMeshes(ids)
	defer func() {
		for _, rt := range stop {
			d.restartSessions(rt.cfg.MeshID)
		}
	}()
	for _, m := range start {
		key, err := cmcrypto.ParseSecretKey(m.SecretKey)
		if err != nil {
			d.log.Error("mesh key", "mesh", m.Slug, "err", err)
			continue
		}
		// Started before it is published, so API handlers never see a
		// mesh without its presence.
		rt := newMeshRT(d, m, key)
		rt.start()
		if d.webActive() {
			rt.setWebPresence(true)
		}
		d.mu.Lock()
		d.meshes[m.MeshID] = rt
		d.mu.Unlock()
		started = append(started, m.Slug)
	}
	slices.Sort(started)
	return started, nil
}

// watchConfig polls config.json's stamp so a `join` that did not reach
// /v1/reload is still picked up.
func (d *Daemon) watchConfig() {
	t := time.NewTicker(d.opts.ConfigPoll)
	defer t.Stop()
	d.cfgStamp = d.configStamp()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			if s := d.configStamp(); s != d.cfgStamp {
				d.cfgStamp = s
				if _, err := d.Reload(); err != nil {
					d.log.Warn("config reload", "err", err)
				}
			}
		}
	}
}

func (d *Daemon) configStamp() string {
	fi, err := os.Stat(config.Path(d.home))
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size())
}

// mesh returns the runtime of a mesh by slug or id.
func (d *Daemon) meshBySlug(slug string) *meshRT {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.meshes {
		if m.cfg.Slug == slug || m.cfg.MeshID == slug {
			return m
		}
	}
	return nil
}

// meshList returns the attached meshes ordered by slug.
func (d *Daemon) meshList() []*meshRT {
	d.mu.Lock()
	out := make([]*meshRT, 0, len(d.meshes))
	for _, m := range d.meshes {
		out = append(out, m)
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b *meshRT) int {
		if a.cfg.Slug < b.cfg.Slug {
			return -1
		}
		if a.cfg.Slug > b.cfg.Slug {
			return 1
		}
		return 0
	})
	return out
}

// chooseMesh applies "writes need one mesh": the named one, else the only
// one, else mesh_required with the choices.
func (d *Daemon) chooseMesh(slug string) (*meshRT, *apiError) {
	if slug != "" {
		if m := d.meshBySlug(slug); m != nil {
			return m, nil
		}
		return nil, &apiError{status: 404, code: "mesh_not_found", msg: "not joined to a mesh called " + slug}
	}
	ms := d.meshList()
	switch len(ms) {
	case 0:
		return nil, &apiError{status: 403, code: "not_joined", msg: "not joined to any mesh; run claudemesh join LINK"}
	case 1:
		return ms[0], nil
	}
	var slugs []string
	for _, m := range ms {
		slugs = append(slugs, m.cfg.Slug)
	}
	return nil, &apiError{status: 400, code: "mesh_required", msg: fmt.Sprintf("several meshes are joined (%s); choose one with --mesh", joinComma(slugs))}
}

// pruneLoop deletes inbox rows older than the retention, hourly.
func (d *Daemon) pruneLoop() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	d.pruneInbox()
	d.pruneOutbox()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.pruneInbox()
			d.pruneOutbox()
		}
	}
}

// meshRT is one attached mesh: its control-plane presence, its member/peer
// cache and its drain worker. A broker that is down for one mesh never
// delays another: each has its own connection and worker.
type meshRT struct {
	d     *Daemon
	cfg   config.Mesh
	key   *cmcrypto.Identity
	ident client.MeshIdentity

	// presence is stored once start has it; its own callbacks (onState's
	// refreshBlocked, onSystem) may run before StartPresence returns.
	presence atomic.Pointer[client.Presence]
	cancel   context.CancelFunc
	done     chan struct{}
	wake     chan struct{}
	// auditWake asks the audit loop for a check now (governance.go): a
	// reload, which `audit verify --accept` sends.
	auditWake chan struct{}

	mu sync.Mutex
	dirState
	state string
	// stateErr is the error that led to state (nil when open).
	stateErr error
	// refusals counts the broker's refusals of this member as unknown in
	// a row (MeshRemoved); settleRemoved asks the drain to fail the rows
	// accepted before (removedSettleAfter).
	refusals      int
	refusedSince  time.Time // the first refusal of the run
	settleRemoved bool
	// writesRefused is when the broker began refusing this mesh's sends
	// `unavailable` (a cluster without quorum; zero: it accepts them),
	// writesRefusedWhy its words and writesRefusedVia the node (writes.go).
	writesRefused    time.Time
	writesRefusedWhy string
	writesRefusedVia string // the URL of the node that refused
	// blocked: the sending members this member blocked (grants []),
	// as last read (blocked.go).
	blocked map[string]bool
	// latest is the newest connection, set at hello_ack — before the mesh
	// reports open — because the broker starts pushing queued messages
	// right after hello_ack and they must be acked on that connection.
	latest *client.Conn
	// roleNow is the member's role as the broker last stated it (role.go).
	roleNow string

	topics *topicsRT // topics.go

	// fresh holds rows the accept journal's applier has just copied into
	// daemon.db, by seq, for the drain to send as they are instead of
	// reading them back (acceptlog.go handToDrains, outbox.go due).
	freshMu sync.Mutex
	fresh   map[uint64]*outboxRow

	// order keeps one sender's rows to one target in their order when a
	// send fails (outboxorder.go).
	order sendOrder

	// lineOf is the line (orderKey) of each pending row a drain round
	// found waiting behind a held line's head, by seq (at most maxLineOf;
	// emptied once nothing is held): the next rounds pass over those rows
	// by their seq instead of reading and decoding each again (outbox.go
	// due). A row's line never changes. lineMu is held for a whole round.
	// lineRows are those seqs by line, to forget a line's rows once its
	// hold has ended.
	lineMu   sync.Mutex
	lineOf   map[uint64]string
	lineRows map[string][]uint64

	// settled are the claims of this mesh's rows whose outcomes are
	// committed, released by the drain's next round; drainEnded says no
	// round follows (sendclaim.go). Under d.claimsMu.
	settled    []uint64
	drainEnded bool

	// web is the human's web presence while a page is connected (web.go);
	// webMu serialises opening and closing it.
	webMu sync.Mutex
	web   atomic.Pointer[client.Presence]
}

func newMeshRT(d *Daemon, m config.Mesh, key *cmcrypto.Identity) *meshRT {
	rt := &meshRT{
		d: d, cfg: m, key: key, state: localapi.MeshConnecting,
		wake: make(chan struct{}, 1), done: make(chan struct{}), auditWake: make(chan struct{}, 1),
		dirState: dirState{dirWake: make(chan struct{}, 1), fetchLimit: rate.NewLimiter(liveFetchRate, liveFetchBurst)},
		ident:    client.MeshIdentity{MeshID: m.MeshID, MemberID: m.MemberID, BrokerURL: m.BrokerURL, BrokerURLs: m.BrokerURLs, BrokerPubkey: m.BrokerPubkey, Member: key},
	}
	// Start from the cached directory so sends by name work before (or
	// without) a connection.
	d.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bCache), []byte(m.MeshID), &rt.cache)
	})
	rt.topics = newTopicsRT(rt)
	return rt
}

func (m *meshRT) start() {
	ctx, cancel := context.WithCancel(m.d.ctx)
	m.cancel = cancel
	host, _ := os.Hostname()
	p := client.StartPresence(ctx, m.ident, client.DialOptions{
		Role: wire.RoleControlPlane, Presence: true, SessionID: "daemon", PeerType: wire.PeerHuman,
		Hostname: host, Logger: m.d.log,
		// The drain queues sends, and the inbox its acks, in bursts.
		CoalesceWrites: true,
		// Pushes are acked on m.latest: it must name the connection
		// before the first push, which can be stored while OnConnected
		// is still busy (noteRole writes config.json).
		OnReady:   func(c *client.Conn) { m.setLatest(c) },
		OnPush:    func(raw []byte, p *wire.Push) { m.d.enqueueInbox(m, p) },
		OnReceipt: func(r *wire.Receipt) { m.d.enqueueReceipt(m, r, nil) },
		OnSystem:  func(p *wire.Push) { m.onSystem(p) },
	}, client.PresenceOptions{
		OnConnected: func(ctx context.Context, c *client.Conn) {
			if h := m.d.opts.testHookConnected; h != nil {
				h()
			}
			m.noteRole(c.HelloAck().MemberRole)
			m.noteBrokerURLs(c.HelloAck().BrokerURLs)
			m.refreshDirectory(ctx, c)
			m.topics.connected(c)
		},
		OnState:         m.onState,
		MismatchRecheck: mismatchRecheck,
	})
	if h := m.d.opts.testPresenceStarted; h != nil {
		h()
	}
	m.presence.Store(p)
	if s, _ := p.State(); s == client.StateOpen {
		// Open before it was stored: onState's refreshBlocked found no
		// connection and read nothing, and nothing would read the
		// blocked members until the next reconnect (a blocked member's
		// DMs stored as new, and counted in its share).
		go m.d.refreshBlocked(m)
	}
	m.d.wg.Add(3)
	go func() {
		defer m.d.wg.Done()
		defer close(m.done)
		var wg sync.WaitGroup
		wg.Go(func() { m.dirLoop(ctx) })
		m.drain(ctx)
		wg.Wait()
	}()
	go func() {
		defer m.d.wg.Done()
		m.topics.sweepLoop(ctx)
	}()
	go func() {
		defer m.d.wg.Done()
		m.auditLoop(ctx)
	}()
}

// stop closes the presence cleanly (1000) and waits for the drain worker.
func (m *meshRT) stop() {
	if m.cancel == nil {
		return
	}
	m.setWebPresence(false)
	p := m.presence.Load()
	p.Close()
	m.cancel()
	<-m.done
	<-p.Done()
}

func (m *meshRT) kick() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// mismatchRecheck is how often, at most, the daemon tries again a broker
// that could not prove the pinned key (client.PresenceOptions): slowly,
// so that the mesh heals once the real broker is back, and safely, as
// every connection must prove the key again.
const mismatchRecheck = 5 * time.Minute

func (m *meshRT) onState(s client.State, err error) {
	if h := m.d.opts.testHookState; h != nil {
		h(s)
	}
	state := string(s)
	m.mu.Lock()
	switch {
	case s == client.StateRemoved:
		// The broker's operator closed the connection: certain.
		m.settleRemoved = true
	case s == client.StateReconnecting && client.CodeOf(err) == wire.CodeUnauthorized:
		// The broker answered, and does not know this member: a state of
		// its own, which refuses sends (meshstate.go).
		state = localapi.MeshRemoved
		if m.refusals == 0 {
			m.refusedSince = time.Now()
		}
		m.refusals++
		if m.refusals >= removedSettleAfter && time.Since(m.refusedSince) >= removedSettleWait() {
			m.settleRemoved = true
		}
	case s != client.StateConnecting:
		m.refusals = 0
	}
	m.state, m.stateErr = state, err
	m.mu.Unlock()
	ev := localapi.BrokerStatusEvent{Mesh: m.cfg.Slug, State: state}
	if err != nil {
		ev.Error = err.Error()
	}
	m.d.publishAsync(localapi.EventBrokerStatus, m.cfg.MeshID, ev)
	m.kick()
	if s == client.StateOpen {
		go m.d.refreshBlocked(m)
	}
}

func (m *meshRT) getState() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state
}

// neverConnected reports whether the mesh has no directory at all yet (no
// cache from an earlier run and no hello_ack in this one).
func (m *meshRT) neverConnected() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cache.UpdatedAt == 0
}

// waitOpen waits up to d for the mesh's connection to open.
func (m *meshRT) waitOpen(d time.Duration) {
	p := m.presence.Load()
	if p == nil {
		return
	}
	ctx, cancel := context.WithTimeout(m.d.ctx, d)
	defer cancel()
	p.WaitState(ctx, client.StateOpen, client.StateReconnecting, client.StateKicked, client.StateRemoved, client.StateBanned, client.StateClosed)
}

// knownMemberName is memberName for the member of a verified sender, for a
// row about to be stored with it (and the marks computed from the names:
// senderMarks), once. When the member is not in the directory it first
// waits for the mesh to open, the directory being fetched at each
// hello_ack before it does (pushes held for a daemon that was away arrive
// before that: a first start stored them without the name, and their
// sessions read "via an unknown member"), or, on an open mesh, fetches the
// directory (a member who joined since). tried holds the meshes already
// waited for in this batch: at most once each, a few seconds at most.
func (m *meshRT) knownMemberName(pubkey string, tried map[*meshRT]bool) string {
	if n := m.memberName(pubkey); n != "" || tried[m] {
		return n
	}
	tried[m] = true
	if m.getState() != localapi.MeshOpen {
		m.waitOpen(3 * time.Second)
	} else {
		ctx, cancel := context.WithTimeout(m.d.ctx, 3*time.Second)
		m.liveDirectory(ctx, time.Now())
		cancel()
	}
	return m.memberName(pubkey)
}

// memberName is the enrolled name of a member key in the last known
// member list ("" if unknown).
func (m *meshRT) memberName(pubkey string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mem := range m.cache.Members {
		if mem.Pubkey == pubkey {
			return mem.DisplayName
		}
	}
	return ""
}

// ackConn is the connection to settle pushes and receipts on: the newest
// one, open or still in its hello_ack phase (nil once it has closed; the
// broker then redelivers on the next one).
func (m *meshRT) setLatest(c *client.Conn) {
	m.mu.Lock()
	m.latest = c
	m.mu.Unlock()
}

func (m *meshRT) ackConn() *client.Conn {
	m.mu.Lock()
	c := m.latest
	m.mu.Unlock()
	if c == nil {
		return nil
	}
	select {
	case <-c.Done():
		return nil
	default:
		return c
	}
}

// conn returns the open connection, or nil.
func (m *meshRT) conn() *client.Conn {
	p := m.presence.Load()
	if p == nil {
		return nil
	}
	if s, _ := p.State(); s != client.StateOpen {
		return nil
	}
	return p.Conn()
}

func trimSpace(b []byte) []byte { return bytes.TrimSpace(b) }

func joinComma(s []string) string { return strings.Join(s, ", ") }

// sameMeshConfig reports whether a reload can keep the mesh's connection.
// brokerUrls is left out: the daemon itself records the list a broker
// announces in hello_ack, and its presence already uses it, so that write
// must not restart the connection it came from.
func sameMeshConfig(a, b config.Mesh) bool {
	a.BrokerURLs, b.BrokerURLs = nil, nil
	return reflect.DeepEqual(a, b)
}
