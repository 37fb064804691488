package broker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

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
func (b *Broker) openClusterStore(ctx context.Context, dbPath string) error {
	cc := *b.cfg.Cluster
	if cc.DataDir == "" {
		cc.DataDir = b.cfg.DataDir
	}
	if cc.Logger == nil {
		cc.Logger = b.log
	}
	if err := refuseSingleBrokerDB(dbPath); err != nil {
		return err
	}
	seed := sha256.Sum256([]byte("claudemesh/cluster-secret/v1|" + b.key.SecretKeyHex()))
	cc.RouteSecret = seed[:]
	node, err := cluster.Start(cc)
	if err != nil {
		return err
	}
	eng, err := cluster.OpenEngine(node, cluster.EngineOptions{
		Context:        ctx,
		Path:           dbPath,
		PublishTimeout: b.cfg.ClusterPublishTimeout,
		SnapshotEvery:  b.cfg.ClusterSnapshotEvery,
		SnapshotCheck:  b.cfg.ClusterSnapshotInterval,
		LogKeep:        b.cfg.ClusterLogKeep,
		CatchUpTimeout: b.cfg.clusterCatchUp,
		Logger:         b.log,
		OnRemote:       b.onRemote,
		OnCommit: func(d time.Duration, _ int) {
			b.metrics.storeCommit.Observe(d.Seconds())
		},
	})
	if err != nil {
		node.Close()
		if !strings.HasPrefix(err.Error(), "cluster: ") && !errors.As(err, new(*cluster.NotFormedError)) {
			err = fmt.Errorf("cluster: %w", err)
		}
		return err
	}
	b.node, b.engine, b.store = node, eng, eng
	b.log.Info("cluster node up", "cluster", cc.Name, "node", cc.NodeID, "routes", node.RouteAddr(), "applied", eng.Applied())
	return nil
}

// refuseSingleBrokerDB refuses to start a cluster node on the broker.db of
// a single broker: its meshes are in no log, so the other nodes would never
// see them, and the log replayed on top of them would mix two histories.
// (A cluster node's file records the log position it is at.)
func refuseSingleBrokerDB(dbPath string) error {
	if _, err := os.Stat(dbPath); err != nil {
		return nil
	}
	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{ReadOnly: true, Timeout: 200 * time.Millisecond})
	if err != nil {
		return nil // the engine's own open says what is wrong
	}
	defer db.Close()
	single := false
	errFound := errors.New("found")
	db.View(func(btx *bolt.Tx) error {
		if btx.Bucket([]byte("meta")) == nil || btx.Bucket([]byte("meshes")) == nil {
			return nil
		}
		tx := store.WrapTx(btx, nil)
		if store.LogSeq(tx) != 0 || btx.Bucket([]byte("meta")).Get(cluster.KeyRestored) != nil {
			return nil // a cluster node's copy (cluster-restore marks its own)
		}
		return store.EachMesh(tx, func(store.Mesh) error { single = true; return errFound }, func(store.Corrupt) { single = true })
	})
	if single {
		return fmt.Errorf("%s holds the meshes of a single broker, which are in no cluster's log; a cluster node starts with a data directory holding only broker.key (to turn a single broker into a cluster, run `claudemesh broker cluster-restore --from <its broker.db>` on every node: see docs/operating-a-broker.md, \"Restoring a whole cluster\")", dbPath)
	}
	return nil
}

// onRemote is the engine's feed of the other nodes' writes. It waits for
// the hub, and skips what the hub already read when it loaded.
func (b *Broker) onRemote(seq uint64, changes []cluster.Change) {
	<-b.hubReady
	if g := b.lookups.holdRemote.Load(); g != nil {
		<-*g // tests: a node whose hub lags its copy of the log
	}
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
