package localapi

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// DaemonPID returns the pid of the daemon that runs for home, or 0 when
// no process is proven to be it, and what daemon.pid names (filePID, 0
// when the file is missing or holds no number) for messages. A pid file
// outlives a daemon that was killed with -9, OOM-killed or lost in a
// reboot, and its pid is soon another program's: signalling whatever has
// that pid now would harm that program. So a pid counts only when
// daemon.db's lock is held (the daemon holds it for as long as it runs)
// and that process is the holder: on Linux /proc/locks names it (the pid
// file is not needed then); elsewhere the pid file's process must be alive
// and run `claudemesh … daemon up`.
func DaemonPID(home string) (pid, filePID int) {
	filePID = readPIDFile(home)
	db := DBPath(home)
	if !fileLocked(db) {
		return 0, filePID
	}
	if h, known := flockHolder(db); known {
		return h, filePID
	}
	if filePID > 0 && syscall.Kill(filePID, 0) == nil && runsDaemonUp(filePID) {
		return filePID, filePID
	}
	return 0, filePID
}

// RemoveStalePIDFile removes daemon.pid when it names pid and no daemon
// runs or is starting for home (neither daemon.db's lock nor the start
// lock is held); it reports whether it did.
func RemoveStalePIDFile(home string, pid int) bool {
	if pid <= 0 || readPIDFile(home) != pid || fileLocked(DBPath(home)) || fileLocked(filepath.Join(Dir(home), "start.lock")) {
		return false
	}
	return os.Remove(PIDPath(home)) == nil
}

func readPIDFile(home string) int {
	data, err := os.ReadFile(PIDPath(home))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
