package wire

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"runtime"
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
	return accepted
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
		for _, frame := range [][]byte{EncodePush(f.push), EncodeAck(f.ack), EncodeReceipt(f.receipt), sb, EncodeClientAck(f.clientAck)} {
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
		t.Fatalf("the fast path took only %d of 20,000 encoded frames", fastTaken)
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
