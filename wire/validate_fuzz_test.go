package wire

import (
	"regexp"
	"testing"
)

// The spec states these shapes as regular expressions; the validators are
// hand-written for speed. This fuzz target holds them to the spec's text.
var specPatterns = map[string]*regexp.Regexp{
	"reqId":     regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`),
	"sessionId": regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`),
	"group":     regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}(/[a-z0-9][a-z0-9_-]{0,31}){0,3}$`),
	"topic":     regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`),
	"ulid":      regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`),
}

func FuzzValidatorsMatchSpecPatterns(f *testing.F) {
	for _, s := range []string{"", "a", "r-1", "has space", "dev/backend", "a/b/c/d", "a/b/c/d/e", "-x", "x-", "_x",
		"01JDQM9S346Q3D25VT4F5V37E3", "01JDQM9S346Q3D25VT4F5V37EI", "x\n", "A:b.c-d_e", "dev//x", "/dev"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(name string, got bool) {
			if want := specPatterns[name].MatchString(s); got != want {
				t.Fatalf("%s(%q) = %v, the spec's pattern says %v", name, s, got, want)
			}
		}
		check("reqId", ValidReqID(s))
		check("sessionId", ValidSessionID(s))
		check("group", ValidGroup(s))
		check("topic", ValidTopicName(s))
		check("ulid", ValidULID(s))
	})
}
