package bench

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// childProcAttr puts the child broker in its own process group, so the
// terminal's Ctrl-C reaches only the bench, which then reads the broker's
// peak RSS and stops it itself; and asks the kernel to kill the child if the
// bench dies without cleaning up (a second Ctrl-C, SIGKILL, a crash).
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// schedIdle moves every thread of this process to SCHED_IDLE, the policy
// the kernel runs only when nothing else wants the CPU, and which any
// other task preempts on waking. Threads the runtime starts later are
// cloned from these and inherit it. --adversary's attacker process uses
// it: on the internet the attacker's CPU is someone else's machine, and
// nice 19 alone still let it keep a core for the rest of its slice when
// the broker or the honest load woke (EEVDF's run-to-parity).
//
// A thread the runtime starts during the pass, from one not switched yet,
// would keep the normal policy: the pass repeats until it finds no thread
// it has not switched.
func schedIdle() error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_IDLE}
	done := map[int]bool{}
	for {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := false
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil || done[tid] {
				continue
			}
			fresh = true
			if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("SCHED_IDLE for thread %d: %w", tid, err)
			}
			done[tid] = true
		}
		if !fresh {
			return nil
		}
	}
}

// schedIdleSupported: --attacker-sched idle works here.
const schedIdleSupported = true
