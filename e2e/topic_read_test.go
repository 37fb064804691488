package e2e

import (
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
