package bench

import (
	"math"
	"slices"
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
