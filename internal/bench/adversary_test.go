package bench

import (
	"os"
	"strings"
	"testing"
	"time"
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
	res, err := RunAdversary(testContext(t), Config{Peers: 3, Messages: 20, Window: 1, Payload: 64, AttackerInProcess: true,
		Attacks: []string{"self", "groups"}, Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res.Attacked, 60, 60)
	if a := res.Attacks; res.Attacker != "in-process" || a.SelfSends+a.SelfRefused == 0 || a.GroupHellosRefused == 0 || a.AckFrames != 0 {
		t.Errorf("in process: attacker %q, attacks %+v; want self and groups only", res.Attacker, a)
	}
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
