package crypto

import (
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"testing"
)

// TestDecodedB64LenAgreesWithDecodeB64: on valid strings of every length
// around the 4 KiB chunks DecodedB64Len checks them in, and on the same
// strings broken at and around the chunk edges (padding or a line break in
// the middle, a character outside the alphabet, non-zero padding bits, a
// character too many or too few), DecodedB64Len accepts exactly what
// DecodeB64 accepts and counts the bytes it decodes to.
func TestDecodedB64LenAgreesWithDecodeB64(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	check := func(s string) {
		t.Helper()
		want, werr := DecodeB64(s)
		got, gerr := DecodedB64Len(s)
		switch {
		case werr == nil && gerr != nil:
			t.Fatalf("len %d: DecodeB64 accepts, DecodedB64Len says %v", len(s), gerr)
		case werr != nil && gerr == nil:
			t.Fatalf("len %d: DecodeB64 refuses (%v), DecodedB64Len accepts", len(s), werr)
		case gerr != nil && !errors.Is(gerr, ErrBadBase64):
			t.Fatalf("len %d: error %v is not ErrBadBase64", len(s), gerr)
		case werr == nil && got != len(want):
			t.Fatalf("len %d: DecodedB64Len = %d, DecodeB64 gave %d bytes", len(s), got, len(want))
		}
	}
	var lengths []int
	for n := 0; n <= 8; n++ {
		lengths = append(lengths, n)
	}
	for _, edge := range []int{3072, 6144, 65536} {
		for d := -4; d <= 4; d++ {
			lengths = append(lengths, edge+d)
		}
	}
	for _, n := range lengths {
		raw := make([]byte, n)
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		s := base64.StdEncoding.EncodeToString(raw)
		check(s)
		var at []int
		for _, edge := range []int{4096, 8192, len(s)} {
			for d := -5; d <= 1; d++ {
				if i := edge + d; i >= 0 && i < len(s) {
					at = append(at, i)
				}
			}
		}
		for _, i := range at {
			for _, c := range []byte{'=', '\n', '-', 'B', 'A'} {
				b := []byte(s)
				b[i] = c
				check(string(b))
			}
			check(s[:i] + s[i+1:])
			check(s[:i] + "=" + s[i:])
		}
	}
}

// BenchmarkCiphertextCheck: checking a 64 KiB ciphertext's base64 (what
// the broker does for every send) by decoding it, and by DecodedB64Len.
func BenchmarkCiphertextCheck(b *testing.B) {
	s := base64.StdEncoding.EncodeToString(make([]byte, 64<<10))
	b.Run("DecodeB64", func(b *testing.B) {
		b.SetBytes(int64(len(s)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeB64(s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("DecodedB64Len", func(b *testing.B) {
		b.SetBytes(int64(len(s)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodedB64Len(s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
