package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	json "github.com/go-json-experiment/json"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// Defaults of the --via-daemon measurements (05-quality "Benchmarks").
const (
	DefaultSends         = 200    // sequential `send` processes per path
	DefaultAccepts       = 10_000 // messages posted to the outbox
	DefaultClients       = 16     // concurrent local API clients
	DefaultDaemonPayload = 100    // bytes per accepted message
)

// Timeouts of the daemon's set-up and tear-down. They bound waits that
// normally take milliseconds, so a wedged daemon fails the bench instead of
// hanging it.
const (
	daemonOpenTimeout  = 20 * time.Second // `daemon up` until its mesh is open
	daemonStopTimeout  = 10 * time.Second // `daemon down` (it waits 5 s itself)
	daemonSettle       = 30 * time.Second // outbox empty after the send phases
	sendProcessTimeout = 30 * time.Second // one `claudemesh send` process
)

// acceptIDPrefix marks the clientMessageIds of the accept phase, so the
// recipient tells them apart from the `send` processes' messages (whose ids
// the daemon or the CLI mints).
const acceptIDPrefix = "bench-a."

// cliBody is the message of every `claudemesh send` process, as 05-quality
// gives the command: `claudemesh send <pubkey> x --json`.
const cliBody = "x"

// Percentiles is a latency in milliseconds as the --via-daemon document
// gives it: p50, p99 and max (05-quality names no p95 there).
type Percentiles struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func (l Latency) short() Percentiles { return Percentiles{P50: l.P50, P99: l.P99, Max: l.Max} }

// DaemonResult is what `bench --via-daemon` measured. The JSON shape is the
// one documented in the command's help and BENCHMARKS.md; the fields tagged
// "-" are detail for the human report.
type DaemonResult struct {
	// WarmSendMs is the whole-process wall time of `claudemesh send
	// <pubkey> x --json` with the sender's daemon running and connected.
	WarmSendMs Percentiles `json:"warmSendMs"`
	// ColdSendMs is the same command with --no-daemon: its own broker
	// connection, handshake and directory fetch per process.
	ColdSendMs Percentiles `json:"coldSendMs"`
	// AcceptPerSec is accepted messages per second of the accept phase
	// (first request to last 202), over Clients concurrent clients.
	AcceptPerSec float64     `json:"acceptPerSec"`
	AcceptMs     Percentiles `json:"acceptMs"` // POST /v1/send → 202
	// DrainSec runs from the first accept request to the recipient
	// receiving the last accepted message: how long the daemon took to
	// get the whole burst through the broker.
	DrainSec     float64 `json:"drainSec"`
	Delivered    int64   `json:"delivered"`    // accepted messages the recipient received
	DeliveredPct float64 `json:"deliveredPct"` // of Accepts

	Sends, Accepts, Clients, Payload int     `json:"-"`
	Accepted                         int64   `json:"-"` // 202 answers
	Refused                          int64   `json:"-"` // other answers
	FirstRefusal                     string  `json:"-"`
	AcceptSec                        float64 `json:"-"` // duration of the accept phase
	// DrainTailSec is how long after the last 202 the last message
	// arrived: what the drain still had to do once accepting was over.
	DrainTailSec float64 `json:"-"`
	// AcceptE2eMs is accept request → push at the recipient.
	AcceptE2eMs Latency `json:"-"`
	// SettledSec runs from the first accept until the daemon's outbox
	// holds no row short of delivered: every receipt recorded (0: not
	// within the drain window). The sender's side of the drain.
	SettledSec float64 `json:"-"`
	// SendsDelivered counts the `send` processes' messages (warm, cold
	// and the two unmeasured first sends) the recipient received.
	SendsDelivered int64   `json:"-"`
	SendsExpected  int64   `json:"-"`
	Undecryptable  int64   `json:"-"`
	Redelivered    int64   `json:"-"`
	SetupSec       float64 `json:"-"`
	// CPU seconds of the accept phase, its drain and the receipts, per
	// process.
	DaemonCPUSec, BrokerCPUSec, BenchCPUSec float64 `json:"-"`
	DaemonPeakRssMB                         float64 `json:"-"`
	DaemonPID, BrokerPID                    int     `json:"-"`
	BrokerURL                               string  `json:"-"`
	Executable                              string  `json:"-"`
}

// validateDaemon checks a --via-daemon config; errors are usage errors.
func (c *Config) validateDaemon() error {
	switch {
	case c.Broadcast || c.IdleConnections > 0:
		return cliui.UsageErrorf("--via-daemon measures one sender's daemon; --broadcast and --idle-connections do not apply")
	case c.Sends < 1:
		return cliui.UsageErrorf("--sends must be at least 1")
	case c.Accepts < 1:
		return cliui.UsageErrorf("--accepts must be at least 1")
	case c.Clients < 1 || c.Clients > 1024:
		return cliui.UsageErrorf("--clients must be 1 to 1024")
	}
	return c.validateCommon()
}

// daemonRun is the state of one --via-daemon run on top of the broker
// run's set-up (child broker, mesh, enrollment).
type daemonRun struct {
	*run
	exe    string
	env    []string // of every claudemesh process this run starts
	dir    string   // temporary: the sender's client home lives inside
	home   string
	sock   string
	api    *localapi.Client
	sender *peer
	recip  *peer
	pid    int // the daemon's, from `daemon up --json`

	payload []byte
	// acceptAt[i] / arriveAt[i]: when accept i was requested and when its
	// push reached the recipient (ns since base; arriveAt 0 = not yet).
	acceptAt []atomic.Int64
	arriveAt []atomic.Int64

	acceptDelivered atomic.Int64
	cliDelivered    atomic.Int64
	undecryptable   atomic.Int64
	redelivered     atomic.Int64
	firstBad        atomic.Pointer[string] // why the first bad push was bad
	cliSeen         map[string]struct{}    // owned by the recipient's reader goroutine

	stopOnce sync.Once
}

// RunDaemon measures the daemon (05-quality "Benchmarks", the two daemon
// rows): sequential `claudemesh send` processes through a warm daemon and,
// for comparison, with --no-daemon; then Clients concurrent local API
// clients posting Accepts messages to the outbox, and how long the daemon
// takes to get them all to the recipient. The sender's daemon runs on a
// temporary client home and is stopped before RunDaemon returns — on
// errors and cancellation too, killed if `daemon down` fails.
func RunDaemon(ctx context.Context, cfg Config) (*DaemonResult, error) {
	if err := cfg.validateDaemon(); err != nil {
		return nil, err
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	r := &run{cfg: cfg, base: time.Now()}
	defer r.shutdown() // after the daemon is down: deferred first, runs last
	d := &daemonRun{run: r, cliSeen: map[string]struct{}{}}
	defer d.stop()

	exe, err := executable(cfg, "run the daemon and send")
	if err != nil {
		return nil, err
	}
	d.exe = exe
	if builtWithRace(exe) {
		r.warnf("%s is built with -race: the send timings measure the race detector, not claudemesh (go build -o /tmp/claudemesh .)", exe)
	}

	if err := r.startBroker(ctx, exe); err != nil {
		return nil, err
	}
	if err := d.makePair(); err != nil {
		return nil, err
	}
	r.joiners = newJoiners(r.url, 2)
	if err := r.enroll(ctx); err != nil {
		return nil, err
	}
	if err := d.connectRecipient(ctx); err != nil {
		return nil, err
	}
	if err := d.writeHome(); err != nil {
		return nil, err
	}
	r.progressf("starting the sender's daemon")
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	if cfg.onDaemonUp != nil {
		cfg.onDaemonUp(d.pid, d.home)
	}
	if err := d.waitOpen(ctx); err != nil {
		return nil, err
	}
	res := &DaemonResult{Sends: cfg.Sends, Accepts: cfg.Accepts, Clients: cfg.Clients, Payload: cfg.Payload,
		DaemonPID: d.pid, BrokerURL: r.url, Executable: exe, SetupSec: round(time.Since(r.base).Seconds(), 2)}
	if r.child != nil {
		res.BrokerPID = r.child.pid()
	}

	warm, err := d.sendProcesses(ctx, "warm", false)
	if err != nil {
		return nil, err
	}
	cold, err := d.sendProcesses(ctx, "cold", true)
	if err != nil {
		return nil, err
	}
	res.WarmSendMs, res.ColdSendMs = summarize(warm).short(), summarize(cold).short()
	res.SendsExpected = int64(2 * (cfg.Sends + 1))
	if err := d.settle(ctx, res.SendsExpected); err != nil {
		return nil, err
	}

	if err := d.accept(ctx, res); err != nil {
		return nil, err
	}
	if m, err := procStatus(d.pid); err == nil {
		res.DaemonPeakRssMB = toMB(m["VmHWM"])
	}
	res.SendsDelivered = d.cliDelivered.Load()
	res.Undecryptable, res.Redelivered = d.undecryptable.Load(), d.redelivered.Load()
	if why := d.firstBad.Load(); why != nil {
		r.warnf("the recipient received %d pushes it could not accept, the first: %s", res.Undecryptable, *why)
	}
	if res.SendsDelivered < res.SendsExpected {
		r.warnf("the recipient received %d of the %d messages the send processes sent", res.SendsDelivered, res.SendsExpected)
	}
	return res, nil
}

// makePair generates the sender and the recipient with the box key they
// share, precomputed once as in the broker runs.
func (d *daemonRun) makePair() error {
	d.peers = make([]*peer, 2)
	d.byPubkey = map[string]*peer{}
	for i := range d.peers {
		key, err := cmcrypto.GenerateIdentity()
		if err != nil {
			return err
		}
		p := &peer{idx: i, key: key, pubHex: key.PublicHex(), keys: map[int32]*cmcrypto.SharedKey{}}
		d.peers[i] = p
		d.byPubkey[p.pubHex] = p
	}
	d.sender, d.recip = d.peers[0], d.peers[1]
	d.senders, d.recipients = d.peers[:1], d.peers[1:]
	k, err := cmcrypto.Precompute(d.recip.key.Public(), d.sender.key)
	if err != nil {
		return err
	}
	d.sender.keys[1], d.recip.keys[0] = k, k
	d.payload = plaintext(0, d.cfg.Payload)
	d.acceptAt = make([]atomic.Int64, d.cfg.Accepts)
	d.arriveAt = make([]atomic.Int64, d.cfg.Accepts)
	return nil
}

// connectRecipient holds the recipient's presence: every push is opened,
// compared with what was sent, counted once and acked.
func (d *daemonRun) connectRecipient(ctx context.Context) error {
	p := d.recip
	c, err := d.dialRetry(ctx, p.ident, client.DialOptions{
		Presence: true, Role: wire.RoleCLI, SessionID: "bench",
		OnReady: p.ackConn.Store,
		OnPush:  func(_ []byte, m *wire.Push) { d.onPush(m) },
	})
	if err != nil {
		return fmt.Errorf("recipient connecting: %w", err)
	}
	p.conn = c
	return nil
}

// onPush runs on the recipient's reader goroutine.
func (d *daemonRun) onPush(m *wire.Push) {
	now := d.now()
	d.recip.ack(m.MessageID)
	body, err := d.openPush(m)
	if err != nil {
		d.bad(err.Error())
		return
	}
	if rest, ok := strings.CutPrefix(m.ClientMessageID, acceptIDPrefix); ok {
		i, err := strconv.Atoi(rest)
		if err != nil || i < 0 || i >= len(d.arriveAt) || !bytes.Equal(body, d.payload) {
			d.bad(fmt.Sprintf("push %s (clientMessageId %q) is not a message the bench posted", m.MessageID, m.ClientMessageID))
			return
		}
		if d.arriveAt[i].CompareAndSwap(0, now) {
			d.acceptDelivered.Add(1)
		} else {
			d.redelivered.Add(1)
		}
		return
	}
	if string(body) != cliBody {
		d.bad(fmt.Sprintf("push %s opened to %q, not the send processes' %q", m.MessageID, body, cliBody))
		return
	}
	if _, dup := d.cliSeen[m.MessageID]; dup {
		d.redelivered.Add(1)
		return
	}
	d.cliSeen[m.MessageID] = struct{}{}
	d.cliDelivered.Add(1)
}

// bad counts a push that did not open to what was sent, keeping the first
// reason for the report.
func (d *daemonRun) bad(why string) {
	d.undecryptable.Add(1)
	d.firstBad.CompareAndSwap(nil, &why)
}

func (d *daemonRun) openPush(m *wire.Push) ([]byte, error) {
	switch {
	case m.MeshID != d.meshID:
		return nil, fmt.Errorf("push %s is for mesh %q", m.MessageID, m.MeshID)
	case m.SenderPubkey != d.sender.pubHex:
		return nil, fmt.Errorf("push %s from %q, not the sender", m.MessageID, m.SenderPubkey)
	case m.Kind != wire.KindBox || m.TargetSpec != d.recip.pubHex:
		return nil, fmt.Errorf("push %s is a %q to %s", m.MessageID, m.Kind, m.TargetSpec)
	}
	return d.recip.keys[0].Open(m.Nonce, m.Ciphertext)
}

// writeHome writes the sender's client home as `join` would: config.json
// (0600) with its mesh, in a 0700 directory, through config.Update.
func (d *daemonRun) writeHome() error {
	dir, err := os.MkdirTemp("", "claudemesh-bench-daemon-")
	if err != nil {
		return err
	}
	d.dir, d.home = dir, filepath.Join(dir, "home")
	s := d.sender
	m := config.Mesh{MeshID: s.ident.MeshID, MemberID: s.ident.MemberID, Slug: d.slug, Name: d.meshName,
		Pubkey: s.pubHex, SecretKey: s.key.SecretKeyHex(), BrokerURL: d.url, BrokerPubkey: s.ident.BrokerPubkey,
		Role: wire.MemberMember, DisplayName: "bench-sender", JoinedAt: time.Now().UTC().Format(time.RFC3339)}
	if err := config.Update(d.home, func(c *config.Config) error { c.Upsert(m); return nil }); err != nil {
		return fmt.Errorf("writing the sender's config: %w", err)
	}
	// The socket is named explicitly (CLAUDEMESH_DAEMON_SOCK) so that a
	// value in the caller's environment can never point the bench at
	// another daemon; a temporary directory is short enough for a Unix
	// socket path, and /tmp is the fallback when TMPDIR is deep.
	d.sock = filepath.Join(localapi.Dir(d.home), "daemon.sock")
	if len(d.sock) > 100 {
		d.sock = filepath.Join("/tmp", "claudemesh-bench-"+cmcrypto.RandomHex32()[:12]+".sock")
	}
	d.env = childEnviron(d.sock, d.cfg.childEnv)
	d.api = localapi.New(d.sock)
	return nil
}

// childEnviron is this process's environment with the daemon's socket and
// the caller's extra variables, and without the variables that would change
// what the child processes measure or where they point (stripped).
func childEnviron(sock string, extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !stripped(name) {
			env = append(env, kv)
		}
	}
	env = append(env, localapi.EnvSocket+"="+sock)
	return append(env, extra...)
}

// stripped names the variables a caller's environment must not pass on:
// another home or socket, the cold path forced, a failpoint, a fallback
// broker.
func stripped(name string) bool {
	switch name {
	case config.HomeEnv, localapi.EnvSocket, "CLAUDEMESH_NO_DAEMON", "CLAUDEMESH_FAILPOINT", "CLAUDEMESH_BROKER_URL":
		return true
	}
	return false
}

// claudemesh runs this binary with --home and --json and decodes its
// document into out. It returns the process's wall time: fork and exec,
// the Go runtime's start, the command, and the exit.
func (d *daemonRun) claudemesh(ctx context.Context, timeout time.Duration, out any, args ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	argv := append([]string{"--home", d.home, "--json"}, args...)
	cmd := exec.CommandContext(ctx, d.exe, argv...)
	cmd.Env = d.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return took, ctx.Err()
		}
		return took, fmt.Errorf("claudemesh %s: %v: %s%s", strings.Join(args, " "), err,
			strings.TrimSpace(stdout.String()), tailOf(stderr.String()))
	}
	if out != nil {
		if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
			return took, fmt.Errorf("claudemesh %s printed %q: %w", strings.Join(args, " "), stdout.String(), err)
		}
	}
	return took, nil
}

func tailOf(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return "\n" + s
}

// start runs `claudemesh --home H daemon up`, which detaches the daemon
// and returns once its socket answers.
func (d *daemonRun) start(ctx context.Context) error {
	var up struct {
		OK             bool `json:"ok"`
		PID            int  `json:"pid"`
		AlreadyRunning bool `json:"alreadyRunning"`
	}
	if _, err := d.claudemesh(ctx, daemonOpenTimeout, &up, "daemon", "up", "--web", "off"); err != nil {
		return fmt.Errorf("starting the daemon: %w", err)
	}
	if !up.OK || up.PID <= 0 {
		return fmt.Errorf("daemon up answered ok=%v pid=%d", up.OK, up.PID)
	}
	d.pid = up.PID
	if up.AlreadyRunning {
		// Never happens on a fresh home; if it does, the daemon there
		// is stopped with the run all the same.
		return fmt.Errorf("a daemon was already running on the bench's fresh home %s", d.home)
	}
	return nil
}

// stop ends the daemon: `daemon down`, and SIGKILL if that fails or the
// process is still there; then it removes the temporary home. It runs on
// every exit path of RunDaemon, with a context of its own, since the run's
// may be what was cancelled — even when `daemon up` itself was interrupted
// and never told the pid, which `daemon down` then finds in the home.
func (d *daemonRun) stop() {
	d.stopOnce.Do(func() {
		if d.home != "" {
			var down struct {
				PID int `json:"pid"`
			}
			_, err := d.claudemesh(context.Background(), daemonStopTimeout, &down, "daemon", "down")
			pid := d.pid
			if pid == 0 {
				pid = down.PID
			}
			if pid == 0 {
				// Only a process proven to be the home's daemon: a
				// stale pid file names another program.
				pid, _ = localapi.DaemonPID(d.home)
			}
			if pid > 0 && (err != nil || alive(pid, 2*time.Second)) {
				d.warnf("daemon down did not stop pid %d (%v); killing it", pid, err)
				syscall.Kill(pid, syscall.SIGKILL)
				if alive(pid, 5*time.Second) {
					d.warnf("daemon pid %d survived SIGKILL; its home %s is left in place", pid, d.home)
					return
				}
			}
		}
		if d.dir != "" {
			os.RemoveAll(d.dir)
		}
		if d.sock != "" && !strings.HasPrefix(d.sock, d.dir) {
			os.Remove(d.sock)
		}
	})
}

// alive reports whether pid still runs after waiting up to wait for it to
// go. The daemon is not this process's child (it detached), so there is
// nothing to reap here; a zombie awaiting its reaper counts as gone.
func alive(pid int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for syscall.Kill(pid, 0) == nil && !zombie(pid) {
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// zombie reports whether pid has exited and only waits to be reaped (state
// Z in /proc/<pid>/stat).
func zombie(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i >= 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// waitOpen waits until the daemon reports its mesh open: connected and
// with its directory fetched, so a send resolves without waiting.
func (d *daemonRun) waitOpen(ctx context.Context) error {
	deadline := time.Now().Add(daemonOpenTimeout)
	var h localapi.Health
	for {
		h = localapi.Health{}
		_, err := d.api.Do(ctx, "GET", "/v1/health", nil, &h)
		if err == nil && h.PID != d.pid {
			return fmt.Errorf("the daemon on %s has pid %d, not %d", d.sock, h.PID, d.pid)
		}
		if err == nil && h.Meshes[d.slug] == localapi.MeshOpen {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the daemon's mesh did not open within %s (health %+v, %v; see %s)",
				daemonOpenTimeout, h, err, localapi.LogPath(d.home))
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// sendProcesses runs Sends sequential `claudemesh send <pubkey> x --json`
// processes (with --no-daemon when cold) after one unmeasured one, which
// brings the binary into the page cache and lets the daemon compute the
// box key it caches; it returns each measured process's wall time.
func (d *daemonRun) sendProcesses(ctx context.Context, what string, cold bool) ([]int64, error) {
	args := []string{"send", d.recip.pubHex, cliBody}
	wantVia := "daemon"
	if cold {
		args = append([]string{"--no-daemon"}, args...)
		wantVia = "direct"
	}
	out := make([]int64, 0, d.cfg.Sends)
	for i := -1; i < d.cfg.Sends; i++ {
		var res struct {
			OK     bool   `json:"ok"`
			Status string `json:"status"`
			Via    string `json:"via"`
		}
		took, err := d.claudemesh(ctx, sendProcessTimeout, &res, args...)
		if err != nil {
			return nil, fmt.Errorf("%s send %d: %w", what, i+1, err)
		}
		if !res.OK || res.Via != wantVia {
			// A daemon-path send that fell back to a direct connection
			// would time the wrong thing.
			return nil, fmt.Errorf("%s send %d went via %q (ok=%v, status %q), not %s", what, i+1, res.Via, res.OK, res.Status, wantVia)
		}
		if i >= 0 {
			out = append(out, int64(took))
		}
		d.progressf("%s sends: %d/%d", what, i+1, d.cfg.Sends)
	}
	return out, nil
}

// settle waits until the send phases' messages have reached the recipient
// and the daemon's outbox is empty, so the accept phase starts on an idle
// daemon.
func (d *daemonRun) settle(ctx context.Context, want int64) error {
	d.progressf("waiting for the send processes' messages to arrive")
	deadline := time.Now().Add(daemonSettle)
	for {
		var st localapi.Status
		_, err := d.api.Do(ctx, "GET", "/v1/status", nil, &st)
		idle := err == nil && st.Outbox != nil && st.Outbox.Pending+st.Outbox.Inflight == 0
		if idle && d.cliDelivered.Load() >= want {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("daemon status: %w", err)
			}
			// Not fatal: a lost message is reported, and the accept
			// phase still measures what it measures.
			d.warnf("after %s the daemon's outbox still holds %+v and the recipient has %d of %d messages",
				daemonSettle, st.Outbox, d.cliDelivered.Load(), want)
			return nil
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// accept posts Accepts messages from Clients concurrent local API
// clients, each with its own connection to the socket, timing every POST
// /v1/send until its 202; then it waits for the recipient to receive them.
func (d *daemonRun) accept(ctx context.Context, res *DaemonResult) error {
	n := d.cfg.Accepts
	lat := make([]int64, n)
	ok := make([]bool, n)
	var next, refused atomic.Int64
	var firstMu sync.Mutex
	first := ""
	cpu0, brokerCPU0, self0 := procCPU(d.pid), d.childCPU(), selfCPU()

	defer d.ticking(func() {
		d.progressf("accepting: %d/%d posted, %d delivered", min(next.Load(), int64(n)), n, d.acceptDelivered.Load())
	})()

	startNs := d.now()
	var wg sync.WaitGroup
	for range d.cfg.Clients {
		api := localapi.New(d.sock)
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				req := localapi.SendRequest{To: d.recip.pubHex, Message: string(d.payload), Mesh: d.slug,
					ClientMessageID: acceptIDPrefix + strconv.Itoa(i)}
				var resp localapi.SendResponse
				at := d.now()
				d.acceptAt[i].Store(at)
				status, err := api.Do(ctx, "POST", "/v1/send", req, &resp)
				lat[i] = d.now() - at
				if err == nil && status == 202 && resp.Status == localapi.StatusAccepted {
					ok[i] = true
					continue
				}
				refused.Add(1)
				firstMu.Lock()
				if first == "" {
					first = fmt.Sprintf("HTTP %d, status %q: %v", status, resp.Status, err)
				}
				firstMu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	endNs := d.now()
	var accepted []int64
	for i, good := range ok {
		if good {
			accepted = append(accepted, lat[i])
		}
	}
	res.Accepted, res.Refused, res.FirstRefusal = int64(len(accepted)), refused.Load(), first
	res.AcceptMs = summarize(accepted).short()
	res.AcceptSec = round(time.Duration(endNs-startNs).Seconds(), 3)
	if endNs > startNs {
		res.AcceptPerSec = round(float64(len(accepted))/time.Duration(endNs-startNs).Seconds(), 1)
	}
	if res.Refused > 0 {
		d.warnf("%d of %d sends were not accepted, the first with %s", res.Refused, n, first)
	}

	deadline := endNs + d.cfg.Drain.Nanoseconds()
	for d.acceptDelivered.Load() < res.Accepted && d.now() < deadline {
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return err
		}
	}
	for {
		var st localapi.Status
		_, err := d.api.Do(ctx, "GET", "/v1/status", nil, &st)
		if err == nil && st.Outbox != nil && st.Outbox.Pending+st.Outbox.Inflight+st.Outbox.Queued+st.Outbox.Sent == 0 {
			res.SettledSec = round(time.Duration(d.now()-startNs).Seconds(), 3)
			break
		}
		if d.now() >= deadline {
			d.warnf("the daemon's outbox did not settle within %s of the last accept: %+v (%v)", d.cfg.Drain, st.Outbox, err)
			break
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	res.DaemonCPUSec = round((procCPU(d.pid) - cpu0).Seconds(), 2)
	res.BrokerCPUSec = round((d.childCPU() - brokerCPU0).Seconds(), 2)
	res.BenchCPUSec = round((selfCPU() - self0).Seconds(), 2)

	var lastNs int64
	var e2e []int64
	for i := range d.arriveAt {
		if a := d.arriveAt[i].Load(); a > 0 {
			lastNs = max(lastNs, a)
			e2e = append(e2e, a-d.acceptAt[i].Load())
		}
	}
	res.Delivered = int64(len(e2e))
	res.DeliveredPct = round(100*float64(res.Delivered)/float64(n), 2)
	res.AcceptE2eMs = summarize(e2e)
	if lastNs > 0 {
		res.DrainSec = round(time.Duration(lastNs-startNs).Seconds(), 3)
		res.DrainTailSec = round(time.Duration(max(lastNs-endNs, 0)).Seconds(), 3)
	}
	return nil
}

// procCPU is a process's user+system CPU time so far, from
// /proc/<pid>/stat (in USER_HZ ticks, which Linux fixes at 100 per
// second); 0 where there is no /proc.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may contain spaces; fields after its
	// closing parenthesis are fixed: utime and stime are the 12th and 13th.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+s) * (time.Second / 100)
}
