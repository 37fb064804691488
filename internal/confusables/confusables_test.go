package confusables

import "testing"

func TestTableIsSortedAndParallel(t *testing.T) {
	if len(sources) != len(targets) {
		t.Fatalf("%d sources, %d targets", len(sources), len(targets))
	}
	for i := 1; i < len(sources); i++ {
		if sources[i-1] >= sources[i] {
			t.Fatalf("sources[%d]=%U is not below sources[%d]=%U", i-1, sources[i-1], i, sources[i])
		}
	}
}

func TestSkeleton(t *testing.T) {
	// Pairs from UTS #39's examples and the upstream package's tests.
	same := [][2]string{
		{"paypal", "pаypаl"}, // Cyrillic а
		{"scope", "ѕсоре"},   // Cyrillic ѕ с о р е
		{"alice", "a1ice"},   // digit one
		{"ρ", "p"},           // Greek rho
		{"𝔭𝒶ỿ𝕡𝕒ℓ", "𝔭𝒶ỿ𝕡𝕒ℓ"}, // identical
		{"rn", "m"}, // r n reads as m
	}
	for _, p := range same {
		if Skeleton(p[0]) != Skeleton(p[1]) {
			t.Errorf("Skeleton(%q)=%q, Skeleton(%q)=%q: want equal", p[0], Skeleton(p[0]), p[1], Skeleton(p[1]))
		}
	}
	differ := [][2]string{{"alice", "bob"}, {"a", "b"}, {"paypal", "paypals"}}
	for _, p := range differ {
		if Skeleton(p[0]) == Skeleton(p[1]) {
			t.Errorf("Skeleton(%q) == Skeleton(%q) = %q: want different", p[0], p[1], Skeleton(p[0]))
		}
	}
	if got := Skeleton("hello"); got != "hello" {
		t.Errorf("Skeleton(hello) = %q: ASCII letters without confusables must map to themselves", got)
	}
}

func TestLookupEdges(t *testing.T) {
	if _, ok := lookup(sources[0]); !ok {
		t.Error("first source not found")
	}
	if _, ok := lookup(sources[len(sources)-1]); !ok {
		t.Error("last source not found")
	}
	if _, ok := lookup(0x10FFFF); ok {
		t.Error("U+10FFFF has no entry")
	}
	if _, ok := lookup(-1); ok {
		t.Error("-1 has no entry")
	}
}

func BenchmarkSkeleton(b *testing.B) {
	for b.Loop() {
		Skeleton("Аlice the ｒｅｖｉｅｗｅｒ")
	}
}
