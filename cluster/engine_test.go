package cluster

import (
	"testing"

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
