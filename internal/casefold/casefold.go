// Package casefold is Unicode full case folding, byte for byte what
// golang.org/x/text/cases.Fold() returns (CaseFolding.txt's C and F
// mappings; an invalid UTF-8 byte is kept as it is), from a static sorted
// table generated from x/text itself (table.go; TestTableIsCurrent
// regenerates it with -update).
//
// claudemesh folds display names (crypto.NameKey, NameSkeleton), which go
// into the broker's uniqueness checks. Importing x/text/cases linked its
// language tables, whose package initialisers (cases, language,
// internal/language, compact: ~0.07 ms and ~20 page faults) ran before
// main in every process, `claudemesh --version` and `send` included, while
// only a few commands ever fold a name. A table searched by binary search
// costs a process that folds nothing nothing.
package casefold

import (
	"sort"
	"strings"
	"unicode/utf8"
)

// String returns the case folding of s, as cases.Fold().String(s).
func String(s string) string {
	i := 0
	for i < len(s) {
		if c := s[i]; c < utf8.RuneSelf {
			if 'A' <= c && c <= 'Z' {
				break
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:]) // an invalid byte: RuneError, n 1, no folding
		if _, ok := fold(r); ok {
			break
		}
		i += n
	}
	if i == len(s) {
		return s // nothing folds: no copy
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if t, ok := fold(r); ok {
			b.WriteString(t)
		} else {
			b.WriteString(s[i : i+n]) // also an invalid byte, as it is
		}
		i += n
	}
	return b.String()
}

// fold returns r's folding when it is not r itself.
func fold(r rune) (string, bool) {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return asciiLower[r-'A' : r-'A'+1], true
		}
		return "", false
	}
	if k := sort.Search(len(singleFrom), func(k int) bool { return singleFrom[k] >= r }); k < len(singleFrom) && singleFrom[k] == r {
		return string(singleTo[k]), true
	}
	if k := sort.Search(len(multiFrom), func(k int) bool { return multiFrom[k] >= r }); k < len(multiFrom) && multiFrom[k] == r {
		return multiTo[k], true
	}
	return "", false
}

const asciiLower = "abcdefghijklmnopqrstuvwxyz"
