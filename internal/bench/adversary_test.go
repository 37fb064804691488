package bench

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"claudemesh/internal/cliui"
)

// TestAdversary runs the adversary mode small: the honest DMs arrive
// whole in both runs, and every attack did something in the second (a
// counter stuck at zero would be an attack that silently never ran).
func TestAdversary(t *testing.T) {
	res, err := RunAdversary(testContext(t), Config{Peers: 3, Messages: 40, Window: 1, Payload: 64,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res.Baseline, 120, 120)
	checkPerfect(t, res.Attacked, 120, 120)
	checkPerfect(t, res.BaselineAfter, 120, 120)
	a := res.Attacks
	for name, n := range map[string]int64{
		"ack frames": a.AckFrames, "presence churns": a.PresenceChurns, "group hellos refused": a.GroupHellosRefused,
		"junk connections": a.JunkConns, "idle connections": a.IdleConns, "self sends": a.SelfSends + a.SelfRefused,
	} {
		if n == 0 {
			t.Errorf("%s: none", name)
		}
	}
	if a.GroupHellos != a.GroupHellosRefused {
		t.Errorf("a hello over the group cap was accepted: %+v", a)
	}
	if res.E2eP99Ratio <= 0 || res.AckP99Ratio <= 0 || res.E2eP99RatioBefore <= 0 || res.E2eP99RatioAfter <= 0 {
		t.Errorf("ratios %+v", res)
	}
	// The attacks ran in a process of their own, whose CPU is measured.
	if res.Attacker != "process" || res.AttackerCPUSec <= 0 || res.BrokerCPUSec[1] <= 0 {
		t.Errorf("attacker %q, its CPU %v s, broker CPU %v: want a measured attacker process", res.Attacker, res.AttackerCPUSec, res.BrokerCPUSec)
	}
}

// The old arrangement, the attacks in the bench's own process, still
// runs them; and --attacks none is a control run with no attack at all.
func TestAdversaryInProcessAndControl(t *testing.T) {
	timeline := t.TempDir()
	t.Setenv(attackTimelineEnv, timeline)
	res, err := RunAdversary(testContext(t), Config{Peers: 3, Messages: 20, Window: 1, Payload: 64, AttackerInProcess: true,
		Attacks: []string{"self", "groups"}, Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res.Attacked, 60, 60)
	if a := res.Attacks; res.Attacker != "in-process" || a.SelfSends+a.SelfRefused == 0 || a.GroupHellosRefused == 0 || a.AckFrames != 0 {
		t.Errorf("in process: attacker %q, attacks %+v; want self and groups only", res.Attacker, a)
	}
	checkAttackTimeline(t, timeline, res.Attacks)
	os.Unsetenv(attackTimelineEnv)
	res, err = RunAdversary(testContext(t), Config{Peers: 3, Messages: 20, Window: 1, Payload: 64,
		Attacks: []string{"none"}, Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res.Attacked, 60, 60)
	if res.Attacks != (AdversaryStats{}) {
		t.Errorf("--attacks none attacked: %+v", res.Attacks)
	}
}

func TestAdversaryRefusesUnknownAttack(t *testing.T) {
	if _, err := RunAdversary(testContext(t), Config{Peers: 3, Messages: 1, Window: 1, Attacks: []string{"nope"}}); err == nil {
		t.Fatal("an unknown attack was accepted")
	}
}

// TestWaitStartedNamesTheAttacksThatDidNothing: --attack-lead starts the
// honest load only once every chosen attack has done something; one that
// never does is named in an error instead of a lead-in that is not one.
func TestWaitStartedNamesTheAttacksThatDidNothing(t *testing.T) {
	stats := &AdversaryStats{AckFrames: 1, PresenceChurns: 1, GroupHellosRefused: 1, SelfRefused: 1, IdleConns: 1}
	a := &adversary{stats: stats}
	err := a.waitStarted(testContext(t), 20*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no junk") {
		t.Fatalf("junk never started: %v", err)
	}
	stats.JunkConns = 1
	if err := a.waitStarted(testContext(t), 0); err != nil {
		t.Fatalf("every attack started: %v", err)
	}
	only := &adversary{stats: &AdversaryStats{AckFrames: 1}, attacks: []string{"ack"}}
	if err := only.leadIn(testContext(t), time.Millisecond); err != nil {
		t.Fatalf("the one chosen attack started: %v", err)
	}
}

// TestAdversaryPaced runs the paced method small: a warm-up, then
// baseline / attacked / baseline / attacked / baseline, each on its own
// broker; every honest DM arrives in every run, the attacks' counts are
// summed over both attacked runs, and the headline ratio is the median of
// the rounds'.
func TestAdversaryPaced(t *testing.T) {
	res, err := RunAdversary(testContext(t), Config{Peers: 3, Messages: 10, Window: 1, Payload: 64, HonestRate: 60, Rounds: 2,
		Attacks: []string{"self", "groups"}, Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != "paced" || res.Rounds != 2 || res.WarmUp == nil || res.WarmUp.Kind != "warm-up" {
		t.Fatalf("method %q, rounds %d, warm-up %+v", res.Method, res.Rounds, res.WarmUp)
	}
	var kinds []string
	for _, r := range res.Runs {
		kinds = append(kinds, r.Kind)
		checkPerfect(t, r.Result, 30, 30)
		// Paced: sender 0's last send was due (Messages-1)·Peers/rate
		// after the start, so no run can be shorter than that.
		if min := float64(9*3) / 60; r.DurationSec < min {
			t.Errorf("%s run took %.3f s; paced, it cannot take under %.3f s", r.Kind, r.DurationSec, min)
		}
	}
	if want := []string{"baseline", "attacked", "baseline", "attacked", "baseline"}; !slices.Equal(kinds, want) {
		t.Errorf("runs %q, want %q", kinds, want)
	}
	if len(res.RoundE2eP99Ratios) != 2 || res.E2eP99Ratio != median(res.RoundE2eP99Ratios) || res.PooledE2eP99Ratio <= 0 {
		t.Errorf("ratios: rounds %v, headline %v, pooled %v", res.RoundE2eP99Ratios, res.E2eP99Ratio, res.PooledE2eP99Ratio)
	}
	if a := res.Attacks; a.GroupHellosRefused < 2 || a.SelfSends+a.SelfRefused < 2 || a.AckFrames != 0 {
		t.Errorf("attacks over two attacked runs: %+v", a)
	}
	// Every run says where its slowest DMs were sent: 30 DMs, so the 1 %
	// slowest is one (or a tie), sent in the first 300 ms or after it.
	for i, r := range res.Runs {
		if r.StartSlowest == nil || *r.StartSlowest < 0 || *r.StartSlowest > 30 || r.E2eP99AfterStartMs == nil {
			t.Errorf("run %d (%s): startSlowest %v, e2eP99AfterStartMs %v", i, r.Kind, r.StartSlowest, r.E2eP99AfterStartMs)
		}
	}
	if len(res.RoundE2eP99AfterStartRatios) != 2 || res.E2eP99AfterStartRatio != median(res.RoundE2eP99AfterStartRatios) {
		t.Errorf("after-start ratios: rounds %v, median %v", res.RoundE2eP99AfterStartRatios, res.E2eP99AfterStartRatio)
	}
}

// TestStartTail: of the 1 % slowest samples, those sent before the
// cutoff are counted, and the p99 is of the samples sent after it.
func TestStartTail(t *testing.T) {
	var samples, sent []int64
	for i := range 200 {
		d, at := int64(1e6), int64(1e9+i*1e6) // 1 ms, sent after the cutoff
		switch {
		case i < 2: // the two slowest, sent before it
			d, at = 50e6, int64(i)
		case i < 10: // fast, before it
			at = int64(i)
		case i == 150: // slow, after it
			d = 9e6
		}
		samples, sent = append(samples, d), append(sent, at)
	}
	orig := slices.Clone(samples)
	slow, p99 := startTail(samples, sent, 1e9)
	if slow != 2 {
		t.Errorf("slowest before the cutoff: %d, want 2", slow)
	}
	// After the cutoff: 189 samples of 1 ms and one of 9 ms; nearest rank
	// p99 is the 188th, 1 ms.
	if p99 != 1 {
		t.Errorf("p99 after the cutoff %v ms, want 1", p99)
	}
	if !slices.Equal(samples, orig) {
		t.Error("startTail reordered the samples")
	}
	if slow, p99 := startTail(nil, nil, 0); slow != 0 || p99 != 0 {
		t.Errorf("no samples: %d, %v", slow, p99)
	}
}

// TestAdversaryAttackedBrokerArgs: --attacked-broker-args reach the
// attacked runs' brokers and not the baselines': a flag the broker does
// not know fails the second run, after the first ran.
func TestAdversaryAttackedBrokerArgs(t *testing.T) {
	_, err := RunAdversary(testContext(t), Config{Peers: 2, Messages: 2, Window: 1, Payload: 16, Attacks: []string{"none"},
		AttackedBrokerArgs: []string{"--no-such-flag"}, Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err == nil || !strings.Contains(err.Error(), "run 2 of 3 (under attack)") {
		t.Fatalf("err = %v, want the attacked run's broker to fail", err)
	}
}

// TestAdversaryRatios: each round is its attacked p99 against the mean of
// the baselines on both sides; the headline is their median, and the
// pooled ratio takes every sample of a kind together.
func TestAdversaryRatios(t *testing.T) {
	ms := func(v ...int64) []int64 {
		for i := range v {
			v[i] *= 1e6
		}
		return v
	}
	mk := func(samples []int64) *Result {
		r := &Result{Delivered: int64(len(samples)), Expected: int64(len(samples))}
		r.e2eNs, r.ackNs = samples, samples
		r.E2eMs, r.AckMs = summarize(slices.Clone(samples)), summarize(slices.Clone(samples))
		return r
	}
	runs := []*Result{mk(ms(10)), mk(ms(20)), mk(ms(10)), mk(ms(30)), mk(ms(20)), mk(ms(15)), mk(ms(10))}
	res := &AdversaryResult{}
	res.ratios(runs)
	if want := []float64{2, 2, 1}; !slices.Equal(res.RoundE2eP99Ratios, want) {
		t.Errorf("rounds %v, want %v", res.RoundE2eP99Ratios, want)
	}
	if res.E2eP99Ratio != 2 || res.AckP99Ratio != 2 {
		t.Errorf("headline %v / %v, want the median 2", res.E2eP99Ratio, res.AckP99Ratio)
	}
	if len(res.RoundE2eP99AfterStartRatios) != 0 || res.E2eP99AfterStartRatio != 0 {
		t.Errorf("after-start ratios %v / %v from runs without them", res.RoundE2eP99AfterStartRatios, res.E2eP99AfterStartRatio)
	}
	// Baselines 10, 10, 20, 10: p99 20. Attacked 20, 30, 15: p99 30.
	if res.PooledE2eP99Ratio != 1.5 || res.DeliveredDelta != 0 {
		t.Errorf("pooled %v, delivered delta %v", res.PooledE2eP99Ratio, res.DeliveredDelta)
	}
	if median([]float64{1, 3}) != 2 || median(nil) != 0 {
		t.Error("median")
	}
}

// TestReportAdversaryCPU: the human report's broker CPU line names the
// first attacked run and the baselines on both sides of it, not the last
// baseline of several rounds.
func TestReportAdversaryCPU(t *testing.T) {
	var runs []AdversaryRun
	for i, c := range []float64{1.0, 1.5, 2.0, 1.5, 9.0} {
		kind := "baseline"
		if i%2 == 1 {
			kind = "attacked"
		}
		runs = append(runs, AdversaryRun{Kind: kind, Result: &Result{}, BrokerCPUSec: c})
	}
	r := &AdversaryResult{Method: "paced", Rounds: 2, Runs: runs, BrokerCPUSec: [3]float64{1.0, 1.5, 9.0},
		Baseline: runs[0].Result, Attacked: runs[1].Result, BaselineAfter: runs[4].Result}
	var stdout, stderr bytes.Buffer
	reportAdversary(cliui.NewOut(&stdout, &stderr, false, false, false), r)
	if want := "broker cpu  1.00 s alone, 1.50 s under attack, 2.00 s alone again (+0.00 s;"; !strings.Contains(stdout.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, stdout.String())
	}
}
