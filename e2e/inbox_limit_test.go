package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// inbox --limit reads a backlog in order: with --unread (and always on the
// direct path, where every read is of what is new) it takes the oldest
// messages not yet seen, the rest staying for next time, so the MCP's
// advice (inbox --unread --mark-seen --limit 5) reads them oldest first. A
// plain listing through the daemon (no --unread) shows the most recent.
func TestInboxLimitTakesTheOldestUnread(t *testing.T) {
	t.Parallel()
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		u := setupMesh(t, b, "alice", "carol")
		alice, carol := u[0], u[1]
		if viaDaemon {
			carol.startDaemon()
			carol.waitDaemonOpen()
		}
		for i := 1; i <= 3; i++ {
			alice.ok("send", "carol", fmt.Sprintf("msg %d", i))
		}
		if viaDaemon {
			eventually(t, 20*time.Second, "the three messages in carol's daemon", func() bool {
				return len(carol.inbox()) == 3
			})
			if got := bodies(carol.inbox("--limit", "1")); !slices.Equal(got, []string{"msg 3"}) {
				t.Fatalf("inbox --limit 1 (a listing): %q", got)
			}
			if got := bodies(carol.inbox("--limit", "2")); !slices.Equal(got, []string{"msg 2", "msg 3"}) {
				t.Fatalf("inbox --limit 2 (a listing): %q", got)
			}
		}
		var got []string
		for range 3 {
			rows := carol.inbox("--unread", "--mark-seen", "--limit", "1")
			if len(rows) != 1 {
				t.Fatalf("inbox --unread --mark-seen --limit 1 after %q: %q", got, bodies(rows))
			}
			got = append(got, rows[0].body())
		}
		if strings.Join(got, "|") != "msg 1|msg 2|msg 3" {
			t.Fatalf("a backlog read one at a time: %q", got)
		}
		if rows := carol.inbox("--unread", "--limit", "1"); len(rows) != 0 {
			t.Fatalf("nothing is left unread: %q", bodies(rows))
		}
	})
}
