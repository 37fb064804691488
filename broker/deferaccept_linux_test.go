package broker

import (
	"net/http"
	"testing"
	"time"
)

// TestIdleConnectionsStayInTheKernel: with --defer-accept a connection
// that has sent nothing never reaches the broker, so it holds no place of
// its address's --max-conns-per-ip (before, a stranger's idle connections
// were accepted, counted and, over the cap, cut in a loop: bench
// --adversary's idle attack, 15,000-40,000 accepts a run). Without it the
// same idle connection takes the only place and the next request is
// answered 429: the control that shows the check can fail.
func TestIdleConnectionsStayInTheKernel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		deferAccept time.Duration
		want        int
	}{{0, http.StatusTooManyRequests}, {10 * time.Second, http.StatusOK}} {
		b := startBroker(t, func(c *Config) {
			noExemption(c)
			c.MaxConnsPerIP = 1
			c.DeferAccept = tc.deferAccept
		})
		http.DefaultClient.CloseIdleConnections()
		waitFor(t, "set-up connections to close", func() bool { n, _ := b.admit.connsOpen(); return n == 0 })
		// Its handshake completes before the next one's, so without
		// --defer-accept the broker accepts (and counts) it first.
		tcpDial(t, b.Addr())
		if resp := rawHTTP(t, tcpDial(t, b.Addr()), getHealth); resp.StatusCode != tc.want {
			t.Fatalf("--defer-accept %s: a request beside an idle connection was answered %d, want %d",
				tc.deferAccept, resp.StatusCode, tc.want)
		}
	}
}
