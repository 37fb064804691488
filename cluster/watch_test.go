package cluster

import (
	"fmt"
	"testing"
	"time"
)

// A node whose consumer delivers nothing (it lived on a server that was
// killed, and the client has not recreated it yet) still follows the log:
// a write of its own that conflicts, a wait for an entry another node
// wrote, and a copy that merely stands still all make the watchdog read
// the missing entries from the log itself. With the consumer alone, none
// of these would finish.
func TestWatchdogFollowsWithoutConsumer(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "watch", 3), EngineOptions{})
	for i := range 3 {
		if err := putKey(es[i], fmt.Sprintf("warm%d", i), 8); err != nil {
			t.Fatal(err)
		}
	}
	waitAllApplied(t, es)
	es[0].consMu.Lock()
	es[0].cons.Stop() // node 1's consumer is gone
	es[0].consMu.Unlock()

	t.Run("idle copy catches up", func(t *testing.T) {
		if err := putKey(es[1], "idle", 8); err != nil {
			t.Fatal(err)
		}
		_, last, _, err := es[1].LogState()
		if err != nil {
			t.Fatal(err)
		}
		// Nobody waits on node 1: it finds out on its own.
		deadline := time.Now().Add(30 * time.Second)
		for es[0].Applied() < last {
			if time.Now().After(deadline) {
				t.Fatalf("node 1 stayed at %d, the log is at %d", es[0].Applied(), last)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("a waiter is served", func(t *testing.T) {
		if err := putKey(es[2], "waited", 8); err != nil {
			t.Fatal(err)
		}
		_, last, _, err := es[2].LogState()
		if err != nil {
			t.Fatal(err)
		}
		if !es[0].WaitApplied(last, 30*time.Second) {
			t.Fatalf("node 1 stayed at %d, the log is at %d", es[0].Applied(), last)
		}
	})
	t.Run("a conflicting write goes through", func(t *testing.T) {
		if err := putKey(es[1], "ahead", 8); err != nil {
			t.Fatal(err)
		}
		// Node 1's copy is behind: its write conflicts and must apply
		// node 2's entry before it can publish.
		if err := putKey(es[0], "mine", 8); err != nil {
			t.Fatalf("node 1's write: %v", err)
		}
	})
	t.Run("the consumer is replaced", func(t *testing.T) {
		deadline := time.Now().Add(60 * time.Second)
		for {
			if _, _, refollows := es[0].Fetched(); refollows > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("node 1 did not replace its silent consumer")
			}
			time.Sleep(20 * time.Millisecond)
		}
		// The new consumer delivers what is written next.
		mark := es[0].delivered.Load()
		for i := 0; es[0].delivered.Load() == mark; i++ {
			if time.Now().After(deadline) {
				t.Fatal("the new consumer delivers nothing")
			}
			if err := putKey(es[1], fmt.Sprintf("after%d", i), 8); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	waitAllApplied(t, es)
	d0, n0 := digest(t, es[0])
	for i := 1; i < 3; i++ {
		if d, n := digest(t, es[i]); d != d0 || n != n0 {
			t.Fatalf("node %d holds %d keys, node 1 %d: the copies differ", i+1, n, n0)
		}
	}
	if times, entries, _ := es[0].Fetched(); times == 0 || entries == 0 {
		t.Fatalf("node 1 counts no reads of its own (%d, %d)", times, entries)
	}
}
