package broker

import (
	"bytes"
	"strings"
	"testing"

	"claudemesh/wire"
)

// TestHelloAnySpelling: the broker reads a hello written as its clients
// write it with a decoder of its own (wire.DecodeHelloFast) and any other
// spelling of it with the generic path; both must accept and refuse the
// same hellos the same way.
func TestHelloAnySpelling(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	by := connect(t, b, alice, true, func(h *wire.Hello) { h.SessionID = "bystander" })
	spellings := map[string]func([]byte) []byte{
		"canonical": func(f []byte) []byte { return f },
		"spaced":    func(f []byte) []byte { return bytes.ReplaceAll(f, []byte(`":`), []byte(`": `)) },
		"escaped":   func(f []byte) []byte { return bytes.Replace(f, []byte(`"role":"cli"`), []byte(`"role":"\u0063li"`), 1) },
		"unknown":   func(f []byte) []byte { return append(f[:len(f)-1], `,"x":1}`...) },
	}
	for name, spell := range spellings {
		t.Run(name, func(t *testing.T) {
			for _, tc := range []struct {
				mutate func(*wire.Hello)
				code   string
			}{
				{nil, ""},
				{func(h *wire.Hello) { h.Signature = strings.Repeat("ab", 64) }, wire.CodeBadSignature},
				{func(h *wire.Hello) { h.Protocol = 2 }, wire.CodeMalformed},
				{func(h *wire.Hello) { h.Groups = []wire.Group{{Name: "Not A Group"}} }, wire.CodeMalformed},
			} {
				r := dial(t, b)
				frame := spell(wire.MustEncode(r.helloFrame(alice, func(h *wire.Hello) {
					h.SessionID, h.Role = "s-"+name, wire.RoleCLI
					if tc.mutate != nil {
						tc.mutate(h)
					}
				})))
				var fast wire.Hello
				if taken := wire.DecodeHelloFast(frame, &fast); taken != (name == "canonical") {
					t.Fatalf("DecodeHelloFast took %s: %v", frame, taken)
				}
				r.write(frame)
				if tc.code == "" {
					var ack wire.HelloAck
					r.next(&ack, wire.TypeHelloAck)
					if ack.MemberID != alice.memberID {
						t.Fatalf("hello_ack %+v", ack)
					}
					continue
				}
				r.expectRefusal(tc.code, 1008, tc.code)
			}
		})
	}
	// Ill-shaped: a duplicate key is refused as malformed, by the generic path.
	r := dial(t, b)
	frame := wire.MustEncode(r.helloFrame(alice, nil))
	r.write(bytes.Replace(frame, []byte(`"protocol":1,`), []byte(`"protocol":1,"protocol":1,`), 1))
	r.expectRefusal(wire.CodeMalformed, 1008, wire.CodeMalformed)
	bystanderCheck(t, by)
}
