package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
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
	if len(copies) != 8 {
		t.Fatalf("sync.sh copies %d modules, want the 8 third_party/README.md lists", len(copies))
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
