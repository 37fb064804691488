package bench

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"claudemesh/wire"
)

// clusterContext is longer than testContext: three nodes elect a JetStream
// meta leader and place the log before they listen, and a dead leader's
// election takes 4–9 s (nats-server's RAFT timeouts).
func clusterContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// checkNodes asserts every node is reported with its peers and memory, and
// that no node process outlives the run.
func checkNodes(t *testing.T, res *Result, nodes, peersEach int) {
	t.Helper()
	if len(res.Nodes) != nodes {
		t.Fatalf("%d nodes reported, want %d", len(res.Nodes), nodes)
	}
	var peak float64
	for i, n := range res.Nodes {
		if n.Node != nodeID(i) || n.Peers != peersEach || n.PeakRssMB <= 0 || n.EndRssMB <= 0 || n.EndRssMB > n.PeakRssMB || n.PID <= 0 {
			t.Errorf("node %d: %+v", i, n)
		}
		peak = max(peak, n.PeakRssMB)
		if err := syscall.Kill(n.PID, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("node %s (pid %d) still exists after Run (kill 0: %v)", n.Node, n.PID, err)
		}
	}
	if res.BrokerPeakRssMB == nil || *res.BrokerPeakRssMB != peak {
		t.Errorf("broker peak RSS %v, want the largest node's %.1f", res.BrokerPeakRssMB, peak)
	}
}

// TestCluster runs the DM load over three cluster nodes: every DM arrives
// once, most of them across nodes, and each node's memory is reported.
func TestCluster(t *testing.T) {
	t.Parallel()
	var warnings []string
	res, err := Run(clusterContext(t), Config{Peers: 6, Messages: 20, Window: 1, Payload: 64, Cluster: 3,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"},
		Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res, 120, 120)
	checkNodes(t, res, 3, 2)
	if res.Failover != nil || res.Unavailable != 0 {
		t.Errorf("fail-over %+v, %d unavailable, in a run that killed nothing", res.Failover, res.Unavailable)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
}

// TestClusterFailover kills the node that leads the log a third of the way
// in: its clients are back on the other nodes, the senders among them send
// again what was not acked, and every acked send arrives exactly once.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	var warnings []string
	res, err := Run(clusterContext(t), Config{Peers: 6, Messages: 30, Window: 1, Payload: 64, Cluster: 3,
		Failover: true, Kill: KillLeader, FailoverBackoffMax: 100 * time.Millisecond,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"},
		Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res, 180, 180)
	checkNodes(t, res, 3, 2)
	f := res.Failover
	if f == nil {
		t.Fatal("no fail-over result")
	}
	t.Logf("fail-over: %+v", *f)
	if f.KilledRole != KillLeader || f.KilledNode == "" || f.Clients != 2 || f.Reconnected != 2 {
		t.Errorf("killed %s (%s); %d of %d clients back", f.KilledNode, f.KilledRole, f.Reconnected, f.Clients)
	}
	if f.Acked != 180 || f.Lost != 0 || f.Doubled != 0 {
		t.Errorf("acked %d, lost %d, doubled %d", f.Acked, f.Lost, f.Doubled)
	}
	if f.AckedBeforeKill < 60 || f.AckedBeforeKill >= 180 {
		t.Errorf("killed after %d acked sends, want a third of 180 or a few more", f.AckedBeforeKill)
	}
	if !(f.DetectMs.Max > 0 && f.ReconnectMs.P50 >= f.DetectMs.P50 && f.ReconnectMs.P50 <= f.ReconnectMs.P99 && f.ReconnectMs.P99 <= f.ReconnectMs.Max) {
		t.Errorf("reconnect %+v, detect %+v", f.ReconnectMs, f.DetectMs)
	}
	if f.WritesBackMs <= 0 || f.BackoffMaxMs != 100 {
		t.Errorf("writes back after %.1f ms, backoff cap %.0f ms", f.WritesBackMs, f.BackoffMaxMs)
	}
	killed := 0
	for _, n := range res.Nodes {
		if n.Killed {
			killed++
			if n.Node != f.KilledNode {
				t.Errorf("node %s marked killed, the fail-over says %s", n.Node, f.KilledNode)
			}
		}
	}
	if killed != 1 {
		t.Errorf("%d nodes marked killed", killed)
	}
	for _, w := range warnings {
		t.Errorf("warning: %s", w)
	}
}

// TestDeliveriesOfDuplicateAck: the drain waits for one delivery per acked
// DM however the ack came. A fail-over sender sends again what its dead
// node never acked; when the broker had stored it and its recipient
// settled it meanwhile, the duplicate ack's pending is 0 (only open
// deliveries count), and counting that 0 could make the drain stop one
// delivery short: TestClusterFailover then took a push still on its way
// for lost.
func TestDeliveriesOfDuplicateAck(t *testing.T) {
	one, zero := 1, 0
	dm := &run{cfg: Config{}}
	for _, c := range []struct {
		name string
		ack  wire.Ack
		want int64
	}{
		{"fresh, pending 1", wire.Ack{Pending: &one}, 1},
		{"fresh, pending 0", wire.Ack{Pending: &zero}, 0}, // queued nothing
		{"duplicate, pending 1", wire.Ack{Pending: &one, Duplicate: true}, 1},
		{"duplicate, pending 0", wire.Ack{Pending: &zero, Duplicate: true}, 1}, // settled meanwhile
		{"duplicate, no pending", wire.Ack{Duplicate: true}, 1},
	} {
		if got := dm.deliveriesOf(3, &c.ack); got != c.want {
			t.Errorf("DM, %s: %d deliveries, want %d", c.name, got, c.want)
		}
	}
	// A broadcast to 1,500 recipients goes in envelopes of 1,000 and 500.
	bc := &run{cfg: Config{Broadcast: true}, recipients: make([]*peer, 1500), chunks: 2}
	for seq, want := range []int64{1000, 500, 1000} {
		if got := bc.deliveriesOf(seq, &wire.Ack{Pending: &zero, Duplicate: true}); got != want {
			t.Errorf("broadcast envelope %d, duplicate: %d deliveries, want %d", seq, got, want)
		}
	}
}
