package broker

import (
	"fmt"
	"testing"
	"time"

	"claudemesh/wire"
)

// BenchmarkRefillWithAFlooder: alice has 2,500 messages queued for bob,
// who acks none of them. One refill of bob's connection (under the mesh
// lock; an ack of anyone's message to bob asks for one while a sender
// waits) must not read the whole queue again (the review's measurement:
// 7.58 ms a refill before the cursor, 140 µs on the old refill).
func BenchmarkRefillWithAFlooder(b *testing.B) {
	br := startBroker(b, func(c *Config) {
		c.Rate, c.ByteRate = 0, 0
		c.RedeliverAfter = time.Hour
	})
	alice := createMesh(b, br, "team", "alice")
	bob := addMember(b, br, alice, "team", "bob")
	a := connect(b, br, alice, false, nil)
	const n = 2500
	for i := range n {
		a.write(dm(b, alice, bob.pub(), fmt.Sprint("flood ", i)))
	}
	for i := 0; i < n; i++ {
		var ack wire.Ack
		a.next(&ack, wire.TypeAck)
		if ack.Error != nil {
			b.Fatalf("ack %d: %+v", i, ack.Error)
		}
	}
	bc := connect(b, br, bob, true, nil)
	bc.nextPush()
	ms := br.hub.mesh(alice.meshID)
	var c *conn
	deadline := time.Now().Add(expectWithin)
	for {
		ms.mu.Lock()
		for cc := range ms.conns[bob.pub()] {
			c = cc
		}
		ok := c != nil && len(c.inflight) > 0
		ms.mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("bob's window never filled")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.refill()
	b.ResetTimer()
	for range b.N {
		c.refill()
	}
}
