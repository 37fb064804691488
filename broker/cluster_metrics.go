package broker

import (
	"time"

	"claudemesh/cluster"

	cmmetrics "claudemesh/internal/metrics"
)

// Per-node cluster metrics (docs/operating-a-broker.md "Metrics"),
// registered only on a cluster node, so a single broker's /metrics is
// unchanged. A poller asks the log's leader every clusterMetricsEvery.
const clusterMetricsEvery = 2 * time.Second

type clusterMetrics struct {
	applied       *cmmetrics.Gauge
	lag           *cmmetrics.Gauge
	quorum        *cmmetrics.Gauge
	leader        *cmmetrics.Gauge
	leaderChanges *cmmetrics.Counter
	conflicts     *cmmetrics.Counter
	published     *cmmetrics.Counter
	nodesAlive    *cmmetrics.Gauge
	logFirst      *cmmetrics.Gauge
	logBytes      *cmmetrics.Gauge
	snapshotSeq   *cmmetrics.Gauge
	snapshots     *cmmetrics.Counter
	restores      *cmmetrics.Counter
	snapFailures  *cmmetrics.Counter
	selfReads     *cmmetrics.Counter
	catchUps      *cmmetrics.Counter
}

func (b *Broker) startClusterMetrics() {
	r := b.metrics.registry
	m := &clusterMetrics{
		applied:       r.NewGauge("claudemesh_cluster_log_applied", "Sequence of the replicated log this node's copy is at."),
		lag:           r.NewGauge("claudemesh_cluster_log_lag", "Entries of the replicated log this node has yet to apply."),
		quorum:        r.NewGauge("claudemesh_cluster_quorum", "1 while the replicated log has a leader answering (writes possible), else 0."),
		leader:        r.NewGauge("claudemesh_cluster_log_leader", "1 while this node leads the replicated log (its RAFT leader), else 0."),
		leaderChanges: r.NewCounter("claudemesh_cluster_leader_changes_total", "Changes of the log's RAFT leader this node observed (a lost leader counts)."),
		conflicts:     r.NewCounter("claudemesh_cluster_write_conflicts_total", "Writes of this node run again because another node appended to the log first."),
		published:     r.NewCounter("claudemesh_cluster_log_entries_written_total", "Log entries this node appended (each a group commit of its writes)."),
		nodesAlive:    r.NewGauge("claudemesh_cluster_nodes_alive", "Nodes this one hears from (itself included)."),
		logFirst:      r.NewGauge("claudemesh_cluster_log_first", "First sequence the replicated log still holds (entries before it were purged behind a snapshot)."),
		logBytes:      r.NewGauge("claudemesh_cluster_log_bytes", "Size of the replicated log in bytes, as its leader reports it (one replica's share of the disk)."),
		snapshotSeq:   r.NewGauge("claudemesh_cluster_snapshot_seq", "Log sequence of the newest snapshot this node stored or restored (0: none since start)."),
		snapshots:     r.NewCounter("claudemesh_cluster_snapshots_total", "Snapshots of the records this node stored for log compaction."),
		restores:      r.NewCounter("claudemesh_cluster_snapshot_restores_total", "Snapshots this node restored because its copy was older than the log's first entry."),
		snapFailures:  r.NewCounter("claudemesh_cluster_snapshot_failures_total", "Snapshots or log purges of this node that failed (the log keeps growing until one succeeds; see the log)."),
		selfReads:     r.NewCounter("claudemesh_cluster_log_self_reads_total", "Log entries this node read from the log itself because its log consumer had not delivered them in time (its consumer's server died, or it lags)."),
		catchUps:      r.NewCounter("claudemesh_cluster_lookup_catchups_total", "Catch-ups with the log's end this node ran before refusing a DM to a key it did not know (a member or session that joined through another node a moment ago)."),
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(clusterMetricsEvery)
		defer t.Stop()
		var leader string
		var pub, conf uint64
		var snap cluster.SnapshotStats
		var selfRead, catchUps uint64
		for {
			last, l, err := b.engine.LogInfo()
			applied := b.engine.Applied()
			m.applied.Set(float64(applied))
			if err == nil && last > applied {
				m.lag.Set(float64(last - applied))
			} else if err == nil {
				m.lag.Set(0)
			}
			if err != nil || l == "" {
				m.quorum.Set(0)
				l = ""
			} else {
				m.quorum.Set(1)
			}
			if l != "" && l == b.cfg.Cluster.NodeID {
				m.leader.Set(1)
			} else {
				m.leader.Set(0)
			}
			if l != leader {
				if leader != "" || l == "" {
					m.leaderChanges.Inc()
				}
				leader = l
			}
			p, c := b.engine.Stats()
			m.published.Add(float64(p - pub))
			m.conflicts.Add(float64(c - conf))
			pub, conf = p, c
			if first, _, size, err := b.engine.LogState(); err == nil {
				m.logFirst.Set(float64(first))
				m.logBytes.Set(float64(size))
			}
			s := b.engine.SnapshotStats()
			m.snapshotSeq.Set(float64(s.Seq))
			m.snapshots.Add(float64(s.Taken - snap.Taken))
			m.restores.Add(float64(s.Restored - snap.Restored))
			m.snapFailures.Add(float64(s.Failed - snap.Failed))
			snap = s
			_, read, _ := b.engine.Fetched()
			m.selfReads.Add(float64(read - selfRead))
			selfRead = read
			n := b.lookups.count.Load()
			m.catchUps.Add(float64(n - catchUps))
			catchUps = n
			m.nodesAlive.Set(float64(b.cpres.alive()))
			select {
			case <-b.stop:
				return
			case <-t.C:
			}
		}
	}()
}
