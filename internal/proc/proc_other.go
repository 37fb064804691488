//go:build !linux && !darwin

package proc

import (
	"os"
	"syscall"
)

// Elsewhere only liveness can be checked: the start time is unknown, so a
// reused pid passes for the old process.
func startTime(pid int) (string, error) {
	p, err := os.FindProcess(pid)
	if err != nil || p.Signal(syscall.Signal(0)) != nil {
		return "", ErrGone
	}
	return "unknown", nil
}

func parent(pid int) (int, error) { return 0, ErrGone }
