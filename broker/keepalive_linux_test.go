package broker

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestAcceptedConnectionsHaveNoKeepAlive: the broker's own listener turns
// TCP keep-alive off (listen), so an accepted connection, counted or cut
// by the per-address cap, costs no setsockopt calls for it. The kernel
// shows an armed keep-alive timer as "tr" 2 in /proc/net/tcp.
func TestAcceptedConnectionsHaveNoKeepAlive(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.Listen = "127.0.0.1:0" })
	nc := tcpDial(t, b.Addr())
	local := nc.LocalAddr().(*net.TCPAddr)
	server := b.ln.Addr().(*net.TCPAddr)
	// Answered, so accepted: the listener has done all it does to it.
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := nc.Write([]byte(getHealth)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	timer := func() string {
		raw, err := os.ReadFile("/proc/net/tcp")
		if err != nil {
			t.Skipf("no /proc/net/tcp: %v", err)
		}
		want := fmt.Sprintf("0100007F:%04X 0100007F:%04X", server.Port, local.Port)
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 5 && f[1]+" "+f[2] == want {
				return strings.SplitN(f[5], ":", 2)[0]
			}
		}
		return ""
	}
	waitFor(t, "the broker's side of the connection in /proc/net/tcp", func() bool { return timer() != "" })
	if tr := timer(); tr != "00" {
		t.Fatalf("the broker's side of an accepted connection has timer %q, want none (00): keep-alive is on", tr)
	}
}
