package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
)

// Cluster mode (`bench --cluster N`, issue 14): N `claudemesh broker
// --cluster` nodes as child processes of this binary, each on its own
// temporary data directory and loopback ports, all with one broker key
// (clients pin it, and the nodes derive their route password from it). The
// bench's peers are spread over the nodes round-robin (peer i on node
// i mod N), so most DMs cross nodes through the replicated log; the
// workload and what is measured are the single broker's.

// clusterStartTimeout bounds a node's start: it waits for the other
// nodes' routes, a JetStream meta leader and the log's stream, which takes
// seconds (more on a loaded machine), not the milliseconds of a bbolt file.
const clusterStartTimeout = 90 * time.Second

// MaxClusterNodes bounds --cluster: every node is a process of this
// machine.
const MaxClusterNodes = 9

// clusterName names the bench's cluster (and so its stream).
const clusterName = "bench"

// NodeResult is one cluster node's part of a run.
type NodeResult struct {
	Node  string `json:"node"` // its --node ID: n1, n2, …
	PID   int    `json:"pid"`
	URL   string `json:"url"`
	Peers int    `json:"peers"` // bench peers connected to it at the start
	// PeakRssMB is its VmHWM, read at the end (or just before it was
	// killed); EndRssMB its VmRSS then.
	PeakRssMB float64 `json:"peakRssMB"`
	EndRssMB  float64 `json:"endRssMB"`
	// CPUSec is its CPU time while sending and draining (until the kill,
	// for a killed node).
	CPUSec float64 `json:"cpuSec"`
	Killed bool    `json:"killed,omitempty"`
	// LogEntries are the log entries this node appended (each a group
	// commit of its writes) and WriteConflicts its writes run again
	// because another node appended first, from its metrics at the end
	// (polled by the node every 2 s; not read from a killed node).
	LogEntries     int64 `json:"logEntries"`
	WriteConflicts int64 `json:"writeConflicts"`

	cpu0 time.Duration
}

// clusterReplicas is the log's replica count for n nodes: 3 (what a real
// cluster runs, and what survives one node's death) from three nodes on,
// 5 from five, and 1 below three, where 3 replicas cannot be placed.
func clusterReplicas(n int) int {
	switch {
	case n >= 5:
		return 5
	case n >= 3:
		return 3
	}
	return 1
}

// startCluster starts n nodes at once (each waits for a quorum of the
// others before it listens) and returns them in order, node 1 first. A
// route port taken between choosing it and the node binding it makes that
// node exit; the whole cluster is then started again on new ports, a few
// times.
func startCluster(ctx context.Context, exe string, env []string, n int, extraArgs []string) ([]*childBroker, error) {
	var err error
	for range 3 {
		var nodes []*childBroker
		if nodes, err = startClusterOnce(ctx, exe, env, n, extraArgs); err == nil {
			return nodes, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, err
}

func startClusterOnce(ctx context.Context, exe string, env []string, n int, extraArgs []string) ([]*childBroker, error) {
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		return nil, err
	}
	// Public ports are chosen before the start too: every node names them
	// all in --public-urls, which hello_ack hands to clients to fail over
	// with.
	routes, listens, urls := make([]string, n), make([]string, n), make([]string, n)
	for i := range routes {
		if routes[i], err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
		if listens[i], err = freeLoopbackAddr(); err != nil {
			return nil, err
		}
		urls[i] = "ws://" + listens[i] + "/ws"
	}
	nodes := make([]*childBroker, 0, n)
	stopAll := func() {
		for _, c := range nodes {
			c.stop()
		}
	}
	for i := range n {
		args := append([]string{"--presence-rate", "0",
			"--public-url", urls[i], "--public-urls", strings.Join(urls, ","),
			"--cluster", clusterName, "--node", nodeID(i)}, extraArgs...)
		if n > 1 {
			args = append(args, "--cluster-listen", routes[i], "--cluster-routes", strings.Join(routes, ","),
				"--cluster-replicas", strconv.Itoa(clusterReplicas(n)))
		}
		// Metrics on an ephemeral loopback port: --failover reads
		// claudemesh_cluster_log_leader there to pick the node to kill.
		o := childOpts{brokerKey: key.SecretKeyHex(), listen: listens[i], metricsListen: "127.0.0.1:0"}
		if dir := os.Getenv(nodeLogsEnv); dir != "" {
			o.logPath = filepath.Join(dir, nodeID(i)+".log")
		}
		c, err := launchChild(exe, nodeEnv(env, nodeID(i)), o, args...)
		if err != nil {
			stopAll()
			return nil, err
		}
		nodes = append(nodes, c)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, c := range nodes {
		wg.Go(func() { errs[i] = c.waitListening(ctx, clusterStartTimeout) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			stopAll()
			return nil, fmt.Errorf("cluster node %s: %w", nodeID(i), err)
		}
	}
	for i, c := range nodes {
		if c.pubkey != key.PublicHex() {
			stopAll()
			return nil, fmt.Errorf("cluster node %s logged broker key %s, not the one written to its data directory", nodeID(i), c.pubkey)
		}
	}
	return nodes, nil
}

// nodeLogsEnv names a directory where each node's log is kept as
// <node>.log (the nodes' data directories are removed after the run).
const nodeLogsEnv = "CLAUDEMESH_BENCH_NODE_LOGS"

// profileEnv are the broker's profiling variables (broker/command.go),
// which every node would otherwise write to the same file.
var profileEnv = []string{"CLAUDEMESH_BROKER_CPUPROFILE", "CLAUDEMESH_BROKER_MEMPROFILE", "CLAUDEMESH_BROKER_TRACE", "CLAUDEMESH_BROKER_MUTEXPROFILE"}

// nodeEnv is env for one node: a profile asked for goes to FILE.<node>.
func nodeEnv(env []string, node string) []string {
	out := append([]string(nil), env...)
	for _, name := range profileEnv {
		if path := os.Getenv(name); path != "" {
			out = append(out, name+"="+path+"."+node)
		}
	}
	return out
}

// nodeID is the --node ID of node i (0-based): n1, n2, …
func nodeID(i int) string { return "n" + strconv.Itoa(i+1) }

// freeLoopbackAddr is a loopback TCP address nothing listens on right now.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// nodeOf is the node peer i connects to first.
func (r *run) nodeOf(i int) int {
	if len(r.nodes) == 0 {
		return 0
	}
	return i % len(r.nodes)
}

// nodeURL is the public URL of node i (the broker's, outside cluster mode).
func (r *run) nodeURL(i int) string {
	if len(r.nodes) == 0 {
		return r.url
	}
	return r.nodes[i].url
}

// nodeResults reads every live node's memory and CPU time at the end of a
// run (a killed node's were read before the kill).
func (r *run) nodeResults(res *Result) {
	var peak float64
	for i := range r.peers {
		r.nodeRes[r.nodeOf(i)].Peers++
	}
	for i, c := range r.nodes {
		nr := &r.nodeRes[i]
		if !nr.Killed {
			if m, err := c.memory(); err != nil {
				r.warnf("node %s RSS: %v", nr.Node, err)
			} else {
				nr.PeakRssMB, nr.EndRssMB = toMB(m.peak), toMB(m.now)
			}
			nr.CPUSec = round((c.cpu() - nr.cpu0).Seconds(), 2)
			r.nodeCounters(c, nr)
		}
		peak = max(peak, nr.PeakRssMB)
		res.BrokerCPUSec = round(res.BrokerCPUSec+nr.CPUSec, 2)
	}
	res.BrokerPeakRssMB = &peak
	res.Nodes = append([]NodeResult(nil), r.nodeRes...)
}

// nodeCounters reads a node's log counters from its metrics.
func (r *run) nodeCounters(c *childBroker, nr *NodeResult) {
	if c.metrics == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if v, err := metricValue(ctx, c.metrics, "claudemesh_cluster_log_entries_written_total"); err == nil {
		nr.LogEntries = int64(v)
	}
	if v, err := metricValue(ctx, c.metrics, "claudemesh_cluster_write_conflicts_total"); err == nil {
		nr.WriteConflicts = int64(v)
	}
}

// awaitMembersEverywhere waits, in a cluster run, until every node knows
// every peer as a member. The peers were enrolled through node 1, and each
// other node learns of a join when it applies the log entry: its own
// peers' hellos prove it applied theirs, not the others'. A node behind
// the log refuses a DM to a member it does not know yet with
// unknown_recipient, which a bench sender counts as refused: under heavy
// load a node was still behind when the sends began (TestClusterFailover,
// "delivered 179 of 180", one send refused unknown_recipient). The
// broker's own cluster tests wait the same way (waitMember).
func (r *run) awaitMembersEverywhere(ctx context.Context) error {
	if len(r.nodes) < 2 {
		return nil
	}
	r.progressf("waiting until every node knows every member")
	want := make(map[string]bool, len(r.peers))
	for _, p := range r.peers {
		want[p.pubHex] = true
	}
	return parallel(ctx, len(r.nodes), func(_, node int) error {
		var c *client.Conn
		for i, p := range r.peers {
			if r.nodeOf(i) == node {
				c = p.connNow()
				break
			}
		}
		if c == nil {
			return nil // no peer of its own: nothing to ask it with
		}
		start := time.Now()
		for asked := 1; ; asked++ {
			ms, err := c.MembersList(ctx)
			if err != nil {
				return fmt.Errorf("members of node %s: %w", nodeID(node), err)
			}
			known := 0
			for _, m := range ms {
				if want[m.Pubkey] {
					known++
				}
			}
			if known == len(want) {
				if asked > 1 {
					r.progressf("node %s knew every member after %s", nodeID(node), time.Since(start).Round(time.Millisecond))
				}
				return nil
			}
			if err := sleep(ctx, 10*time.Millisecond); err != nil {
				return err
			}
		}
	})
}

// killNode kill -9s node i, after reading what /proc forgets with it.
func (r *run) killNode(i int) {
	c, nr := r.nodes[i], &r.nodeRes[i]
	if m, err := c.memory(); err == nil {
		nr.PeakRssMB, nr.EndRssMB = toMB(m.peak), toMB(m.now)
	}
	nr.CPUSec = round((c.cpu() - nr.cpu0).Seconds(), 2)
	r.nodeCounters(c, nr)
	nr.Killed = true
	c.kill()
}
