package broker

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair is a loopback TCP connection: the broker's side and the peer's.
func tcpPair(t testing.TB) (*net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := <-accepted
	if c == nil {
		t.Fatal("accept failed")
	}
	tc := c.(*net.TCPConn)
	t.Cleanup(func() { tc.Close(); peer.Close() })
	return tc, peer
}

// TestTryFlushNeverBlocks: a batch larger than the socket takes is left
// pending instead of blocking, and whatever is written afterwards (the
// writer's flush, a control frame written through) comes after it, in
// order and whole.
func TestTryFlushNeverBlocks(t *testing.T) {
	tc, peer := tcpPair(t)
	c := &coalescingConn{Conn: tc, rc: rawOf(tc)}
	if !c.canTry() {
		t.Fatal("a TCP connection has no raw socket")
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB: more than loopback takes unread
	c.hold()
	c.Write(big)
	done := make(chan struct{})
	var all bool
	var err error
	go func() {
		all, err = c.tryFlush()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("tryFlush blocked on a peer that does not read")
	}
	if err != nil {
		t.Fatal(err)
	}
	if all {
		t.Fatal("32 MiB to a peer that reads nothing was all written at once; the test proves nothing")
	}
	// The writer goroutine's turn: another batch, then a frame written
	// through outside a batch. The peer reads everything meanwhile.
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(peer)
		got <- b
	}()
	tc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	c.hold()
	c.Write([]byte("second"))
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("third")); err != nil {
		t.Fatal(err)
	}
	tc.CloseWrite()
	want := append(append(append([]byte{}, big...), "second"...), "third"...)
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("peer read %d bytes, want %d in order", len(b), len(want))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("peer did not get everything")
	}
}

// TestTryFlushWritesWhatFits: a small batch goes out whole in one call.
func TestTryFlushWritesWhatFits(t *testing.T) {
	tc, peer := tcpPair(t)
	c := &coalescingConn{Conn: tc, rc: rawOf(tc)}
	c.hold()
	c.Write([]byte("hello "))
	c.Write([]byte("world"))
	all, err := c.tryFlush()
	if err != nil || !all {
		t.Fatalf("tryFlush: all=%v err=%v", all, err)
	}
	buf := make([]byte, 11)
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "hello world" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
}

// BenchmarkFanoutWrite is one connection's share of a fan-out: a
// 900-byte push framed into the batch buffer and written, by the
// dispatcher's non-blocking write (try) or by the writer goroutine's
// blocking one (writer). It does not count the writer goroutine's wake
// per frame, which is what the dispatcher's write saves; and when the
// loop outpaces the peer draining the socket, try pays a second,
// blocking write for the remainder.
func BenchmarkFanoutWrite(b *testing.B) {
	frame := bytes.Repeat([]byte("x"), 900)
	for _, mode := range []string{"try", "writer"} {
		b.Run(mode, func(b *testing.B) {
			tc, peer := tcpPair(b)
			go io.Copy(io.Discard, peer)
			c := &coalescingConn{Conn: tc, rc: rawOf(tc)}
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for range b.N {
				c.hold()
				c.Write(frame)
				if mode == "try" {
					if all, err := c.tryFlush(); err != nil {
						b.Fatal(err)
					} else if !all {
						if err := c.flush(); err != nil {
							b.Fatal(err)
						}
					}
				} else if err := c.flush(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
