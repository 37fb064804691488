package main

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestThirdPartyVersions: every module third_party/sync.sh copies is the
// version go.mod requires, and go.mod replaces it with that copy. An update
// of one without the other would build a copy of one version while go.mod
// (and whatever reads it: go version -m, scanners) names another.
func TestThirdPartyVersions(t *testing.T) {
	script, err := os.ReadFile("third_party/sync.sh")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^([A-Z_]+)=(v\S+)$`).FindAllStringSubmatch(string(script), -1) {
		vars[m[1]] = m[2]
	}
	copies := regexp.MustCompile(`(?m)^copy (\S+) "\$([A-Z_]+)" (\S+)`).FindAllStringSubmatch(string(script), -1)
	if len(copies) != 10 {
		t.Fatalf("sync.sh copies %d modules, want the 10 third_party/README.md lists", len(copies))
	}
	for _, c := range copies {
		mod, ver, dir := c[1], vars[c[2]], c[3]
		if ver == "" {
			t.Errorf("sync.sh copies %s at $%s, which it does not set", mod, c[2])
			continue
		}
		req := regexp.MustCompile(`(?m)^\s*(?:require\s+)?` + regexp.QuoteMeta(mod) + ` (v\S+)`).FindStringSubmatch(string(gomod))
		if req == nil {
			t.Errorf("go.mod does not require %s, which sync.sh copies at %s", mod, ver)
		} else if req[1] != ver {
			t.Errorf("go.mod requires %s %s, sync.sh copies %s", mod, req[1], ver)
		}
		if !strings.Contains(string(gomod), mod+" => ./third_party/"+dir+"\n") {
			t.Errorf("go.mod does not replace %s with ./third_party/%s", mod, dir)
		}
		if _, err := os.Stat("third_party/" + dir + "/go.mod"); err != nil {
			t.Errorf("third_party/%s: %v", dir, err)
		}
	}
}

// TestFlagNamesAsUpstream: urfave/cli's FlagNames, patched to cut each
// name at its first comma or space without a regular expression compiled
// at start, gives what upstream's regexp.MustCompile("[, ]+.*") gave.
func TestFlagNamesAsUpstream(t *testing.T) {
	re := regexp.MustCompile("[, ]+.*")
	for _, name := range []string{"", "json", "home", "v", "no-daemon", "a, b", "a,b", "a b c", ", x", " ", ",",
		"a,  b\nc d", "a\nb", "a b\n", "\n, x", "é ü", "a\tb", "a,\n,\n b", "\xff, x"} {
		got := cli.FlagNames(name, []string{name + " alias", "x"})
		want := []string{re.ReplaceAllString(name, ""), re.ReplaceAllString(name+" alias", ""), "x"}
		if !slices.Equal(got, want) {
			t.Errorf("FlagNames(%q) = %q, upstream's %q", name, got, want)
		}
	}
}
