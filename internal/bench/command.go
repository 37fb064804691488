package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/internal/cliui"
	"claudemesh/internal/gcfloor"
)

// envOperatorToken carries the operator token for --broker, for scripts
// that would rather not write it to a file.
const envOperatorToken = "CLAUDEMESH_OPERATOR_TOKEN"

// Command is `claudemesh bench`.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "load-test a broker (N peers sending end-to-end encrypted DMs or broadcasts) or a daemon",
		Description: cliui.WithExamples(
			"Starts `claudemesh broker` as a child process on a temporary store (--rate 0, no connection cap),\n"+
				"creates a mesh, enrolls --peers members with a signed invite, connects them as presences and has\n"+
				"each send --messages crypto_box DMs to random other peers, at most --window un-acked at a time.\n"+
				"Reports delivered %, throughput, send→ack and send→push latency (p50/p95/p99/max) and the\n"+
				"broker's peak RSS. With --broker URL it loads an existing broker instead (operator token from\n"+
				"--operator-token-file or $"+envOperatorToken+"; no RSS), and removes the members it enrolled\n"+
				"there when it ends, with whatever is still queued for them (its mesh stays, holding only its\n"+
				"owner record: a broker cannot delete a mesh; it says so). Build without -race to measure\n"+
				"(go build -o /tmp/claudemesh .); with --via-daemon the timings are of this binary's processes.\n"+
				"\n"+
				"--topic measures a topic: --peers members join one encrypted topic (the key sealed to each), one\n"+
				"of them posts --messages posts at --rate per second; it reports post→ack, post→push at each other\n"+
				"member, post→event on an SSE stream of the topic (GET /v1/topics/{name}/stream with a read API\n"+
				"key), a page of 50 posts at a random place in a topic of --history posts (made first, 100,000 by\n"+
				"default), and the broker's RSS. Every post is sealed and signed, every push opened and verified.\n"+
				"\n"+
				"--via-daemon measures a sender's daemon: it enrolls a sender and a recipient (held by the bench,\n"+
				"which opens, counts and acks every push), writes the sender a temporary client home, runs\n"+
				"`claudemesh --home H daemon up` and waits until its mesh is open; then it times --sends sequential\n"+
				"`claudemesh --home H send <recipient pubkey> x --json` processes of this binary (whole-process wall\n"+
				"time; one unmeasured send first), the same with --no-daemon (the cold path), and --clients\n"+
				"concurrent local API clients posting --accepts messages of --payload bytes (default 100) to\n"+
				"POST /v1/send (accept latency until the 202, accepts/s), and waits until the recipient has all of\n"+
				"them (drainSec: first accept to last arrival). The daemon is stopped at the end, always (killed\n"+
				"if `daemon down` fails). --json prints {schemaVersion, warmSendMs:{p50,p99,max},\n"+
				"coldSendMs:{p50,p99,max}, acceptPerSec, acceptMs:{p50,p99,max}, drainSec, delivered, deliveredPct}\n"+
				"(milliseconds; delivered counts accepted messages the recipient received, deliveredPct is of\n"+
				"--accepts).\n"+
				"\n"+
				"--adversary compares the honest peers' DMs with and without an attack, each run on a fresh child broker\n"+
				"with its default limits (send rate 200/s and 1 MiB/s, presence rate 5/s, ack rate, group cap). Under\n"+
				"attack a member, mallory, floods client_acks of unknown ids, churns her presence, sends hellos over the\n"+
				"group cap and 64 KiB DMs to herself that she never acks, and a stranger holds 200 idle TCP connections\n"+
				"and 4 WebSockets writing junk before any hello. The method (since the seventeenth session) is paced:\n"+
				"the honest peers send --honest-rate DMs a second in all (2000 unless given), each on a schedule of its\n"+
				"own, as real peers do, instead of as fast as the broker acks; after an unmeasured warm-up run it runs\n"+
				"baseline, attacked, baseline, ... with --rounds attacked runs (3 unless given), each between two\n"+
				"baselines, and reports e2eP99Ratio, the median over the rounds of the attacked run's send→push p99 ÷\n"+
				"the mean of the two baselines' around it (and the same for send→ack, and pooledE2eP99Ratio: every\n"+
				"attacked sample against every baseline one). A saturating closed loop on a 2-core machine measures\n"+
				"how the broker, the load generator and the attacker share the two cores, and its control moved ±20 %\n"+
				"by itself. --honest-rate 0 runs the method before: a closed loop, baseline / attacked / baseline once,\n"+
				"no warm-up (the same ratio then is of that one round). The attacks run in a child process of their own\n"+
				"under nice -n --attacker-nice (default 19; on Linux --attacker-sched idle runs it under SCHED_IDLE\n"+
				"instead); its CPU is reported apart. With --attacker-in-process they run in this one, sharing the load\n"+
				"generator's CPU. The honest load starts with the attacks; --attack-lead D starts it once every attack\n"+
				"has done something and D more, to tell the attacks' start from their steady state. Each run also\n"+
				"reports startSlowest, how many of its 1 % slowest DMs were sent in its first 300 ms, and\n"+
				"e2eP99AfterStartMs, the p99 of those sent after; e2eP99AfterStartRatio is the same median ratio over\n"+
				"them: a diagnostic of what the attacks' start made of the ratio, beside it, not instead of it.\n"+
				"--attacks none runs the attacked runs without attacks: a control for the ratio's noise, which should\n"+
				"stay near ×1.00. --attacked-broker-args \"FLAGS\" gives the attacked runs' brokers more flags, say\n"+
				"\"--ack-rate 0\": a limit disabled, to see whether the ratio catches it (a paced load catches what\n"+
				"costs the honest peers latency; a limit whose absence only costs CPU the machine has to spare shows\n"+
				"in the runs' brokerCpuSec, not in the ratio).\n"+
				"\n"+
				"--cluster N runs the same DM load against N `claudemesh broker --cluster` nodes started as child\n"+
				"processes (one broker key, a temporary data directory and loopback ports each; the log has 3\n"+
				"replicas from three nodes on, 1 below), peer i connected to node i mod N, so most DMs cross nodes.\n"+
				"It reports what the single broker's run does plus each node's peak RSS (VmHWM), CPU and peers.\n"+
				"Run `claudemesh bench` with the same --peers/--messages beside it to compare with one broker.\n"+
				"--failover (with --cluster 3 or more) kills the last node with SIGKILL once a third of the sends\n"+
				"are acked; its clients fail over to the other nodes as the daemon's do (client.Presence with the nodes'\n"+
				"URLs from hello_ack: full-jitter backoff, uniform in [0, 1 s] first, cap $CLAUDEMESH_BACKOFF_MAX) and\n"+
				"send again what was not acked. It reports, per affected client, the\n"+
				"time from the kill until it is connected to another node (p50/p99/max), and checks that every\n"+
				"acked send arrived exactly once (lost and doubled must be 0).",
			"claudemesh bench",
			"claudemesh bench --peers 100 --messages 1000 --json",
			"claudemesh bench --broadcast --peers 1000 --messages 100",
			"claudemesh bench --peers 2 --messages 0 --idle-connections 5000",
			"claudemesh bench --via-daemon --json",
			"claudemesh bench --topic --peers 100 --messages 600 --rate 20",
			"claudemesh bench --adversary --peers 100 --messages 100",
			"claudemesh bench --adversary --peers 100 --messages 100 --attacks none",
			"claudemesh bench --cluster 3 --peers 100 --messages 1000",
			"claudemesh bench --cluster 3 --failover --peers 100 --messages 1000",
			"claudemesh bench --broker wss://mesh.example.com/ws --operator-token-file /var/lib/claudemesh/operator.token",
		),
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "peers", Value: DefaultPeers, Usage: "`N` peers (with --broadcast: recipients)"},
			&cli.IntFlag{Name: "messages", Value: DefaultMessages, Usage: "`M` DMs per peer (with --broadcast: M broadcasts)"},
			&cli.IntFlag{Name: "window", Value: DefaultWindow, Usage: "at most `W` un-acked sends per sender"},
			&cli.IntFlag{Name: "payload", Value: DefaultPayload, Usage: "plaintext `BYTES` per message (--via-daemon: 100 unless given)"},
			&cli.BoolFlag{Name: "broadcast", Usage: "one sender broadcasts to all peers, one message at a time (--json adds brokerCpuSec and benchCpuSec, the CPU seconds the broker and the bench used while sending)"},
			&cli.IntFlag{Name: "idle-connections", Usage: "also hold `N` idle presence connections, all of one member (the child broker runs with --max-connections-per-member 0; --json adds idleConnectSec, the seconds they took to connect)"},
			&cli.BoolFlag{Name: "via-daemon", Usage: "measure a sender's daemon: send processes warm and cold, outbox accepts"},
			&cli.IntFlag{Name: "sends", Value: DefaultSends, Usage: "--via-daemon: `N` sequential send processes per path"},
			&cli.IntFlag{Name: "accepts", Value: DefaultAccepts, Usage: "--via-daemon: `N` messages posted to the outbox"},
			&cli.IntFlag{Name: "clients", Value: DefaultClients, Usage: "--via-daemon: `N` concurrent local API clients"},
			&cli.IntFlag{Name: "segments", Usage: "split a DM run into `K` equal parts in write order: send→push, broker RSS and store size for each"},
			&cli.BoolFlag{Name: "adversary", Usage: "the DM load alone, then while one member and a stranger misbehave; compare the honest peers' p99"},
			&cli.StringSliceFlag{Name: "attacks", Usage: "--adversary: only these `LIST` of attacks (ack, churn, groups, self, idle, junk; none: a control run)"},
			&cli.IntFlag{Name: "attacker-nice", Value: DefaultAttackerNice, Usage: "--adversary: run the attacker process under nice -n `N` (0: not niced)"},
			&cli.StringFlag{Name: "attacker-sched", Value: DefaultAttackerSched, Usage: "--adversary: the attacker process's scheduling `POLICY`: idle (SCHED_IDLE, Linux) or normal (only niced)"},
			&cli.DurationFlag{Name: "attack-lead", Usage: "--adversary: start the honest load once every attack has done something and `D` more (0: with the attacks)"},
			&cli.BoolFlag{Name: "attacker-in-process", Usage: "--adversary: run the attacks in the bench's own process (the methodology before the attacker had its own)"},
			&cli.Float64Flag{Name: "honest-rate", Usage: "pace the DM senders: `R` DMs a second from all of them together, each sender on its own schedule (0: a closed loop, each sending as soon as its last DM is acked; --adversary: 2000 unless given)"},
			&cli.IntFlag{Name: "rounds", Usage: "--adversary: `K` attacked runs, each between two baselines (default 3 with --honest-rate, 1 with --honest-rate 0)"},
			&cli.StringFlag{Name: "attacked-broker-args", Usage: "--adversary: add these broker `FLAGS` to the attacked runs' brokers only (say \"--ack-rate 0\": a limit disabled, to see whether the ratio catches it)"},
			&cli.BoolFlag{Name: "attacker-child", Hidden: true, Usage: "internal: be --adversary's attacker process"},
			&cli.IntFlag{Name: "cluster", Usage: "run the DM load against `N` cluster nodes (child processes), peers spread round-robin"},
			&cli.BoolFlag{Name: "failover", Usage: "--cluster: kill -9 the last node after a third of the sends; time its clients' fail-over, check nothing acked is lost"},
			&cli.StringFlag{Name: "kill", Usage: "--failover: kill the node that leads the replicated log (`leader`, default) or one that does not (follower)"},
			&cli.BoolFlag{Name: "topic", Usage: "measure a topic: --peers members, --messages posts at --rate, a history page in --history posts"},
			&cli.Float64Flag{Name: "rate", Value: DefaultTopicRate, Usage: "--topic: posts per second"},
			&cli.IntFlag{Name: "history", Value: DefaultTopicHistory, Usage: "--topic: `N` posts made first, to time a history page in"},
			&cli.StringFlag{Name: "broker", Usage: "load an existing broker at `URL` instead of a child broker"},
			&cli.StringFlag{Name: "broker-exe", Usage: "run the child processes (broker, daemon, attacker) from the claudemesh binary at `PATH` instead of this one: an A/B of two builds under one load generator"},
			&cli.StringFlag{Name: "operator-token-file", Usage: "`FILE` holding the operator token of --broker"},
		},
		Action: action,
	}
}

func action(c *cli.Context) error {
	if err := cliui.NoArgs(c); err != nil {
		return err
	}
	// CLAUDEMESH_BENCH_CPUPROFILE=FILE profiles the load generator itself
	// (CLAUDEMESH_BROKER_CPUPROFILE profiles its child broker).
	if path := os.Getenv("CLAUDEMESH_BENCH_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil && pprof.StartCPUProfile(f) == nil {
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	// CLAUDEMESH_BENCH_MEMPROFILE=FILE writes the load generator's heap
	// profile when it is done (alloc_space: what the run allocated).
	if path := os.Getenv("CLAUDEMESH_BENCH_MEMPROFILE"); path != "" {
		defer func() {
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	// The load generator keeps a heap floor as the broker does
	// (internal/gcfloor): a broadcast to 1,000 peers allocates ~4.5 MB in
	// it, and at GOGC=100 on its ~20 MB live heap it collected every few
	// broadcasts, its reader goroutines assisting the marking in the
	// middle of the pushes they time. GOGC in the environment turns this
	// off. The attacker process keeps one too: at GOGC=100 on its
	// few-MB heap, the first 270 ms of its attacks (64 KiB bodies sealed,
	// 500-id ack frames encoded) ran 13 collections (GODEBUG=gctrace=1),
	// about a fifth of the ~0.6 of a core it took then, on the cores the
	// broker and the honest peers share with it (with the floor: one, and
	// ~0.5 of a core); on the internet that CPU is someone else's.
	defer gcfloor.Start(gcHeadroom)()
	if c.Bool("attacker-child") {
		return RunAttackerChild(c.Context, os.Stdin, os.Stdout)
	}
	cfg := Config{
		Peers: c.Int("peers"), Messages: c.Int("messages"), Window: c.Int("window"),
		Payload: c.Int("payload"), Broadcast: c.Bool("broadcast"),
		IdleConnections: c.Int("idle-connections"), BrokerURL: c.String("broker"), Segments: c.Int("segments"),
		ViaDaemon: c.Bool("via-daemon"), Sends: c.Int("sends"), Accepts: c.Int("accepts"), Clients: c.Int("clients"),
		Topic: c.Bool("topic"), TopicRate: c.Float64("rate"), TopicHistory: c.Int("history"),
		Cluster: c.Int("cluster"), Failover: c.Bool("failover"), Kill: c.String("kill"), HonestRate: c.Float64("honest-rate"),
		Executable: c.String("broker-exe"),
	}
	if cfg.Executable != "" {
		// Absolute, so exec does not look a bare name up in $PATH.
		abs, err := filepath.Abs(cfg.Executable)
		if err == nil {
			_, err = os.Stat(abs)
		}
		if err != nil {
			return cliui.UsageErrorf("--broker-exe: %v", err)
		}
		cfg.Executable = abs
	}
	if c.IsSet("cluster") && (cfg.ViaDaemon || cfg.Topic || c.Bool("adversary")) {
		return cliui.UsageErrorf("--cluster runs the DM load; it does not combine with --via-daemon, --topic or --adversary")
	}
	if cfg.Failover && !c.IsSet("cluster") {
		return cliui.UsageErrorf("--failover needs --cluster N (3 or more)")
	}
	if !c.Bool("adversary") {
		for _, f := range []string{"attacks", "attacker-nice", "attacker-sched", "attack-lead", "attacker-in-process", "rounds", "attacked-broker-args"} {
			if c.IsSet(f) {
				return cliui.UsageErrorf("--%s needs --adversary", f)
			}
		}
	}
	if err := topicFlags(c, cfg); err != nil {
		return err
	}
	if err := modeFlags(c, cfg.ViaDaemon); err != nil {
		return err
	}
	if cfg.ViaDaemon && !c.IsSet("payload") {
		cfg.Payload = DefaultDaemonPayload
	}
	if f := c.String("operator-token-file"); f != "" {
		if cfg.BrokerURL == "" {
			return cliui.UsageErrorf("--operator-token-file is for --broker; a child broker's token is read from its own data directory")
		}
		data, err := os.ReadFile(f)
		if err != nil {
			return cliui.Errorf(cliui.CodeInvalidArgument, "reading the operator token: %w", err)
		}
		cfg.OperatorToken = strings.TrimSpace(string(data))
	} else if cfg.BrokerURL != "" {
		cfg.OperatorToken = strings.TrimSpace(os.Getenv(envOperatorToken))
	}
	out := cliui.OutFrom(c)
	spin := out.Spinner("starting")
	cfg.Progress = spin.Update
	var warnings, notes []string
	cfg.Warn = func(msg string) { warnings = append(warnings, msg) }
	cfg.Note = func(msg string) { notes = append(notes, msg) }

	var res any
	var err error
	switch {
	case cfg.ViaDaemon:
		res, err = RunDaemon(c.Context, cfg)
	case cfg.Topic:
		res, err = RunTopic(c.Context, cfg)
	case c.Bool("adversary"):
		if cfg.ViaDaemon || cfg.Topic {
			return cliui.UsageErrorf("--adversary is a DM load; it does not combine with --via-daemon or --topic")
		}
		cfg.Attacks = c.StringSlice("attacks")
		cfg.AttackerNice, cfg.AttackerInProcess = c.Int("attacker-nice"), c.Bool("attacker-in-process")
		cfg.AttackerSched, cfg.AttackLead = c.String("attacker-sched"), c.Duration("attack-lead")
		if cfg.AttackerSched != "idle" && cfg.AttackerSched != "normal" {
			return cliui.UsageErrorf("--attacker-sched is idle or normal, not %q", cfg.AttackerSched)
		}
		if cfg.AttackerSched == "idle" && !schedIdleSupported {
			return cliui.UsageErrorf("--attacker-sched idle is Linux's (SCHED_IDLE); use normal here")
		}
		if cfg.AttackLead < 0 {
			return cliui.UsageErrorf("--attack-lead must not be negative")
		}
		if !c.IsSet("honest-rate") {
			cfg.HonestRate = DefaultHonestRate
		}
		cfg.Rounds = c.Int("rounds")
		switch {
		case c.IsSet("rounds") && cfg.Rounds < 1:
			return cliui.UsageErrorf("--rounds must be at least 1")
		case !c.IsSet("rounds") && cfg.HonestRate > 0:
			cfg.Rounds = DefaultRounds
		case !c.IsSet("rounds"):
			cfg.Rounds = 1
		}
		cfg.AttackedBrokerArgs = strings.Fields(c.String("attacked-broker-args"))
		if err := cfg.Validate(); err != nil {
			return err
		}
		res, err = RunAdversary(c.Context, cfg)
	default:
		res, err = Run(c.Context, cfg)
	}
	spin.Stop()
	for _, w := range warnings {
		out.Warn(w, "")
	}
	if err != nil {
		if code := client.CodeOf(err); code != "" {
			return &cliui.Error{Code: code, Message: err.Error(), Cause: err}
		}
		return err
	}
	if out.JSONMode() {
		return out.JSON(res)
	}
	switch r := res.(type) {
	case *DaemonResult:
		reportDaemon(out, r)
	case *TopicResult:
		reportTopic(out, r)
	case *Result:
		report(out, r)
	case *AdversaryResult:
		reportAdversary(out, r)
	}
	for _, n := range notes {
		out.Linef("%s", out.Style().Dim("  "+n))
	}
	return nil
}

func reportAdversary(out *cliui.Out, r *AdversaryResult) {
	if r.Method == "closed-loop" {
		out.Linef("method      closed loop (--honest-rate 0): each honest peer sends as soon as its last DM is acked")
	} else {
		out.Linef("method      paced: the honest peers send %.0f DMs a second in all; %d attacked runs, each between two baselines, after a warm-up",
			r.HonestRate, r.Rounds)
	}
	if len(r.AttackedBrokerArgs) > 0 {
		out.Linef("            the attacked runs' brokers had %s", strings.Join(r.AttackedBrokerArgs, " "))
	}
	out.Linef("")
	if r.Rounds <= 1 {
		out.Linef("baseline (the honest load alone):")
		report(out, r.Baseline)
		out.Linef("")
		out.Linef("under attack:")
		report(out, r.Attacked)
		out.Linef("")
		out.Linef("baseline again:")
		report(out, r.BaselineAfter)
	} else {
		for i, run := range r.Runs {
			out.Linef("run %d, %-8s  send→push p50 %.2f / p99 %.2f ms, send→ack p99 %.2f ms, %.1f%% delivered; broker %.2f s CPU",
				i+1, run.Kind, run.E2eMs.P50, run.E2eMs.P99, run.AckMs.P99, run.DeliveredPct, run.BrokerCPUSec)
		}
	}
	a := r.Attacks
	out.Linef("")
	out.Linef("attacks     %d client_ack frames of 500 unknown ids; %d presence churns; %d hellos over the group cap (%d refused);",
		a.AckFrames, a.PresenceChurns, a.GroupHellos, a.GroupHellosRefused)
	out.Linef("            %d junk WebSockets (%d MiB before hello); %d idle TCP connections; %d 64 KiB self-DMs accepted, %d refused; %d reconnects",
		a.JunkConns, a.JunkBytes>>20, a.IdleConns, a.SelfSends, a.SelfRefused, a.Reconnects)
	if r.Rounds > 1 {
		out.Linef("            (all attacked runs together)")
	}
	if r.Attacker == "in-process" {
		out.Linef("attacker    in the bench's own process (its CPU is part of the bench's)")
	} else {
		policy := ""
		if r.AttackerSched == "idle" {
			policy = ", SCHED_IDLE"
		}
		out.Linef("attacker    a child process, nice %d%s: %.2f s CPU while sending (the first attacked run)", r.AttackerNice, policy, r.AttackerCPUSec)
	}
	if r.AttackLeadMs > 0 {
		out.Linef("lead-in     the honest load began once every attack had done something, and %d ms more", r.AttackLeadMs)
	}
	// The first attacked run and the baselines around it (runs 1-3; with
	// one round BrokerCPUSec is the same three).
	cpu := r.BrokerCPUSec
	if len(r.Runs) >= 3 {
		cpu = [3]float64{r.Runs[0].BrokerCPUSec, r.Runs[1].BrokerCPUSec, r.Runs[2].BrokerCPUSec}
	}
	out.Linef("broker cpu  %.2f s alone, %.2f s under attack, %.2f s alone again (%+.2f s; the first attacked run and the baselines around it)",
		cpu[0], cpu[1], cpu[2], cpu[1]-(cpu[0]+cpu[2])/2)
	var early []string
	for _, run := range r.Runs {
		if run.StartSlowest != nil {
			early = append(early, strconv.Itoa(*run.StartSlowest))
		}
	}
	if len(early) == len(r.Runs) && len(early) > 0 {
		rounds := make([]string, len(r.RoundE2eP99AfterStartRatios))
		for i, x := range r.RoundE2eP99AfterStartRatios {
			rounds[i] = fmt.Sprintf("×%.2f", x)
		}
		out.Linef("start       of each run's 1 %% slowest DMs, sent in its first %v: %s (runs in order); the DMs sent after it: send→push p99 ×%.2f (rounds %s; a diagnostic, not the row's measure)",
			StartWindow, strings.Join(early, " / "), r.E2eP99AfterStartRatio, strings.Join(rounds, " "))
	}
	if r.Rounds > 1 {
		rounds := make([]string, len(r.RoundE2eP99Ratios))
		for i, x := range r.RoundE2eP99Ratios {
			rounds[i] = fmt.Sprintf("×%.2f", x)
		}
		out.Resultf("honest p99  send→push ×%.2f, send→ack ×%.2f under attack (median of the rounds %s, each of the mean of the baselines around it; every sample pooled ×%.2f); delivered %+.2f points",
			r.E2eP99Ratio, r.AckP99Ratio, strings.Join(rounds, " "), r.PooledE2eP99Ratio, r.DeliveredDelta)
		return
	}
	out.Resultf("honest p99  send→push ×%.2f, send→ack ×%.2f under attack (of the two baselines' mean; send→push ×%.2f of the first, ×%.2f of the second); delivered %+.2f points",
		r.E2eP99Ratio, r.AckP99Ratio, r.E2eP99RatioBefore, r.E2eP99RatioAfter, r.DeliveredDelta)
}

// topicFlags refuses what --topic and the other modes do not share.
func topicFlags(c *cli.Context, cfg Config) error {
	if !cfg.Topic {
		for _, f := range []string{"rate", "history"} {
			if c.IsSet(f) {
				return cliui.UsageErrorf("--%s needs --topic", f)
			}
		}
		return nil
	}
	for _, f := range []string{"via-daemon", "broadcast", "window", "idle-connections", "honest-rate"} {
		if c.IsSet(f) {
			return cliui.UsageErrorf("--%s does not apply to --topic", f)
		}
	}
	return nil
}

// modeFlags refuses flags of the other mode, which would otherwise be
// silently ignored: a run that measured something other than what was asked
// is worse than an error.
func modeFlags(c *cli.Context, viaDaemon bool) error {
	other := []string{"sends", "accepts", "clients"}
	if viaDaemon {
		other = []string{"peers", "messages", "window", "broadcast", "idle-connections", "honest-rate"}
	}
	for _, f := range other {
		if c.IsSet(f) {
			if viaDaemon {
				return cliui.UsageErrorf("--%s does not apply to --via-daemon", f)
			}
			return cliui.UsageErrorf("--%s needs --via-daemon", f)
		}
	}
	return nil
}

// report prints the human summary.
func report(out *cliui.Out, r *Result) {
	what := fmt.Sprintf("%d peers × %d DMs", r.Peers, r.Messages)
	if r.Broadcast {
		what = fmt.Sprintf("%d broadcasts to %d peers", r.Messages, r.Peers)
	}
	where := "broker " + r.BrokerURL
	if r.BrokerPID != 0 {
		where = fmt.Sprintf("child broker pid %d", r.BrokerPID)
	}
	if len(r.Nodes) > 0 {
		where = fmt.Sprintf("%d cluster nodes, child processes; peers spread round-robin", len(r.Nodes))
	}
	out.Linef("claudemesh bench: %s, window %d, %d-byte payload (%s)", what, r.Window, r.Payload, where)
	if r.IdleConnections > 0 {
		out.Linef("idle        %d presence connections held open (connected in %.2f s)", r.IdleConnections, r.IdleConnectSec)
	}
	out.Resultf("delivered   %d/%d (%.2f %%)", r.Delivered, r.Expected, r.DeliveredPct)
	out.Resultf("duration    %.3f s (set-up %.2f s, not counted)", r.DurationSec, r.SetupSec)
	out.Resultf("throughput  %.1f msgs/s", r.MsgsPerSec)
	lat := func(l Latency) string {
		return fmt.Sprintf("p50 %s  p95 %s  p99 %s  max %s", ms(l.P50), ms(l.P95), ms(l.P99), ms(l.Max))
	}
	out.Resultf("send→ack    %s", lat(r.AckMs))
	out.Resultf("send→push   %s", lat(r.E2eMs))
	if len(r.Nodes) > 0 {
		for _, n := range r.Nodes {
			killed := ""
			if n.Killed {
				killed = " (read just before it was killed)"
			}
			out.Resultf("node %-6s %.1f MB peak RSS (VmHWM), %.1f MB at the end; cpu %.2f s; %d peers; %d log entries written, %d write conflicts; pid %d%s",
				n.Node, n.PeakRssMB, n.EndRssMB, n.CPUSec, n.Peers, n.LogEntries, n.WriteConflicts, n.PID, killed)
		}
	} else if r.BrokerPeakRssMB != nil {
		out.Resultf("broker RSS  %.1f MB peak (VmHWM); at the end %.1f MB (%.1f MB anonymous, %.1f MB file-backed)",
			*r.BrokerPeakRssMB, r.BrokerEndRssMB, r.BrokerEndAnonMB, r.BrokerEndFileMB)
	} else {
		out.Linef("broker RSS  not measured (not a child process)")
	}
	for _, sg := range r.Segments {
		mem := ""
		if sg.BrokerRssMB > 0 || sg.StoreMB > 0 {
			mem = fmt.Sprintf("  broker RSS %.1f MB (%.1f MB anonymous)  broker.db %.1f MB  broker %.2f cores", sg.BrokerRssMB, sg.BrokerAnonMB, sg.StoreMB, sg.BrokerCores)
		}
		out.Resultf("segment %-3d %d written  send→push p50 %s  p99 %s  max %s%s", sg.Index+1, sg.Written,
			ms(sg.E2eMs.P50), ms(sg.E2eMs.P99), ms(sg.E2eMs.Max), mem)
	}
	if r.BrokerCPUSec > 0 && r.DurationSec > 0 {
		out.Linef("cpu         broker %.2f s (%.2f cores), bench %.2f s (%.2f cores) while sending",
			r.BrokerCPUSec, r.BrokerCPUSec/r.DurationSec, r.BenchCPUSec, r.BenchCPUSec/r.DurationSec)
	}
	if r.SystemEvents > 0 {
		conns := int64(r.Peers + r.IdleConnections)
		if r.Broadcast {
			conns++
		}
		out.Linef("presence    %d peer events reached peer 0's connection during set-up; the mesh's %d presences got about %d",
			r.SystemEvents, conns, r.SystemEvents*conns)
	}
	var notes []string
	for _, n := range []struct {
		v    int64
		what string
	}{
		{r.Refused, "sends refused"}, {r.Retried, "sends retried after rate_limited"},
		{r.Unavailable, "sends retried after unavailable (no quorum in time)"},
		{r.Undecryptable, "pushes that did not open to what was sent"},
		{r.Redelivered, "redelivered pushes"}, {r.Late, "pushes after the 60 s drain"},
	} {
		if n.v > 0 {
			notes = append(notes, fmt.Sprintf("%d %s", n.v, n.what))
		}
	}
	if len(notes) > 0 {
		out.Linef("notes       %s", strings.Join(notes, "; "))
	}
	if f := r.Failover; f != nil {
		reportFailover(out, f)
	}
}

func reportFailover(out *cliui.Out, f *FailoverResult) {
	if f.KilledNode == "" {
		out.Linef("fail-over   no node was killed (the run ended before a third of its sends were acked)")
		return
	}
	lat := func(l Percentiles) string {
		return fmt.Sprintf("p50 %s  p99 %s  max %s", ms(l.P50), ms(l.P99), ms(l.Max))
	}
	out.Resultf("fail-over   node %s (%s of the log) killed (SIGKILL) %.2f s in, after %d acked sends; %d/%d of its clients back on another node",
		f.KilledNode, f.KilledRole, f.KilledAtSec, f.AckedBeforeKill, f.Reconnected, f.Clients)
	out.Resultf("back        %s from the kill until its presence was open on another node", lat(f.ReconnectMs))
	out.Linef("detected    %s from the kill to the old connection's end", lat(f.DetectMs))
	out.Linef("after kill  send→push of later sends: to its clients %s; to the others %s",
		lat(f.AfterKillPushMs.Affected), lat(f.AfterKillPushMs.Others))
	if f.WritesBackMs > 0 {
		out.Resultf("writes      the first send made after the kill was acked %s after it", ms(f.WritesBackMs))
	}
	out.Resultf("acked       %d sends: %d lost, %d arrived twice under another id; %d sent again on a new connection",
		f.Acked, f.Lost, f.Doubled, f.Resent)
	if f.Lost > 0 {
		out.Linef("lost        %d of the %d were still queued for their recipient at the end (stored, never pushed); for example:", f.LostQueued, f.Lost)
		for _, e := range f.LostExamples {
			out.Linef("            %s", e)
		}
	}
	out.Linef("fail-over   %s", f.Policy)
}

func ms(v float64) string {
	switch {
	case v >= 1000:
		return fmt.Sprintf("%.2f s", v/1000)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	default:
		return fmt.Sprintf("%.2f ms", v)
	}
}

// reportDaemon prints the human summary of --via-daemon.
func reportDaemon(out *cliui.Out, r *DaemonResult) {
	where := "broker " + r.BrokerURL
	if r.BrokerPID != 0 {
		where = fmt.Sprintf("child broker pid %d", r.BrokerPID)
	}
	out.Linef("claudemesh bench --via-daemon: daemon pid %d, %s, binary %s", r.DaemonPID, where, r.Executable)
	lat := func(l Percentiles) string {
		return fmt.Sprintf("p50 %s  p99 %s  max %s", ms(l.P50), ms(l.P99), ms(l.Max))
	}
	out.Resultf("warm send   %s  (%d send processes through the running daemon, whole-process wall time)", lat(r.WarmSendMs), r.Sends)
	out.Resultf("cold send   %s  (%d with --no-daemon)", lat(r.ColdSendMs), r.Sends)
	out.Resultf("accept      %.1f sends/s; POST /v1/send → 202 %s  (%d × %d B from %d clients in %.3f s)",
		r.AcceptPerSec, lat(r.AcceptMs), r.Accepts, r.Payload, r.Clients, r.AcceptSec)
	out.Resultf("delivered   %d/%d (%.2f %%) in %.3f s from the first accept (%.3f s after the last)",
		r.Delivered, r.Accepts, r.DeliveredPct, r.DrainSec, r.DrainTailSec)
	out.Linef("accept→push p50 %s  p95 %s  p99 %s  max %s", ms(r.AcceptE2eMs.P50), ms(r.AcceptE2eMs.P95), ms(r.AcceptE2eMs.P99), ms(r.AcceptE2eMs.Max))
	if r.SettledSec > 0 {
		out.Linef("receipts    the daemon's outbox had every row delivered %.3f s after the first accept", r.SettledSec)
	}
	if span := max(r.SettledSec, r.DrainSec); span > 0 {
		out.Linef("cpu         daemon %.2f s (%.2f cores), broker %.2f s, bench %.2f s from the first accept until settled; daemon peak RSS %.1f MB",
			r.DaemonCPUSec, r.DaemonCPUSec/span, r.BrokerCPUSec, r.BenchCPUSec, r.DaemonPeakRssMB)
	}
	var notes []string
	if r.Refused > 0 {
		notes = append(notes, fmt.Sprintf("%d sends not accepted (first: %s)", r.Refused, r.FirstRefusal))
	}
	if r.SendsDelivered != r.SendsExpected {
		notes = append(notes, fmt.Sprintf("%d of %d send-process messages arrived", r.SendsDelivered, r.SendsExpected))
	}
	if r.Undecryptable > 0 {
		notes = append(notes, fmt.Sprintf("%d pushes that did not open to what was sent", r.Undecryptable))
	}
	if r.Redelivered > 0 {
		notes = append(notes, fmt.Sprintf("%d redelivered pushes", r.Redelivered))
	}
	if len(notes) > 0 {
		out.Linef("notes       %s", strings.Join(notes, "; "))
	}
}

// gcHeadroom is how far above its live heap the load generator's next
// collection is set at least: 256 MiB, a collection every ~50 broadcasts
// to 1,000 peers (~4.5 MB each), a few in a run. Its memory is no target;
// the broker's, a process of its own, is not changed by it.
const gcHeadroom = 256 << 20
