package cluster

import (
	"testing"
)

// TestFollowRetriesALostRequest: the request that creates the log
// consumer had the start's whole minute as its only bound, so one lost in
// a JetStream election (no answer ever comes) made the node wait all of
// it and fail to start. Each attempt now has a few seconds, and another
// follows: the node starts, and follows the log.
func TestFollowRetriesALostRequest(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, "follow", 3)
	es := openEnginesEach(t, nodes, func(i int) EngineOptions {
		o := EngineOptions{CatchUpTimeout: testCatchUp}
		if i == 0 {
			o.followStall = func(attempt int) bool { return attempt == 1 }
		}
		return o
	})
	if err := putKey(es[1], "after", 8); err != nil {
		t.Fatal(err)
	}
	waitAllApplied(t, es)
}
