package bench

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// The adversary mode (`bench --adversary`, issue 12's "Done when"): the
// same DM load between honest peers, once alone and once while one member,
// mallory, and a stranger misbehave in the ways the adversarial review
// found, each as fast as one client can, against a broker with its default
// limits (send rate, presence rate, ack rate, group cap). The honest
// peers' latency and delivery are compared between the two runs.
//
// The attacks run in this process, so they also take CPU from the load
// generator on a small machine; the comparison is an upper bound on what
// they cost the honest peers.

// AttackNames are the attacks --attacks can choose from. `--attacks none`
// runs the second run without any attack: a control for what running
// second (a fresh broker after one already ran, the bench's own heap)
// does to the ratio by itself.
var AttackNames = []string{"ack", "churn", "groups", "self", "idle", "junk"}

// AdversaryStats counts what each attack did during the measured run.
type AdversaryStats struct {
	// AckFrames: client_ack frames of 500 unknown ids each (item 5).
	AckFrames int64 `json:"ackFrames"`
	// PresenceChurns: mallory's presences opened and closed (item 6).
	PresenceChurns int64 `json:"presenceChurns"`
	// GroupHellos / GroupHellosRefused: hellos asking for 64 groups, over
	// the cap (item 1).
	GroupHellos        int64 `json:"groupHellos"`
	GroupHellosRefused int64 `json:"groupHellosRefused"`
	// JunkConns / JunkBytes: WebSocket connections of a stranger writing
	// 64 KiB frames before any hello (item 4).
	JunkConns int64 `json:"junkConns"`
	JunkBytes int64 `json:"junkBytes"`
	// IdleConns: TCP connections a stranger opened and left idle (item 4).
	IdleConns int64 `json:"idleConns"`
	// SelfSends / SelfRefused: 64 KiB DMs mallory sent to herself and never
	// acked (item 7): accepted, and refused by a limit or a quota.
	SelfSends   int64 `json:"selfSends"`
	SelfRefused int64 `json:"selfRefused"`
	// Reconnects: times an attack's connection was cut by the broker and
	// opened again.
	Reconnects int64 `json:"reconnects"`
}

// AdversaryResult is `bench --adversary`: the honest load alone and under
// attack, in turn, each run on a fresh broker, baselines first and last.
//
// Two methods (BENCHMARKS.md, seventeenth session, says why):
//
//   - "paced" (the default): the honest peers send at --honest-rate DMs a
//     second in all, below what the machine can carry, --rounds attacked
//     runs each between two baselines. A saturating closed loop on a
//     2-core machine measured how the broker, the load generator and the
//     attacker process share two cores (its controls, --attacks none,
//     moved ±20 % by themselves); real honest peers do not send as fast as
//     the broker acks.
//   - "closed-loop" (--honest-rate 0): every peer sends its next DM as
//     soon as the last is acked, baseline / attacked / baseline once: the
//     method of the sessions before the seventeenth.
//
// One baseline before was biased: in control runs (--attacks none) the
// second run's p99 came out at 0.5–0.9 of the first's on this project's
// 2-core machine (a warm bench process; the machine's drift), which made
// every attack look cheaper; so every attacked run is compared with the
// baselines on both sides of it.
type AdversaryResult struct {
	SchemaVersion int `json:"schemaVersion"`
	// Method is "paced" or "closed-loop"; HonestRate the paced load's DMs
	// a second (0 closed-loop); Rounds the attacked runs.
	Method     string  `json:"method"`
	HonestRate float64 `json:"honestRate"`
	Rounds     int     `json:"rounds"`
	// Baseline, Attacked and BaselineAfter are the first baseline, the
	// first attacked run and the last baseline; Runs is every run in the
	// order they ran (baseline, attacked, baseline, ...).
	Baseline      *Result        `json:"baseline"`
	Attacked      *Result        `json:"attacked"`
	BaselineAfter *Result        `json:"baselineAfter"`
	Runs          []AdversaryRun `json:"runs"`
	// WarmUp is the paced method's first, unmeasured run (a quarter of
	// --messages on a fresh broker, no attack); nil closed-loop.
	WarmUp *AdversaryRun `json:"warmUp,omitempty"`
	// Attacks is what the attacks did, summed over the attacked runs.
	Attacks AdversaryStats `json:"attacks"`
	// E2eP99Ratio and AckP99Ratio are the median, over the attacked runs,
	// of each one's p99 ÷ the mean of the two baselines around it (with
	// one round, the ratio the closed-loop method always reported).
	// RoundE2eP99Ratios are each round's send→push ratio.
	// PooledE2eP99Ratio is the p99 of every attacked run's samples
	// together ÷ that of every baseline's. E2eP99RatioBefore and
	// E2eP99RatioAfter are the first attacked run's send→push against the
	// first and the last baseline alone. DeliveredDelta is the attacked
	// runs' delivered % minus the baselines', each pooled.
	E2eP99Ratio       float64   `json:"e2eP99Ratio"`
	AckP99Ratio       float64   `json:"ackP99Ratio"`
	RoundE2eP99Ratios []float64 `json:"roundE2eP99Ratios"`
	PooledE2eP99Ratio float64   `json:"pooledE2eP99Ratio"`
	E2eP99RatioBefore float64   `json:"e2eP99RatioBefore"`
	E2eP99RatioAfter  float64   `json:"e2eP99RatioAfter"`
	DeliveredDelta    float64   `json:"deliveredDelta"`
	// E2eP99AfterStartRatio and RoundE2eP99AfterStartRatios are the same
	// ratios over the DMs sent after each run's first StartWindow (each
	// run's E2eP99AfterStartMs): a diagnostic of how much of the ratio
	// the attacks' start made, beside E2eP99Ratio, which stays the row's
	// measure. Each run's StartSlowest counts its slowest DMs sent in
	// that window.
	E2eP99AfterStartRatio       float64   `json:"e2eP99AfterStartRatio"`
	RoundE2eP99AfterStartRatios []float64 `json:"roundE2eP99AfterStartRatios"`
	// AttackedBrokerArgs are the flags the attacked runs' brokers got on
	// top of the baselines' (--attacked-broker-args: a limit disabled).
	AttackedBrokerArgs []string `json:"attackedBrokerArgs,omitempty"`
	// Attacker is where the attacks ran: "process" (a child process of
	// their own, niced by AttackerNice) or "in-process".
	Attacker     string `json:"attacker"`
	AttackerNice int    `json:"attackerNice"`
	// AttackerSched is the attacker process's policy (idle, normal; ""
	// in-process); AttackLeadMs is --attack-lead (0: the honest load
	// started with the attacks).
	AttackerSched string `json:"attackerSched"`
	AttackLeadMs  int64  `json:"attackLeadMs"`
	// CPU seconds while sending and draining, of the first baseline, the
	// first attacked run and the last baseline: the broker's, the load
	// generator's, and the attacker process's in the first attacked run
	// (0 in-process, where it is part of the bench's). Runs has every
	// run's.
	BrokerCPUSec   [3]float64 `json:"brokerCpuSec"`
	BenchCPUSec    [3]float64 `json:"benchCpuSec"`
	AttackerCPUSec float64    `json:"attackerCpuSec"`
}

// AdversaryRun is one run of --adversary: "baseline" or "attacked".
type AdversaryRun struct {
	Kind string `json:"kind"`
	*Result
	BrokerCPUSec   float64 `json:"brokerCpuSec"`
	BenchCPUSec    float64 `json:"benchCpuSec"`
	AttackerCPUSec float64 `json:"attackerCpuSec,omitzero"`
}

// DefaultHonestRate is --adversary's paced honest load, DMs a second from
// all the honest peers together: about a sixth of what the closed loop
// carries on this project's 2-core machine when it is quiet (12,000–15,000
// a second), so the machine has room for the attacks' work.
const DefaultHonestRate = 2000

// DefaultRounds is --adversary's attacked runs with the paced load (the
// closed loop runs one).
const DefaultRounds = 3

// add sums what another attacked run's attacks did into s.
func (s *AdversaryStats) add(o AdversaryStats) {
	s.AckFrames += o.AckFrames
	s.PresenceChurns += o.PresenceChurns
	s.GroupHellos += o.GroupHellos
	s.GroupHellosRefused += o.GroupHellosRefused
	s.JunkConns += o.JunkConns
	s.JunkBytes += o.JunkBytes
	s.IdleConns += o.IdleConns
	s.SelfSends += o.SelfSends
	s.SelfRefused += o.SelfRefused
	s.Reconnects += o.Reconnects
}

// adversaryBrokerArgs are the broker's defaults for what the attacks
// test (the child broker otherwise runs without send rate limits, in
// messages and in bytes, and without a presence rate limit for
// --idle-connections).
//
// The per-address limits exempt loopback by default; here only 127.0.0.1
// (the honest peers and mallory) is exempt, and the stranger connects from
// 127.0.0.2, as one address on the internet would.
var adversaryBrokerArgs = []string{"--rate", "200", "--burst", "1000", "--byte-rate", "1048576", "--byte-burst", "2097152",
	"--presence-rate", "5", "--ip-limit-exempt", "127.0.0.1/32"}

// strangerDialer dials from 127.0.0.2, an address the broker limits.
var strangerDialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: 5 * time.Second}

// RunAdversary runs cfg's DM load 2·Rounds+1 times on fresh child brokers
// with their default limits: alone, under attack, alone, ..., alone.
func RunAdversary(ctx context.Context, cfg Config) (*AdversaryResult, error) {
	for _, a := range cfg.Attacks {
		if a == "none" && len(cfg.Attacks) == 1 {
			continue
		}
		if !slices.Contains(AttackNames, a) {
			return nil, fmt.Errorf("bench: unknown attack %q (known: %v)", a, AttackNames)
		}
	}
	if cfg.BrokerURL != "" || cfg.Broadcast || cfg.IdleConnections > 0 {
		return nil, fmt.Errorf("bench: --adversary runs its own child brokers with DM load; it takes no --broker, --broadcast or --idle-connections")
	}
	if err := checkAttackTimelineDir(); err != nil {
		return nil, err
	}
	if cfg.Rounds < 1 {
		cfg.Rounds = 1
	}
	cfg.startTail = true
	progress := cfg.Progress
	childEnv := cfg.childEnv
	runs := 2*cfg.Rounds + 1
	phase := func(i int, name string) {
		label := name
		if runs > 3 {
			label = fmt.Sprintf("%s (run %d of %d)", name, i+1, runs)
		}
		cfg.Progress = func(s string) {
			if progress != nil {
				progress(label + ": " + s)
			}
		}
		// A broker profile asked for goes to FILE.<run>: the child
		// brokers would otherwise each overwrite the one before. With
		// one round the names are the closed loop's (baseline, under
		// attack, baseline again).
		suffix := strings.ReplaceAll(name, " ", "-")
		if runs > 3 {
			suffix = fmt.Sprintf("%d-%s", i+1, suffix)
		}
		cfg.childEnv = slices.Clone(childEnv)
		for _, v := range profileEnv {
			if path := os.Getenv(v); path != "" {
				cfg.childEnv = append(cfg.childEnv, v+"="+path+"."+suffix)
			}
		}
	}
	res := &AdversaryResult{SchemaVersion: 3, Method: "paced", HonestRate: cfg.HonestRate, Rounds: cfg.Rounds,
		Attacker: "process", AttackerNice: cfg.AttackerNice, AttackerSched: cfg.AttackerSched,
		AttackLeadMs: cfg.AttackLead.Milliseconds(), AttackedBrokerArgs: cfg.AttackedBrokerArgs}
	if cfg.HonestRate <= 0 {
		res.Method = "closed-loop"
	}
	if cfg.AttackerInProcess {
		res.Attacker, res.AttackerNice, res.AttackerSched = "in-process", 0, ""
	}
	if cfg.HonestRate > 0 {
		// The paced method's first run is a warm-up, not measured: in
		// control runs the first run of a bench process came out slower
		// than the rest (its own heap and stacks growing), which made the
		// first baseline high and the first attacked run look cheap.
		w := cfg
		w.Messages = max(1, cfg.Messages/4)
		w.brokerArgs = adversaryBrokerArgs
		w.Progress = func(s string) {
			if progress != nil {
				progress("warm-up: " + s)
			}
		}
		r, err := Run(ctx, w)
		if err != nil {
			return nil, fmt.Errorf("warm-up run: %w", err)
		}
		res.WarmUp = &AdversaryRun{Kind: "warm-up", Result: r, BrokerCPUSec: r.BrokerCPUSec, BenchCPUSec: r.BenchCPUSec}
	}
	var results []*Result
	for i := range runs {
		attacked := i%2 == 1
		name := "baseline"
		switch {
		case attacked:
			name = "under attack"
		case i == runs-1:
			name = "baseline again"
		}
		phase(i, name)
		cfg.brokerArgs, cfg.adversary = adversaryBrokerArgs, nil
		var stats AdversaryStats
		if attacked {
			cfg.brokerArgs = slices.Concat(adversaryBrokerArgs, cfg.AttackedBrokerArgs)
			cfg.adversary = &stats
		}
		r, err := Run(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("run %d of %d (%s): %w", i+1, runs, name, err)
		}
		results = append(results, r)
		kind := "baseline"
		if attacked {
			kind = "attacked"
			res.Attacks.add(stats)
		}
		res.Runs = append(res.Runs, AdversaryRun{Kind: kind, Result: r, BrokerCPUSec: r.BrokerCPUSec,
			BenchCPUSec: r.BenchCPUSec, AttackerCPUSec: r.AttackerCPUSec})
	}
	res.ratios(results)
	return res, nil
}

// ratios fills res's comparisons from the runs (baseline, attacked,
// baseline, ...).
func (res *AdversaryResult) ratios(runs []*Result) {
	ratio := func(a, b, c float64) float64 {
		if b+c <= 0 {
			return 0
		}
		return round(2*a/(b+c), 2)
	}
	base, att, after := runs[0], runs[1], runs[len(runs)-1]
	res.Baseline, res.Attacked, res.BaselineAfter = base, att, after
	res.BrokerCPUSec = [3]float64{base.BrokerCPUSec, att.BrokerCPUSec, after.BrokerCPUSec}
	res.BenchCPUSec = [3]float64{base.BenchCPUSec, att.BenchCPUSec, after.BenchCPUSec}
	res.AttackerCPUSec = att.AttackerCPUSec
	res.E2eP99RatioBefore = ratio(att.E2eMs.P99, base.E2eMs.P99, base.E2eMs.P99)
	res.E2eP99RatioAfter = ratio(att.E2eMs.P99, after.E2eMs.P99, after.E2eMs.P99)
	var e2e, ack, afterStart []float64
	var baseE2e, attE2e []int64
	var baseDel, baseExp, attDel, attExp int64
	for i, r := range runs {
		if i%2 == 0 {
			baseE2e = append(baseE2e, r.e2eNs...)
			baseDel, baseExp = baseDel+r.Delivered, baseExp+r.Expected
			continue
		}
		attE2e = append(attE2e, r.e2eNs...)
		attDel, attExp = attDel+r.Delivered, attExp+r.Expected
		prev, next := runs[i-1], runs[i+1]
		e2e = append(e2e, ratio(r.E2eMs.P99, prev.E2eMs.P99, next.E2eMs.P99))
		ack = append(ack, ratio(r.AckMs.P99, prev.AckMs.P99, next.AckMs.P99))
		if r.E2eP99AfterStartMs != nil && prev.E2eP99AfterStartMs != nil && next.E2eP99AfterStartMs != nil {
			afterStart = append(afterStart, ratio(*r.E2eP99AfterStartMs, *prev.E2eP99AfterStartMs, *next.E2eP99AfterStartMs))
		}
	}
	res.RoundE2eP99AfterStartRatios, res.E2eP99AfterStartRatio = afterStart, median(afterStart)
	res.RoundE2eP99Ratios = e2e
	res.E2eP99Ratio, res.AckP99Ratio = median(e2e), median(ack)
	if b := summarize(baseE2e).P99; b > 0 {
		res.PooledE2eP99Ratio = round(summarize(attE2e).P99/b, 2)
	}
	pct := func(d, e int64) float64 {
		if e == 0 {
			return 100
		}
		return 100 * float64(d) / float64(e)
	}
	res.DeliveredDelta = round(pct(attDel, attExp)-pct(baseDel, baseExp), 2)
}

// median is the middle of xs (the mean of the two middle ones when even),
// rounded to two digits; 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + m) / 2
	}
	return round(m, 2)
}

// adversary is the attacks of one run.
type adversary struct {
	attacks []string
	stats   *AdversaryStats
	// proc is the child process the attacks run in (nil: in this one).
	proc    *attackerProc
	mallory client.MeshIdentity
	wsURL   string
	wg      sync.WaitGroup
	cancel  context.CancelFunc
}

// startAdversary enrolls mallory and starts every attack, in a child
// process of their own (attacker.go) unless cfg.AttackerInProcess; stop
// ends them.
func (r *run) startAdversary(ctx context.Context) (*adversary, error) {
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	inv, token, err := r.registerInvite(ctx, 1)
	if err != nil {
		return nil, fmt.Errorf("mallory's invite: %w", err)
	}
	req, err := client.NewJoinRequest(token, inv.MeshID, inv.InviteID, "mallory", key, time.Now())
	if err != nil {
		return nil, err
	}
	res, err := r.joiners[0].join(ctx, r.url, req)
	if err != nil {
		return nil, fmt.Errorf("mallory joining: %w", err)
	}
	mallory := client.MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID, BrokerURL: r.url,
		BrokerPubkey: inv.BrokerPubkey, Member: key}
	if !r.cfg.AttackerInProcess {
		return r.startAttackerProcess(ctx, mallory)
	}
	a := startAttacks(ctx, mallory, r.cfg.Attacks, r.cfg.adversary)
	if err := a.leadIn(ctx, r.cfg.AttackLead); err != nil {
		a.cancel()
		a.wg.Wait()
		return nil, err
	}
	return a, nil
}

// startWait is how long the attacks get to each do something, at the
// end of a run (stop) and before the honest load with --attack-lead.
const startWait = 10 * time.Second

// leadIn, with --attack-lead, waits until every attack has done
// something (at most startWait) and lead more, so the honest load
// begins with the attacks in their steady state rather than with the
// burst of their start (fresh connections, full per-connection budgets,
// the attacker's own start on the same cores). An attack that never
// got going is an error: the lead-in would not be what it says.
func (a *adversary) leadIn(ctx context.Context, lead time.Duration) error {
	if lead <= 0 {
		return nil
	}
	if err := a.waitStarted(ctx, startWait); err != nil {
		return err
	}
	if !pause(ctx, lead) {
		return ctx.Err()
	}
	return nil
}

// waitStarted waits until every chosen attack counted something, at most
// within; it names those that did not.
func (a *adversary) waitStarted(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for !a.allStarted() {
		if !time.Now().Before(deadline) {
			return fmt.Errorf("bench: no %s after %v of attacks", strings.Join(a.notStarted(), ", "), within)
		}
		if !pause(ctx, 10*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

// startAttacks starts the chosen attacks (all when attacks is empty) as
// mallory against her broker, counting into stats.
func startAttacks(ctx context.Context, mallory client.MeshIdentity, attacks []string, stats *AdversaryStats) *adversary {
	actx, cancel := context.WithCancel(ctx)
	a := &adversary{attacks: attacks, stats: stats, cancel: cancel, wsURL: mallory.BrokerURL, mallory: mallory}
	for _, at := range []struct {
		name string
		run  func(context.Context)
		n    int
	}{{"ack", a.ackFlood, 1}, {"churn", a.presenceChurn, 1}, {"groups", a.groupHellos, 1}, {"self", a.selfFlood, 1}, {"idle", a.idleConns, 1}, {"junk", a.junk, 4}} {
		if !a.chosen(at.name) {
			continue
		}
		for range at.n {
			a.wg.Go(func() { at.run(actx) })
		}
	}
	if dir := os.Getenv(attackTimelineEnv); dir != "" {
		a.wg.Go(func() {
			if err := recordAttackTimeline(actx, dir, stats, attackTimelineEvery); err != nil {
				fmt.Fprintf(os.Stderr, "bench: %s: %v\n", attackTimelineEnv, err)
			}
		})
	}
	return a
}

// cpu is the attacker process's CPU time so far (0 for attacks in this
// process, or none).
func (a *adversary) cpu() time.Duration {
	if a == nil || a.proc == nil {
		return 0
	}
	return a.proc.cpu()
}

// stop ends the attacks, once each has done something (at most 10 s
// more): a short run must not report an attack that never got going.
func (a *adversary) stop() error {
	if a.proc != nil {
		return a.proc.stop(a.stats)
	}
	a.waitStarted(context.Background(), startWait)
	a.cancel()
	a.wg.Wait()
	return nil
}

// allStarted reports whether every chosen attack counted something.
func (a *adversary) allStarted() bool { return len(a.notStarted()) == 0 }

// notStarted names the chosen attacks that have counted nothing yet.
func (a *adversary) notStarted() []string {
	s := a.stats
	var names []string
	for _, at := range []struct {
		name string
		n    *int64
	}{{"ack", &s.AckFrames}, {"churn", &s.PresenceChurns}, {"groups", &s.GroupHellosRefused},
		{"self", &s.SelfSends}, {"idle", &s.IdleConns}, {"junk", &s.JunkConns}} {
		if a.chosen(at.name) && atomic.LoadInt64(at.n) == 0 {
			if at.name == "self" && atomic.LoadInt64(&s.SelfRefused) > 0 {
				continue
			}
			names = append(names, at.name)
		}
	}
	return names
}

func (a *adversary) chosen(name string) bool {
	return len(a.attacks) == 0 || slices.Contains(a.attacks, name)
}

// dial opens one of mallory's connections, counting a reconnect after
// the first.
func (a *adversary) dial(ctx context.Context, opts client.DialOptions, first *bool) (*client.Conn, error) {
	if !*first {
		atomic.AddInt64(&a.stats.Reconnects, 1)
	}
	*first = false
	return client.Dial(ctx, a.mallory, opts)
}

// pause waits d or until ctx ends; false once it ended.
func pause(ctx context.Context, d time.Duration) bool {
	return sleep(ctx, d) == nil
}

// ackFlood: client_ack frames of 500 ids nobody was pushed (item 5).
func (a *adversary) ackFlood(ctx context.Context) {
	ids := make([]string, 500)
	for i := range ids {
		ids[i] = client.NewID()
	}
	first := true
	for ctx.Err() == nil {
		c, err := a.dial(ctx, client.DialOptions{SessionID: "ack-flood"}, &first)
		if err != nil {
			if !pause(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		for ctx.Err() == nil && c.ClientAckAsync(ids) == nil {
			atomic.AddInt64(&a.stats.AckFrames, 1)
		}
		c.Close()
	}
}

// presenceChurn: mallory's presence opened and closed in a loop, each an
// event to every peer (item 6).
func (a *adversary) presenceChurn(ctx context.Context) {
	first := true
	for ctx.Err() == nil {
		c, err := a.dial(ctx, client.DialOptions{Presence: true, Role: wire.RoleCLI, SessionID: "churn"}, &first)
		if err != nil {
			if !pause(ctx, 20*time.Millisecond) {
				return
			}
			continue
		}
		atomic.AddInt64(&a.stats.PresenceChurns, 1)
		c.Close()
	}
}

// groupHellos: hellos asking for more groups than the cap (item 1), of
// two kinds in turn: 64 groups in one hello, which the broker refuses
// before checking its signature, and 32 groups that are not mallory's
// yet, each refused only after the signature verified (her first hello
// gave her the 32 groups the default cap allows), which costs the broker
// a verification and the mesh lock each.
func (a *adversary) groupHellos(ctx context.Context) {
	names := func(prefix string, n int) []wire.Group {
		g := make([]wire.Group, n)
		for i := range g {
			g[i] = wire.Group{Name: prefix + strconv.Itoa(i)}
		}
		return g
	}
	presence := false
	if c, err := client.Dial(ctx, a.mallory, client.DialOptions{Presence: false, Role: wire.RoleCLI, SessionID: "groups", Groups: names("g", 32)}); err == nil {
		c.Close()
	}
	kinds := [][]wire.Group{names("h", 64), names("v", 32)}
	for i := 0; ctx.Err() == nil; i++ {
		atomic.AddInt64(&a.stats.GroupHellos, 1)
		c, err := client.Dial(ctx, a.mallory, client.DialOptions{Presence: presence, Role: wire.RoleCLI, SessionID: "groups", Groups: kinds[i%2]})
		if err != nil {
			atomic.AddInt64(&a.stats.GroupHellosRefused, 1)
			continue
		}
		c.Close()
	}
}

// selfFlood: 64 KiB DMs mallory sends to herself and never acks, eight
// in flight, until a limit or quota refuses them (item 7).
func (a *adversary) selfFlood(ctx context.Context) {
	body := make([]byte, 64<<10)
	rand.Read(body)
	for i := range body {
		body[i] = 'a' + body[i]%26
	}
	self := a.mallory.Member.PublicHex()
	first := true
	for ctx.Err() == nil {
		c, err := a.dial(ctx, client.DialOptions{SessionID: "self-flood"}, &first)
		if err != nil {
			if !pause(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		var inflight []<-chan client.SendResult
		for ctx.Err() == nil {
			s, err := client.SealDM(self, body, a.mallory.Member, client.SendOptions{})
			if err != nil {
				break
			}
			ch, err := c.SendAsync(ctx, s)
			if err != nil {
				break
			}
			inflight = append(inflight, ch)
			if len(inflight) < 8 {
				continue
			}
			res := <-inflight[0]
			inflight = inflight[1:]
			if res.Err != nil || res.Ack == nil || res.Ack.Error != nil {
				atomic.AddInt64(&a.stats.SelfRefused, 1)
				if !pause(ctx, 10*time.Millisecond) {
					break
				}
			} else {
				atomic.AddInt64(&a.stats.SelfSends, 1)
			}
		}
		c.Close()
	}
}

// idleConns: a stranger's TCP connections that send nothing (item 4),
// reopened when the broker cuts them.
func (a *adversary) idleConns(ctx context.Context) {
	u, err := url.Parse(a.wsURL)
	if err != nil {
		return
	}
	host := u.Host
	if a.chosen("junk") {
		// The stranger's two attacks share one address's
		// --max-conns-per-ip. Two hundred idle connections dialled at
		// once hold every place until the broker's header timeout, so
		// the junk attack got none in a short run (TestAdversary:
		// "junk connections: none", once in a loaded suite): it goes
		// first.
		deadline := time.Now().Add(10 * time.Second)
		for atomic.LoadInt64(&a.stats.JunkConns) == 0 && time.Now().Before(deadline) {
			if !pause(ctx, 5*time.Millisecond) {
				return
			}
		}
	}
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			for ctx.Err() == nil {
				nc, err := strangerDialer.DialContext(ctx, "tcp", host)
				if err != nil {
					if !pause(ctx, 50*time.Millisecond) {
						return
					}
					continue
				}
				atomic.AddInt64(&a.stats.IdleConns, 1)
				stop := context.AfterFunc(ctx, func() { nc.Close() })
				nc.Read(make([]byte, 1)) // until the broker (or the end) closes it
				stop()
				nc.Close()
			}
		})
	}
	wg.Wait()
}

// junk: a stranger's WebSocket writing 64 KiB frames before any hello
// (item 4).
func (a *adversary) junk(ctx context.Context) {
	frame := make([]byte, 64<<10)
	for i := range frame {
		frame[i] = '{'
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: strangerDialer.DialContext}
	for ctx.Err() == nil {
		ws, _, err := d.DialContext(ctx, a.wsURL, http.Header{})
		if err != nil {
			if !pause(ctx, 50*time.Millisecond) {
				return
			}
			continue
		}
		atomic.AddInt64(&a.stats.JunkConns, 1)
		stop := context.AfterFunc(ctx, func() { ws.Close() })
		for ctx.Err() == nil {
			ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if ws.WriteMessage(websocket.TextMessage, frame) != nil {
				break
			}
			atomic.AddInt64(&a.stats.JunkBytes, int64(len(frame)))
		}
		stop()
		ws.Close()
	}
}
