package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSamplesAreWrittenPerRun: with CLAUDEMESH_BENCH_SAMPLES a run writes
// one file, its start first, then a line per DM delivered with its send
// time within the run and its latency, both plausible.
func TestSamplesAreWrittenPerRun(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(samplesEnv, dir)
	res, err := Run(testContext(t), Config{Peers: 3, Messages: 5, Window: 1, Payload: 64,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res, 15, 15)
	lines := readRunFile(t, dir, ".txt")
	if len(lines)-1 != 15 {
		t.Fatalf("%d sample lines, want 15 (one per DM delivered)", len(lines)-1)
	}
	durUs := res.DurationSec * 1e6
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) != 2 {
			t.Fatalf("line %q", l)
		}
		sent, err1 := strconv.ParseInt(f[0], 10, 64)
		lat, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil || sent < 0 || float64(sent) > durUs || lat <= 0 || float64(lat) > durUs {
			t.Errorf("line %q: want a send time and a latency within the run's %.0f µs", l, durUs)
		}
	}
}

// readRunFile reads the one file named <start ns><ext> that a run wrote
// into dir (CLAUDEMESH_BENCH_SAMPLES, CLAUDEMESH_BENCH_ATTACKS) and
// returns its lines, the first of which must be "# start <that ns>".
func readRunFile(t *testing.T, dir, ext string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"+ext))
	if len(files) != 1 {
		t.Fatalf("files %q, want one %s file for the one run", files, ext)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if want := "# start " + strings.TrimSuffix(filepath.Base(files[0]), ext); lines[0] != want {
		t.Fatalf("first line %q, want %q", lines[0], want)
	}
	return lines
}
