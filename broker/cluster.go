package broker

import (
	"crypto/sha256"
	"fmt"
	"path/filepath"
	"time"

	"claudemesh/cluster"
	"claudemesh/store"
)

// Cluster mode (issue 14; docs/operating-a-broker.md "Running a cluster"):
// with Config.Cluster set, the broker runs an embedded JetStream node (or
// connects to --nats) and keeps its records in the cluster's engine
// instead of a bbolt file of its own. The broker's logic is the same: its
// writes go through store.Engine either way. What is particular to a
// cluster is here and in cluster_sync.go (the hub following the other
// nodes' writes) and cluster_presence.go (presence across nodes).

// openClusterStore starts this node's part of the cluster and opens the
// replicated engine. The route secret is derived from the broker key every
// node shares: a node with another key cannot join.
func (b *Broker) openClusterStore(dbPath string) error {
	cc := *b.cfg.Cluster
	if cc.DataDir == "" {
		cc.DataDir = b.cfg.DataDir
	}
	if cc.Logger == nil {
		cc.Logger = b.log
	}
	seed := sha256.Sum256([]byte("claudemesh/cluster-secret/v1|" + b.key.SecretKeyHex()))
	cc.RouteSecret = seed[:]
	node, err := cluster.Start(cc)
	if err != nil {
		return err
	}
	eng, err := cluster.OpenEngine(node, cluster.EngineOptions{
		Path:           dbPath,
		PublishTimeout: b.cfg.ClusterPublishTimeout,
		Logger:         b.log,
		OnRemote:       b.onRemote,
		OnCommit: func(d time.Duration, _ int) {
			b.metrics.storeCommit.Observe(d.Seconds())
		},
	})
	if err != nil {
		node.Close()
		return fmt.Errorf("cluster: %w", err)
	}
	b.node, b.engine, b.store = node, eng, eng
	b.log.Info("cluster node up", "cluster", cc.Name, "node", cc.NodeID, "routes", node.RouteAddr(), "applied", eng.Applied())
	return nil
}

// onRemote is the engine's feed of the other nodes' writes. It waits for
// the hub, and skips what the hub already read when it loaded.
func (b *Broker) onRemote(seq uint64, changes []cluster.Change) {
	<-b.hubReady
	if seq <= b.hub.loadedSeq {
		return
	}
	b.hub.applyRemote(changes)
}

// closeCluster stops the engine's node after the store is closed.
func (b *Broker) closeCluster() {
	if b.node != nil {
		b.node.Close()
	}
}

// clusterDBPath is the node's copy of the records.
func clusterDBPath(dataDir string) string { return filepath.Join(dataDir, "broker.db") }

var _ store.Engine = (*cluster.Engine)(nil)
