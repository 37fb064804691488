package crypto

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
)

// MaxNameLen is the longest display or mesh name, in code points.
const MaxNameLen = 64

// SlugPattern is the shape of a mesh slug. It leaves no room for '|',
// control characters or case variants, so a slug is safe in signed strings
// and unique as typed.
var SlugPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

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
	return n, nil
}

// NameKey is the key under which display names are unique in a mesh:
// Unicode case folding of the NFC form, so "Alice" and "alice" collide. It
// is for comparison only; show the name as given. The Caser is made per
// call because a cases.Caser is stateful and not safe to share.
func NameKey(s string) string {
	return norm.NFC.String(cases.Fold().String(norm.NFC.String(s)))
}
