package proc

import (
	"os/exec"
	"strconv"
	"strings"
)

// startTime is what `ps -o lstart=` prints: the start time to the second,
// which with the pid identifies the process.
func startTime(pid int) (string, error) {
	out, err := exec.Command("ps", "-o", "lstart=", "-p", strconv.Itoa(pid)).Output()
	s := strings.TrimSpace(string(out))
	if err != nil || s == "" {
		return "", ErrGone
	}
	return s, nil
}

func parent(pid int) (int, error) {
	out, err := exec.Command("ps", "-o", "ppid=", "-p", strconv.Itoa(pid)).Output()
	if err != nil {
		return 0, ErrGone
	}
	return strconv.Atoi(strings.TrimSpace(string(out)))
}
