//go:build race

package store

// raceEnabled: the race detector is on; allocation counts say nothing
// there.
const raceEnabled = true
