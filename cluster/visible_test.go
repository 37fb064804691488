package cluster

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestCatchUpWaitsForTheHub: what a node applies reaches the broker's hub
// through the dispatcher (OnRemote) a moment after the file. WaitVisible
// and CatchUp, which a lookup before a refusal and a presence from another
// node rely on, return only once OnRemote has run for every entry up to
// theirs: WaitApplied alone let a node refuse a DM to a member whose join
// it had applied but not yet handed to its hub.
func TestCatchUpWaitsForTheHub(t *testing.T) {
	t.Parallel()
	nodes := startNodes(t, "visible", 3)
	gate := make(chan struct{})
	var seen atomic.Int64 // changes the held node's OnRemote was handed
	es := openEnginesEach(t, nodes, func(i int) EngineOptions {
		if i != 1 {
			return EngineOptions{}
		}
		return EngineOptions{OnRemote: func(seq uint64, changes []Change) {
			<-gate
			seen.Add(int64(len(changes)))
		}}
	})
	opened := false
	open := func() {
		if !opened {
			opened = true
			close(gate)
		}
	}
	t.Cleanup(open)

	if err := putKey(es[0], "k0001", 16); err != nil {
		t.Fatal(err)
	}
	_, last, _, err := es[0].LogState()
	if err != nil {
		t.Fatal(err)
	}
	caughtUp := make(chan bool, 1)
	go func() { caughtUp <- es[1].CatchUp(time.Minute) }()
	if !es[1].WaitApplied(last, 30*time.Second) {
		t.Fatalf("node 2 is at %d, the log at %d", es[1].Applied(), last)
	}
	// Applied, and its hub not fed: neither wait may be over.
	if es[1].WaitVisible(last, 50*time.Millisecond) {
		t.Fatal("WaitVisible returned while OnRemote was held")
	}
	select {
	case ok := <-caughtUp:
		t.Fatalf("CatchUp returned %v while OnRemote was held", ok)
	default:
	}
	open()
	if ok := <-caughtUp; !ok {
		t.Fatal("CatchUp did not reach the log's end")
	}
	if seen.Load() == 0 {
		t.Fatal("CatchUp returned before OnRemote had the entry")
	}
	// The node that wrote the entry, and one with no OnRemote, are there
	// too.
	if !es[0].WaitVisible(last, 30*time.Second) || !es[2].CatchUp(30*time.Second) {
		t.Fatalf("visible: node 1 %d, node 3 %d, the log at %d", es[0].visible.Load(), es[2].visible.Load(), last)
	}
}
