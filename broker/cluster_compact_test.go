package broker

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"claudemesh/internal/lockedbuf"
	"claudemesh/wire"
)

// Log compaction across brokers: with a small --cluster-snapshot-every the
// node leading the log snapshots the records and purges the log; a node
// whose data directory is wiped down to broker.key (a replaced machine)
// starts again by restoring the snapshot and replaying the log after it,
// and a member connecting there gets every message queued for it, those
// sent before the snapshot and those sent while the node was away.
func TestClusterCompactionRestoresWipedNode(t *testing.T) {
	t.Parallel()
	// The nodes' warnings, shown if the test fails (it did, rarely, in
	// full -race runs on a loaded machine, with nothing else to go on).
	var logs lockedbuf.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the nodes' warnings:\n%s", logs.String())
		}
	})
	bs, cfgs := startClusterConfigs(t, "compact", 3, func(c *Config) {
		// A purge keeps 50 entries before the snapshot: room for the
		// restored node to replay what is written while it starts (with
		// none kept, the leader's next snapshot once purged entries the
		// restored node had yet to apply, and it halted as documented).
		c.ClusterSnapshotEvery, c.ClusterSnapshotInterval, c.ClusterLogKeep = 10, 20*time.Millisecond, 50
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", c.Cluster.NodeID)
	})
	alice := createMesh(t, bs[0], "team", "alice")
	bob := addMember(t, bs[0], alice, "team", "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, bob.pub())
	}
	a := connect(t, bs[0], alice, true, nil)
	want := map[string]string{}
	send := func(text string) {
		t.Helper()
		ack := a.sendAck(dm(t, alice, bob.pub(), text))
		if ack.Error != nil {
			t.Fatalf("ack %+v", ack.Error)
		}
		want[ack.MessageID] = text
	}
	for i := range 60 {
		send(fmt.Sprintf("before the snapshot %d", i))
	}
	// The leader compacts on its own. With 60 sends (one entry each) and
	// a snapshot due every 10 entries, one lands at 55 or later whenever
	// the snapshot loop's checks run, and its purge (keeping 50) moves the
	// log's first entry past 1: a node with an empty disk must restore.
	start := time.Now()
	deadline := start.Add(90 * time.Second)
	for {
		first, _, _, err := bs[0].engine.LogState()
		if err == nil && first > 1 {
			t.Logf("the log was compacted %v after the sends (first entry %d)", time.Since(start).Round(time.Millisecond), first)
			break
		}
		if time.Now().After(deadline) {
			var stats []string
			for _, b := range bs {
				_, leader, _ := b.engine.LogInfo()
				stats = append(stats, fmt.Sprintf("%s: applied %d, leader %q, snapshots %+v", b.cfg.Cluster.NodeID, b.engine.Applied(), leader, b.engine.SnapshotStats()))
			}
			t.Fatalf("the log was not compacted: first entry %d (%v); %s", first, err, strings.Join(stats, "; "))
		}
		time.Sleep(20 * time.Millisecond)
	}
	taken := uint64(0)
	for _, b := range bs {
		taken += b.engine.SnapshotStats().Taken
	}
	if taken == 0 {
		t.Fatal("no node counts a snapshot")
	}

	// Node 3 loses its disk: only broker.key is left.
	closeAll(bs[2:])
	entries, err := os.ReadDir(cfgs[2].DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "broker.key" {
			if err := os.RemoveAll(filepath.Join(cfgs[2].DataDir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 5 {
		send(fmt.Sprintf("while node 3 is away %d", i))
	}
	n3 := startNodeAgain(t, cfgs[2])
	t.Cleanup(func() { closeAll([]*Broker{n3}) })
	waitNodeReady(t, n3, "the restored node is not ready")
	if st := n3.engine.SnapshotStats(); st.Restored != 1 {
		t.Fatalf("the wiped node did not restore a snapshot: %+v", st)
	}
	b3 := connectWhenKnown(t, n3, bob)
	receiveAll(t, b3, bob, want)
	// And the restored node takes writes.
	var ok wire.OK
	b3.request(map[string]any{"type": wire.TypeSetSummary, "summary": "back"}, &ok, wire.TypeOK)
}
