package broker

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/wire"
)

// noExemption makes the per-address limits apply to loopback, where the
// tests' clients are.
func noExemption(c *Config) { c.IPLimitExempt = []netip.Prefix{} }

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	// A deadline, not a duration: generous for a loaded machine.
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rawHTTP sends one request on an open TCP connection and returns the
// response (read within expectWithin).
func rawHTTP(t *testing.T, nc net.Conn, req string) *http.Response {
	t.Helper()
	nc.SetDeadline(time.Now().Add(expectWithin))
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatalf("no answer to %q: %v", strings.SplitN(req, "\r\n", 2)[0], err)
	}
	resp.Body.Close()
	return resp
}

func tcpDial(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

const getHealth = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

// tcpDialStarted opens a connection that has begun a request ("GET "), so
// the kernel hands it to the broker (--defer-accept keeps one that has
// sent nothing out of its sight); restOfGetHealth completes it.
func tcpDialStarted(t *testing.T, addr string) net.Conn {
	t.Helper()
	nc := tcpDial(t, addr)
	if _, err := nc.Write([]byte("GET ")); err != nil {
		t.Fatal(err)
	}
	return nc
}

const restOfGetHealth = "/health HTTP/1.1\r\nHost: x\r\n\r\n"

// TestConnectionsPerAddressCapped: one address can hold only
// --max-conns-per-ip connections that are not authenticated WebSockets
// (5,000 idle keep-alive connections from one stranger used to be held
// indefinitely); the next one is answered 429 with Retry-After, a closed one
// frees its place, and members' authenticated connections do not count.
func TestConnectionsPerAddressCapped(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { noExemption(c); c.MaxConnsPerIP = 3 })
	alice := createMesh(t, b, "team", "alice")
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "set-up connections to close", func() bool { n, _ := b.admit.connsOpen(); return n == 0 })

	// Authenticated WebSockets stop counting once their hello is accepted.
	for range 4 {
		connect(t, b, alice, true, nil)
	}
	// Each is released just after its hello_ack is written, so wait for
	// that before counting: a WebSocket still counted here would take an
	// idle connection's place and be released later, off by one.
	waitFor(t, "the WebSockets to stop counting", func() bool { n, _ := b.admit.connsOpen(); return n == 0 })
	idle := []net.Conn{tcpDialStarted(t, b.Addr()), tcpDialStarted(t, b.Addr()), tcpDialStarted(t, b.Addr())}
	waitFor(t, "three counted connections", func() bool { n, _ := b.admit.connsOpen(); return n == 3 })

	over := tcpDial(t, b.Addr())
	resp := rawHTTP(t, over, getHealth)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("fourth connection: %d %v", resp.StatusCode, resp.Header)
	}
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip"); got < 1 {
		t.Fatalf("metric %v", got)
	}

	idle[0].Close()
	waitFor(t, "the closed connection to be released", func() bool { n, _ := b.admit.connsOpen(); return n == 2 })
	if resp := rawHTTP(t, tcpDial(t, b.Addr()), getHealth); resp.StatusCode != http.StatusOK {
		t.Fatalf("after a close: %d", resp.StatusCode)
	}
}

// TestConnectionsOverTheCapAreBounded: a connection over
// --max-conns-per-ip is held for up to a second to be told 429, but only
// --max-refusals-per-ip of them per address at a time; the rest are closed
// as they are accepted. Before, a stranger opening connections in a loop
// held every one of them (a file descriptor and a goroutine each) for its
// second, however fast it dialled.
func TestConnectionsOverTheCapAreBounded(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { noExemption(c); c.MaxConnsPerIP = 2; c.MaxRefusalsPerIP = 3 })
	// Held refusals must not time out while the test dials, however slow
	// the machine: it would free their places for later connections.
	b.admit.refusalGrace = time.Minute
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "set-up connections to close", func() bool { n, _ := b.admit.connsOpen(); return n == 0 })
	tcpDialStarted(t, b.Addr())
	tcpDialStarted(t, b.Addr())
	waitFor(t, "two counted connections", func() bool { n, _ := b.admit.connsOpen(); return n == 2 })

	const extra = 20
	var over []net.Conn
	for range extra {
		over = append(over, tcpDialStarted(t, b.Addr()))
	}
	waitFor(t, "every connection accepted", func() bool {
		return counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip")+
			counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip_cut") == extra
	})
	if got := b.admit.refusalsOpen(); got != 3 {
		t.Fatalf("%d over-cap connections held, want 3", got)
	}
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip_cut"); got != extra-3 {
		t.Fatalf("%v connections cut, want %d", got, extra-3)
	}
	// The held ones hear why; the others were closed unanswered.
	answered := 0
	for _, nc := range over {
		// The cut ones end at once; a held one's answer must come.
		nc.SetDeadline(time.Now().Add(expectWithin))
		nc.Write([]byte(restOfGetHealth))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("an over-cap connection was answered %d", resp.StatusCode)
		}
		answered++
	}
	if answered != 3 {
		t.Fatalf("%d over-cap connections answered 429, want 3", answered)
	}
	waitFor(t, "the refusals to end", func() bool { return b.admit.refusalsOpen() == 0 })
}

// TestNoRefusalCapAnswersEveryConnectionOverTheCap: --max-refusals-per-ip
// 0 quietly meant the default, 8, where 0 of the per-address caps beside
// it (--max-conns-per-ip, --handshake-failure-rate) turns the cap off. It
// is unlimited now: every connection over --max-conns-per-ip is held to
// hear its 429, none is cut unanswered.
func TestNoRefusalCapAnswersEveryConnectionOverTheCap(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { noExemption(c); c.MaxConnsPerIP = 2; c.MaxRefusalsPerIP = 0 })
	b.admit.refusalGrace = time.Minute
	http.DefaultClient.CloseIdleConnections()
	waitFor(t, "set-up connections to close", func() bool { n, _ := b.admit.connsOpen(); return n == 0 })
	tcpDialStarted(t, b.Addr())
	tcpDialStarted(t, b.Addr())
	waitFor(t, "two counted connections", func() bool { n, _ := b.admit.connsOpen(); return n == 2 })

	const extra = 12
	var over []net.Conn
	for range extra {
		over = append(over, tcpDialStarted(t, b.Addr()))
	}
	waitFor(t, "every connection accepted", func() bool {
		return counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip")+
			counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip_cut") == extra
	})
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "conns_per_ip_cut"); got != 0 {
		t.Fatalf("%v connections cut unanswered with --max-refusals-per-ip 0", got)
	}
	for i, nc := range over {
		nc.SetDeadline(time.Now().Add(expectWithin))
		nc.Write([]byte(restOfGetHealth))
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			t.Fatalf("over-cap connection %d got no answer: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("an over-cap connection was answered %d", resp.StatusCode)
		}
	}
}

// TestIdleAndSlowHTTPConnectionsAreCut: an idle keep-alive connection is
// closed after --http-idle-timeout, and a request body that does not arrive
// within --http-read-timeout is answered and cut (a slow /v1/join body used
// to be held for over a minute).
func TestIdleAndSlowHTTPConnectionsAreCut(t *testing.T) {
	t.Parallel()
	// Timeouts long enough that a loaded machine reads a prompt request
	// well within them (300 ms cut the first request itself at load 40),
	// and far below the 10 s the checks below wait.
	b := startBroker(t, func(c *Config) {
		c.HTTPIdleTimeout = time.Second
		c.HTTPReadTimeout = 2 * time.Second
	})
	idle := tcpDial(t, b.Addr())
	if resp := rawHTTP(t, idle, getHealth); resp.StatusCode != http.StatusOK {
		t.Fatalf("health %d", resp.StatusCode)
	}
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("idle keep-alive connection still open: %v", err)
	}

	slow := tcpDial(t, b.Addr())
	slow.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(slow, "POST /v1/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"token\":")
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("slow body answered %d", resp.StatusCode)
		}
	} else if isTimeout(err) {
		t.Fatal("a slow body held the connection past the read timeout")
	}
}

// TestStreamingResponsesOutliveTheTimeouts: the guard applies to every
// route, so a route that streams (Server-Sent Events, as the bot API's topic
// stream does) must not be cut by the read or write timeout while it keeps
// writing.
func TestStreamingResponsesOutliveTheTimeouts(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.HTTPReadTimeout, cfg.HTTPWriteTimeout = 150*time.Millisecond, 150*time.Millisecond
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	const events = 8
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(60 * time.Millisecond)
		defer tick.Stop()
		for i := range events {
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
			fmt.Fprintf(w, "data: %d\n\n", i)
			http.NewResponseController(w).Flush()
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := b.newHTTPServer(mux)
	go srv.Serve(&listener{Listener: ln, a: b.admit})
	t.Cleanup(func() { srv.Close() })

	resp, err := http.Get("http://" + ln.Addr().String() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	got := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "data: ") {
			got++
		}
	}
	if got != events {
		t.Fatalf("stream delivered %d of %d events (%v)", got, events, sc.Err())
	}
}

// dialFrom opens a WebSocket to b from a given loopback source address
// (Linux routes all of 127/8 to lo), so a test can play several networks.
func dialFrom(t *testing.T, b *Broker, src string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		return nd.Dial(network, addr)
	}}
	ws, resp, err := d.Dial(b.URL(), nil)
	if err != nil && errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Skipf("cannot bind %s: %v", src, err)
	}
	if ws != nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// TestHandshakeSlotsAreSharedAcrossNetworks: addresses of one network that
// open upgrades and never say hello cannot take every handshake slot; a
// client from another network still gets one and authenticates (45
// addresses used to hold all 1,024 slots, and CLIs got 503).
func TestHandshakeSlotsAreSharedAcrossNetworks(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("needs loopback source addresses beyond 127.0.0.1")
	}
	b := startBroker(t, func(c *Config) {
		noExemption(c)
		c.MaxHandshakes, c.MaxHandshakesPerIP = 8, 8
		c.HelloTimeout = 10 * time.Second
	})
	alice := createMesh(t, b, "team", "alice")
	held := 0
	for i := 1; i <= 4; i++ { // four attacking addresses of 127.0.2.0/24
		for {
			ws, resp, err := dialFrom(t, b, fmt.Sprintf("127.0.2.%d", i))
			if err != nil {
				if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("refusal: %v %v", resp, err)
				}
				break
			}
			_ = ws
			held++
		}
	}
	if held >= 8 || held == 0 {
		t.Fatalf("one network holds %d of 8 handshake slots", held)
	}
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "handshakes_per_network"); got < 1 {
		t.Fatalf("metric %v", got)
	}
	ws, _, err := dialFrom(t, b, "127.0.3.1")
	if err != nil {
		t.Fatalf("another network is locked out: %v", err)
	}
	r := &rawConn{t: t, ws: ws, b: b, frames: make(chan []byte, 100), readErrCh: make(chan error, 1)}
	go r.pump()
	if err := wire.Decode(r.read(), &r.challenge); err != nil {
		t.Fatal(err)
	}
	r.hello(alice, nil)
}

func TestAddressKeys(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, host, net string }{
		{"203.0.113.9:443", "203.0.113.9", "203.0.113.0/24"},
		{"[::ffff:203.0.113.9]:443", "203.0.113.9", "203.0.113.0/24"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64", "2001:db8:1::/48"},
		{"[2001:db8:1:2:ffff::1]:1", "2001:db8:1:2::/64", "2001:db8:1::/48"},
	} {
		a := addrOf(tc.in)
		if hostKey(a) != tc.host || netKey(a) != tc.net {
			t.Errorf("%s: host %s net %s", tc.in, hostKey(a), netKey(a))
		}
	}
}
