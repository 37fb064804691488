package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// samplesEnv names a directory into which every run of messages between
// peers (the default mode, --segments, --broadcast, --adversary; not
// --via-daemon or topics) writes each message's send time and send→push
// latency (`CLAUDEMESH_BENCH_SAMPLES=DIR claudemesh bench ...`), for a
// question the summaries cannot answer: when in a run its slow messages
// were sent (say, the p99 of each 100 ms of an --adversary run, which put
// its excess in the attacks' first ~300 ms). One file a run,
// named by the run's start in Unix nanoseconds (so in run order; with
// --adversary the warm-up comes first, then baseline, attacked, ...): a
// first line "# start <unix ns>", then a line "<sent µs after start>
// <latency µs>" per push counted, in no particular order.
const samplesEnv = "CLAUDEMESH_BENCH_SAMPLES"

// writeSamples writes one run's samples into dir (samplesEnv): the run
// started startNs after base, and each message was sent at sentNs[i] after
// base and took e2eNs[i].
func writeSamples(dir string, base time.Time, startNs int64, sentNs, e2eNs []int64) error {
	start := base.Add(time.Duration(startNs))
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.txt", start.UnixNano())))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "# start %d\n", start.UnixNano())
	for i := range min(len(sentNs), len(e2eNs)) {
		fmt.Fprintf(w, "%d %d\n", (sentNs[i]-startNs)/1000, e2eNs[i]/1000)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
