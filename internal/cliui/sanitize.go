package cliui

import (
	"fmt"
	"strings"
	"unicode/utf8"

	cmcrypto "claudemesh/crypto"
)

// SanitizePeerText makes text from peers (message bodies, display names,
// summaries, broker error messages) safe to print on a terminal: it is
// untrusted input, and an escape sequence in it could recolour or rewrite
// the screen, set the window title, or write the clipboard (OSC 52).
//
// Removed: C0 controls other than newline and tab (carriage return too, which
// could overwrite a line), DEL, C1 controls U+0080–U+009F, and whole escape
// sequences: CSI (ESC [ … final byte, or U+009B …), OSC/DCS/SOS/PM/APC
// strings up to their terminator (BEL, ESC \ or U+009C), and two-byte
// escapes (ESC c …), so no parameter debris is left behind. Bidirectional
// override and isolate controls (U+202A–U+202E, U+2066–U+2069) are removed
// too, because they can make text display in a different order than it
// reads ("Trojan Source"). Invalid UTF-8 becomes U+FFFD.
//
// It runs in time linear in len(s): whether a control string is terminated
// is found by one forward search whose result is remembered, so a body of
// thousands of unterminated introducers (each of which keeps the rest as
// text) costs one pass, not one pass per introducer (it cost 3.3 s for
// 64 KiB of U+009D).
func SanitizePeerText(s string) string {
	if isClean(s) {
		return s
	}
	var z sanitizer
	return z.run(s)
}

// sanitizer is one run of SanitizePeerText. stopFrom/stopAt cache the last
// terminator search: the first BEL, U+009C or ESC at or after stopFrom is at
// stopAt (len(s) if none).
type sanitizer struct {
	s                string
	stopFrom, stopAt int
	scanned          int // bytes examined by terminator searches (tests)
}

func (z *sanitizer) run(s string) string {
	z.s, z.stopFrom, z.stopAt = s, -1, -1
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
			i++
		case r == 0x1b:
			i = z.skipEscape(i + 1)
		case r == 0x9b: // C1 CSI
			i = skipCSI(s, i+size)
		case r == 0x9d || r == 0x90 || r == 0x98 || r == 0x9e || r == 0x9f: // C1 OSC, DCS, SOS, PM, APC
			i = z.skipString(i + size)
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

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) }

func isBidiControl(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// isClean is the fast path: most text has nothing to remove.
func isClean(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || (isControl(r) && r != '\n' && r != '\t') || isBidiControl(r) {
			return false
		}
	}
	return true
}

// skipEscape skips the rest of an ESC sequence starting at i (just after
// ESC) and returns the index after it.
func (z *sanitizer) skipEscape(i int) int {
	s := z.s
	if i >= len(s) {
		return i
	}
	switch s[i] {
	case '[':
		return skipCSI(s, i+1)
	case ']', 'P', 'X', '^', '_': // OSC, DCS, SOS, PM, APC
		return z.skipString(i + 1)
	}
	// nF/Fp/Fe/Fs escapes: intermediates 0x20–0x2F, then one final byte.
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x30 && s[i] <= 0x7e {
		i++
	}
	return i
}

// skipCSI skips parameter bytes (0x30–0x3F), intermediate bytes (0x20–0x2F)
// and the final byte (0x40–0x7E). A malformed sequence ends at the first
// byte outside those ranges, which is then processed normally.
func skipCSI(s string, i int) int {
	for i < len(s) && s[i] >= 0x30 && s[i] <= 0x3f {
		i++
	}
	for i < len(s) && s[i] >= 0x20 && s[i] <= 0x2f {
		i++
	}
	if i < len(s) && s[i] >= 0x40 && s[i] <= 0x7e {
		i++
	}
	return i
}

// skipString skips a control string up to and including its terminator
// (BEL, ESC \ or U+009C). An unterminated string drops only its introducer:
// the rest is kept as text (its control bytes are still removed), so a
// stray ESC ] cannot swallow the remainder of a message.
func (z *sanitizer) skipString(i int) int {
	s := z.s
	j := z.nextStop(i)
	switch {
	case j >= len(s):
		return i // unterminated
	case s[j] == 0x07:
		return j + 1
	case s[j] == 0xc2: // U+009C
		return j + 2
	case j+1 < len(s) && s[j+1] == '\\': // ESC \
		return j + 2
	}
	return i // another escape begins: the string was not terminated
}

// nextStop is the index of the first BEL, U+009C or ESC at or after i
// (len(s) if none). Searches move forward only: a result is reused while i
// has not passed it, so every byte is examined at most once per run. (The
// bytes can be searched directly: none of them occurs inside another
// character's UTF-8 encoding, and 0xC2 0x9C is U+009C wherever it starts.)
func (z *sanitizer) nextStop(i int) int {
	if z.stopFrom >= 0 && z.stopFrom <= i && i <= z.stopAt {
		return z.stopAt
	}
	s := z.s
	j := i
	for ; j < len(s); j++ {
		c := s[j]
		if c == 0x07 || c == 0x1b || (c == 0xc2 && j+1 < len(s) && s[j+1] == 0x9c) {
			break
		}
	}
	z.scanned += j - i
	z.stopFrom, z.stopAt = i, j
	return j
}

// SanitizeName is SanitizePeerText for a display or mesh name, which must
// also show what a reader could not see: invisible and direction-changing
// code points (refused in new names, possible in old ones) are shown as
// ⟨U+200B⟩, so neither "alice\u200b" nor "ali\u202ece" passes for "alice".
func SanitizeName(s string) string {
	if strings.ContainsFunc(s, cmcrypto.IsInvisible) {
		var b strings.Builder
		for _, r := range s {
			if cmcrypto.IsInvisible(r) {
				fmt.Fprintf(&b, "⟨%U⟩", r)
			} else {
				b.WriteRune(r)
			}
		}
		s = b.String()
	}
	return SanitizePeerText(s)
}
