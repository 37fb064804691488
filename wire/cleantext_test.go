package wire

import (
	"strings"
	"testing"
)

func TestCleanText(t *testing.T) {
	for _, c := range []struct {
		in   string
		max  int
		want string
	}{
		{"/home/a", 1024, "/home/a"},
		{"/tmp/pipe|dir\tx", 1024, "/tmp/pipe|dir\uFFFDx"},
		{"a\x85b\xffc", 1024, "a\uFFFDb\uFFFDc"},
		{"ééé", 5, "éé"}, // cut at a character boundary
	} {
		if got := CleanText(c.in, c.max); got != c.want || !ValidText(got, c.max) {
			t.Errorf("CleanText(%q, %d) = %q (valid %v), want %q", c.in, c.max, got, ValidText(got, c.max), c.want)
		}
	}
}

// FuzzCleanText: the result always passes ValidText.
func FuzzCleanText(f *testing.F) {
	f.Add("/tmp/a\tb", 8)
	f.Add(strings.Repeat("\xff", 10), 3)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 4096 {
			return
		}
		if got := CleanText(s, max); !ValidText(got, max) {
			t.Fatalf("CleanText(%q, %d) = %q fails ValidText", s, max, got)
		}
	})
}
