//go:build !unix

package bench

import (
	"errors"
	"syscall"
	"time"
)

func raiseFileLimit() error { return nil }

func childProcAttr() *syscall.SysProcAttr { return nil }

func selfCPU() time.Duration { return 0 }

// schedIdle is Linux's (proc_linux.go): elsewhere the attacker process
// is only niced, and --attacker-sched idle is refused.
func schedIdle() error { return errors.ErrUnsupported }

// schedIdleSupported: --attacker-sched idle is Linux's.
const schedIdleSupported = false
