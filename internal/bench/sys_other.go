//go:build !unix

package bench

import "syscall"

func raiseFileLimit() error { return nil }

func childProcAttr() *syscall.SysProcAttr { return nil }
