package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// postConcurrently posts n sends to bob from 16 local API clients of
// alice's daemon and returns the clientMessageIds that got a 202.
func postConcurrently(t *testing.T, alice, bob *user, prefix string, n int) []string {
	t.Helper()
	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	next := make(chan int, n)
	for i := range n {
		next <- i
	}
	close(next)
	for range 16 {
		api := localapi.New(localapi.SocketPath(alice.home))
		wg.Go(func() {
			for i := range next {
				cmid := fmt.Sprintf("%s-%d", prefix, i)
				var resp localapi.SendResponse
				status, err := api.Do(context.Background(), "POST", "/v1/send",
					localapi.SendRequest{To: bob.pubkey, Message: fmt.Sprintf("%s %d", prefix, i), ClientMessageID: cmid}, &resp)
				if err != nil || status != 202 || resp.Status != localapi.StatusAccepted {
					t.Errorf("send %s: HTTP %d %+v %v", cmid, status, resp, err)
					continue
				}
				mu.Lock()
				acked = append(acked, cmid)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return acked
}

// TestAcceptJournalSurvivesKill9: a 202 from POST /v1/send means the
// message is durable before it is in daemon.db (it is in the accept
// journal). First with the accept-hold failpoint, which keeps every
// accepted row out of daemon.db, so the kill -9 finds them in the journal
// only; then without it, killed right after the last 202 of 16
// concurrent clients. After each restart every accepted message reaches
// bob exactly once, and a repeated clientMessageId is a duplicate, not a
// second message.
func TestAcceptJournalSurvivesKill9(t *testing.T) {
	t.Parallel()
	const n = 160
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]

	alice.extraEnv = []string{"CLAUDEMESH_FAILPOINT=accept-hold"}
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	held := postConcurrently(t, alice, bob, "held", n)
	if len(held) != n {
		t.Fatalf("%d of %d accepted", len(held), n)
	}
	if st := alice.daemonStatus(); st.Outbox.Pending+st.Outbox.Inflight+st.Outbox.Queued+st.Outbox.Sent+st.Outbox.Delivered != 0 {
		// The failpoint did not hold them: the test would not cover
		// the journal.
		t.Fatalf("accepted rows reached daemon.db despite accept-hold: %+v", st.Outbox)
	}
	killAndWait(pid)

	alice.extraEnv = nil
	pid = alice.startDaemon()
	alice.waitDaemonOpen()
	raced := postConcurrently(t, alice, bob, "raced", n)
	killAndWait(pid) // right after the last 202
	if len(raced) != n {
		t.Fatalf("%d of %d accepted", len(raced), n)
	}

	alice.startDaemon()
	alice.waitDaemonOpen()
	var rows []inboxRow
	eventually(t, 60*time.Second, "every message for bob", func() bool {
		rows = append(rows, bob.inbox()...)
		return len(rows) >= 2*n
	})
	count := map[string]int{}
	for _, r := range rows {
		count[r.body()]++
	}
	for _, prefix := range []string{"held", "raced"} {
		for i := range n {
			if b := fmt.Sprintf("%s %d", prefix, i); count[b] != 1 {
				t.Errorf("%q arrived %d times", b, count[b])
			}
		}
	}
	if len(rows) != 2*n {
		t.Fatalf("bob has %d rows, want %d", len(rows), 2*n)
	}
	// The idempotency ids survived the crash with their rows.
	api := localapi.New(localapi.SocketPath(alice.home))
	for _, cmid := range []string{held[0], raced[len(raced)-1]} {
		var resp localapi.SendResponse
		prefix, i := "held", 0
		fmt.Sscanf(cmid, "held-%d", &i)
		if cmid != held[0] {
			prefix = "raced"
			fmt.Sscanf(cmid, "raced-%d", &i)
		}
		status, err := api.Do(context.Background(), "POST", "/v1/send",
			localapi.SendRequest{To: bob.pubkey, Message: fmt.Sprintf("%s %d", prefix, i), ClientMessageID: cmid}, &resp)
		if err != nil || status != 200 || !resp.Duplicate {
			t.Fatalf("resending %s: HTTP %d %+v %v", cmid, status, resp, err)
		}
	}
	eventually(t, 30*time.Second, "outbox settled", func() bool {
		st := alice.daemonStatus()
		return st.Outbox.Pending+st.Outbox.Inflight == 0 && st.Outbox.Dead == 0
	})
	if more := bob.inbox(); len(more) != 0 {
		t.Fatalf("%d more rows after all %d", len(more), 2*n)
	}
}
