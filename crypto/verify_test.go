package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"filippo.io/edwards25519"
)

// verifyReference is Verify as it was before it kept the key's point and
// checked R's order on the computed point: the key validated (decoded
// afresh here, not from validKeys), R decoded and refused when of small
// order, then crypto/ed25519.
func verifyReference(pub PublicKey, msg string, sigHex string) error {
	return verifyReferenceWith(func(p PublicKey) error { _, err := decodePoint(p[:]); return err }, pub, msg, sigHex)
}

// verifyReferenceWith is verifyReference validating the key with validate
// (ValidatePublicKey: a cached key, as the previous code had it).
func verifyReferenceWith(validate func(PublicKey) error, pub PublicKey, msg string, sigHex string) error {
	var sig [64]byte
	if err := decodeHexInto(sig[:], sigHex); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if err := validate(pub); err != nil {
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	if r, err := new(edwards25519.Point).SetBytes(sig[:32]); err == nil &&
		new(edwards25519.Point).MultByCofactor(r).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: R of small order", ErrBadSignature)
	}
	if !ed25519.Verify(pub[:], []byte(msg), sig[:]) {
		return ErrBadSignature
	}
	return nil
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// smallOrderEncodings are every 32-byte string that decodes to a point of
// small order: the eight points' encodings, with the sign bit flipped,
// and y + p where that is below 2^255.
func smallOrderEncodings(t testing.TB) [][]byte {
	t.Helper()
	// A point of order 8: [L]P of a point P of mixed order.
	var torsion *edwards25519.Point
	for y := byte(2); torsion == nil; y++ {
		p, err := new(edwards25519.Point).SetBytes(append([]byte{y}, make([]byte, 31)...))
		if err != nil {
			continue
		}
		q := new(edwards25519.Point).VarTimeDoubleScalarBaseMult(lMinusOne(), p, edwards25519.NewScalar())
		q.Add(q, p)
		if new(edwards25519.Point).Add(q, q).Add(new(edwards25519.Point).Add(q, q), new(edwards25519.Point).Add(q, q)).Equal(edwards25519.NewIdentityPoint()) == 0 {
			torsion = q // [4]q is not the identity: q has order 8
		}
	}
	var out [][]byte
	p := edwards25519.NewIdentityPoint()
	for range 8 {
		enc := p.Bytes()
		flipped := bytes.Clone(enc)
		flipped[31] ^= 0x80
		out = append(out, enc, flipped)
		if enc[0] < 19 && bytes.Equal(enc[1:31], make([]byte, 30)) && enc[31]&0x7f == 0 {
			// y + p: 0xed + y, then 0xff..., 0x7f.
			big := bytes.Repeat([]byte{0xff}, 32)
			big[0], big[31] = 0xed+enc[0], 0x7f
			out = append(out, big, append(bytes.Clone(big[:31]), 0xff))
		}
		p = new(edwards25519.Point).Add(p, torsion)
	}
	for _, e := range out {
		r, err := new(edwards25519.Point).SetBytes(e)
		if err != nil || new(edwards25519.Point).MultByCofactor(r).Equal(edwards25519.NewIdentityPoint()) != 1 {
			t.Fatalf("test is wrong: %x is not a point of small order", e)
		}
	}
	return out
}

type verifyCase struct {
	pub PublicKey
	msg string
	sig string
}

// verifyCases are valid signatures and every kind of invalid one: each bit
// of R and S flipped (of the first signature; every ninth bit of the
// others), S + L, the top bits of S set, R replaced by each
// small-order encoding, R the identity with S making the equation hold,
// keys of small order, of mixed order, non-canonical, random.
func verifyCases(t testing.TB) []verifyCase {
	r := rand.New(rand.NewPCG(3, 5))
	small := smallOrderEncodings(t)
	var cases []verifyCase
	for i := range 3 {
		seed := make([]byte, 32)
		for j := range seed {
			seed[j] = byte(r.Uint32())
		}
		id, _ := IdentityFromSeed(seed)
		msg := fmt.Sprintf("claudemesh/hello/v1|mesh|member|%s|broker|%d|challenge", id.PublicHex(), i)
		sig, _ := hex.DecodeString(id.Sign(msg))
		add := func(pub PublicKey, s []byte) { cases = append(cases, verifyCase{pub, msg, hex.EncodeToString(s)}) }
		add(id.Public(), sig)
		for bit := range 512 {
			if i > 0 && bit%9 != 0 {
				continue // every bit of the first signature, a sample of the others'
			}
			m := bytes.Clone(sig)
			m[bit/8] ^= 1 << (bit % 8)
			add(id.Public(), m)
		}
		// S + L, and S with its top three bits set.
		s, _ := edwards25519.NewScalar().SetCanonicalBytes(sig[32:])
		var sPlusL [32]byte
		copy(sPlusL[:], s.Bytes())
		lb := append(lMinusOne().Bytes(), 0)[:32]
		lb[0]++
		var carry uint16
		for k := range sPlusL {
			sum := uint16(sPlusL[k]) + uint16(lb[k]) + carry
			sPlusL[k], carry = byte(sum), sum>>8
		}
		add(id.Public(), append(bytes.Clone(sig[:32]), sPlusL[:]...))
		top := bytes.Clone(sig)
		top[63] |= 0xe0
		add(id.Public(), top)
		for _, e := range small {
			add(id.Public(), append(bytes.Clone(e), sig[32:]...))
		}
		// R the identity, S = k·a: the equation holds with R of small order.
		rID := edwards25519.NewIdentityPoint().Bytes()
		h := sha512.New()
		h.Write(rID)
		h.Write(id.pub[:])
		h.Write([]byte(msg))
		k, _ := edwards25519.NewScalar().SetUniformBytes(h.Sum(nil))
		ah := sha512.Sum512(id.seed[:])
		a, _ := edwards25519.NewScalar().SetBytesWithClamping(ah[:32])
		add(id.Public(), append(rID, edwards25519.NewScalar().Multiply(k, a).Bytes()...))
		// Another message, another key.
		other, _ := GenerateIdentity()
		add(other.Public(), sig)
		cases = append(cases, verifyCase{id.Public(), msg + "x", hex.EncodeToString(sig)})
		// Keys: small order, mixed order (+ the point of order 2), random.
		for _, e := range small {
			var p PublicKey
			copy(p[:], e)
			add(p, sig)
		}
		ap, _ := new(edwards25519.Point).SetBytes(id.pub[:])
		t2b, _ := hex.DecodeString("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f") // y = -1: order 2
		t2, _ := new(edwards25519.Point).SetBytes(t2b)
		var mixed PublicKey
		copy(mixed[:], new(edwards25519.Point).Add(ap, t2).Bytes())
		add(mixed, sig)
		var rnd PublicKey
		for j := range rnd {
			rnd[j] = byte(r.Uint32())
		}
		add(rnd, sig)
		cases = append(cases, verifyCase{id.Public(), msg, hex.EncodeToString(sig)[:100]})
	}
	return cases
}

// TestVerifyMatchesReference: Verify accepts and refuses exactly what the
// previous code did, with the same error, on valid signatures and every
// kind of invalid one (twice each: the second time from validKeys).
func TestVerifyMatchesReference(t *testing.T) {
	valid := 0
	for _, c := range verifyCases(t) {
		want := errText(verifyReference(c.pub, c.msg, c.sig))
		for range 2 {
			if got := errText(Verify(c.pub, c.msg, c.sig)); got != want {
				t.Fatalf("Verify(%x, %q, %s) = %s, want %s", c.pub, c.msg, c.sig, got, want)
			}
		}
		if want == "<nil>" {
			valid++
		}
	}
	if valid != 3 {
		t.Fatalf("%d signatures verified, want the 3 valid ones", valid)
	}
}

func FuzzVerifyMatchesReference(f *testing.F) {
	for _, c := range verifyCases(f)[:200] {
		sig, _ := hex.DecodeString(c.sig)
		f.Add(c.pub[:], c.msg, sig)
	}
	f.Fuzz(func(t *testing.T, pub []byte, msg string, sig []byte) {
		var p PublicKey
		copy(p[:], pub)
		s := hex.EncodeToString(sig)
		if got, want := errText(Verify(p, msg, s)), errText(verifyReference(p, msg, s)); got != want {
			t.Fatalf("Verify(%x, %q, %s) = %s, want %s", p, msg, s, got, want)
		}
	})
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkVerifyAgainstReference: a hello's signature verified by a key
// seen before (validKeys), by the previous code and by Verify.
func BenchmarkVerifyAgainstReference(b *testing.B) {
	id, _ := IdentityFromSeed(bytes.Repeat([]byte{7}, 32))
	msg := "claudemesh/hello/v1|01J9Z8Q4K2M3N4P5Q6R7S8T9VW|01J9Z8Q4K2M3N4P5Q6R7S8T9VX|" + id.PublicHex() + "|" + id.PublicHex() + "|1765000000000|" + id.PublicHex()
	sig := id.Sign(msg)
	ValidatePublicKey(id.Public())
	for _, v := range []struct {
		name string
		f    func(PublicKey, string, string) error
	}{{"previous", func(p PublicKey, m, s string) error { return verifyReferenceWith(ValidatePublicKey, p, m, s) }}, {"new", Verify}} {
		b.Run(v.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				if v.f(id.Public(), msg, sig) != nil {
					b.Fatal("refused")
				}
			}
			// On a loaded machine wall time is mostly waiting for a core.
			b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}
