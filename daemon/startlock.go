package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"claudemesh/daemon/localapi"
)

// startLockPath is daemon/start.lock: held (flock) while a daemon opens
// daemon.db, so what a start checks of the file (missing, empty, damaged)
// is never read while another start is creating and initialising it.
// daemon.db's own bbolt lock is the single-instance lock for as long as a
// daemon runs; this one only orders the starts. (Two `daemon up` at once:
// the second saw the first's new daemon.db still 0 bytes and refused it as
// truncated.)
func startLockPath(home string) string { return filepath.Join(localapi.Dir(home), "start.lock") }

// errStartBusy means another start holds the start lock.
var errStartBusy = errors.New("another daemon is starting for this home")

// startLock takes the start lock, waiting up to wait (0: not at all);
// release lets it go.
func startLock(home string, wait time.Duration) (release func(), err error) {
	f, err := os.OpenFile(startLockPath(home), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		if !time.Now().Before(deadline) {
			f.Close()
			return nil, errStartBusy
		}
		time.Sleep(10 * time.Millisecond)
	}
}
