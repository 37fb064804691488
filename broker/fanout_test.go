package broker

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/store"
	"claudemesh/wire"
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

// TestPushFramesSpliceEachKey: a broadcast's frames are its one encoded
// push and each recipient's key entry, in one buffer (two allocations for
// 1,000 recipients, not a ~1.2 KB frame each); written to a real
// WebSocket, each is the push with that recipient's key, byte for byte
// what wire.EncodePushWithKey makes, and as long as its size says.
func TestPushFramesSpliceEachKey(t *testing.T) {
	base := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: "m1", Kind: wire.KindMulti, TargetSpec: "*",
		SenderPubkey: strings.Repeat("a", 64), Nonce: strings.Repeat("n", 32), Ciphertext: strings.Repeat("c", 364)})
	to := make([]store.NewDelivery, 1000)
	for i := range to {
		r := fmt.Sprintf("%064x", i)
		to[i] = store.NewDelivery{Recipient: r, Key: &wire.MultiKey{To: r, Nonce: fmt.Sprintf("%032d", i), Box: fmt.Sprintf("%064d", i)}}
	}
	to = append(to, store.NewDelivery{Recipient: strings.Repeat("d", 64)}) // a DM's frame: the push itself
	if n := testing.AllocsPerRun(10, func() { pushFrames(base, to) }); n > 2 {
		t.Errorf("the frames of a push to %d recipients took %.0f allocations, want 2", len(to), n)
	}
	frames := pushFrames(base, to)

	up := websocket.Upgrader{}
	got := make(chan []byte, len(frames))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			got <- data
		}
	}))
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var scratch []byte
	for _, f := range frames {
		if err := writeFrame(ws, f, &scratch); err != nil {
			t.Fatal(err)
		}
	}
	for i, d := range to {
		var data []byte
		select {
		case data = <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("frame %d never arrived", i)
		}
		if want := wire.EncodePushWithKey(base, d.Key); !bytes.Equal(data, want) || frames[i].size() != len(want) {
			t.Fatalf("frame %d: %q (size %d), want %q", i, data, frames[i].size(), want)
		}
	}
}
