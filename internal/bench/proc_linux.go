package bench

import "syscall"

// childProcAttr puts the child broker in its own process group, so the
// terminal's Ctrl-C reaches only the bench, which then reads the broker's
// peak RSS and stops it itself; and asks the kernel to kill the child if the
// bench dies without cleaning up (a second Ctrl-C, SIGKILL, a crash).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
