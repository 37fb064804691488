package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// attackTimelineEnv names a directory into which the attacks of every
// attacked --adversary run write what they have done so far, every
// attackTimelineEvery (`CLAUDEMESH_BENCH_ATTACKS=DIR claudemesh bench
// --adversary ...`), for a question the run's totals cannot answer: when
// each attack did its work. (They showed that the attacks do nearly all
// of it in their first ~250 ms, each until a burst of one of the broker's
// limits is spent, then little: the window in which an attacked run's
// honest tail is made.) One file an attacked run, named by the attacks'
// start in Unix nanoseconds with ".attacks" (beside
// CLAUDEMESH_BENCH_SAMPLES's files of the honest DMs, if the same DIR):
// a first line "# start <unix ns>", then a line "<ms after start>
// <AdversaryStats as JSON>", the counts so far, until the attacks stop.
const attackTimelineEnv = "CLAUDEMESH_BENCH_ATTACKS"

// attackTimelineEvery is how often a timeline line is written.
const attackTimelineEvery = 25 * time.Millisecond

// checkAttackTimelineDir refuses a CLAUDEMESH_BENCH_ATTACKS that is not a
// directory, before any run: the attacker process could only say so on
// a stderr nobody reads unless it fails.
func checkAttackTimelineDir() error {
	dir := os.Getenv(attackTimelineEnv)
	if dir == "" {
		return nil
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("bench: %s=%s: not a directory", attackTimelineEnv, dir)
	}
	return nil
}

// snapshot reads stats' counters, which the attacks add to as they run.
func (s *AdversaryStats) snapshot() AdversaryStats {
	return AdversaryStats{
		AckFrames:          atomic.LoadInt64(&s.AckFrames),
		PresenceChurns:     atomic.LoadInt64(&s.PresenceChurns),
		GroupHellos:        atomic.LoadInt64(&s.GroupHellos),
		GroupHellosRefused: atomic.LoadInt64(&s.GroupHellosRefused),
		JunkConns:          atomic.LoadInt64(&s.JunkConns),
		JunkBytes:          atomic.LoadInt64(&s.JunkBytes),
		IdleConns:          atomic.LoadInt64(&s.IdleConns),
		SelfSends:          atomic.LoadInt64(&s.SelfSends),
		SelfRefused:        atomic.LoadInt64(&s.SelfRefused),
		Reconnects:         atomic.LoadInt64(&s.Reconnects),
	}
}

// recordAttackTimeline writes stats into a new file in dir every `every`
// until ctx ends, and once more then (the attacks' totals).
func recordAttackTimeline(ctx context.Context, dir string, stats *AdversaryStats, every time.Duration) error {
	start := time.Now()
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.attacks", start.UnixNano())))
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "# start %d\n", start.UnixNano())
	line := func() {
		snap, _ := json.Marshal(stats.snapshot())
		fmt.Fprintf(w, "%d %s\n", time.Since(start).Milliseconds(), snap)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
		case <-ctx.Done():
			done = true
		}
		line()
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
