package crypto

import (
	"bytes"
	"testing"
)

// 1 KiB: a long chat message.
var benchPlaintext = bytes.Repeat([]byte("a"), 1024)

func benchIDs(b *testing.B, n int) []*Identity {
	b.Helper()
	ids := make([]*Identity, n)
	for i := range ids {
		var err error
		if ids[i], err = IdentityFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32)); err != nil {
			b.Fatal(err)
		}
	}
	return ids
}

func BenchmarkSealBox(b *testing.B) {
	ids := benchIDs(b, 2)
	b.SetBytes(int64(len(benchPlaintext)))
	for b.Loop() {
		if _, _, err := SealBox(benchPlaintext, ids[1].Public(), ids[0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpenBox(b *testing.B) {
	ids := benchIDs(b, 2)
	n, c, err := SealBox(benchPlaintext, ids[1].Public(), ids[0])
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchPlaintext)))
	for b.Loop() {
		if _, err := OpenBox(n, c, ids[0].Public(), ids[1]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSharedKeySeal(b *testing.B) {
	ids := benchIDs(b, 2)
	k, err := Precompute(ids[1].Public(), ids[0])
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchPlaintext)))
	for b.Loop() {
		k.Seal(benchPlaintext)
	}
}

func BenchmarkSealMulti10(b *testing.B) {
	ids := benchIDs(b, 11)
	pubs := make([]PublicKey, 10)
	for i := range pubs {
		pubs[i] = ids[i+1].Public()
	}
	b.SetBytes(int64(len(benchPlaintext)))
	for b.Loop() {
		if _, err := SealMulti("01JDQM9S346Q3D25VT4F5V37E3", "*", benchPlaintext, pubs, ids[0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidatePublicKey(b *testing.B) {
	p := benchIDs(b, 1)[0].Public()
	for b.Loop() {
		if err := ValidatePublicKey(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidatePublicKeyUncached is what validKeys saves per key.
func BenchmarkValidatePublicKeyUncached(b *testing.B) {
	p := benchIDs(b, 1)[0].Public()
	for b.Loop() {
		if _, err := decodePoint(p[:]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	id := benchIDs(b, 1)[0]
	msg := "claudemesh/hello/v1|01JDQM9S346Q3D25VT4F5V37E3|01JDQS3E28JT97KB6CQ643DZVM|x|y|1764093600000|z"
	sig := id.Sign(msg)
	for b.Loop() {
		if err := Verify(id.Public(), msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrecomputeUncached is what the shared-key cache saves per pair:
// the peer key's conversion and validation and the X25519 multiplication.
func BenchmarkPrecomputeUncached(b *testing.B) {
	ids := benchIDs(b, 2)
	peer := ids[1].Public()
	for b.Loop() {
		px, err := peer.X25519()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := boxKey(&ids[0].xsec, px[:]); err != nil {
			b.Fatal(err)
		}
	}
}
