package bench

import (
	"os"
	"testing"
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
	if res.E2eP99Ratio <= 0 || res.AckP99Ratio <= 0 {
		t.Errorf("ratios %+v", res)
	}
}

func TestAdversaryRefusesUnknownAttack(t *testing.T) {
	if _, err := RunAdversary(testContext(t), Config{Peers: 3, Messages: 1, Window: 1, Attacks: []string{"nope"}}); err == nil {
		t.Fatal("an unknown attack was accepted")
	}
}
