package broker

import (
	"testing"

	"golang.org/x/time/rate"
)

// BenchmarkSettleableInventedIDs: a 500-id client_ack of invented ids on
// a key with pushes in flight on three connections, its member's lookup
// budget spent (bench --adversary: mallory acking while her 64 KiB
// self-DMs stay unacked). Every op is refused rate_limited; what it costs
// is the time the frame holds the mesh lock, looking up ids only until
// the budget is certainly short (about one id, not 500 × 3 connections).
func BenchmarkSettleableInventedIDs(b *testing.B) {
	cfg := DefaultConfig()
	cfg.DataDir = b.TempDir()
	br, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	ms := &meshState{presences: map[string]*presence{}, conns: map[string]map[*conn]struct{}{}}
	mem := &member{ackLookups: rate.NewLimiter(0, 0), refusals: rate.NewLimiter(rate.Inf, 0)}
	const key = "mallory"
	ms.conns[key] = map[*conn]struct{}{}
	var c *conn
	for range 3 {
		sib := &conn{b: br, ms: ms, mem: mem, pubkey: key, wake: make(chan struct{}, 1), inflight: map[string]inflight{}}
		sib.writing.Store(true) // no writer: the benchmark empties the queue itself
		for _, id := range junkIDs(100) {
			sib.inflight[id] = inflight{}
		}
		ms.conns[key][sib] = struct{}{}
		c = sib
	}
	ids := junkIDs(maxAckIDs)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := c.settleable("r", ids); ok {
			b.Fatal("an ack of invented ids past the budget was taken")
		}
		c.wmu.Lock()
		c.queue, c.qbytes = nil, 0
		c.wmu.Unlock()
	}
}
