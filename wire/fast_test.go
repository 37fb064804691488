package wire

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// randStr returns a string that is often empty, usually plain, and
// sometimes needs escaping or holds non-ASCII text.
func randStr(r *rand.Rand) string {
	switch r.IntN(6) {
	case 0:
		return ""
	case 1:
		return string([]rune{rune(r.IntN(0x20)), '"', '\\', 'é', '\u2028', rune(0x7f), '<', '&', '>', '😀'}[r.IntN(10):])
	}
	const alphabet = "abcdefABCDEF0123456789+/=._:-"
	n := r.IntN(80)
	var b strings.Builder
	for range n {
		b.WriteByte(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

func randInt(r *rand.Rand) *int {
	if r.IntN(2) == 0 {
		return nil
	}
	v := r.IntN(1000) - 500
	return &v
}

func randStrs(r *rand.Rand) []string {
	var out []string
	switch r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	for range r.IntN(4) + 1 {
		out = append(out, randStr(r))
	}
	return out
}

func randKey(r *rand.Rand) *MultiKey {
	if r.IntN(2) == 0 {
		return nil
	}
	return &MultiKey{To: randStr(r), Nonce: randStr(r), Box: randStr(r)}
}

// TestFastEncodersMatchEncode: the hand-written encoders of the hot frames
// produce exactly what the reflective encoder does.
func TestFastEncodersMatchEncode(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	check := func(what string, fast []byte, v any) {
		t.Helper()
		want, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, want) {
			t.Fatalf("%s:\nfast %s\nwant %s", what, fast, want)
		}
	}
	for i := 0; i < 5000; i++ {
		f := randHotFrames(r)
		check("push", EncodePush(f.push), f.push)
		if got := AppendPush([]byte("prefix"), f.push); !bytes.Equal(got, append([]byte("prefix"), EncodePush(f.push)...)) {
			t.Fatalf("AppendPush after a prefix: %s", got)
		}
		check("ack", EncodeAck(f.ack), f.ack)
		check("receipt", EncodeReceipt(f.receipt), f.receipt)
		sb, err := EncodeSend(f.send)
		if err != nil {
			t.Fatal(err)
		}
		check("send", sb, f.send)
		check("client_ack", EncodeClientAck(f.clientAck), f.clientAck)
		if got := AppendClientAck([]byte("prefix"), f.clientAck); !bytes.Equal(got, append([]byte("prefix"), EncodeClientAck(f.clientAck)...)) {
			t.Fatalf("AppendClientAck after a prefix: %s", got)
		}
		ha := &HelloAck{Type: TypeHelloAck, PresenceID: randStr(r), MeshID: randStr(r), MeshName: randStr(r),
			MemberID: randStr(r), MemberRole: randStr(r), DisplayName: randStr(r), BrokerPubkey: randStr(r),
			ServerTime: r.Int64N(1<<45) - 1<<40, Features: randStrs(r), BrokerURLs: randStrs(r)}
		check("hello_ack", EncodeHelloAck(ha), ha)
	}
	// Invalid UTF-8 is Encode's panic, as it was.
	defer func() {
		if recover() == nil {
			t.Fatal("EncodeHelloAck encoded invalid UTF-8")
		}
	}()
	EncodeHelloAck(&HelloAck{Type: TypeHelloAck, DisplayName: "\xff"})
}

// hotFrameSet is one random value of each hot frame type.
type hotFrameSet struct {
	push      *Push
	ack       *Ack
	receipt   *Receipt
	send      *Send
	clientAck *ClientAck
}

// randHotFrames makes one random frame of each hot type, with strings
// that are often empty, sometimes need escaping, and rare fields set now
// and then.
func randHotFrames(r *rand.Rand) hotFrameSet {
	p := &Push{Type: TypePush, MessageID: randStr(r), MeshID: randStr(r), Kind: randStr(r), TargetSpec: randStr(r),
		SenderPubkey: randStr(r), SenderMemberPubkey: randStr(r), SenderName: randStr(r), Priority: randStr(r),
		Nonce: randStr(r), Ciphertext: randStr(r), Key: randKey(r), KeyGen: randInt(r), Signature: randStr(r),
		BodyVersion: r.IntN(3), ReplyToID: randStr(r), Mentions: randStrs(r), Subtype: randStr(r), Event: randStr(r),
		ClientMessageID: randStr(r), CreatedAt: r.Int64N(1<<45) - 1<<40}
	switch r.IntN(8) {
	case 0:
		p.SenderAttestation = &Attestation{SessionPubkey: randStr(r)}
	case 1:
		p.Topic = &TopicRef{ID: randStr(r), Name: randStr(r)}
	case 2:
		p.EventData = PeerEvent{Pubkey: randStr(r)}
	}
	var e *AckError
	if r.IntN(2) == 0 {
		e = &AckError{Code: randStr(r), Message: randStr(r), RetryAfterMs: r.Int64N(3)}
	}
	a := &Ack{Type: TypeAck, ID: randStr(r), ReqID: randStr(r), MessageID: randStr(r), Queued: r.IntN(2) == 0,
		Online: randInt(r), Pending: randInt(r), Duplicate: r.IntN(2) == 0, Error: e}
	rc := &Receipt{Type: TypeReceipt, ReceiptID: randStr(r), MessageID: randStr(r), ClientMessageID: randStr(r),
		RecipientPubkey: randStr(r), DeliveredAt: r.Int64N(1 << 45)}
	var receipts *bool
	if x := r.IntN(3); x < 2 {
		v := x == 0
		receipts = &v
	}
	s := &Send{Type: TypeSend, ID: randStr(r), ReqID: randStr(r), ClientMessageID: randStr(r), TargetSpec: randStr(r),
		Kind: randStr(r), Priority: randStr(r), Nonce: randStr(r), Ciphertext: randStr(r), Signature: randStr(r),
		KeyGen: randInt(r), BodyVersion: r.IntN(3), ReplyToID: randStr(r), Mentions: randStrs(r), Subtype: randStr(r), Receipts: receipts}
	for range r.IntN(3) {
		s.Keys = append(s.Keys, MultiKey{To: randStr(r), Nonce: randStr(r), Box: randStr(r)})
	}
	ca := &ClientAck{Type: TypeClientAck, ReqID: randStr(r), MessageIDs: randStrs(r), MessageID: randStr(r)}
	return hotFrameSet{p, a, rc, s, ca}
}

func TestFrameType(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string
		ok   bool
	}{
		{`{"type":"send","id":"x"}`, TypeSend, true},
		{`{"type":"client_ack"}`, TypeClientAck, true},
		{`{"type":"push","messageId":"m"}`, TypePush, true},
		{`{"type":"ack","id":"a"}`, TypeAck, true},
		{`{"type":"receipt","receiptId":"r"}`, TypeReceipt, true},
		{`{"type":"list_peers","reqId":"r"}`, "", false}, // not a hot frame
		{`{"id":"x","type":"send"}`, "", false},          // other key order
		{`{ "type":"send"}`, "", false},                  // whitespace
		{`{"type":"send"x}`, "", false},
		{`{"type":"se\"nd"}`, "", false},
		{`{"type":"sendsendsendsendsendsend"}`, "", false},
		{`{"type":"send`, "", false},
		{``, "", false},
	} {
		got, ok := FrameType([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("FrameType(%s) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	if n := testing.AllocsPerRun(100, func() { FrameType([]byte(`{"type":"client_ack","messageIds":[]}`)) }); n != 0 {
		t.Errorf("FrameType allocates %v times", n)
	}
}

// A push whose strings need no escaping fits in PushSize: encoding it
// never grows its buffer (a second allocation and copy of every send).
func TestPushSizeIsEnough(t *testing.T) {
	p := benchPush()
	p.Mentions = []string{"alice", "bob"}
	p.Key = &MultiKey{To: hexB, Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Box: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"}
	kg := 3
	p.KeyGen, p.BodyVersion, p.ReplyToID, p.Subtype, p.Event = &kg, 1, "01JM0000000000000000000001", "sub", "ev"
	if n, got := PushSize(&p), len(EncodePush(&p)); got > n {
		t.Errorf("PushSize %d < encoded %d", n, got)
	}
	if allocs := testing.AllocsPerRun(100, func() { EncodePush(&p) }); allocs != 1 {
		t.Errorf("EncodePush made %v allocations, want 1", allocs)
	}
}

// TestAppendStringEveryOffset: appendString writes a plain string as is
// and quotes any other as jsontext does, wherever
// in the string (within or after its first words) the byte to escape is.
func TestAppendStringEveryOffset(t *testing.T) {
	for n := range 40 {
		for _, c := range []byte{'"', '\\', 0x1f, 0x7f, 0x80, 0x00, 0x20, 0x7e, '<', 'x'} {
			s := strings.Repeat("x", n) + string([]byte{c}) + "yz"
			want := []byte(`"` + s + `"`)
			if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
				want, _ = jsontext.AppendQuote(nil, s)
			}
			if got := appendString(nil, s); !bytes.Equal(got, want) {
				t.Fatalf("n %d, %#x: appendString = %q, want %q", n, c, got, want)
			}
		}
	}
}
