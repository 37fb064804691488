package broker

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/gorilla/websocket"
)

// TestClientAddrReadsTrustedProxiesFromTheRight: X-Forwarded-For is
// believed only from a trusted proxy, read from its right end, and never
// past the first address that is not a trusted proxy, so what a client
// writes into the header itself (its left part) is never read.
func TestClientAddrReadsTrustedProxiesFromTheRight(t *testing.T) {
	b := &Broker{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.0.0.0/8")}}}
	for _, tc := range []struct {
		peer      string
		xff       []string
		want      string
		forwarded bool
	}{
		{"127.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7", true},
		{"127.0.0.1:5000", []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7", true},             // the client's own entry is left of the proxy's
		{"127.0.0.1:5000", []string{"198.51.100.1, 203.0.113.7, 10.1.2.3"}, "203.0.113.7", true},   // through a second trusted proxy
		{"127.0.0.1:5000", []string{"198.51.100.1", "203.0.113.7, 10.1.2.3"}, "203.0.113.7", true}, // across header lines
		{"127.0.0.1:5000", []string{"[2001:db8::1]:443"}, "2001:db8::1", true},                     // with a port
		{"127.0.0.1:5000", []string{"198.51.100.1, unknown"}, "127.0.0.1", false},                  // not an address: the proxy's own
		{"127.0.0.1:5000", nil, "127.0.0.1", false},                                                // no header
		{"127.0.0.1:5000", []string{"10.1.2.3"}, "127.0.0.1", false},                               // only proxies
		{"192.0.2.9:5000", []string{"203.0.113.7"}, "192.0.2.9", false},                            // an untrusted peer's header is ignored
	} {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.RemoteAddr = tc.peer
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		got, fwd := b.clientAddr(r)
		if got.String() != tc.want || fwd != tc.forwarded {
			t.Errorf("peer %s, X-Forwarded-For %q: %s (forwarded %v), want %s (%v)", tc.peer, tc.xff, got, fwd, tc.want, tc.forwarded)
		}
	}
}

// dialVia upgrades to the broker as a trusted proxy would forward a
// client at xff, and returns the connection or the refused response.
func dialVia(t *testing.T, b *Broker, xff string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(b.URL(), http.Header{"X-Forwarded-For": {xff}})
	if err == nil {
		t.Cleanup(func() { ws.Close() })
	}
	return ws, resp, err
}

// failHandshakeVia opens a forwarded handshake for xff that the broker
// refuses (a frame other than the hello) and reads until it closes.
func failHandshakeVia(t *testing.T, b *Broker, xff string) {
	t.Helper()
	ws, _, err := dialVia(t, b, xff)
	if err != nil {
		t.Fatal(err)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"list_peers","reqId":"x"}`))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return // refused no_hello and closed
		}
	}
}

// TestTrustedProxyClientsAreLimitedApart: behind a reverse proxy on the
// broker's host (loopback, exempt), the per-address limits apply to the
// client the proxy names: one client at --max-handshakes-per-ip is
// refused while another is upgraded, and one whose handshakes keep
// failing is held back alone. Without --trusted-proxies the header is
// ignored and every client is the exempt proxy: the control.
func TestTrustedProxyClientsAreLimitedApart(t *testing.T) {
	t.Parallel()
	for _, trusted := range []bool{false, true} {
		b := startBroker(t, func(c *Config) {
			c.MaxHandshakesPerIP = 1
			c.HandshakeFailureRate, c.HandshakeFailureBurst = 0.001, 1
			if trusted {
				c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}
		})
		// A handshake that holds its slot (no hello yet).
		if _, _, err := dialVia(t, b, "203.0.113.7"); err != nil {
			t.Fatal(err)
		}
		_, resp, err := dialVia(t, b, "203.0.113.7")
		if !trusted {
			if err != nil {
				t.Fatalf("untrusted header: a second handshake refused: %v", err)
			}
			continue
		}
		if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("the same client's second handshake: %v %+v", err, resp)
		}
		if _, _, err := dialVia(t, b, "203.0.113.8"); err != nil {
			t.Fatalf("another client behind the same proxy: %v", err)
		}

		// A failed handshake from a third client holds that client back.
		failHandshakeVia(t, b, "198.51.100.5")
		waitFor(t, "the failure to count against the client", func() bool {
			tokens := b.admit.strikeTokens("198.51.100.5")
			return tokens >= 0 && tokens < 1
		})
		_, resp, err = dialVia(t, b, "198.51.100.5")
		if !errors.Is(err, websocket.ErrBadHandshake) || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a held-back client's handshake: %v %+v", err, resp)
		}
		if got := counterValue(t, b, "claudemesh_limits_tripped_total", "handshake_failures_per_ip"); got != 1 {
			t.Fatalf("metric %v", got)
		}
		if b.admit.strikeTokens("127.0.0.1") != -1 {
			t.Fatal("the proxy's own address was struck")
		}
		if _, _, err := dialVia(t, b, "203.0.113.9"); err != nil {
			t.Fatalf("a fresh client behind the proxy: %v", err)
		}
	}
}

// TestExemptClientBehindAProxyStrikesNobody: a forwarded client in
// --ip-limit-exempt whose handshakes fail is not held back, and neither
// is the proxy (trusted, not exempt: on another host): its failures were
// once charged to the proxy's address, which then held back every client
// behind it at accept.
func TestExemptClientBehindAProxyStrikesNobody(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) {
		c.IPLimitExempt = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.HandshakeFailureRate, c.HandshakeFailureBurst = 0.001, 1
	})
	for range 2 {
		failHandshakeVia(t, b, "198.51.100.5")
	}
	if got := b.admit.strikeTokens("127.0.0.1"); got != -1 {
		t.Fatalf("the proxy's address was struck (%v tokens left)", got)
	}
	if _, _, err := dialVia(t, b, "203.0.113.9"); err != nil {
		t.Fatalf("another client behind the proxy: %v", err)
	}
}

// TestProxyAddressesMatchAsWritten: an IPv4-mapped prefix and a zoned
// link-local peer are compared as the plain addresses they stand for
// (they never matched: addresses are compared unmapped).
func TestProxyAddressesMatchAsWritten(t *testing.T) {
	ps, err := parsePrefixes("::ffff:127.0.0.1/128, ::ffff:10.0.0.0/104, fe80::1")
	if err != nil {
		t.Fatal(err)
	}
	b := &Broker{cfg: Config{TrustedProxies: ps}}
	for _, peer := range []string{"127.0.0.1:1", "10.9.8.7:1", "[fe80::1%eth0]:1"} {
		r := httptest.NewRequest(http.MethodGet, "/ws", nil)
		r.RemoteAddr = peer
		r.Header.Set("X-Forwarded-For", "203.0.113.7")
		if got, fwd := b.clientAddr(r); !fwd || got.String() != "203.0.113.7" {
			t.Errorf("peer %s in %v: %s (forwarded %v)", peer, ps, got, fwd)
		}
	}
}
