package e2e

// The tests run a claudemesh binary built from the module in TestMain, a
// subprocess whose inputs `go test` cannot see. Linking the packages main
// assembles into the test binary makes its cache key change whenever they
// do, so a cached pass never stands for a binary that was not tested.
import (
	_ "claudemesh/broker"
	_ "claudemesh/client/verbs"
	_ "claudemesh/daemon"
	_ "claudemesh/internal/bench"
	_ "claudemesh/internal/demo"
)
