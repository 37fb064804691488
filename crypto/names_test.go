package crypto

import "testing"

func TestNamesConfusable(t *testing.T) {
	same := [][2]string{
		{"alice", "Alice"},
		{"alice", "ALICE"},
		{"alice", "\u0430lice"},                     // Cyrillic а
		{"alice", "a1ice"},                          // digit one
		{"alice", "aIice"},                          // capital I
		{"alice", "alice\u200b"},                    // zero-width space
		{"alice", "ali\u202ece"},                    // bidi override
		{"alice", "\uff41\uff4c\uff49\uff43\uff45"}, // fullwidth
		{"bob", "b\u043eb"},                         // Cyrillic о
		{"Ian", "ian"},
		{"o'brien", "O'Brien"},
	}
	for _, p := range same {
		if !NamesConfusable(p[0], p[1]) {
			t.Errorf("%q and %q should be confusable (skeletons %q, %q)", p[0], p[1], NameSkeleton(p[0]), NameSkeleton(p[1]))
		}
	}
	different := [][2]string{
		{"alice", "alicia"},
		{"bob", "rob"},
		{"alice", "alice2"},
		{"worker", "reviewer"},
	}
	for _, p := range different {
		if NamesConfusable(p[0], p[1]) {
			t.Errorf("%q and %q should not be confusable (skeletons %q, %q)", p[0], p[1], NameSkeleton(p[0]), NameSkeleton(p[1]))
		}
	}
}
