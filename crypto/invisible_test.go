package crypto

import (
	"errors"
	"testing"
)

// TestNamesRefuseInvisibleCodePoints: "alice\u200b" and "ali\u202ece" read
// as "alice"; a display or mesh name may not contain default-ignorable or
// bidi control code points.
func TestNamesRefuseInvisibleCodePoints(t *testing.T) {
	for _, bad := range []string{
		"alice\u200b", "ali\u202ece", "\u2066alice\u2069", "al\u200dice", "al\u00adice",
		"alice\ufeff", "al\u2060ice", "alice\U000e0041", "a\u061cb", "a\u200eb", "a\u180eb", "al\u034fice",
	} {
		if got, err := NormalizeName(bad); !errors.Is(err, ErrBadField) {
			t.Errorf("NormalizeName(%q) = %q, %v; want refused", bad, got, err)
		}
	}
	for _, ok := range []string{"alice", "Zoë", "名前", "o'brien", "Ωmega 🚀"} {
		if _, err := NormalizeName(ok); err != nil {
			t.Errorf("NormalizeName(%q): %v", ok, err)
		}
	}
}
