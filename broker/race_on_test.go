//go:build race

package broker

// raceEnabled: the race detector is on. sync.Pool drops a quarter of what
// is put back at random under it, so allocation counts of pooled paths
// say nothing there.
const raceEnabled = true
