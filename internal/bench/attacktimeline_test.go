package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// checkAttackTimeline reads the one timeline file the attacked run wrote
// into dir (CLAUDEMESH_BENCH_ATTACKS): its start first, then lines whose
// times and counts never go down, the last of them no more than the
// run's totals and with the attacks' work in it.
func checkAttackTimeline(t *testing.T, dir string, totals AdversaryStats) {
	t.Helper()
	lines := readRunFile(t, dir, ".attacks")
	if len(lines) < 2 {
		t.Fatalf("no timeline lines: %q", lines)
	}
	var prevMs int64 = -1
	var prev, last AdversaryStats
	for _, l := range lines[1:] {
		ms, js, ok := strings.Cut(l, " ")
		n, err := strconv.ParseInt(ms, 10, 64)
		if !ok || err != nil || n < prevMs {
			t.Fatalf("line %q after %d ms: want a time in ms that does not go back", l, prevMs)
		}
		if err := json.Unmarshal([]byte(js), &last); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if last.SelfSends < prev.SelfSends || last.SelfRefused < prev.SelfRefused || last.GroupHellos < prev.GroupHellos {
			t.Fatalf("line %q: counts went down from %+v", l, prev)
		}
		prevMs, prev = n, last
	}
	if last.SelfSends+last.SelfRefused == 0 || last.GroupHellos == 0 {
		t.Errorf("last line %+v: want the attacks' self-DMs and group hellos counted", last)
	}
	if last.SelfSends > totals.SelfSends || last.GroupHellos > totals.GroupHellos || last.AckFrames != 0 {
		t.Errorf("last line %+v: more than the run's totals %+v", last, totals)
	}
}

// A CLAUDEMESH_BENCH_ATTACKS that is not a directory is refused before
// any run, not left to the attacker process's unread stderr.
func TestAttackTimelineWantsADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{file, filepath.Join(t.TempDir(), "missing")} {
		t.Setenv(attackTimelineEnv, v)
		_, err := RunAdversary(testContext(t), Config{Peers: 1, Messages: 1, Executable: os.Args[0]})
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("%s=%s: error %v, want not a directory", attackTimelineEnv, v, err)
		}
	}
}
