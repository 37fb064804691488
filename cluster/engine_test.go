package cluster

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"claudemesh/store/storetest"
)

// The store conformance suite on the JetStream engine: three nodes with R3,
// writes spread over all of them, reads checked on every node.
func TestConformanceThreeNodes(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "conf3", 3), EngineOptions{})
	storetest.Run(t, engines(es))
}

// And on one node with R1, as a single-node test cluster runs.
func TestConformanceOneNode(t *testing.T) {
	t.Parallel()
	es := openEngines(t, startNodes(t, "conf1", 1), EngineOptions{})
	storetest.Run(t, engines(es))
}

// And on two brokers sharing an existing NATS system (--nats): a
// standalone JetStream server on loopback, R1, with a password in the URL.
func TestConformanceExternalNATS(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{
		ServerName: "ext", Host: "127.0.0.1", Port: server.RANDOM_PORT,
		Username: "mesh", Password: "s3cret", JetStream: true,
		StoreDir: filepath.Join(t.TempDir(), "js"), NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		t.Fatal("the external NATS server did not start")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	url := fmt.Sprintf("nats://mesh:s3cret@%s", srv.Addr().String())
	var nodes []*Node
	for i := range 2 {
		n, err := Start(Config{Name: "ext", NodeID: fmt.Sprintf("x%d", i+1), NATSURL: url, Replicas: 1,
			DataDir: filepath.Join(t.TempDir(), fmt.Sprintf("x%d", i+1))})
		if err != nil {
			t.Fatal(err)
		}
		if n.Server() != nil {
			t.Fatal("--nats started an embedded server")
		}
		t.Cleanup(n.Close)
		nodes = append(nodes, n)
	}
	storetest.Run(t, engines(openEngines(t, nodes, EngineOptions{})))
}
