//go:build !linux

package localapi

import (
	"os/exec"
	"strconv"
	"strings"
)

// flockHolder: no portable way to name a flock's holder outside Linux.
func flockHolder(path string) (pid int, known bool) { return 0, false }

// runsDaemonUp reports whether pid runs `claudemesh … daemon up` (ps).
func runsDaemonUp(pid int) bool {
	out, err := exec.Command("ps", "-o", "command=", "-p", strconv.Itoa(pid)).Output()
	return err == nil && strings.Contains(string(out), " daemon up")
}
