package broker

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"claudemesh/wire"
)

// largestHello is a hello with every field at its limit, escaped the
// worst way a JSON encoder does: '<' as \u003c (Go's encoding/json),
// '/' as \/ (others), six and two bytes for one.
func largestHello(r *rawConn, id ident, groups int) []byte {
	r.t.Helper()
	h := r.helloFrame(id, func(h *wire.Hello) {
		h.Cwd = strings.Repeat("<", 1024)
		h.Hostname = strings.Repeat("<", 255)
		h.Channel = strings.Repeat("<", 32)
		h.Model = strings.Repeat("<", 64)
		h.PeerType = wire.PeerConnector
		h.SessionID = strings.Repeat("s", 64)
		for i := range groups {
			label := strings.Repeat("g", 29) + string(rune('a'+i/676)) + string(rune('a'+i/26%26)) + string(rune('a'+i%26))
			h.Groups = append(h.Groups, wire.Group{Name: label + "/" + label + "/" + label + "/" + label, Role: strings.Repeat("<", 32)})
		}
	})
	data := wire.MustEncode(h)
	data = bytes.ReplaceAll(data, []byte("<"), []byte(`\u003c`))
	return bytes.ReplaceAll(data, []byte("/"), []byte(`\/`))
}

// TestHelloFrameLimitFollowsMaxGroups: before hello_ack a frame may be as
// large as the largest legal hello at --max-groups, no larger. The limit
// was a fixed 64 KiB: a stranger's junk was read 64 KiB at a time (bench
// --adversary), while a legal hello at a raised --max-groups could be
// over it and refused.
func TestHelloFrameLimitFollowsMaxGroups(t *testing.T) {
	t.Parallel()
	for _, groups := range []int{32, 300} {
		b := startBroker(t, func(c *Config) { c.MaxGroups = groups })
		alice := createMesh(t, b, "team", "alice")
		r := dial(t, b)
		frame := largestHello(r, alice, groups)
		if limit := b.cfg.helloFrameLimit(); int64(len(frame)) > limit {
			t.Fatalf("--max-groups %d: the largest legal hello is %d bytes, over the pre-hello limit %d", groups, len(frame), limit)
		}
		r.write(frame)
		r.next(nil, wire.TypeHelloAck)
	}

	// At the default --max-groups, a frame before hello a little over the
	// limit (28 KiB) closes 1009 frame_too_big, unread past the limit.
	b := startBroker(t, nil)
	r := dial(t, b)
	pad := int(b.cfg.helloFrameLimit()) + 2<<10
	if pad >= 64<<10 {
		t.Fatalf("pre-hello limit %d is not below 64 KiB", b.cfg.helloFrameLimit())
	}
	r.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"list_peers","pad":"`+strings.Repeat("p", pad)+`"}`))
	r.expectClose(websocket.CloseMessageTooBig, wire.ReasonFrameTooBig)
}

// TestPreHelloJunkIsCut: a stranger's frame before the hello that cannot
// be a JSON object (bench --adversary writes frames of '{'), or is far
// over the pre-hello limit, is not read to its end: the connection is
// closed with the rest unread, so writing a frame larger than what the
// sockets can buffer fails, and limits_tripped{pre_hello_cut} counts it.
// The broker used to read (and drop) all of it, for up to a second a
// connection, however large the frame's header said it was. A frame a
// little over the limit is still read on so its sender sees 1009
// (TestHelloFrameLimitFollowsMaxGroups).
func TestPreHelloJunkIsCut(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	const size = 16 << 20 // over a loopback socket pair's buffers
	for i, frame := range [][]byte{
		bytes.Repeat([]byte("{"), size),
		[]byte(`{"type":"hello","pad":"` + strings.Repeat("p", size) + `"}`),
	} {
		// One WebSocket frame (a write buffer that holds it whole): the
		// rest of a frame being read is what a wait for the next one
		// reads and drops.
		d := websocket.Dialer{WriteBufferSize: len(frame) + 64}
		ws, _, err := d.Dial(b.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		if err := ws.WriteMessage(websocket.TextMessage, frame); err == nil {
			t.Fatalf("frame %d: %d bytes written before the hello: the broker read them all", i, len(frame))
		}
		if got := counterValue(t, b, "claudemesh_limits_tripped_total", "pre_hello_cut"); got != float64(i+1) {
			t.Fatalf("frame %d: limits_tripped{pre_hello_cut} = %v, want %d", i, got, i+1)
		}
	}
	// Short junk is still answered.
	r := dial(t, b)
	r.ws.WriteMessage(websocket.TextMessage, []byte("{{{{"))
	var e wire.Error
	r.next(&e, wire.TypeError)
	if e.Code != wire.CodeMalformed {
		t.Fatalf("short junk before the hello: %+v, want malformed", e)
	}
}
