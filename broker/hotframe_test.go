package broker

import (
	"strings"
	"testing"

	"claudemesh/wire"
)

// TestHotFramesAreStillCheckedWhole: send and client_ack skip the envelope
// pass and are parsed once, by their typed decode — which must still refuse
// an ill-shaped frame with invalid_argument (echoing only a valid reqId),
// refuse a malformed reqId, and leave the connection usable.
func TestHotFramesAreStillCheckedWhole(t *testing.T) {
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	a := connect(t, b, alice, false, nil)
	good := dm(t, alice, bob.pub(), "hi")
	enc, err := wire.EncodeSend(&good)
	if err != nil {
		t.Fatal(err)
	}
	frame := string(enc)
	for _, c := range []struct {
		name, frame, reqID string
	}{
		{"duplicate key", strings.Replace(frame, `"kind":"box"`, `"kind":"box","kind":"box"`, 1) + "", ""},
		{"duplicate key with reqId", `{"type":"send","reqId":"r1","id":"x","id":"y"}`, "r1"},
		{"wrong type of a field", `{"type":"send","reqId":"r2","id":7}`, "r2"},
		{"duplicate type", `{"type":"send","reqId":"r3","type":"send"}`, "r3"},
		{"invalid utf-8", "{\"type\":\"send\",\"reqId\":\"r4\",\"id\":\"\xff\"}", "r4"},
		{"ack with an object for ids", `{"type":"client_ack","reqId":"r5","messageIds":{}}`, "r5"},
		{"huge reqId on a send", `{"type":"send","reqId":"` + strings.Repeat("q", 5000) + `","id":"x"}`, ""},
		{"huge reqId on an ack", `{"type":"client_ack","reqId":"` + strings.Repeat("q", 5000) + `","messageIds":["01J9Z8Q4K2M3N4P5Q6R7S8T9VW"]}`, ""},
	} {
		a.write(c.frame)
		var e wire.Error
		a.next(&e, wire.TypeError)
		if e.Code != wire.CodeInvalidArgument || e.ReqID != c.reqID {
			t.Errorf("%s: %+v, want invalid_argument with reqId %q", c.name, e, c.reqID)
		}
	}
	if ack := a.sendAck(good); ack.Error != nil || ack.MessageID == "" {
		t.Fatalf("the connection after the errors: %+v", ack)
	}
}
