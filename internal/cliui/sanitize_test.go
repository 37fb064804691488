package cliui

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// The hostile bodies of the issue: thousands of control-string
// introducers that are never terminated (each keeps the rest of the text),
// in every spelling the sanitizer knows.
func hostileBodies(n int) map[string]string {
	return map[string]string{
		"c1 osc":         strings.Repeat("\u009d", n/2),
		"c1 dcs mixed":   strings.Repeat("\u0090x\u009ey", n/6),
		"esc ]":          strings.Repeat("\x1b]", n/2),
		"osc then esc":   strings.Repeat("\u009dab\x1bc", n/6),
		"terminated osc": strings.Repeat("\u009d52;c;eA==\u009c", n/12),
	}
}

// TestSanitizeIsLinear: the terminator search examines each byte at most
// once, whatever the input (64 KiB of U+009D took 3.3 s when every
// introducer searched to the end of the text again).
func TestSanitizeIsLinear(t *testing.T) {
	for name, body := range hostileBodies(64 << 10) {
		var z sanitizer
		out := z.run(body)
		if z.scanned > len(body) {
			t.Errorf("%s: %d bytes scanned for %d of input", name, z.scanned, len(body))
		}
		if len(out) > len(body) {
			t.Errorf("%s: output longer than input", name)
		}
	}
	// The reference is quadratic on these: compare on smaller ones.
	for name, body := range hostileBodies(4 << 10) {
		if SanitizePeerText(body) != sanitizeReference(body) {
			t.Errorf("%s: output differs from the reference", name)
		}
	}
}

func FuzzSanitizeMatchesReference(f *testing.F) {
	for _, s := range []string{"hi", "\x1b]52;c;x\x07", "\u009dab\x1b\\c", "\u009d\u009d\x07", "\x1b]x\x1b]y\x1b\\z", "a\xc2", "\u009d\xc2\x9c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var z sanitizer
		got := z.run(s)
		if want := sanitizeReference(s); got != want {
			t.Fatalf("%q: got %q, reference %q", s, got, want)
		}
		if z.scanned > len(s) {
			t.Fatalf("%q: scanned %d bytes", s, z.scanned)
		}
	})
}

func BenchmarkSanitizePeerText(b *testing.B) {
	bodies := hostileBodies(64 << 10)
	bodies["plain"] = strings.Repeat("hello, wörld ✓ ", 64<<10/18)
	bodies["colours"] = strings.Repeat("\x1b[31mred\x1b[0m ", 64<<10/13)
	for name, body := range bodies {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				SanitizePeerText(body)
			}
		})
	}
}

// BenchmarkSanitizeReference is the A side of the A/B: the sanitizer
// before it was linear, on the hostile bodies (seconds per 64 KiB op).
func BenchmarkSanitizeReference(b *testing.B) {
	for name, body := range hostileBodies(64 << 10) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				sanitizeReference(body)
			}
		})
	}
}

// sanitizeReference is the sanitizer as it was before it was made linear:
// the specification the fast one must match byte for byte.
func sanitizeReference(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
			i++
		case r == 0x1b:
			i = refSkipEscape(s, i+1)
		case r == 0x9b:
			i = skipCSI(s, i+size)
		case r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f:
			i = refSkipString(s, i+size)
		case r == '\n' || r == '\t':
			b.WriteRune(r)
			i += size
		case isControl(r) || isBidiControl(r):
			i += size
		default:
			b.WriteString(s[i : i+size])
			i += size
		}
	}
	return b.String()
}

func refSkipEscape(s string, i int) int {
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '[':
		return skipCSI(s, i+1)
	case ']', 'P', 'X', '^', '_':
		return refSkipString(s, i+1)
	}
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i
}

func refSkipString(s string, i int) int {
	for j := i; j < len(s); {
		r, size := utf8.DecodeRuneInString(s[j:])
		switch {
		case r == 0x07 || r == 0x9c:
			return j + size
		case r == 0x1b && j+1 < len(s) && s[j+1] == '\\':
			return j + 2
		case r == 0x1b:
			return i
		}
		j += size
	}
	return i
}

func TestSanitizeNameShowsInvisibles(t *testing.T) {
	for in, want := range map[string]string{
		"alice":             "alice",
		"alice\u200b":       "alice⟨U+200B⟩",
		"ali\u202ece":       "ali⟨U+202E⟩ce",
		"al\u2066ice":       "al⟨U+2066⟩ice",
		"a\u200db":          "a⟨U+200D⟩b",
		"\x1b[31malice\x07": "alice",
	} {
		if got := SanitizeName(in); got != want {
			t.Errorf("SanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
