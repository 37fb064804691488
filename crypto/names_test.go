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
		{"alice", "AL\u0130CE"},  // capital I with a dot above
		{"alice", "al\u0130ce"},  // the same among lowercase letters
		{"alice", "al\u0131ce"},  // dotless i
		{"alice", "alice."},      // trailing punctuation
		{"alice", "al ice"},      // a space inside
		{"alice", "a_lice"},      // punctuation inside
		{"alice", "alice!"},      // and outside
		{"alice", "alice\u00a0"}, // a no-break space
		{"alice", "alice\u2019"}, // a curly apostrophe
		{"alice-api", "aliceapi"},
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
		{"...", "---"}, // nothing but punctuation: compared as it is
		{"alice", "alice.2"},
		// Symbols are not overlooked: personas are named with them.
		{"alice", "alice+"},
		{"\U0001F534 ops-bot", "\U0001F7E2 ops-bot"},
		{"\U0001F916 builder", "\U0001F9EA builder"},
		{"c++", "c#"},
	}
	for _, p := range different {
		if NamesConfusable(p[0], p[1]) {
			t.Errorf("%q and %q should not be confusable (skeletons %q, %q)", p[0], p[1], NameSkeleton(p[0]), NameSkeleton(p[1]))
		}
	}
}
