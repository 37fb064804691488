//go:build unix && !linux

package bench

import (
	"errors"
	"syscall"
)

// childProcAttr puts the child broker in its own process group, so the
// terminal's Ctrl-C reaches only the bench, which stops the broker itself.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// schedIdle is Linux's (proc_linux.go): elsewhere the attacker process
// is only niced, and --attacker-sched idle is refused.
func schedIdle() error { return errors.ErrUnsupported }

// schedIdleSupported: --attacker-sched idle is Linux's.
const schedIdleSupported = false
