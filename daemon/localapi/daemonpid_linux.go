package localapi

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
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
	return holderIn(data, uint64(sys.Dev), uint64(sys.Ino)), true
}

// holderIn returns the pid with an exclusive flock on the file (dev, ino)
// in /proc/locks' text, or 0. It compares the whole device and inode, as
// the kernel prints them (major and minor in hex): an inode number alone
// matches files of other file systems, whose holders are not the daemon.
func holderIn(locks []byte, dev, ino uint64) int {
	id := lockID(dev, ino)
	for _, line := range bytes.Split(locks, []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) < 6 || string(f[1]) != "FLOCK" || string(f[3]) != "WRITE" || string(f[5]) != id {
			continue
		}
		if p, err := strconv.Atoi(string(f[4])); err == nil && p > 0 {
			return p
		}
	}
	return 0
}

// lockID is a file's "major:minor:inode" in /proc/locks' format
// (fs/locks.c: "%02x:%02x:%lu").
func lockID(dev, ino uint64) string {
	return fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
}

// runsDaemonUp is not needed where /proc/locks names the holder.
func runsDaemonUp(pid int) bool { return false }
