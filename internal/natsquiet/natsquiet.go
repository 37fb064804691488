// Package natsquiet ends a timer that nats-server starts in every process
// that links it.
//
// The broker's cluster engine embeds nats-server, so the one claudemesh
// binary links it, and nats-server's server/pse package runs, at package
// initialisation, a sampler that reads /proc/<pid>/stat and re-arms itself
// every second for the life of the process (it feeds the CPU figure of
// NATS's /varz). Every daemon, every `claudemesh mcp` beside an agent
// session and every verb would wake once a second to read a file nobody
// uses. The sampler stops re-arming when the read fails, so main points it
// at a path that cannot exist, in every process. The broker's cluster
// node does not need it either: the figure only appears in NATS's own
// /varz and statsz (claudemesh serves neither; with it stopped they report
// CPU and memory as 0), and claudemesh's metrics have their own process
// collector.
//
// This reaches into an unexported variable (go:linkname): if a nats-server
// upgrade renames it, the build fails at link time rather than silently
// keeping the timer, and TestStopEndsTheSampler notices a changed
// behaviour.
package natsquiet

import (
	_ "unsafe" // go:linkname

	_ "github.com/nats-io/nats-server/v2/server/pse" // the package whose variable is named below
)

//go:linkname procStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var procStatFile string

// Stop ends the sampler within a second: its next run fails to read and
// does not re-arm (the sampler cannot be started again).
func Stop() {
	procStatFile = "/nonexistent/claudemesh-no-nats-sampler"
}
