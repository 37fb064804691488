package wire

import (
	"crypto/rand"
	"encoding/base64"
	"testing"
)

// benchSendFrame is a box send as the CLI builds it: a 256-byte plaintext
// sealed with crypto_box (256 + 16-byte MAC = 272 bytes of ciphertext, 364
// base64 characters) and a 24-byte nonce.
func benchSendFrame(b *testing.B) []byte { return benchSendFrameOf(b, 256) }

// benchSendFrameOf is benchSendFrame for a plaintext of n bytes (64 KiB:
// bench --adversary's self-DMs, the largest a send carries).
func benchSendFrameOf(b *testing.B, n int) []byte {
	ct := make([]byte, n+16)
	nonce := make([]byte, 24)
	rand.Read(ct)
	rand.Read(nonce)
	s := Send{Type: TypeSend, ID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VW", ReqID: "s-1", ClientMessageID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VW",
		TargetSpec: hexA, Kind: KindBox, Priority: PriorityNext,
		Nonce: base64.StdEncoding.EncodeToString(nonce), Ciphertext: base64.StdEncoding.EncodeToString(ct)}
	data := MustEncode(&s)
	b.Logf("send frame: %d bytes", len(data))
	return data
}

func benchPush() Push {
	ct := make([]byte, 256+16)
	rand.Read(ct)
	return Push{Type: TypePush, MessageID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VW", MeshID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VX", Kind: KindMulti,
		TargetSpec: "*", SenderPubkey: hexA, SenderMemberPubkey: hexA, SenderName: "alice", Priority: PriorityNext,
		Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Ciphertext: base64.StdEncoding.EncodeToString(ct),
		Signature: hexA + hexB, ClientMessageID: "01J9Z8Q4K2M3N4P5Q6R7S8T9VW",
		CreatedAt: 1700000000000}
}

func BenchmarkDecodeSend(b *testing.B) { benchDecodeSend(b, benchSendFrame(b)) }

func BenchmarkDecodeSend64KiB(b *testing.B) { benchDecodeSend(b, benchSendFrameOf(b, 64<<10)) }

func benchDecodeSend(b *testing.B, data []byte) {
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var s Send
		if err := Decode(data, &s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeek(b *testing.B) {
	data := benchSendFrame(b)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Peek(data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodePush(b *testing.B) {
	p := benchPush()
	p.Key = &MultiKey{To: hexB, Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Box: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(&p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodePushFast is the hand encoder a send uses (one per
// message, whatever its recipients).
func BenchmarkEncodePushFast(b *testing.B) { benchEncodePush(b, benchPush()) }

// BenchmarkEncodePush64KiB: the push of a 64 KiB plaintext, which the
// broker encodes once per send.
func BenchmarkEncodePush64KiB(b *testing.B) {
	p := benchPush()
	ct := make([]byte, 64<<10+16)
	rand.Read(ct)
	p.Ciphertext = base64.StdEncoding.EncodeToString(ct)
	benchEncodePush(b, p)
}

func benchEncodePush(b *testing.B, p Push) {
	b.ReportAllocs()
	for b.Loop() {
		EncodePush(&p)
	}
}

// BenchmarkEncodePushWithKey is the per-recipient cost of a multi fan-out:
// the shared push is encoded once (outside the loop) and each recipient's
// key is spliced in.
func BenchmarkEncodePushWithKey(b *testing.B) {
	p := benchPush()
	base := MustEncode(&p)
	key := &MultiKey{To: hexB, Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Box: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"}
	b.ReportAllocs()
	for b.Loop() {
		if out := EncodePushWithKey(base, key); len(out) <= len(base) {
			b.Fatal("no key spliced")
		}
	}
}
