package verbs

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"claudemesh/wire"
)

func TestParseCaps(t *testing.T) {
	caps, all, err := parseCaps([]string{"dm,broadcast", "DM"}, false)
	if err != nil || all || !slices.Equal(caps, []string{"dm", "broadcast"}) {
		t.Fatalf("dm,broadcast DM: %v %v %v", caps, all, err)
	}
	if _, all, err := parseCaps([]string{"all"}, true); err != nil || !all {
		t.Fatalf("all: %v %v", all, err)
	}
	for _, bad := range [][]string{{"all"}, {"admin"}, {","}, {}} {
		if _, _, err := parseCaps(bad, false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestNormCaps(t *testing.T) {
	if got := normCaps([]string{"broadcast", "dm"}); got != nil {
		t.Errorf("every capability should be the defaults (nil), got %v", got)
	}
	if got := normCaps(nil); got == nil || len(got) != 0 {
		t.Errorf("no capability is a block ([]), got %#v", got)
	}
	if got := normCaps([]string{wire.CapDM}); !slices.Equal(got, []string{"dm"}) {
		t.Errorf("dm: %v", got)
	}
}

func TestSkillFileNames(t *testing.T) {
	name, desc := skillFrontmatter("---\nname: deploy\ndescription: \"how we ship\"\nother: x\n---\n# body\n")
	if name != "deploy" || desc != "how we ship" {
		t.Errorf("frontmatter: %q %q", name, desc)
	}
	if n, d := skillFrontmatter("# no frontmatter\n---\nname: x\n---\n"); n != "" || d != "" {
		t.Errorf("frontmatter not at the start was read: %q %q", n, d)
	}
	for path, want := range map[string]string{
		"./deploy.md":               "deploy",
		"/x/Code Review/SKILL.md":   "code-review",
		"notes/Release_Notes.v2.md": "release_notes.v2",
	} {
		if got := skillNameFrom(path); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

func TestSummarizePayload(t *testing.T) {
	got := summarizePayload([]byte(`{"member":{"displayName":"bob","pubkey":"ab"},"reason":"spam","affected":[{"displayName":"a"},{"displayName":"b"}]}`))
	if got != "affected=a,b member=bob reason=spam" {
		t.Errorf("summary %q", got)
	}
}

// TestSummarizePayloadNumbers: numbers keep their digits (an invite's
// expiresAt was printed 1.797147243144e+12), and a Unix-ms time field is
// shown as a time.
func TestSummarizePayloadNumbers(t *testing.T) {
	exp := time.Date(2026, 12, 13, 7, 34, 0, 0, time.Local)
	got := summarizePayload([]byte(fmt.Sprintf(`{"expiresAt":%d,"maxUses":5,"keyGen":12345678,"ids":[1797147243144,2]}`, exp.UnixMilli())))
	if want := "expiresAt=2026-12-13T07:34 ids=1797147243144,2 keyGen=12345678 maxUses=5"; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}

// TestSummarizePayloadBigIntegers: integers above 2^53 keep every digit
// (decoded as float64, 9007199254740993 printed as 9007199254740992), and
// other values print as JSON rather than Go's %v (map[…], <nil>).
func TestSummarizePayloadBigIntegers(t *testing.T) {
	got := summarizePayload([]byte(`{"seq":9007199254740993,"max":18446744073709551615,"neg":-9007199254740993,"ids":[9007199254740995],"x":null,"o":{"a":1},"f":1.5}`))
	if want := `f=1.5 ids=9007199254740995 max=18446744073709551615 neg=-9007199254740993 o={"a":1} seq=9007199254740993 x=null`; got != want {
		t.Errorf("summary %q, want %q", got, want)
	}
}
