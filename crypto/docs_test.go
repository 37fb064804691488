package crypto

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// TestCryptoDocQuotesTheVectors keeps docs/crypto.md's worked examples
// identical to testdata/crypto-vectors.json: every value of the vectors
// (keys, nonces, ciphertexts, signed strings, signatures, the invite link,
// the safety number, the reject inputs) must appear in the document, so an
// independent client writer who copies an example copies a checked value.
func TestCryptoDocQuotesTheVectors(t *testing.T) {
	doc, err := os.ReadFile("../docs/crypto.md")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../testdata/crypto-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	var walk func(path string, x any)
	walk = func(path string, x any) {
		switch x := x.(type) {
		case map[string]any:
			for k, e := range x {
				if path == "" && k == "about" {
					continue
				}
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range x {
				walk(path+"[]", e)
			}
		case string:
			if strings.HasSuffix(path, ".signer") || strings.HasSuffix(path, ".label") ||
				strings.HasSuffix(path, ".field") || strings.HasSuffix(path, ".sender") ||
				strings.HasSuffix(path, ".recipient") || path == ".safety.a" || path == ".safety.b" {
				return // names, not values
			}
			quoted := strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(x)
			if !strings.Contains(text, x) && !strings.Contains(text, quoted) {
				t.Errorf("docs/crypto.md does not quote %s = %q", path, x)
			}
		}
	}
	walk("", v)
	if strings.Contains(text, "shared/") {
		t.Error("docs/crypto.md points outside the repository")
	}
}
