package bench

import (
	"math"
	"slices"
	"time"
)

// Latency is a latency distribution in milliseconds, as `bench --json`
// prints it (05-quality "Benchmarks").
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// summarize sorts samples (nanoseconds, in place) and returns their
// nearest-rank percentiles in milliseconds. Nearest rank, not
// interpolation, so every reported value is a latency that was actually
// observed; no samples gives all zeros.
func summarize(samples []int64) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(samples)))) - 1
		i = min(max(i, 0), len(samples)-1)
		return nsToMs(samples[i])
	}
	return Latency{P50: rank(0.50), P95: rank(0.95), P99: rank(0.99), Max: nsToMs(samples[len(samples)-1])}
}

// nsToMs converts to milliseconds rounded to the microsecond: finer digits
// would only be noise from the scheduler.
func nsToMs(ns int64) float64 { return round(float64(ns)/1e6, 3) }

func round(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}

// StartWindow is the start of a run that --adversary's StartSlowest
// looks at: the attacker process starts every attack at once (its own
// exec, 200 idle connections, the WebSockets, each attack's hello), and
// the honest load starts with them unless --attack-lead says otherwise.
const StartWindow = 300 * time.Millisecond

// startTail is, of the samples (send→push, ns) sent at sent[i] (ns on the
// same clock), how many of the 1 % slowest (at least one; ties at the
// boundary count) were sent before cutoff, and the p99 of those sent at
// or after it (ms; 0 if none). samples is not reordered.
func startTail(samples, sent []int64, cutoff int64) (slowBefore int, p99After float64) {
	if len(samples) == 0 {
		return 0, 0
	}
	sorted := slices.Sorted(slices.Values(samples))
	threshold := sorted[len(sorted)-max(1, len(sorted)/100)]
	var after []int64
	for i, d := range samples {
		if sent[i] < cutoff {
			if d >= threshold {
				slowBefore++
			}
			continue
		}
		after = append(after, d)
	}
	return slowBefore, summarize(after).P99
}
