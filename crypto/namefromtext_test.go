package crypto

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestNameFromText(t *testing.T) {
	for in, want := range map[string]string{
		"project":               "project",
		"pipe|dir":              "pipe-dir",
		"tab\tx":                "tab-x",
		"ali\u202ece":           "ali-ce",
		"zero\u200bwidth":       "zero-width",
		"bad\xffutf8":           "bad-utf8",
		"  spaced  ":            "spaced",
		"\t":                    "-",
		"":                      "",
		strings.Repeat("é", 70): strings.Repeat("é", MaxNameLen),
	} {
		if got := NameFromText(in); got != want {
			t.Errorf("NameFromText(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzNameFromText: whatever the text, the name is "" or passes
// NormalizeName unchanged.
func FuzzNameFromText(f *testing.F) {
	for _, s := range []string{"a|b", "x\ty", "\u202e", "e\u0301", "\xff", strings.Repeat("ü", 80)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := NameFromText(s)
		if n == "" {
			return
		}
		got, err := NormalizeName(n)
		if err != nil || got != n || utf8.RuneCountInString(n) > MaxNameLen {
			t.Fatalf("NameFromText(%q) = %q: NormalizeName gives %q, %v", s, n, got, err)
		}
	})
}
