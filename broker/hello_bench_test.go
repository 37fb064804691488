package broker

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// BenchmarkHelloChurn times the hellos `bench --adversary` makes the
// broker answer at its start, through a real connection with a lean
// client (no frame log, one goroutine): mallory's presence opened and
// closed (churn), a member hello of 64 groups (refused before its
// signature) and one of 32 groups the member does not have (refused
// after it, under the mesh lock, the member already at the cap). 20
// presences of another member are told of each churn.
func BenchmarkHelloChurn(b *testing.B) {
	groups := func(prefix string, n int) []wire.Group {
		g := make([]wire.Group, n)
		for i := range g {
			g[i] = wire.Group{Name: prefix + strconv.Itoa(i)}
		}
		return g
	}
	for _, tc := range []struct {
		name     string
		presence bool
		groups   []wire.Group
		want     string
	}{
		{"churn", true, nil, wire.TypeHelloAck},
		{"groups64", false, groups("h", 64), wire.TypeError},
		{"groups32", false, groups("v", 32), wire.TypeError},
	} {
		b.Run(tc.name, func(b *testing.B) {
			br := startBroker(b, func(c *Config) { c.PresenceRate = 0 })
			alice := createMesh(b, br, "team", "alice")
			mallory := addMember(b, br, alice, "team", "mallory")
			for i := range 20 {
				connect(b, br, alice, true, func(h *wire.Hello) { h.SessionID = fmt.Sprintf("by%d", i) })
			}
			connect(b, br, mallory, false, func(h *wire.Hello) { h.Groups = groups("g", 32) })
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := processCPU()
			for range b.N {
				leanHello(b, br, mallory, tc.presence, tc.groups, tc.want)
			}
			// The process's CPU (client and broker): on a loaded machine
			// wall time per op is mostly waiting for a core.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// leanHello dials, answers the challenge with a member hello, reads the
// answer (of type want) and closes.
func leanHello(b *testing.B, br *Broker, m ident, presence bool, groups []wire.Group, want string) {
	ws, _, err := websocket.DefaultDialer.Dial(br.URL(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	var ch wire.Challenge
	if _, data, err := ws.ReadMessage(); err != nil || wire.Decode(data, &ch) != nil {
		b.Fatalf("challenge: %v %s", err, data)
	}
	h := wire.Hello{Type: wire.TypeHello, Protocol: 1, MeshID: m.meshID, MemberID: m.memberID, Pubkey: m.pub(),
		Timestamp: time.Now().UnixMilli(), Challenge: ch.Nonce, SessionID: "churn", Role: wire.RoleCLI,
		Presence: &presence, Groups: groups}
	s, _ := cmcrypto.HelloString(h.MeshID, h.MemberID, h.Pubkey, br.PublicKey(), h.Timestamp, h.Challenge)
	h.Signature = m.key.Sign(s)
	if err := ws.WriteMessage(websocket.TextMessage, wire.MustEncode(h)); err != nil {
		b.Fatal(err)
	}
	_, data, err := ws.ReadMessage()
	if err != nil {
		b.Fatal(err)
	}
	if env, _ := wire.Peek(data); env.Type != want {
		b.Fatalf("want %s, got %s", want, data)
	}
	ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return
		}
	}
}
