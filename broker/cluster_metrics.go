package broker

import (
	"time"

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
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		t := time.NewTicker(clusterMetricsEvery)
		defer t.Stop()
		var leader string
		var pub, conf uint64
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
			m.nodesAlive.Set(float64(b.cpres.alive()))
			select {
			case <-b.stop:
				return
			case <-t.C:
			}
		}
	}()
}
