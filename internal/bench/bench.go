// Package bench is `claudemesh bench`, the load generator of 05-quality
// "Benchmarks": N peers with real keypairs, enrolled with a real signed
// invite, connected as presences, each sending M crypto_box DMs to random
// other peers (or one sender broadcasting multi envelopes), timing
// send→ack and send→push on one process clock.
//
// It is built to measure the broker, not itself: the broker runs as a child
// process (so its peak RSS is its own), box keys are precomputed per
// (sender, recipient) pair before the clock starts, each sender keeps its
// window of sends with SendAsync from one goroutine, and recipients settle
// pushes with batched client_acks. The crypto is still real on both ends:
// every send is sealed with a fresh nonce and every push is opened and
// compared with what was sent.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"claudemesh/client"
	"claudemesh/internal/cliui"
)

// Defaults of the flags (05-quality "Benchmarks").
const (
	DefaultPeers    = 100
	DefaultMessages = 100
	DefaultWindow   = 1
	DefaultPayload  = 256
	// DefaultAttackerNice is --adversary's attacker process's nice(1)
	// increment (attacker.go).
	DefaultAttackerNice = 19
	// DefaultAttackerSched is its scheduling policy (attacker.go): only
	// nice. SCHED_IDLE (--attacker-sched idle, Linux) models an attacker
	// whose CPU is elsewhere more closely, but measured no consistent
	// difference (BENCHMARKS.md, tenth session), so the default stays
	// the methodology the earlier numbers were measured with.
	DefaultAttackerSched = "normal"
	// DefaultDrain is how long after the last ack a push still counts as
	// delivered.
	DefaultDrain = 60 * time.Second
)

// maxMembers is the most members one invite can enroll (maxUses ≤ 10,000).
const maxMembers = 10000

// Config is one bench run.
type Config struct {
	Peers    int // DM mode: senders and recipients; broadcast: recipients
	Messages int // per sender (DM) or broadcasts (broadcast mode)
	Window   int // un-acked sends each sender keeps in flight
	Payload  int // plaintext bytes per message
	// Broadcast switches to one sender sending Messages multi envelopes
	// to all Peers recipients, one at a time (with Window 1).
	Broadcast bool
	// IdleConnections are extra presence connections that only stay open,
	// for measuring what an idle connection costs the broker.
	IdleConnections int
	// BrokerURL is an existing broker (ws:// or wss://); empty starts a
	// child broker from Executable.
	BrokerURL string
	// OperatorToken creates the bench mesh on BrokerURL.
	OperatorToken string
	// Executable is the claudemesh binary run as `broker` when BrokerURL
	// is empty (default: this process's own executable).
	Executable string
	// Drain is how long after the last ack pushes still count (default
	// DefaultDrain).
	Drain time.Duration
	// Progress, when set, receives one-line status updates (set-up phases,
	// then counts several times a second while sending).
	Progress func(status string)
	// Warn, when set, receives problems that do not stop the run (a
	// dropped connection, refused sends); it is called on Run's goroutine.
	Warn func(msg string)
	// Note, when set, receives what the run did that is not a
	// measurement (what it removed from a --broker, and what it left).
	Note func(msg string)

	// ViaDaemon measures a sender's daemon instead of the broker (RunDaemon):
	// Sends sequential `claudemesh send` processes through it and as many
	// with --no-daemon, then Accepts messages posted to its outbox by
	// Clients concurrent local API clients, each Payload bytes. Peers,
	// Messages and Window do not apply.
	ViaDaemon bool
	Sends     int
	Accepts   int
	Clients   int

	// Topic measures topics instead (RunTopic): Peers members in one
	// topic, Messages posts at TopicRate per second, a history page in a
	// topic of TopicHistory posts.
	Topic        bool
	TopicRate    float64
	TopicHistory int

	// Segments, when above zero, splits a DM run into that many equal
	// parts in the order messages were written and reports each part's
	// send→push latency, broker RSS and store size (Result.Segments).
	Segments int
	// Cluster > 0 runs the DM load against that many `broker --cluster`
	// nodes started as child processes, the peers spread over them
	// round-robin (cluster.go).
	Cluster int
	// Failover (with Cluster ≥ 3) kills the last node once a third of the
	// sends are acked; its clients redial the others (failover.go).
	Failover bool
	// FailoverBackoffMax caps the redial backoff (0: CLAUDEMESH_BACKOFF_MAX,
	// else client.DefaultBackoffMax, as a client's presence does).
	FailoverBackoffMax time.Duration
	// Kill is the node Failover kills: KillLeader (default) or
	// KillFollower.
	Kill string

	// Attacks limits --adversary to these attacks (AttackNames; all when
	// empty).
	Attacks []string
	// AttackerInProcess runs --adversary's attacks in this process, as
	// before they had a process of their own (attacker.go);
	// AttackerNice is the nice(1) increment of that process (0: none).
	AttackerInProcess bool
	AttackerNice      int
	// AttackerSched is the attacker process's scheduling policy:
	// "idle" (SCHED_IDLE, Linux; the default) or "normal" (nice only).
	AttackerSched string
	// AttackLead starts the honest load only once every attack has done
	// something and this long more (0: the honest load starts with the
	// attacks, the default), to tell the attacks' start from their
	// steady state.
	AttackLead time.Duration
	// HonestRate paces a DM load: the senders together send this many
	// DMs a second, each on a schedule of its own (Peers/HonestRate
	// apart, the senders' schedules spread evenly over that interval),
	// instead of each sending its next DM as soon as the last is acked
	// (0, the default outside --adversary: a closed loop that saturates
	// the machine). A send is still timed from when it is handed to the
	// connection, as in the closed loop.
	HonestRate float64
	// Rounds is --adversary's number of attacked runs, each between two
	// baselines (2·Rounds+1 runs in all, each on a fresh broker).
	Rounds int
	// AttackedBrokerArgs are added to the attacked runs' brokers only,
	// after the default limits: a broker with a limit disabled (say
	// --byte-rate 0), to show what the method reports when isolation
	// fails.
	AttackedBrokerArgs []string

	// brokerArgs are added to the child broker's flags (the adversary
	// mode restores the default limits the bench otherwise lifts).
	brokerArgs []string
	// adversary, when set, runs the attacks of adversary.go during the
	// measured part and counts them there.
	adversary *AdversaryStats
	// startTail: keep each DM's send time, and report where in the run
	// its slowest were sent (Result.StartSlowest; --adversary's runs).
	startTail bool

	// childEnv is added to the environment of every process the bench
	// starts (tests use it to make the test binary act as claudemesh).
	childEnv []string
	// onDaemonUp, when set, learns the daemon's pid and home as soon as it
	// runs (tests check that it is gone afterwards, whatever happened).
	onDaemonUp func(pid int, home string)
}

// Validate checks the config; errors are usage errors.
func (c *Config) Validate() error {
	if c.ViaDaemon {
		return c.validateDaemon()
	}
	switch {
	case c.Peers < 1 || (!c.Broadcast && c.Peers < 2):
		return cliui.UsageErrorf("--peers must be at least 2 (1 with --broadcast), not %d", c.Peers)
	case c.Peers+1 > maxMembers:
		return cliui.UsageErrorf("--peers must be below %d (one invite enrolls at most %d members)", maxMembers, maxMembers)
	case c.Messages < 0:
		return cliui.UsageErrorf("--messages must not be negative")
	case c.Window < 1:
		return cliui.UsageErrorf("--window must be at least 1")
	case c.IdleConnections < 0:
		return cliui.UsageErrorf("--idle-connections must not be negative")
	case c.Segments < 0 || c.Segments > 100:
		return cliui.UsageErrorf("--segments must be 0 to 100")
	case c.Segments > 0 && c.Broadcast:
		return cliui.UsageErrorf("--segments is for DM runs, not --broadcast")
	case c.Segments > c.Messages:
		return cliui.UsageErrorf("--segments must not exceed --messages (each segment needs a send of every peer)")
	case c.Cluster < 0 || c.Cluster > MaxClusterNodes:
		return cliui.UsageErrorf("--cluster must be 1 to %d nodes, not %d", MaxClusterNodes, c.Cluster)
	case c.Cluster > 0 && c.BrokerURL != "":
		return cliui.UsageErrorf("--cluster starts its own nodes; it does not combine with --broker")
	case c.Failover && c.Cluster < 3:
		return cliui.UsageErrorf("--failover needs --cluster 3 or more: with fewer nodes the log has one replica, and the death of its node loses it")
	case c.Kill != "" && c.Kill != KillLeader && c.Kill != KillFollower:
		return cliui.UsageErrorf("--kill must be %s or %s, not %q", KillLeader, KillFollower, c.Kill)
	case c.Kill != "" && !c.Failover:
		return cliui.UsageErrorf("--kill needs --failover")
	case c.HonestRate < 0:
		return cliui.UsageErrorf("--honest-rate must not be negative")
	case c.HonestRate > 0 && c.Broadcast:
		return cliui.UsageErrorf("--honest-rate paces DM senders; it does not combine with --broadcast")
	case c.Segments > 0 && c.Cluster > 0:
		return cliui.UsageErrorf("--segments samples one broker's RSS and store size; it does not combine with --cluster")
	case c.Failover && c.Broadcast:
		return cliui.UsageErrorf("--failover measures the DM load; it does not combine with --broadcast")
	}
	return c.validateCommon()
}

// validateCommon checks what both modes share: the payload and --broker.
func (c *Config) validateCommon() error {
	switch {
	case c.Payload < 1 || c.Payload > client.MaxPlaintext:
		return cliui.UsageErrorf("--payload must be 1 to %d bytes", client.MaxPlaintext)
	case c.BrokerURL != "" && !strings.HasPrefix(c.BrokerURL, "ws://") && !strings.HasPrefix(c.BrokerURL, "wss://"):
		return cliui.UsageErrorf("--broker must be a ws:// or wss:// URL, not %q", c.BrokerURL)
	case c.BrokerURL != "" && c.OperatorToken == "":
		return cliui.UsageErrorf("--broker needs an operator token").
			WithHint("give --operator-token-file FILE or set CLAUDEMESH_OPERATOR_TOKEN")
	}
	return nil
}

// Result is what a run measured. The JSON shape is the one 05-quality
// fixes for `bench --json`; the fields tagged "-" are detail for the human
// report.
type Result struct {
	Peers        int     `json:"peers"`
	Messages     int     `json:"messages"`
	Window       int     `json:"window"`
	Delivered    int64   `json:"delivered"`
	DeliveredPct float64 `json:"deliveredPct"`
	DurationSec  float64 `json:"durationSec"`
	MsgsPerSec   float64 `json:"msgsPerSec"`
	AckMs        Latency `json:"ackMs"`
	E2eMs        Latency `json:"e2eMs"`
	// BrokerPeakRssMB is the child broker's VmHWM in MiB; absent with
	// --broker, whose memory this process cannot see.
	BrokerPeakRssMB *float64 `json:"brokerPeakRssMB,omitzero"`
	// Segments is --segments: the run in equal parts, oldest first.
	Segments []Segment `json:"segments,omitempty"`
	// Nodes are the cluster's nodes (--cluster); BrokerPeakRssMB is then
	// the largest node's peak and BrokerCPUSec their sum.
	Nodes []NodeResult `json:"nodes,omitempty"`
	// Failover is what --failover measured.
	Failover *FailoverResult `json:"failover,omitempty"`

	Expected        int64   `json:"-"` // deliveries a perfect run makes
	Broadcast       bool    `json:"-"`
	Payload         int     `json:"-"`
	IdleConnections int     `json:"-"`
	Sends           int64   `json:"-"` // send frames the broker accepted
	Refused         int64   `json:"-"` // sends answered with an error ack
	Retried         int64   `json:"-"` // rate-limited sends sent again
	Undecryptable   int64   `json:"-"` // pushes that did not open or differed
	Redelivered     int64   `json:"-"` // duplicate pushes (redeliveries)
	Late            int64   `json:"-"` // pushes after the drain window
	Unavailable     int64   `json:"-"` // sends retried after unavailable (cluster)
	SetupSec        float64 `json:"-"` // start-up, enrollment and connects
	// IdleConnectSec is how long the --idle-connections took to connect
	// (part of SetupSec): issue 13's "presences joining one mesh" row.
	// In the JSON only with --idle-connections, as segments and nodes are
	// only with their flags: 05-quality fixes the default document.
	IdleConnectSec  float64 `json:"idleConnectSec,omitzero"`
	BrokerEndRssMB  float64 `json:"-"` // the child's VmRSS at the end,
	BrokerEndAnonMB float64 `json:"-"` // of which anonymous (heap, stacks)
	BrokerEndFileMB float64 `json:"-"` // and file-backed (the bbolt map)
	SystemEvents    int64   `json:"-"` // presence events pushed to peer 0's connection
	// CPU time used while sending and draining (not set-up), by the
	// child broker and by this load generator: on a small machine the two
	// compete for the same cores.
	BrokerCPUSec float64 `json:"-"`
	BenchCPUSec  float64 `json:"-"`
	// BroadcastBrokerCPUSec and BroadcastBenchCPUSec are the same two in
	// the JSON of a --broadcast run, and only there (05-quality fixes the
	// default document): a broadcast's p99 moves with the CPU both
	// processes spend on it, so runs compare by it. No brokerCpuSec with
	// --broker, whose process this one cannot see.
	BroadcastBrokerCPUSec *float64 `json:"brokerCpuSec,omitempty"`
	BroadcastBenchCPUSec  *float64 `json:"benchCpuSec,omitempty"`
	// AttackerCPUSec is --adversary's attacker process's CPU over the
	// same time (0 when the attacks run in this process).
	AttackerCPUSec float64 `json:"-"`
	BrokerPID      int     `json:"-"` // the child broker; 0 with --broker
	BrokerURL      string  `json:"-"`

	// StartSlowest and E2eP99AfterStartMs (--adversary's runs only): of
	// the run's 1 % slowest DMs (send→push), how many were sent in its
	// first StartWindow, when the attacker process starts every attack at
	// once; and the send→push p99 of the DMs sent after it. A diagnostic
	// of where a run's tail was made, beside the row's metric (E2eMs.P99
	// of every DM), not instead of it.
	StartSlowest       *int     `json:"startSlowest,omitempty"`
	E2eP99AfterStartMs *float64 `json:"e2eP99AfterStartMs,omitempty"`

	// ackNs and e2eNs are every sample, sorted (--adversary pools the
	// runs of one kind).
	ackNs, e2eNs []int64
}

// run is the state of one bench run.
type run struct {
	cfg Config
	// base is the process clock every timestamp is measured against:
	// monotonic, and shared by senders and recipients, so send→push needs
	// no clock synchronisation.
	base time.Time
	// samplesDir is CLAUDEMESH_BENCH_SAMPLES (samples.go): each DM's send
	// time is kept, as with cfg.startTail, and the run's samples written
	// there.
	samplesDir string

	child *childBroker
	url   string
	token string
	// nodes are the cluster's nodes (--cluster; child is nil then), and
	// nodeRes what is measured of each.
	nodes   []*childBroker
	nodeRes []NodeResult

	// Fail-over: redialCtx ends waits for a reconnection and the killer
	// (cancelled first thing in shutdown, with stopping set, so stopping
	// the nodes is not taken for a failure); presCtx is the presences'
	// (cancelled once the nodes are stopped); fo is what the killer
	// recorded, killed whether it has killed.
	redialCtx    context.Context
	redialCancel context.CancelFunc
	presCtx      context.Context
	presCancel   context.CancelFunc
	stopping     atomic.Bool
	fo           failoverState
	killed       atomic.Bool
	writesBack   atomic.Int64 // first ack of a send made after the kill

	meshID, slug, meshName string
	owner                  client.MeshIdentity

	peers      []*peer // every enrolled member, by index
	senders    []*peer
	recipients []*peer
	byPubkey   map[string]*peer // read-only once enrolled
	joiners    []*joiner
	idle       []*client.Conn

	jobs     int   // sends per sender (broadcast: envelopes)
	chunks   int   // multi envelopes per broadcast (≤ 1,000 keys each)
	expected int64 // deliveries of a perfect run

	// paceStart is when the senders began (ns since base): the origin of
	// --honest-rate's schedule.
	paceStart int64

	acked atomic.Int64 // sends acked, for progress
	// systemEvents counts peer_joined/peer_left pushes to peer 0's
	// connection (the only one that decodes them): every presence of the
	// mesh receives about as many, the fan-out cost of presence in a large
	// mesh.
	systemEvents atomic.Int64
	delivered    atomic.Int64 // distinct deliveries, for progress and the drain
	// deadlineNs ends counting: pushes received later (ns since base) are
	// late. Zero while sending.
	deadlineNs atomic.Int64
	// verified memoises multi-envelope signature checks by messageId: all
	// recipients of one broadcast share the same signature, and verifying
	// it a thousand times in the generator would starve the broker of CPU.
	verified sync.Map

	progressMu   sync.Mutex
	shutdownOnce sync.Once
}

// Run performs one bench run. It always stops the child broker before
// returning, on error and cancellation too.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.ViaDaemon {
		return nil, errors.New("bench: Run measures the broker; a ViaDaemon config is RunDaemon's")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Drain <= 0 {
		cfg.Drain = DefaultDrain
	}
	r := &run{cfg: cfg, base: time.Now(), samplesDir: os.Getenv(samplesEnv)}
	r.redialCtx, r.redialCancel = context.WithCancel(context.Background())
	r.presCtx, r.presCancel = context.WithCancel(context.Background())
	defer r.shutdown()
	if err := raiseFileLimit(); err != nil {
		r.warnf("could not raise the open-file limit: %v", err)
	}

	exe := "" // unused with --broker
	if cfg.BrokerURL == "" {
		var err error
		if exe, err = executable(cfg, "run the broker"); err != nil {
			return nil, err
		}
	}
	if err := r.startBroker(ctx, exe); err != nil {
		return nil, err
	}
	if err := r.makePeers(); err != nil {
		return nil, err
	}
	r.joiners = newJoiners(r.url, setupWorkers)
	if err := r.enroll(ctx); err != nil {
		return nil, err
	}
	r.progressf("precomputing box keys")
	if err := r.precomputeKeys(ctx); err != nil {
		return nil, err
	}
	if err := r.connectPeers(ctx); err != nil {
		return nil, err
	}
	if err := r.awaitMembersEverywhere(ctx); err != nil {
		return nil, err
	}
	idleStart := time.Now()
	if err := r.connectIdle(ctx); err != nil {
		return nil, err
	}
	idleConnect := time.Since(idleStart)
	setup := time.Since(r.base)

	var adv *adversary
	if cfg.adversary != nil {
		r.progressf("starting the attacks")
		var err error
		if adv, err = r.startAdversary(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.Failover {
		r.planVictim(ctx)
	}
	startNs := r.now()
	selfCPU0, brokerCPU0, attackerCPU0 := selfCPU(), r.childCPU(), adv.cpu()
	stopSegments := func() []Segment { return nil }
	if cfg.Segments > 0 {
		stopSegments = r.sampleSegments()
	}
	for i, c := range r.nodes {
		r.nodeRes[i].cpu0 = c.cpu()
	}
	lastAckNs, err := r.measure(ctx)
	segments := stopSegments()
	selfCPU1, brokerCPU1, attackerCPU1 := selfCPU(), r.childCPU(), adv.cpu()
	if adv != nil {
		if serr := adv.stop(); err == nil {
			err = serr
		}
	}
	if err != nil {
		return nil, err
	}

	res := &Result{SystemEvents: r.systemEvents.Load(),
		BenchCPUSec: round((selfCPU1 - selfCPU0).Seconds(), 2), BrokerCPUSec: round((brokerCPU1 - brokerCPU0).Seconds(), 2),
		AttackerCPUSec: round((attackerCPU1 - attackerCPU0).Seconds(), 2),
		Peers:          cfg.Peers, Messages: cfg.Messages, Window: cfg.Window, Expected: r.expected,
		Broadcast: cfg.Broadcast, Payload: cfg.Payload, IdleConnections: cfg.IdleConnections,
		SetupSec: round(setup.Seconds(), 2), BrokerURL: r.url}
	if cfg.IdleConnections > 0 {
		res.IdleConnectSec = round(idleConnect.Seconds(), 3)
	}
	if cfg.Broadcast {
		res.BroadcastBenchCPUSec = &res.BenchCPUSec
		if r.child != nil || len(r.nodes) > 0 {
			res.BroadcastBrokerCPUSec = &res.BrokerCPUSec // unseen with --broker
		}
	}
	if r.child != nil {
		res.BrokerPID = r.child.pid()
		if m, err := r.child.memory(); err != nil {
			r.warnf("broker peak RSS: %v", err)
		} else {
			mb := toMB(m.peak)
			res.BrokerPeakRssMB = &mb
			res.BrokerEndRssMB, res.BrokerEndAnonMB, res.BrokerEndFileMB = toMB(m.now), toMB(m.anon), toMB(m.file)
		}
	}
	if len(r.nodes) > 0 {
		r.nodeResults(res)
	}
	r.checkIdle()
	// Everything the reader and sender goroutines recorded is read only
	// after their connections are closed.
	r.shutdown()
	r.collect(res, startNs, lastAckNs)
	if segments != nil {
		r.segmentLatencies(segments)
		res.Segments = segments
	}
	if r.cfg.Failover {
		r.collectFailover(res, startNs)
	}
	return res, nil
}

// measure runs the senders, then waits until every accepted delivery has
// arrived or Drain has passed since the last ack. It returns the time of
// the last ack.
func (r *run) measure(ctx context.Context) (lastAckNs int64, _ error) {
	totalSends := int64(len(r.senders) * r.jobs)
	defer r.ticking(func() {
		r.progressf("sending: %d/%d acked, %d/%d delivered", r.acked.Load(), totalSends, r.delivered.Load(), r.expected)
	})()

	if r.cfg.Failover {
		defer r.startKiller(ctx, totalSends)()
	}
	var wg sync.WaitGroup
	r.paceStart = r.now()
	for _, s := range r.senders {
		wg.Go(func() { r.sendLoop(ctx, s) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	lastAckNs = r.now()
	var accepted int64
	anyAck := false
	for _, s := range r.senders {
		accepted += s.accepted
		if len(s.ackNs) > 0 {
			if !anyAck || s.lastAckNs > lastAckNs {
				lastAckNs = s.lastAckNs
			}
			anyAck = true
		}
	}
	deadline := lastAckNs + r.cfg.Drain.Nanoseconds()
	r.deadlineNs.Store(deadline)
	for r.delivered.Load() < accepted && r.now() < deadline {
		if err := sleep(ctx, 2*time.Millisecond); err != nil {
			return 0, err
		}
	}
	if r.cfg.Failover {
		r.fo.accepted, r.fo.deliveredAtDrainEnd = accepted, r.delivered.Load()
		r.fo.drainTimedOut = r.fo.deliveredAtDrainEnd < accepted
		r.fetchLeftovers(ctx, accepted)
	}
	return lastAckNs, nil
}

// collect fills res from what the senders and recipients recorded. Called
// after shutdown, when no goroutine writes those records any more.
func (r *run) collect(res *Result, startNs, lastAckNs int64) {
	var ackNs, e2eNs []int64
	for _, s := range r.senders {
		ackNs = append(ackNs, s.ackNs...)
		res.Sends += int64(len(s.ackNs))
		res.Refused += s.refused
		res.Retried += s.retried
		res.Unavailable += s.unavailable
		if done := int64(len(s.ackNs)) + s.refused; done < int64(r.jobs) {
			r.warnf("peer %d stopped after %d of %d sends: %v", s.idx, done, r.jobs, s.firstErr)
		} else if s.firstErr != nil {
			r.warnf("peer %d had %d sends refused, the first with: %v", s.idx, s.refused, s.firstErr)
		}
	}
	endNs := lastAckNs
	var sentNs []int64
	for _, p := range r.recipients {
		sentNs = append(sentNs, p.e2eSentNs...)
		e2eNs = append(e2eNs, p.e2eNs...)
		res.Delivered += int64(len(p.e2eNs))
		res.Undecryptable += p.undecryptable
		res.Redelivered += p.duplicates
		res.Late += p.late
		endNs = max(endNs, p.lastPushNs)
		if p.firstBad != nil {
			r.warnf("peer %d received a push it could not accept: %v", p.idx, p.firstBad)
		}
	}
	if r.cfg.startTail && len(sentNs) == len(e2eNs) {
		slow, p99 := startTail(e2eNs, sentNs, startNs+StartWindow.Nanoseconds())
		res.StartSlowest, res.E2eP99AfterStartMs = &slow, &p99
	}
	if dir := r.samplesDir; dir != "" && len(sentNs) == len(e2eNs) {
		if err := writeSamples(dir, r.base, startNs, sentNs, e2eNs); err != nil {
			r.warnf("%s: %v", samplesEnv, err)
		}
	}
	res.AckMs, res.E2eMs = summarize(ackNs), summarize(e2eNs)
	res.ackNs, res.e2eNs = ackNs, e2eNs
	dur := time.Duration(max(endNs-startNs, 0))
	res.DurationSec = round(dur.Seconds(), 3)
	if dur > 0 {
		res.MsgsPerSec = round(float64(res.Delivered)/dur.Seconds(), 1)
	}
	if r.expected > 0 {
		res.DeliveredPct = round(100*float64(res.Delivered)/float64(r.expected), 2)
	} else {
		res.DeliveredPct = 100
	}
}

// checkIdle warns about idle connections the broker closed during the run
// (a slow_consumer close during a connect storm, say): the broker's memory
// was then measured with fewer connections than asked for.
func (r *run) checkIdle() {
	dead := 0
	var first error
	for _, c := range r.idle {
		select {
		case <-c.Done():
			dead++
			if first == nil {
				first = c.Err()
			}
		default:
		}
	}
	if dead > 0 {
		r.warnf("%d of %d idle connections ended during the run (first: %v)", dead, len(r.idle), first)
	}
}

// shutdown stops the child broker first — its connections then end with
// the broker, so closing thousands of client connections does not make it
// broadcast thousands of peer_left events while dying — and then closes
// every client connection and waits for its goroutines. Idempotent.
func (r *run) shutdown() {
	r.shutdownOnce.Do(func() {
		r.stopping.Store(true)
		if r.redialCancel != nil {
			r.redialCancel()
		}
		if r.child != nil {
			r.child.stop()
		}
		var wg sync.WaitGroup
		for _, c := range r.nodes {
			wg.Go(c.stop)
		}
		wg.Wait()
		if r.presCancel != nil {
			r.presCancel()
		}
		var conns []*client.Conn
		for _, p := range r.peers {
			if p.live != nil {
				wg.Go(p.live.pres.Close)
			} else if p.conn != nil {
				conns = append(conns, p.conn)
			}
		}
		wg.Wait()
		for _, c := range r.idle {
			if c != nil {
				conns = append(conns, c)
			}
		}
		closeAll(conns)
		r.cleanUpExternal()
	})
}

// closeAll closes connections in parallel (each Close may wait up to a
// second for the broker's echo) and waits until each one's reader is done.
func closeAll(conns []*client.Conn) {
	ch := make(chan *client.Conn)
	var wg sync.WaitGroup
	for range min(64, len(conns)) {
		wg.Go(func() {
			for c := range ch {
				c.Close()
				<-c.Done()
			}
		})
	}
	for _, c := range conns {
		ch <- c
	}
	close(ch)
	wg.Wait()
}

// childCPU is the child broker's CPU time so far (0 with --broker).
func (r *run) childCPU() time.Duration {
	if r.child == nil {
		return 0
	}
	return r.child.cpu()
}

// toMB converts bytes to MiB with one decimal, the unit `bench` reports
// memory in.
func toMB(b int64) float64 { return round(float64(b)/(1<<20), 1) }

// now is the time since base in nanoseconds, on the monotonic clock.
func (r *run) now() int64 { return int64(time.Since(r.base)) }

func (r *run) progressf(format string, args ...any) {
	if r.cfg.Progress == nil {
		return
	}
	msg := fmt.Sprintf(format, args...)
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	r.cfg.Progress(msg)
}

func (r *run) warnf(format string, args ...any) {
	if r.cfg.Warn != nil {
		r.cfg.Warn(fmt.Sprintf(format, args...))
	}
}

// isClosed reports whether err means the connection is gone, after which
// a sender stops instead of failing every remaining send.
func isClosed(err error) bool {
	return client.CodeOf(err) == client.CodeConnectionClosed || errors.Is(err, context.Canceled)
}

// executable is the claudemesh binary the bench runs: cfg.Executable, else
// this process's own (why says what for, in the error).
func executable(cfg Config, why string) (string, error) {
	if cfg.Executable != "" {
		return cfg.Executable, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding this executable to %s: %w", why, err)
	}
	return exe, nil
}

// startBroker starts the child broker from exe (or, with --broker, uses
// that one; exe is then unused) and creates the bench's mesh on it.
func (r *run) startBroker(ctx context.Context, exe string) error {
	// --idle-connections are presences of one member, more of them than
	// --max-connections-per-member lets one member hold.
	var idleArgs []string
	if r.cfg.IdleConnections > 0 {
		idleArgs = []string{"--max-connections-per-member", "0"}
	}
	if n := r.cfg.Cluster; n > 0 {
		r.progressf("starting %d cluster nodes", n)
		nodes, err := startCluster(ctx, exe, r.cfg.childEnv, n, append(idleArgs, r.cfg.brokerArgs...))
		if err != nil {
			return err
		}
		r.nodes = nodes
		r.nodeRes = make([]NodeResult, n)
		for i, c := range nodes {
			r.nodeRes[i] = NodeResult{Node: nodeID(i), PID: c.pid(), URL: c.url}
		}
		r.url, r.token = nodes[0].url, nodes[0].token
	} else if r.cfg.BrokerURL == "" {
		r.progressf("starting the broker")
		// --idle-connections are presences of one member: the presence
		// rate limit would stretch a 10,000-connection storm over half an
		// hour.
		child, err := startChild(ctx, exe, r.cfg.childEnv, slices.Concat([]string{"--presence-rate", "0"}, idleArgs, r.cfg.brokerArgs)...)
		if err != nil {
			return err
		}
		r.child, r.url, r.token = child, child.url, child.token
	} else {
		r.url, r.token = r.cfg.BrokerURL, r.cfg.OperatorToken
	}
	r.progressf("creating the mesh")
	return r.createMesh(ctx)
}

// ticking calls report now and every 200 ms until the returned stop is
// called (which waits for it): the progress line of a phase.
func (r *run) ticking(report func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			report()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
