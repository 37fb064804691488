package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
)

// TestClusterFailover: three broker processes form a cluster that announces
// its three public URLs (--public-urls). A mesh created on the first node
// carries them into config.json, the invite and the joiner's config. With
// both daemons connected to the first node, it is killed (kill -9): each
// daemon is back on another node (the time it took is logged; `claudemesh
// bench --cluster 3 --failover` measures it), a member without a daemon
// reaches the mesh through the other URLs, and every message accepted
// before, during and after the fail-over reaches its recipient exactly
// once, and those one sender sent one after the other in that order.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three broker processes")
	}
	t.Parallel()
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	nodes, urls := startFailoverNodes(t, key)
	a := nodes[0]

	alice, bob, carol := newUser(t, "alice"), newUser(t, "bob"), newUser(t, "carol")
	alice.createMesh(a, "Failover", "fo")
	var list []struct {
		BrokerURL  string   `json:"brokerUrl"`
		BrokerURLs []string `json:"brokerUrls"`
	}
	alice.json(&list, "mesh", "list")
	if len(list) != 1 || list[0].BrokerURL != urls[0] || !slices.Equal(list[0].BrokerURLs, urls) {
		t.Fatalf("mesh list after create: %+v, want brokerUrls %v", list, urls)
	}
	link := alice.invite("--uses", "8").Link
	inv, _, err := cmcrypto.ParseInvite(link)
	if err != nil || inv.Verify() != nil || !slices.Equal(inv.BrokerURLs, urls) {
		t.Fatalf("invite: %+v %v, want brokerUrls %v", inv, err, urls)
	}
	bob.join(link)
	carol.join(link)
	var joined []struct {
		BrokerURLs []string `json:"brokerUrls"`
	}
	bob.json(&joined, "mesh", "list")
	if len(joined) != 1 || !slices.Equal(joined[0].BrokerURLs, urls) {
		t.Fatalf("bob's mesh list: %+v", joined)
	}

	// The daemons reconnect on the product's own schedule (the harness
	// shrinks it to 200 ms for every other test): the time logged below is
	// what users get. It is not bounded here: each pass's wait is drawn
	// from [0, 1 s], [0, 2 s], [0, 4 s]... (client.FailoverBackoff), and
	// the passes a loaded machine needs while the cluster moves the dead
	// node's leaderships are not the product's to decide.
	for _, u := range []*user{alice, bob} {
		u.extraEnv = append(u.extraEnv, "CLAUDEMESH_BACKOFF_MAX=30s")
	}
	alice.startDaemon()
	bob.startDaemon()
	alice.waitDaemonOpen()
	bob.waitDaemonOpen()
	for _, u := range []*user{alice, bob} {
		if on := u.presenceURLs(); len(on) == 0 || on[len(on)-1].url != urls[0] {
			t.Fatalf("%s's daemon is not on the first node: %+v", u.name, on)
		}
	}

	const before, during = 10, 60
	sendMany(t, alice, "bob", "before", before)
	killed := time.Now()
	a.kill()
	// Sent while both daemons move to another node (each is a CLI
	// process, so they span the fail-over and what follows it), one
	// after the other: they must reach bob in this order, though the
	// daemon pipelines them to a node that refuses some (`unavailable`)
	// while it takes over.
	for i := range during {
		r := alice.run("send", "bob", fmt.Sprintf("during %d", i), "--json")
		var out sendOut
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || out.Via != "daemon" || out.Status != "accepted" {
			t.Fatalf("send through the daemon: %s", r)
		}
	}

	// Each daemon logs its presence open on another node; the time is
	// the daemon's own clock, the kill's the test's (same machine).
	for _, u := range []*user{alice, bob} {
		var back presenceOpen
		eventually(t, time.Minute, u.name+"'s daemon on another node", func() bool {
			on := u.presenceURLs()
			if len(on) > 0 && on[len(on)-1].url != urls[0] && on[len(on)-1].at.After(killed) {
				back = on[len(on)-1]
				return true
			}
			return false
		})
		t.Logf("%s's daemon back on %s %s after the kill", u.name, back.url, back.at.Sub(killed).Round(time.Millisecond))
	}

	// A join with the same invite, whose signed brokerUrl is the dead
	// node: it goes on to the other URLs the invite lists. Until the
	// cluster has moved the dead node's leaderships the enrollment may be
	// refused `unavailable` (exit 5); each try is a new identity (a new
	// key), so it gets a name of its own.
	var dave *user
	tries := 0
	eventually(t, 30*time.Second, "a join through another node", func() bool {
		tries++
		u := newUser(t, fmt.Sprintf("dave%d", tries))
		r := u.run("join", link, "--name", u.name, "--json")
		if r.code == 0 {
			dave = u
			return true
		}
		if r.code != 5 || !strings.Contains(r.stdout, `"unavailable"`) {
			t.Fatalf("join with the first node down: %s", r)
		}
		return false
	})
	var daves []struct {
		BrokerURL  string   `json:"brokerUrl"`
		BrokerURLs []string `json:"brokerUrls"`
	}
	dave.json(&daves, "mesh", "list")
	// The answering node lists itself first; the signed URL stays first.
	if len(daves) != 1 || daves[0].BrokerURL != urls[0] || len(daves[0].BrokerURLs) != 3 || daves[0].BrokerURLs[0] != urls[0] ||
		!slices.Equal(slices.Sorted(slices.Values(daves[0].BrokerURLs)), slices.Sorted(slices.Values(urls))) {
		t.Fatalf("%s's mesh list after joining through another node: %+v, want brokerUrl %s and brokerUrls %v",
			dave.name, daves, urls[0], urls)
	}

	// A one-shot verb without a daemon: carol's config names the dead node
	// first; the direct transport goes on to the others. While the
	// cluster moves the dead node's leaderships a write is refused
	// `unavailable`: before the send, nothing was sent (exit 5); the
	// send itself may still be stored (outcome_unknown, exit 8), and the
	// error says to retry with the same id, which is what carol does.
	eventually(t, 30*time.Second, "carol's direct send", func() bool {
		r := carol.run("send", "bob", "from carol", "--id", "carol-1", "--json")
		var sent sendOut
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &sent) == nil && sent.Via == "direct" {
			return true
		}
		if !(r.code == 5 && strings.Contains(r.stdout, `"unavailable"`)) && !(r.code == 8 && strings.Contains(r.stdout, `"outcome_unknown"`) && strings.Contains(r.stdout, "(unavailable:")) {
			t.Fatalf("carol's direct send: %s", r)
		}
		return false
	})

	var rows []inboxRow
	eventually(t, 60*time.Second, "every message in bob's inbox", func() bool {
		rows = bob.inbox()
		return len(rows) >= before+during+1
	})
	var fromAlice []inboxRow
	carolGot := 0
	for _, row := range rows {
		if row.body() == "from carol" {
			carolGot++
		} else {
			fromAlice = append(fromAlice, row)
		}
	}
	if carolGot != 1 {
		t.Fatalf("carol's message arrived %d times", carolGot)
	}
	var pre, mid []inboxRow
	for _, row := range fromAlice {
		if strings.HasPrefix(row.body(), "before ") {
			pre = append(pre, row)
		} else {
			mid = append(mid, row)
		}
	}
	expectExactlyOnce(t, pre, "before", before)
	expectExactlyOnce(t, mid, "during", during)
	inOrder := 0
	for i, row := range mid {
		if row.body() == fmt.Sprintf("during %d", i) {
			inOrder++
		}
	}
	if inOrder != during {
		t.Errorf("bob's inbox holds %d of alice's %d messages sent during the fail-over at their place in send order: %q",
			inOrder, during, bodies(mid))
	}
	var st daemonStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = alice.daemonStatus()
		if st.Outbox.Pending+st.Outbox.Inflight+st.Outbox.Queued+st.Outbox.Sent == 0 && st.Outbox.Dead == 0 {
			break
		}
		if time.Now().After(deadline) {
			r := alice.ok("daemon", "outbox", "list", "--json")
			t.Fatalf("alice's outbox not all delivered after 30 s: %+v\n%s", st.Outbox, r.stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// presenceOpen is a "broker presence" open line of a daemon's log.
type presenceOpen struct {
	at  time.Time
	url string
}

// presenceURLs reads the daemon log's presence-open lines of u's mesh
// connection, oldest first.
func (u *user) presenceURLs() []presenceOpen {
	u.t.Helper()
	data, err := os.ReadFile(filepath.Join(u.home, "daemon", "daemon.log"))
	if err != nil {
		return nil
	}
	var out []presenceOpen
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Time  time.Time `json:"time"`
			Msg   string    `json:"msg"`
			State string    `json:"state"`
			URL   string    `json:"url"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "broker presence" && l.State == "open" && l.URL != "" {
			out = append(out, presenceOpen{at: l.Time, url: l.URL})
		}
	}
	return out
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

// ready waits up to d for the node's /health/ready (a quorum of the
// cluster answers).
func ready(b *brokerProc, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + b.addr + "/health/ready")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return true
		}
	}
	return false
}

// startFailoverNodes starts the three nodes of TestClusterFailover, each
// with the broker key, and waits until all are ready. A route port free
// a moment ago can be taken before NATS binds it (a parallel test's
// connection gets it as its source port); the node then exits with "did
// not start", and the cluster, new, is started again on fresh ports. So
// it is when a node exits because no cluster formed within its minute (a
// loaded machine): the nodes' service managers would start them again.
func startFailoverNodes(t *testing.T, key *cmcrypto.Identity) ([]*brokerProc, []string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		nodes, urls, failed := startFailoverNodesOnce(t, key)
		if failed == "" {
			return nodes, urls
		}
		for _, n := range nodes {
			n.kill()
		}
		if attempt == 3 || !strings.Contains(failed, "did not start") && !strings.Contains(failed, "no cluster formed") {
			t.Fatal(failed)
		}
		t.Logf("the cluster did not start; again on fresh ports:\n%s", failed)
	}
}

// startFailoverNodesOnce returns the nodes and their public URLs, or what
// went wrong with every node's log.
func startFailoverNodesOnce(t *testing.T, key *cmcrypto.Identity) ([]*brokerProc, []string, string) {
	t.Helper()
	var listens, routes, urls []string
	for range 3 {
		listens = append(listens, freeAddr(t))
		routes = append(routes, freeAddr(t))
	}
	for _, l := range listens {
		urls = append(urls, "ws://"+l+"/ws")
	}
	nodes := make([]*brokerProc, 3)
	for i := range 3 {
		data := filepath.Join(t.TempDir(), fmt.Sprintf("n%d", i+1))
		if err := os.MkdirAll(data, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(data, "broker.key"), []byte(key.SecretKeyHex()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		nodes[i] = spawnBroker(t, data, listens[i], "--cluster", "fo", "--node", fmt.Sprintf("n%d", i+1),
			"--cluster-listen", routes[i], "--cluster-routes", strings.Join(routes, ","),
			"--public-url", urls[i], "--public-urls", strings.Join(urls, ","))
	}
	// Every node's log when one does not come up: the cause is often in
	// another's (a port taken meanwhile, a route refused).
	allLogs := func() string {
		var b strings.Builder
		for i, n := range nodes {
			select {
			case <-n.done:
				fmt.Fprintf(&b, "--- node %d (exited) ---\n%s", i+1, n.log())
			default:
				fmt.Fprintf(&b, "--- node %d ---\n%s", i+1, n.log())
			}
		}
		return b.String()
	}
	for i, n := range nodes {
		select {
		case l := <-n.ready:
			n.addr, n.url, n.pubkey = l.Addr, l.PublicURL, l.BrokerPubkey
		case <-n.done:
			return nodes, urls, fmt.Sprintf("node %d exited before listening:\n%s", i+1, allLogs())
		case <-time.After(90 * time.Second):
			return nodes, urls, fmt.Sprintf("node %d did not start listening:\n%s", i+1, allLogs())
		}
	}
	for i, n := range nodes {
		if !ready(n, 90*time.Second) {
			return nodes, urls, fmt.Sprintf("node %d never ready:\n%s", i+1, allLogs())
		}
	}
	return nodes, urls, ""
}
