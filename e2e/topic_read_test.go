package e2e

import (
	"syscall"
	"testing"
	"time"
)

// TestTopicTailMarksWhatItShowedRead: what `topic tail` printed is read,
// through the daemon and without it: `topic list`'s unread count stops
// counting it, after --no-follow and after Ctrl-C (a new user's trial: no
// verb moved the read marker, and the count only grew).
func TestTopicTailMarksWhatItShowedRead(t *testing.T) {
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		u := setupMesh(t, b, "alice", "bob")
		alice, bob := u[0], u[1]
		if viaDaemon {
			alice.startDaemon()
			bob.startDaemon()
			alice.waitDaemonOpen()
			bob.waitDaemonOpen()
		}
		alice.ok("topic", "create", "ops")
		var at *tailer
		if !viaDaemon {
			at = alice.tail("ops") // a member online shares the key with joiners
		}
		bob.ok("topic", "join", "ops")
		eventually(t, 20*time.Second, "bob's key", func() bool { return bob.topics()["ops"].HasKey })
		if at != nil {
			at.stop()
		}
		alice.ok("topic", "post", "ops", "one")
		alice.ok("topic", "post", "ops", "two")
		// Through the daemon a post is sent after it is accepted.
		eventually(t, 20*time.Second, "bob's two unread posts", func() bool { return bob.topics()["ops"].Unread == 2 })
		bob.ok("topic", "tail", "ops", "--no-follow")
		if n := bob.topics()["ops"].Unread; n != 0 {
			t.Fatalf("bob's unread after tail --no-follow: %d, want 0", n)
		}
		alice.ok("topic", "post", "ops", "three")
		bt := bob.tail("ops")
		bt.waitBody("three")
		bt.stop()
		if n := bob.topics()["ops"].Unread; n != 0 {
			t.Fatalf("bob's unread after a tail stopped with Ctrl-C: %d, want 0", n)
		}
	})
}

// TestTopicTailCtrlCDoesNotWaitForASlowBroker: after Ctrl-C, tail moved
// the read marker with up to 5 s of waiting for an answer; with a broker
// that answers slowly (here: stopped), the user waited those 5 s for the
// prompt. Through the daemon it now waits a second at most, and the
// daemon still moves the marker once the broker answers.
func TestTopicTailCtrlCDoesNotWaitForASlowBroker(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.startDaemon()
	bob.startDaemon()
	alice.waitDaemonOpen()
	bob.waitDaemonOpen()
	alice.ok("topic", "create", "ops")
	bob.ok("topic", "join", "ops")
	eventually(t, 20*time.Second, "bob's key", func() bool { return bob.topics()["ops"].HasKey })
	alice.ok("topic", "post", "ops", "one")
	eventually(t, 20*time.Second, "bob's unread post", func() bool { return bob.topics()["ops"].Unread == 1 })
	bt := bob.tail("ops")
	bt.waitBody("one")
	pid := b.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGSTOP)
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	start := time.Now()
	bt.stop()
	took := time.Since(start)
	resume()
	if took > 4*time.Second {
		t.Fatalf("tail took %s to exit after Ctrl-C with the broker stopped (it waited 5 s for the read marker)", took.Round(time.Millisecond))
	}
	t.Logf("tail exited %s after Ctrl-C", took.Round(time.Millisecond))
	eventually(t, 20*time.Second, "the daemon moves bob's read marker once the broker answers", func() bool {
		return bob.topics()["ops"].Unread == 0
	})
}
