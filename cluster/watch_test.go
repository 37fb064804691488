package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"claudemesh/store"
)

// A node whose consumer delivers nothing (it lived on a server that was
// killed, and the client has not recreated it yet) still follows the log:
// a write of its own that conflicts, a wait for an entry another node
// wrote, and a copy that merely stands still all make the watchdog read
// the missing entries from the log itself. With the consumer alone, none
// of these would finish.
// stopConsumer stops e's log consumer and waits until it has delivered
// its last entry: Stop alone returns while the consumer may still hand
// over what the server sent it, and on a loaded machine a "stopped" node
// once applied the next twenty entries that way, so it was never behind.
func stopConsumer(t *testing.T, e *Engine) {
	t.Helper()
	e.consMu.Lock()
	cc := e.cons
	e.consMu.Unlock()
	cc.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(30 * time.Second):
		t.Fatal("the log consumer did not stop")
	}
}

func TestWatchdogFollowsWithoutConsumer(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "watch", 3), EngineOptions{})
	for i := range 3 {
		if err := putKey(es[i], fmt.Sprintf("warm%d", i), 8); err != nil {
			t.Fatal(err)
		}
	}
	waitAllApplied(t, es)
	stopConsumer(t, es[0]) // node 1's consumer is gone

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

// The case the watchdog is for: the server a node's log consumer lives on
// dies. The node keeps applying what the others write, and its own writes
// (which conflict with theirs) go through. An in-process server can only
// shut down, which the client library also notices on its own (the test
// passes without the watchdog, a little slower); a kill -9, where it did
// not, is what `claudemesh bench --cluster 3 --failover --kill follower`
// measures (BENCHMARKS.md). TestWatchdogFollowsWithoutConsumer is the one
// that needs the watchdog.
func TestWatchdogSurvivesTheConsumersServer(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, "cdie", 3)
	es := openEngines(t, nodes, EngineOptions{})
	if err := putKey(es[0], "warm", 8); err != nil {
		t.Fatal(err)
	}
	waitAllApplied(t, es)
	// Find a node whose consumer lives elsewhere; placement is the
	// cluster's choice, so ask for new consumers until one does.
	follower, victim := -1, -1
	for try := 0; follower < 0 && try < 50; try++ {
		for i, e := range es {
			host := e.consumerHost()
			for j, n := range nodes {
				if host != "" && host != e.node && n.cfg.NodeID == host {
					follower, victim = i, j
				}
			}
		}
		if follower < 0 {
			es[try%3].refollow(t.Context(), 0)
		}
	}
	if follower < 0 {
		t.Fatal("every node's consumer stayed on its own server in 50 tries")
	}
	writer := 3 - follower - victim
	t.Logf("node %d follows through a consumer on node %d; node %d writes", follower+1, victim+1, writer+1)
	nodes[victim].Close()

	// The closed server may have led the log: until the others elect a
	// new leader, writes are refused unavailable, and retried, as a
	// client does.
	for i := range 20 {
		putKeyRetrying(t, es[writer], fmt.Sprintf("after%d", i), 8)
	}
	_, last, _, err := es[writer].LogState()
	if err != nil {
		t.Fatal(err)
	}
	if !es[follower].WaitApplied(last, 60*time.Second) {
		t.Fatalf("node %d stayed at %d, the log is at %d", follower+1, es[follower].Applied(), last)
	}
	putKeyRetrying(t, es[follower], "mine", 8)
}

// putKeyRetrying is putKey retried while the cluster answers unavailable
// (a leader election after a server stopped), for up to a minute. The
// value is the same each time, so a refused write that did reach the log
// changes nothing when written again.
func putKeyRetrying(t *testing.T, e *Engine, key string, size int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := putKey(e, key, size)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("write %s on %s: %v", key, e.node, err)
		}
		time.Sleep(100 * time.Millisecond) // a client's retry delay, not a wait for a condition
	}
}
