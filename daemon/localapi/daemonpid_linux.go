package localapi

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// flockHolder returns the pid holding an exclusive flock on path, from
// /proc/locks (known is false when that file cannot be read, e.g. a
// restricted /proc). A line reads
// "1: FLOCK  ADVISORY  WRITE 22833 fe:00:12133378 0 EOF" (pid, then
// major:minor:inode); waiters' lines have "->" after the number.
func flockHolder(path string) (pid int, known bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0, false
	}
	ino := []byte(":" + strconv.FormatUint(uint64(sys.Ino), 10))
	for _, line := range bytes.Split(data, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) < 6 || string(f[1]) != "FLOCK" || string(f[3]) != "WRITE" || !bytes.HasSuffix(f[5], ino) {
			continue
		}
		if p, err := strconv.Atoi(string(f[4])); err == nil && p > 0 {
			return p, true
		}
	}
	return 0, true
}

// runsDaemonUp is not needed where /proc/locks names the holder.
func runsDaemonUp(pid int) bool { return false }
