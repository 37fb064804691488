package cluster

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"claudemesh/store"
)

// testSecret is the route secret of test clusters (a broker key's seed in
// production).
var testSecret = []byte("claudemesh test cluster secret, not a real key")

// startNodes starts n embedded nodes of one cluster on loopback, each with
// its own data dir and every node's route address in its routes, as an
// operator configures them.
func startNodes(t testing.TB, name string, n int) []*Node {
	t.Helper()
	for attempt := 1; ; attempt++ {
		nodes, err := startNodesOnce(t, name, n)
		if err == nil {
			return nodes
		}
		// A route port free a moment ago can be taken before NATS binds
		// it (a parallel test's connection gets it as its source port),
		// and that node's server never becomes ready. The cluster is new:
		// start it again on fresh ports and directories.
		if attempt == 3 || !strings.Contains(err.Error(), "did not start") {
			t.Fatal(err)
		}
		t.Logf("the cluster did not start (%v); again on fresh route ports", err)
	}
}

// startNodesOnce starts n new nodes on fresh ports; on an error it closes
// those that started and returns the first error.
func startNodesOnce(t testing.TB, name string, n int) ([]*Node, error) {
	t.Helper()
	replicas := 3
	if n == 1 {
		replicas = 1
	}
	cfgs := make([]Config, n)
	var routes []string
	for i := range n {
		addr := freePort(t)
		cfgs[i] = Config{Name: name, NodeID: fmt.Sprintf("n%d", i+1), Listen: addr,
			DataDir: filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1)), Replicas: replicas, RouteSecret: testSecret}
		routes = append(routes, addr)
	}
	nodes := make([]*Node, n)
	errs := make(chan error, n)
	for i := range cfgs {
		if n > 1 {
			cfgs[i].Routes = routes
		}
		go func() {
			var err error
			nodes[i], err = Start(cfgs[i])
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		for _, node := range nodes {
			if node != nil {
				node.Close()
			}
		}
		return nil, first
	}
	for _, node := range nodes {
		t.Cleanup(node.Close)
	}
	return nodes, nil
}

// freePort is a loopback address with a port free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// openEngines opens an engine on every node, concurrently (the log's
// stream needs its replicas up to be created).
func openEngines(t testing.TB, nodes []*Node, opts EngineOptions) []*Engine {
	t.Helper()
	return openEnginesEach(t, nodes, func(int) EngineOptions { return opts })
}

// openEnginesEach is openEngines with node i's options from opts(i).
func openEnginesEach(t testing.TB, nodes []*Node, opts func(i int) EngineOptions) []*Engine {
	t.Helper()
	out := make([]*Engine, len(nodes))
	errs := make(chan error, len(nodes))
	for i, n := range nodes {
		go func() {
			o := opts(i)
			o.Path = filepath.Join(n.cfg.DataDir, "broker.db")
			o.PublishTimeout = 10 * time.Second
			if o.CatchUpTimeout == 0 {
				o.CatchUpTimeout = testCatchUp
			}
			e, err := OpenEngine(n, o)
			out[i] = e
			errs <- err
		}()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range out {
		t.Cleanup(func() { e.Close() })
	}
	return out
}

// testCatchUp is how long a test's engine waits at open for the cluster
// to form and its copy to catch up, instead of the minute of a node an
// operator starts: a new cluster's log stream took 8–18 s to be created
// at load 11 under -race, and some opens took the whole minute.
const testCatchUp = 3 * time.Minute

func engines(es []*Engine) []store.Engine {
	out := make([]store.Engine, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}
