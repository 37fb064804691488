package cliui

import (
	"strconv"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/width"
)

// Width is how many terminal columns s takes: East Asian wide and
// fullwidth characters (CJK, most emoji) take two, combining marks,
// format characters and ANSI colour sequences none, everything else one.
// Tables pad by it, not by runes, so a column after a name in Japanese
// stays aligned.
func Width(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if k := csiLen(s[i:]); k > 0 { // a colour sequence takes no room
			i += k
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n += RuneWidth(r)
	}
	return n
}

// RuneWidth is Width of one rune.
func RuneWidth(r rune) int {
	switch {
	case r == 0x200d || unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf):
		return 0
	case r >= 0x1f300 && r <= 0x1faff:
		return 2 // pictographs and emoji: wide in every terminal of note
	}
	switch width.LookupRune(r).Kind() {
	case width.EastAsianWide, width.EastAsianFullwidth:
		return 2
	}
	return 1
}

// Clip is s as an error may echo it back: at most 40 characters, then
// "…" and how long it was (a 5,000-character argument was repeated whole).
func Clip(s string) string {
	const most = 40
	n := utf8.RuneCountInString(s)
	if n <= most {
		return s
	}
	return string([]rune(s)[:most]) + "…(" + strconv.Itoa(n) + " characters)"
}
