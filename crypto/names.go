package crypto

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"claudemesh/internal/casefold"
	"claudemesh/internal/confusables"
	"golang.org/x/text/unicode/norm"
)

// MaxNameLen is the longest display or mesh name, in code points.
const MaxNameLen = 64

// ValidSlug reports whether s has the shape of a mesh slug,
// ^[a-z0-9][a-z0-9-]{0,31}$. It leaves no room for '|', control characters
// or case variants, so a slug is safe in signed strings and unique as typed.
// (A hand-written check, not a regexp: a package-level regexp is compiled
// in every process at start, whether or not it ever checks a slug.)
func ValidSlug(s string) bool {
	if len(s) < 1 || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return false
		}
	}
	return true
}

// NormalizeName returns the canonical form of a display or mesh name: NFC,
// trimmed of surrounding white space, 1..64 code points, no control
// characters and no '|' (ErrBadField otherwise). Names go into signed
// strings (enroll, invite), so every party must agree on their bytes; NFC
// makes "é" typed two ways the same name.
func NormalizeName(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: name is not valid UTF-8", ErrBadField)
	}
	n := strings.TrimSpace(norm.NFC.String(s))
	if c := utf8.RuneCountInString(n); c < 1 || c > MaxNameLen {
		return "", fmt.Errorf("%w: name must be 1 to %d characters, got %d", ErrBadField, MaxNameLen, c)
	}
	if err := checkField("name", n); err != nil {
		return "", err
	}
	for _, r := range n {
		if IsInvisible(r) {
			// "alice\u200b" and "ali\u202ece" read as "alice": a name is
			// what a human reads, so what they cannot see is refused.
			return "", fmt.Errorf("%w: name contains the invisible or direction-changing character %U", ErrBadField, r)
		}
	}
	return n, nil
}

// NameFromText makes a display name out of text the user did not type as
// one (a directory's name, for an agent session's default name): every
// character NormalizeName refuses ('|', control, invisible and
// direction-changing ones; invalid UTF-8) becomes '-', and the result is
// trimmed and cut to MaxNameLen. It is "" when nothing is left; what it
// returns otherwise passes NormalizeName. (A session started in a
// directory named "a|b" was refused, and retried for ever.)
func NameFromText(s string) string {
	var b strings.Builder
	for _, r := range norm.NFC.String(strings.ToValidUTF8(s, "-")) {
		if r == '|' || isControl(r) || IsInvisible(r) || r == utf8.RuneError {
			r = '-'
		}
		b.WriteRune(r)
	}
	n := strings.TrimSpace(b.String())
	if r := []rune(n); len(r) > MaxNameLen {
		n = strings.TrimSpace(string(r[:MaxNameLen]))
	}
	// NFC may recompose across a cut or a replacement; a name that still
	// fails (it should not) is better left out than refused for ever.
	if _, err := NormalizeName(n); err != nil {
		return ""
	}
	return n
}

// NameKey is the key under which display names are unique in a mesh:
// Unicode case folding of the NFC form, so "Alice" and "alice" collide. It
// is for comparison only; show the name as given. The folding is
// golang.org/x/text/cases.Fold()'s, byte for byte (internal/casefold).
func NameKey(s string) string {
	return norm.NFC.String(casefold.String(norm.NFC.String(s)))
}

// NameSkeleton is the form under which two display names count as the same
// name to a human reader: Unicode case folding and the UTS #39 confusables
// skeleton (internal/confusables, the Unicode consortium's
// table), after NFKC and with default-ignorable and bidi control code
// points removed. "Alice", "ALICE", "аlice" (Cyrillic а), "a1ice",
// "alice\u200b" and fullwidth "ａｌｉｃｅ" all have the skeleton of
// "alice". It is for comparison only, never for display.
//
// The skeleton is applied before and after folding because folding and the
// table disagree on a few letters (the table maps capital I to l, folding
// maps it to i); NamesConfusable also compares NameKey, so two names that
// differ only in case always collide.
//
// Beyond UTS #39, which keeps marks and punctuation, three things a reader
// overlooks are folded away: the capital I with a dot above (U+0130) is
// read as i ("ALİCE"), the combining dot above (U+0307) is dropped, and
// so are spaces and punctuation ("alice.", "al ice", "a_lice", "alice!"
// all have the skeleton of "alice"), unless nothing else is left. Symbols
// stay: "🔴 ops-bot" and "🟢 ops-bot", "c++" and "c#" are names a reader
// tells apart, and agent meshes name personas with them.
func NameSkeleton(s string) string {
	s = stripInvisible(norm.NFKC.String(s))
	s = strings.ReplaceAll(s, "\u0130", "i")
	s = confusables.Skeleton(s)
	s = casefold.String(s)
	s = confusables.Skeleton(s)
	s = casefold.String(s)
	if folded := stripOverlooked(s); folded != "" {
		s = folded
	}
	return norm.NFC.String(s)
}

// stripOverlooked drops from a (decomposed) skeleton what a reader
// overlooks when telling two names apart: the combining dot above, white
// space and punctuation.
func stripOverlooked(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\u0307' || unicode.IsSpace(r) || unicode.In(r, unicode.Z, unicode.P) {
			return -1
		}
		return r
	}, s)
}

// NamesConfusable reports whether a reader could take a for b: equal
// case-folded (NameKey) or equal skeletons (NameSkeleton). The broker
// refuses a session display name confusable with another member's enrolled
// name, and clients show a confusable name next to its key prefix.
func NamesConfusable(a, b string) bool {
	return NameKey(a) == NameKey(b) || NameSkeleton(a) == NameSkeleton(b)
}

// ReservedName is the name no member or session may take: claudemesh's own
// notices to an agent are its (docs/protocol.md "Readings"), and a member
// called "claudemesh" would have its messages read "claudemesh: …", in
// the voice those notices had.
const ReservedName = "claudemesh"

// IsReservedName reports whether name is ReservedName or can be taken for
// it (NamesConfusable: "Claudemesh", "c1audemesh", "сlaudemesh" in
// Cyrillic). The broker refuses such a name at join, at mesh create and
// for a session.
func IsReservedName(name string) bool { return NamesConfusable(name, ReservedName) }

// stripInvisible drops code points a reader cannot see (IsInvisible),
// which would otherwise make "ali\u200bce" a new name.
func stripInvisible(s string) string {
	return strings.Map(func(r rune) rune {
		if IsInvisible(r) {
			return -1
		}
		return r
	}, s)
}

// IsInvisible reports whether r is a code point a reader cannot see:
// default-ignorable code points (zero-width spaces and joiners, variation
// selectors, tags, ...) and bidi controls (which reorder what is shown).
// Names may not contain them (NormalizeName); where an old name still does,
// the CLI shows them as escapes.
func IsInvisible(r rune) bool {
	return unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Bidi_Control, r) ||
		unicode.Is(unicode.Join_Control, r) || unicode.Is(unicode.Variation_Selector, r) ||
		r == '\u00ad' || r == '\u034f' || r == '\u061c' || r == '\u115f' || r == '\u1160' ||
		r == '\u17b4' || r == '\u17b5' || (r >= '\u180b' && r <= '\u180f') ||
		(r >= '\u200b' && r <= '\u200f') || (r >= '\u202a' && r <= '\u202e') ||
		(r >= '\u2060' && r <= '\u206f') || r == '\u3164' || r == '\ufeff' || r == '\uffa0' ||
		(r >= 0x1d173 && r <= 0x1d17a) || (r >= 0xe0000 && r <= 0xe0fff)
}
