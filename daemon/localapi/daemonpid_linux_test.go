package localapi

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFlockHolderMatchesDeviceAndInode: flockHolder matched /proc/locks
// lines by inode number alone, so a flock on a file of another file
// system with the same inode number named some other program as the
// daemon, and `daemon down` signalled it. It names the holder of this very
// file: its device and inode as the kernel prints them.
func TestFlockHolderMatchesDeviceAndInode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	pid, known := flockHolder(path)
	if !known {
		t.Skip("/proc/locks cannot be read here")
	}
	if pid != os.Getpid() {
		t.Fatalf("holder of %s: pid %d, want this process (%d)", path, pid, os.Getpid())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	id := lockID(uint64(sys.Dev), uint64(sys.Ino))
	locks, _ := os.ReadFile("/proc/locks")
	if !strings.Contains(string(locks), " "+id+" ") {
		t.Fatalf("/proc/locks has no line for %s:\n%s", id, locks)
	}
}

// TestHolderInIgnoresOtherDevices: a newer flock (listed first) on a file
// of another file system with the same inode number is not the daemon's.
func TestHolderInIgnoresOtherDevices(t *testing.T) {
	dev := unix.Mkdev(0xfe, 0)
	locks := []byte("1: FLOCK  ADVISORY  WRITE 4242 00:2a:12133378 0 EOF\n" +
		"2: FLOCK  ADVISORY  WRITE 777 fe:00:112133378 0 EOF\n" +
		"3: FLOCK  ADVISORY  WRITE 31337 fe:00:12133378 0 EOF\n")
	if got := holderIn(locks, dev, 12133378); got != 31337 {
		t.Fatalf("holder of fe:00:12133378 = %d, want 31337 (not the same inode number on device 00:2a)", got)
	}
	if got := holderIn(locks, unix.Mkdev(0xfe, 1), 12133378); got != 0 {
		t.Fatalf("holder of fe:01:12133378 = %d, want none", got)
	}
}
