package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"claudemesh/cluster"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// A cluster node as a child process: the test binary runs itself with
// childEnv set to the node's configuration, so a test can kill -9 a node
// (an in-process node can only be closed cleanly).
const childEnv = "CLAUDEMESH_TEST_BROKER_CHILD"

type childConfig struct {
	DataDir, Listen, Cluster, Node, RouteListen string
	Routes                                      []string
}

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(runChild(spec))
	}
	os.Exit(m.Run())
}

func runChild(spec string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(spec), &cc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.DataDir = cc.Listen, "off", cc.DataDir
	cfg.PingInterval, cfg.PongTimeout, cfg.Grace, cfg.RedeliverAfter = 200*time.Millisecond, 5*time.Second, time.Second, 2*time.Second
	cfg.Cluster = &cluster.Config{Name: cc.Cluster, NodeID: cc.Node, Listen: cc.RouteListen, Routes: cc.Routes, Replicas: 3}
	cfg.ClusterPublishTimeout, cfg.ClusterHeartbeat = 10*time.Second, 200*time.Millisecond
	cfg.Rate = 0 // the burst and its resends
	if err := Run(context.Background(), cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// childNode is a running child node and a handle the test helpers take for
// a broker (URL, key, operator token).
type childNode struct {
	cfg    childConfig
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
	log    *os.File
	h      *Broker
}

func startChild(t *testing.T, cc childConfig, brokerPub string) *childNode {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), cc.Node+".log"))
	if err != nil {
		t.Fatal(err)
	}
	n := &childNode{cfg: cc, log: logf,
		h: &Broker{keyHex: brokerPub, publicURL: "ws://" + cc.Listen + "/ws"}}
	n.start(t)
	t.Cleanup(n.kill)
	return n
}

// start runs the node's process (again, after it exited).
func (n *childNode) start(t *testing.T) {
	t.Helper()
	spec, _ := json.Marshal(n.cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = n.log, n.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	n.cmd, n.exited = cmd, exited
}

func (n *childNode) kill() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// waitReady waits for /health/ready and reads the operator token.
//
// A node exits when no cluster forms within a minute of its start, and
// its service manager starts it again (docs/operating-a-broker.md): on a
// loaded machine (three race-built nodes beside the rest of the suite)
// the cluster once took longer to form, so a node that exited before it
// was ready is started again, as systemd would.
func (n *childNode) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if resp, err := http.Get(n.h.HTTPURL() + "/health/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-n.exited:
			fmt.Fprintf(n.log, "(test: node exited before it was ready; starting it again)\n")
			n.start(t)
		default:
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(n.log.Name())
			t.Fatalf("node %s never ready; its log:\n%s", n.cfg.Node, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(n.cfg.DataDir, "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	n.h.opToken = strings.TrimSpace(string(tok))
}

// connectWhenKnown connects id to b, retrying while b has not applied the
// member's join yet.
func connectWhenKnown(t *testing.T, b *Broker, id ident) *rawConn {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := dial(t, b)
		p := true
		r.write(r.helloFrame(id, func(h *wire.Hello) { h.Presence = &p }))
		env := r.next(nil, wire.TypeHelloAck, wire.TypeError)
		if env.Type == wire.TypeHelloAck {
			return r
		}
		r.ws.Close()
		if time.Now().After(deadline) {
			t.Fatal("the member never became known on the node")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill -9 of the node a sender is connected to, in the middle of a burst of
// sends: the sender reconnects to another node and sends again what was
// not acknowledged (same ids, as clients do); the recipient gets every
// message once, those acked before the kill included. The node, started
// again, catches up with what happened while it was dead.
func TestClusterKill9DuringBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three broker processes")
	}
	t.Parallel()
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	var routes, listens []string
	for range 3 {
		routes = append(routes, freeAddr(t))
		listens = append(listens, freeAddr(t))
	}
	nodes := make([]*childNode, 3)
	for i := range 3 {
		cc := childConfig{DataDir: t.TempDir(), Listen: listens[i], Cluster: "kill", Node: fmt.Sprintf("k%d", i+1), RouteListen: routes[i], Routes: routes}
		if err := os.WriteFile(filepath.Join(cc.DataDir, "broker.key"), []byte(key.SecretKeyHex()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes[i] = startChild(t, cc, key.PublicHex())
	}
	for _, n := range nodes {
		n.waitReady(t)
	}
	n1, n2, n3 := nodes[0].h, nodes[1].h, nodes[2].h
	alice := createMesh(t, n1, "team", "alice")
	bob := addMember(t, n1, alice, "team", "bob")
	bc := connectWhenKnown(t, n3, bob)
	a := connectWhenKnown(t, n2, alice)

	// The burst: the first half written at once, the node killed at its
	// first ack, then the second half written as it dies: sends acked
	// before the kill, sends in flight at it, and sends it never read.
	// (With all 600 written before the first ack was read, a fast node
	// had acked every one by the time the kill landed: "the kill came too
	// late", now and then under load.)
	const total = 600
	sends := make([]wire.Send, total)
	for i := range sends {
		sends[i] = dm(t, alice, bob.pub(), fmt.Sprintf("burst %03d", i))
	}
	for _, s := range sends[:total/2] {
		a.write(s)
	}
	acked := map[string]string{} // send id → messageId
	killed := false
	for {
		data, err := a.readErr(expectWithin)
		if err != nil {
			break // the node is gone
		}
		env, _ := wire.Peek(data)
		if env.Type != wire.TypeAck {
			continue
		}
		var ack wire.Ack
		if err := wire.Decode(data, &ack); err != nil {
			t.Fatal(err)
		}
		if ack.Error == nil {
			acked[ack.ID] = ack.MessageID
		}
		if !killed {
			nodes[1].kill()
			killed = true
			for _, s := range sends[total/2:] {
				if !a.tryWrite(s) {
					break // the connection is gone: the rest are sent again below
				}
			}
		}
		if len(acked) == total {
			break
		}
	}
	if !killed || len(acked) == total {
		t.Fatalf("the kill came too late: %d of %d acked", len(acked), total)
	}
	ackedBefore := len(acked)

	// Reconnect to another node and send again what was not acked, with
	// the same ids; an ack for one acked before must name the same message.
	down := time.Now()
	a2 := connectWhenKnown(t, n1, alice)
	reconnect := time.Since(down)
	for _, s := range sends {
		ack := sendWhileUnavailable(a2, s)
		if ack.Error != nil {
			t.Fatalf("resend %s: %+v", s.ID, ack.Error)
		}
		if prev, ok := acked[s.ID]; ok && prev != ack.MessageID {
			t.Fatalf("send %s acked as %s before the kill, %s after", s.ID, prev, ack.MessageID)
		}
		acked[s.ID] = ack.MessageID
	}
	t.Logf("%d of %d acked before the kill; sender back on another node %s after it", ackedBefore, total, reconnect.Round(time.Millisecond))

	// bob (on the third node all along) gets each message once.
	want := map[string]string{}
	for i, s := range sends {
		want[acked[s.ID]] = fmt.Sprintf("burst %03d", i)
	}
	got := map[string]bool{}
	var batch []string
	for len(got) < len(want) {
		p := bc.nextPush()
		body, ok := want[p.MessageID]
		if !ok || got[p.MessageID] {
			t.Fatalf("unexpected push %s (known %v, seen %v)", p.MessageID, ok, got[p.MessageID])
		}
		if openPush(t, &p, bob) != body {
			t.Fatalf("push %s is not %q", p.MessageID, body)
		}
		got[p.MessageID] = true
		// Acked as they come, without waiting for the answers (the
		// broker pushes at most 256 unacked messages at a time).
		if batch = append(batch, p.MessageID); len(batch) == 128 {
			bc.write(wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: batch})
			batch = nil
		}
	}
	bc.ack(batch...) // 600 = 4×128 + 88: never empty; answered after the ones before it

	// The killed node, started again, catches up: bob connecting there
	// is pushed nothing (his acks reached it through the log), and a new
	// message reaches him there.
	back := startChild(t, nodes[1].cfg, key.PublicHex())
	back.waitReady(t)
	bc.ws.Close()
	b2 := connectWhenKnown(t, back.h, bob)
	b2.expectSilence(500 * time.Millisecond)
	ack := a2.sendAck(dm(t, alice, bob.pub(), "after the restart"))
	if ack.Error != nil {
		t.Fatalf("ack %+v", ack.Error)
	}
	if p := b2.nextPush(); p.MessageID != ack.MessageID || openPush(t, &p, bob) != "after the restart" {
		t.Fatalf("bob on the restarted node got %+v", p)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
