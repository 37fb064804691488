package bench

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSchedIdleCoversEveryThread: the attacker process moves itself to
// SCHED_IDLE; every thread it has then, and every one the runtime starts
// after, runs under it. Checked in a child process, which the policy
// would otherwise slow down with the rest of the tests.
func TestSchedIdleCoversEveryThread(t *testing.T) {
	if os.Getenv("CLAUDEMESH_TEST_SCHED_IDLE") == "1" {
		if err := schedIdle(); err != nil {
			os.Stdout.WriteString("schedIdle: " + err.Error() + "\n")
			return
		}
		// Threads started after: each locked goroutine holds one.
		var wg sync.WaitGroup
		release := make(chan struct{})
		for range 4 {
			wg.Go(func() {
				runtime.LockOSThread()
				<-release
			})
		}
		tasks, _ := os.ReadDir("/proc/self/task")
		close(release)
		wg.Wait()
		for _, task := range tasks {
			var tid int
			for _, ch := range task.Name() {
				tid = tid*10 + int(ch-'0')
			}
			attr, err := unix.SchedGetAttr(tid, 0)
			if err != nil {
				continue // ended meanwhile
			}
			if attr.Policy != unix.SCHED_IDLE {
				os.Stdout.WriteString("thread " + task.Name() + " not SCHED_IDLE\n")
			}
		}
		os.Stdout.WriteString("checked\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSchedIdleCoversEveryThread$")
	cmd.Env = append(os.Environ(), "CLAUDEMESH_TEST_SCHED_IDLE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "checked\n") || strings.Contains(string(out), "not SCHED_IDLE") || strings.Contains(string(out), "schedIdle:") {
		t.Fatalf("child: %s", out)
	}
}
