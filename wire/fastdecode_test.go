package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
)

// hotFrames returns one zero value of each hot frame type.
func hotFrames() []func() any {
	return []func() any{
		func() any { return new(Push) },
		func() any { return new(Receipt) },
		func() any { return new(Ack) },
		func() any { return new(Send) },
		func() any { return new(ClientAck) },
		func() any { return new(Hello) },
	}
}

// checkFastDecode decodes data into each hot type both ways: where the
// fast path accepts it, the reflective decoder must accept it too, with
// an equal result.
func checkFastDecode(t *testing.T, data []byte) (accepted int) {
	t.Helper()
	for _, mk := range hotFrames() {
		fast := mk()
		if !decodeFast(data, fast) {
			continue
		}
		accepted++
		slow := mk()
		if err := json.Unmarshal(data, slow); err != nil {
			t.Fatalf("fast path accepted what the decoder refuses (%v) as %T:\n%s", err, fast, data)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%T decoded differently:\nframe %s\nfast  %+v\nslow  %+v", fast, data, fast, slow)
		}
	}
	// The broker skips Peek for a hello DecodeHelloFast takes: Peek must
	// take it too, as a hello, and Decode read the same.
	var h Hello
	if DecodeHelloFast(data, &h) {
		var slow Hello
		if err := Decode(data, &slow); err != nil || !reflect.DeepEqual(&h, &slow) || h.Type != TypeHello {
			t.Fatalf("DecodeHelloFast took a frame that Decode reads as %+v, %v:\n%s", slow, err, data)
		}
		if env, err := Peek(data); err != nil || env != (Envelope{Type: TypeHello}) {
			t.Fatalf("DecodeHelloFast took a frame that Peek reads as %+v, %v:\n%s", env, err, data)
		}
	} else if !zeroHello(&h) {
		t.Fatalf("DecodeHelloFast refused a frame but left %+v", h)
	}
	return accepted
}

// randHello is a random hello: often the fields a daemon sends, strings
// that sometimes need escaping, groups now and then (an empty list too).
func randHello(r *rand.Rand) *Hello {
	h := &Hello{Type: TypeHello, Protocol: r.IntN(3), MeshID: randStr(r), MemberID: randStr(r), Pubkey: randStr(r),
		Timestamp: r.Int64N(1<<45) - 1<<40, Challenge: randStr(r), Signature: randStr(r), SessionID: randStr(r),
		Role: randStr(r), PeerType: randStr(r), DisplayName: randStr(r), PID: randInt(r), Cwd: randStr(r),
		Hostname: randStr(r), Channel: randStr(r), Model: randStr(r)}
	if x := r.IntN(3); x < 2 {
		v := x == 0
		h.Presence = &v
	}
	switch r.IntN(3) {
	case 0:
		h.Groups = []Group{}
	case 1:
		for range r.IntN(40) + 1 {
			h.Groups = append(h.Groups, Group{Name: randStr(r), Role: randStr(r)})
		}
	}
	if r.IntN(4) == 0 {
		h.Type = randStr(r)
	}
	return h
}

// TestFastDecodeMatchesDecode: every frame the hand encoders write decodes
// to the same value on the fast path as through the reflective decoder,
// and the fast path takes the plain ones; mutated frames are either
// refused by the fast path or decoded the same both ways.
func TestFastDecodeMatchesDecode(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 17))
	fastTaken := 0
	for i := 0; i < 4000; i++ {
		f := randHotFrames(r)
		sb, err := EncodeSend(f.send)
		if err != nil {
			t.Fatal(err)
		}
		for _, frame := range [][]byte{EncodePush(f.push), EncodeAck(f.ack), EncodeReceipt(f.receipt), sb, EncodeClientAck(f.clientAck), MustEncode(randHello(r))} {
			fastTaken += checkFastDecode(t, frame)
			// Mutations: a byte changed, dropped or doubled, a field
			// repeated, whitespace, truncation.
			for range 4 {
				m := bytes.Clone(frame)
				j := r.IntN(len(m))
				switch r.IntN(5) {
				case 0:
					m[j] = "{}[]\",:0123456789-.etrufalsn \\\x00\xff"[r.IntN(31)]
				case 1:
					m = append(m[:j], m[j+1:]...)
				case 2:
					m = append(m[:j+1], m[j:]...)
				case 3:
					m = m[:j]
				case 4:
					if k := bytes.IndexByte(m[1:], ','); k > 0 {
						m = append(append(bytes.Clone(m[:k+2]), m[1:k+1]...), m[k+1:]...)
					}
				}
				checkFastDecode(t, m)
			}
		}
	}
	if fastTaken < 4000 {
		t.Fatalf("the fast path took only %d of 24,000 encoded frames", fastTaken)
	}
}

// TestFastDecodeRefuses: deviations from the canonical form go to the
// reflective decoder, which keeps its verdicts (a duplicate key is
// ill-shaped; an unknown field is ignored).
func TestFastDecodeRefuses(t *testing.T) {
	for _, frame := range []string{
		`{"type":"receipt","receiptId":"a","receiptId":"b"}`,
		`{"type":"receipt","extra":1}`,
		`{"type":"receipt","receiptId":"caf\u00e9"}`,
		`{"type":"receipt","receiptId":"café"}`,
		`{"type":"receipt","receiptId":null}`,
		`{"type":"receipt","deliveredAt":01}`,
		`{"type":"receipt","deliveredAt":-0}`,
		`{"type":"receipt","deliveredAt":1.0}`,
		`{"type":"receipt","deliveredAt":1e3}`,
		`{"type":"receipt","deliveredAt":1234567890123456789}`,
		`{"type":"receipt"} `,
		` {"type":"receipt"}`,
		`{"type": "receipt"}`,
		`{"type":"push","mentions":[]}`,
		`{"type":"send","keys":[]}`,
		`{"type":"send","keys":[{"to":"a","to":"b"}]}`,
		`{"type":"ack","error":{"code":"x","message":"y"}}`,
		`{"type":"push","keyGen":4294967296}`,
	} {
		for _, mk := range hotFrames() {
			if decodeFast([]byte(frame), mk()) {
				t.Errorf("fast path took %s as %T", frame, mk())
			}
		}
	}
	for _, frame := range []string{
		`{"type":"hello","groups":[]}`,
		`{"type":"hello","groups":[{"name":"a","name":"b"}]}`,
		`{"type":"hello","groups":[{"name":"a","extra":1}]}`,
		`{"type":"hello","groups":[{"name":"a"},]}`,
		`{"type":"hello","groups":null}`,
		`{"type":"hello","presence":null}`,
		`{"type":"hello","pid":null}`,
		`{"type":"hello","pid":2147483648}`,
		`{"type":"hello","protocol":1,"protocol":1}`,
		`{"type":"hello","reqId":"r"}`,
		`{"type":"hello","displayName":"Jos\u00e9"}`,
		`{"type":"hello","cwd":"/home/josÃ©"}`,
		`{"type":"hello","Pubkey":"` + hexA + `"}`,
		`{"type":"session_hello","protocol":1}`,
		`{"type":"hello","protocol":1} `,
	} {
		var h Hello
		if DecodeHelloFast([]byte(frame), &h) {
			t.Errorf("DecodeHelloFast took %s", frame)
		}
	}
	for _, frame := range []string{
		`{"type":"hello"}`,
		`{"type":"hello","protocol":1,"groups":[{},{"name":"a","role":"b"}],"presence":false,"pid":-7}`,
	} {
		var h Hello
		if !DecodeHelloFast([]byte(frame), &h) {
			t.Errorf("DecodeHelloFast refused %s", frame)
		}
	}
	var rc Receipt
	if err := Decode([]byte(`{"type":"receipt","receiptId":"a","receiptId":"b"}`), &rc); err == nil {
		t.Fatal("a duplicate key was accepted")
	}
	if err := Decode([]byte(`{"type":"receipt","receiptId":"a","extra":1}`), &rc); err != nil || rc.ReceiptID != "a" {
		t.Fatalf("unknown field: %v, %+v", err, rc)
	}
	// A destination that is not zero is left to the decoder's own merge.
	rc = Receipt{MessageID: "kept"}
	if decodeFast([]byte(`{"type":"receipt","receiptId":"a"}`), &rc) {
		t.Fatal("fast path decoded into a non-zero value")
	}
}

func FuzzDecodeFast(f *testing.F) {
	for _, s := range append(clientSeeds(), brokerSeeds()...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkFastDecode(t, data) })
}

func BenchmarkDecodePush(b *testing.B) {
	p := benchPush()
	p.Key = &MultiKey{To: hexB, Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Box: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"}
	data := EncodePush(&p)
	for _, path := range []string{"fast", "reflective"} {
		b.Run(path, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				var q Push
				var err error
				if path == "fast" {
					err = Decode(data, &q)
				} else {
					err = json.Unmarshal(data, &q)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestFastDecodeKeepsNoFrame: a decoded field is a string of its own, so
// keeping a message id does not keep its whole frame alive.
func TestFastDecodeKeepsNoFrame(t *testing.T) {
	p := benchPush()
	p.Key = &MultiKey{To: hexB, Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Box: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"}
	frame := EncodePush(&p)
	const n = 4000
	ids := make([]string, 0, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		var q Push
		if !decodeFast(bytes.Clone(frame), &q) {
			t.Fatal("the fast path refused an encoded push")
		}
		ids = append(ids, q.MessageID)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	kept := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if perID := kept / n; perID > int64(len(frame))/4 {
		t.Fatalf("keeping %d message ids kept %d bytes (%d each; a frame is %d)", n, kept, perID, len(frame))
	}
	runtime.KeepAlive(ids)
}

// TestPlainASCII8: the word-at-a-time test agrees with the byte-by-byte
// one for every byte value at every position among plain neighbours, and
// raw stops at (or refuses) the first quote, backslash or byte outside
// printable ASCII wherever it falls in the string.
func TestPlainASCII8(t *testing.T) {
	plain := func(c byte) bool { return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' }
	for pos := range 8 {
		for v := range 256 {
			var w [8]byte
			for i := range w {
				w[i] = 'A' + byte(i)
			}
			w[pos] = byte(v)
			want := plain(byte(v))
			if got := plainASCII8(binary.LittleEndian.Uint64(w[:])); got != want {
				t.Fatalf("byte %#x at %d: plainASCII8 = %v, want %v", v, pos, got, want)
			}
		}
	}
	for n := range 40 {
		for _, c := range []byte{'"', '\\', 0x1f, 0x7f, 0x80, 0xff, 0x00, 0x20, 0x7e} {
			b := append(append([]byte{'"'}, bytes.Repeat([]byte{'x'}, n)...), c)
			b = append(b, []byte(`yz"`)...)
			s := &scan{b: b}
			got := s.raw()
			switch {
			case c == '"':
				if s.bad || string(got) != strings.Repeat("x", n) {
					t.Fatalf("n %d, %#x: raw = %q, bad %v", n, c, got, s.bad)
				}
			case plain(c):
				if s.bad || string(got) != strings.Repeat("x", n)+string(c)+"yz" {
					t.Fatalf("n %d, %#x: raw = %q, bad %v", n, c, got, s.bad)
				}
			default:
				if !s.bad {
					t.Fatalf("n %d, %#x: raw = %q, not refused", n, c, got)
				}
			}
		}
	}
}

// BenchmarkDecodeHello: a member hello as the client writes it (a
// daemon's fields; 0, 32 or 64 groups: bench --adversary's churn and its
// group hellos), read the broker's way before (Peek, then the reflective
// decoder) and now (DecodeHelloFast).
func BenchmarkDecodeHello(b *testing.B) {
	for _, n := range []int{0, 32, 64} {
		pr, pid := true, 12345
		h := Hello{Type: TypeHello, Protocol: 1, MeshID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VW", MemberID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VX",
			Pubkey: hexA, Timestamp: 1765000000000, Challenge: hexB, Signature: hexA + hexB, SessionID: "churn",
			Role: RoleCLI, Presence: &pr, PeerType: PeerAI, DisplayName: "mallory", PID: &pid, Cwd: "/home/m/src/x",
			Hostname: "box", Model: "opus"}
		for i := range n {
			h.Groups = append(h.Groups, Group{Name: "h" + strconv.Itoa(i)})
		}
		data := MustEncode(h)
		for _, path := range []string{"peek+reflective", "fast"} {
			b.Run(fmt.Sprintf("groups%d/%s", n, path), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					var got Hello
					if path == "fast" {
						if !DecodeHelloFast(data, &got) {
							b.Fatal("refused")
						}
						continue
					}
					if _, err := Peek(data); err != nil {
						b.Fatal(err)
					}
					if err := json.Unmarshal(data, &got); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
