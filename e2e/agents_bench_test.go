package e2e

// Measurements of issue 7 for BENCHMARKS.md, run on demand:
//
//	CLAUDEMESH_AGENT_BENCH=1 go test ./e2e/ -run TestAgentMeasurements -v -count=1
//
// They print numbers and assert nothing about time (a loaded machine must
// not fail CI); without the variable the test is skipped.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
)

func pctl(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func rssKB(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return -1
}

func TestAgentMeasurements(t *testing.T) {
	if os.Getenv("CLAUDEMESH_AGENT_BENCH") == "" {
		t.Skip("measurements for BENCHMARKS.md; set CLAUDEMESH_AGENT_BENCH=1")
	}
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	bob.startDaemon()
	alice.waitDaemonOpen()
	bob.waitDaemonOpen()
	ctx := context.Background()
	aapi := localapi.New(localapi.SocketPath(alice.home))
	bapi := localapi.New(localapi.SocketPath(bob.home))
	me := os.Getpid()
	register := func(id string) (*localapi.Client, localapi.Session) {
		tok := cmcrypto.RandomHex32()
		var s localapi.Session
		if _, err := aapi.Do(ctx, "POST", "/v1/sessions/register", localapi.SessionRegister{Token: tok, SessionID: id, DisplayName: id, PID: me}, &s); err != nil {
			t.Fatal(err)
		}
		c := localapi.New(localapi.SocketPath(alice.home))
		c.SessionToken = tok
		return c, s
	}

	// 1. Register → visible to a sibling session in peer list.
	sibling, _ := register("sibling")
	var vis []time.Duration
	for i := 0; i < 50; i++ {
		start := time.Now()
		_, s := register(fmt.Sprintf("s%02d", i))
		for {
			var peers []localapi.Peer
			sibling.Do(ctx, "GET", "/v1/peers", nil, &peers)
			if slices.ContainsFunc(peers, func(p localapi.Peer) bool { return p.Pubkey == s.Pubkey && p.Online }) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		vis = append(vis, time.Since(start))
	}
	t.Logf("register → visible to a sibling: p50 %s p99 %s (n=%d)", pctl(vis, .5), pctl(vis, .99), len(vis))
	t.Logf("daemon RSS with %d registered sessions: %d KiB", 51, rssKB(daemonPID(t, alice)))

	// 2. Send → notification written by claudemesh mcp.
	_, capture, _ := startMCP(t, alice)
	welcome := capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	key := welcome.Meta["pubkey"]
	var lat []time.Duration
	for i := 0; i < 100; i++ {
		text := fmt.Sprintf("ping %d", i)
		start := time.Now()
		if _, err := bapi.Send(ctx, localapi.SendRequest{To: key, Message: text}); err != nil {
			t.Fatal(err)
		}
		n := capture.waitNote(text, func(n channelNote) bool { return strings.HasSuffix(n.Content, ": "+text) })
		lat = append(lat, n.At.Sub(start))
	}
	t.Logf("send (bob's daemon API) → notifications/claude/channel read from claudemesh mcp's stdout: p50 %s p99 %s (n=%d)",
		pctl(lat, .5), pctl(lat, .99), len(lat))

	// 3. hook, the whole process.
	var hooks []time.Duration
	for i := 0; i < 30; i++ {
		cmd := exec.Command(bin, "--home", alice.home, "hook", "idle")
		cmd.Env = alice.env()
		cmd.Stdin = strings.NewReader(`{"session_id":"s00","hook_event_name":"Stop"}`)
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		hooks = append(hooks, time.Since(start))
	}
	t.Logf("claudemesh hook idle, whole process: p50 %s p99 %s (n=%d)", pctl(hooks, .5), pctl(hooks, .99), len(hooks))
	_ = filepath.Join
}
