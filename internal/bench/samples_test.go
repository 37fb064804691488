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
	files, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	if len(files) != 1 {
		t.Fatalf("files %q, want one for the one run", files)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if want := "# start " + strings.TrimSuffix(filepath.Base(files[0]), ".txt"); lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
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
