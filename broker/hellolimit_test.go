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
