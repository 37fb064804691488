package client

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"claudemesh/internal/framebuf"
)

// wsPair is a real WebSocket over loopback: the server side writes what
// it is given, the returned Conn reads it.
func wsPair(t testing.TB, frames [][]byte) *Conn {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		for _, f := range frames {
			if err := ws.WriteMessage(websocket.TextMessage, f); err != nil {
				return
			}
		}
		ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		ws.ReadMessage() // until the client goes
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	ws.SetReadLimit(MaxBrokerFrame)
	return &Conn{ws: ws}
}

// TestReadMessageSizes reads frames around the pooled buffer's sizes and
// checks each comes back whole and unshared: a frame handed to a callback
// must not change when the next one is read.
func TestReadMessageSizes(t *testing.T) {
	var frames [][]byte
	for i, n := range []int{0, 1, 4095, 4096, 4097, 70_000, framebuf.MaxPooled + 1, 3} {
		frames = append(frames, bytes.Repeat([]byte{byte('a' + i)}, n))
	}
	c := wsPair(t, frames)
	var got [][]byte
	for range frames {
		data, err := c.readMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", len(got), err)
		}
		got = append(got, data)
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Errorf("frame %d: %d bytes, want %d (%q…)", i, len(got[i]), len(frames[i]), got[i][:min(len(got[i]), 8)])
		}
		if got[i] == nil {
			t.Errorf("frame %d is nil; an empty frame is still a frame", i)
		}
	}
	if _, err := c.readMessage(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Errorf("after the frames: %v, want the close", err)
	}
}

// BenchmarkReadMessage reads 900-byte frames (a push's size) the way
// readLoop does.
func BenchmarkReadMessage(b *testing.B) {
	frame := bytes.Repeat([]byte("x"), 900)
	frames := make([][]byte, b.N)
	for i := range frames {
		frames[i] = frame
	}
	c := wsPair(b, frames)
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.readMessage(); err != nil {
			b.Fatal(err)
		}
	}
}
