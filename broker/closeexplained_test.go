package broker

import (
	"testing"

	"claudemesh/wire"
)

// TestCloseExplainedNeverBecomesSlowConsumer: a replaced connection is told
// why before its session_replaced close; the frame that says so went
// through enqueue, which on a full send buffer drops the queue and closes
// slow_consumer instead (a close the client reconnects after: the replaced
// daemon took the connection back). The frame is now queued only if it
// fits, and the close stays session_replaced either way.
func TestCloseExplainedNeverBecomesSlowConsumer(t *testing.T) {
	b := startBroker(t, nil)
	for _, full := range []bool{false, true} {
		c := &conn{b: b, ms: &meshState{}, wake: make(chan struct{}, 1)}
		c.writing.Store(true) // no writer: the test reads the queue itself
		if full {
			c.queue, c.qbytes = []outFrame{{b: make([]byte, b.cfg.SendBuffer-10)}}, b.cfg.SendBuffer-10
		}
		c.closeExplained(wire.CloseNormal, wire.ReasonReplaced, wire.ReasonReplaced, "another connection with this identity connected")
		c.wmu.Lock()
		code, reason, n := c.closeCode, c.closeReason, len(c.queue)
		c.wmu.Unlock()
		if code != wire.CloseNormal || reason != wire.ReasonReplaced {
			t.Fatalf("full=%v: closed %d %s", full, code, reason)
		}
		if want := map[bool]int{false: 1, true: 1}[full]; n != want {
			t.Fatalf("full=%v: %d frames queued, want %d", full, n, want)
		}
	}
}
