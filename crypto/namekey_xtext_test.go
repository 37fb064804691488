package crypto

import (
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"

	"claudemesh/internal/confusables"
)

// TestNameKeyAsXTextCases: NameKey and NameSkeleton fold with
// internal/casefold; they return what they returned with
// golang.org/x/text/cases.Fold(), so keys stored and compared by older
// brokers and clients stay the same (the skeleton with the steps it took
// since: U+0130 read as i, and what a reader overlooks stripped).
func TestNameKeyAsXTextCases(t *testing.T) {
	key := func(s string) string { return norm.NFC.String(cases.Fold().String(norm.NFC.String(s))) }
	skeleton := func(s string) string {
		s = stripInvisible(norm.NFKC.String(s))
		s = strings.ReplaceAll(s, "\u0130", "i")
		fold := cases.Fold()
		s = confusables.Skeleton(s)
		s = fold.String(s)
		s = confusables.Skeleton(s)
		s = fold.String(s)
		if f := stripOverlooked(s); f != "" {
			s = f
		}
		return norm.NFC.String(s)
	}
	pieces := []string{"Alice", "ALICE", "ß", "ẞ", "İ", "ı", "Σ", "ς", "ﬃ", "ŉ", "Ω", "K", "Å", "A\u030a", "\u0345", "Ꭰ", "ꭰ",
		"𐐀", "\u0430", "\uff41", "\u200b", "a1ice", "O'Brien", "\xff", " ", "é", "e\u0301", "ǅ", "ᾼ", "ᾳ"}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 5000; i++ {
		var b strings.Builder
		for n := 1 + rng.IntN(6); n > 0; n-- {
			if rng.IntN(4) == 0 {
				b.WriteRune(rune(rng.IntN(0x2000)))
			} else {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
		}
		s := b.String()
		if got, want := NameKey(s), key(s); got != want {
			t.Fatalf("NameKey(%+q) = %+q, with cases.Fold %+q", s, got, want)
		}
		if got, want := NameSkeleton(s), skeleton(s); got != want {
			t.Fatalf("NameSkeleton(%+q) = %+q, with cases.Fold %+q", s, got, want)
		}
	}
}
