package broker

import (
	"fmt"
	"testing"

	"claudemesh/wire"
)

// BenchmarkPresenceChurn times one agent session's presence starting and
// ending (a session hello, its hello_ack, a clean close and the detach)
// in a mesh where 20 other presences are told of each: what
// `bench --adversary`'s churn makes the broker do ~100 times at its start.
// The client's side (a key pair, two signatures) is in the time too.
func BenchmarkPresenceChurn(b *testing.B) {
	br := startBroker(b, func(c *Config) { c.PresenceRate = 0 })
	alice := createMesh(b, br, "team", "alice")
	bob := addMember(b, br, alice, "team", "bob")
	for i := range 20 {
		connect(b, br, alice, true, func(h *wire.Hello) { h.SessionID = fmt.Sprintf("by%d", i) })
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r, _ := connectSession(b, br, bob, fmt.Sprintf("s%d", i))
		r.closeClean()
	}
}
