package e2e

import (
	"net"
	"testing"
	"time"
)

// A broker started again on its address while something else holds the
// port (a parallel test's connection got it as its source port) exited
// with "address already in use", and the test failed with it. startBroker
// starts it again once the port is free.
func TestBrokerRestartWaitsForItsPort(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	addr, data := b.addr, b.data
	b.kill()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken before the test took it: %v", err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(time.Second) // the other holder lets go a moment later
		ln.Close()
	}()
	b = startBroker(t, data, addr)
	<-released
	if b.addr != addr {
		t.Fatalf("the broker listens on %s, not %s", b.addr, addr)
	}
}
