package client

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDialEndsWhenItsContextIsCancelled: a broker that takes the TCP
// connection and never answers the WebSocket upgrade held a cancelled Dial
// for the whole handshake timeout (gorilla's dial honours only its
// deadline): a presence closed meanwhile (launch ending a session while
// the broker hangs) waited 15 s. It now ends at the cancellation.
func TestDialEndsWhenItsContextIsCancelled(t *testing.T) {
	t.Parallel()
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	f := newFakeBroker(t)
	id := f.identity(t)
	id.BrokerURL = "ws://" + hung.Addr().String() + "/ws"
	for _, coalesce := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := Dial(ctx, id, DialOptions{HandshakeTimeout: time.Hour, CoalesceWrites: coalesce})
			done <- err
		}()
		c := <-accepted
		// Once the upgrade request is here, the dial waits for the answer.
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			t.Fatal(err)
		}
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a dial to a hung server succeeded")
			}
		case <-time.After(time.Minute):
			t.Fatalf("coalesce %v: the dial did not end at its cancellation", coalesce)
		}
		c.Close()
	}
}

// TestAShortBudgetIsNotTheBrokersSilence: any deadline of the caller's
// context became "the broker … is connected but did not answer in time: it
// is hung or overloaded", also when the deadline bounded a whole
// operation of many requests and ran out during the last one, which the
// broker would have answered at once. Only a request that waited long
// blames the broker.
func TestAShortBudgetIsNotTheBrokersSilence(t *testing.T) {
	t.Parallel()
	f := newFakeBroker(t) // answers nothing after hello_ack
	c := mustDial(t, testCtx(t), f.identity(t), DialOptions{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.MessageStatus(ctx, NewID(), "")
	if err == nil || strings.Contains(err.Error(), "hung or overloaded") {
		t.Errorf("a request with 100 ms left: %v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), blameAfter+500*time.Millisecond)
	defer cancel()
	_, err = c.MessageStatus(ctx, NewID(), "")
	if e := wantCode(t, err, CodeTimeout); !strings.Contains(e.Message, "hung or overloaded") {
		t.Errorf("a request that waited %v: %v", blameAfter, err)
	}
}

// TestDialThroughAHungProxySaysProxy: with HTTPS_PROXY set, the
// connection the dial makes is to the proxy, and a proxy that took it and
// never answered was described as the broker being hung. The environment
// is read once per process, so the dial runs in a child of this test.
func TestDialThroughAHungProxySaysProxy(t *testing.T) {
	if os.Getenv("CLAUDEMESH_TEST_PROXY_CHILD") == "1" {
		f := newFakeBroker(t)
		id := f.identity(t)
		id.BrokerURL = "ws://broker.example:80/ws" // never localhost: those are not proxied
		_, err := Dial(context.Background(), id, DialOptions{HandshakeTimeout: 300 * time.Millisecond})
		e := wantCode(t, err, CodeTimeout)
		if !strings.Contains(e.Message, "through the proxy http://"+os.Getenv("HTTP_PROXY_ADDR")) || strings.Contains(e.Message, "is hung") {
			t.Fatalf("through a hung proxy: %q", e.Message)
		}
		return
	}
	t.Parallel()
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestDialThroughAHungProxySaysProxy$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CLAUDEMESH_TEST_PROXY_CHILD=1", "HTTP_PROXY=http://"+hung.Addr().String(),
		"HTTP_PROXY_ADDR="+hung.Addr().String(), "NO_PROXY=", "no_proxy=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}
