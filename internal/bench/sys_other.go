//go:build !unix

package bench

import (
	"syscall"
	"time"
)

func raiseFileLimit() error { return nil }

func childProcAttr() *syscall.SysProcAttr { return nil }

func selfCPU() time.Duration { return 0 }
