package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"claudemesh/internal/cliui"
)

// TestDemoRuns runs the whole tour: it fails if any message does not arrive
// decrypted, if carol receives the @dev message, or if the store holds a
// plaintext (or lacks a ciphertext).
func TestDemoRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, &out, cliui.NewStyle(false)); err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		`bob received from alice, decrypted and verified: "hi bob`,
		`carol received from alice, decrypted and verified: "standup`,
		"carol (not in @dev) received nothing",
		"bob joined #deploys; he holds no key yet",
		"alice's client sealed the key for bob",
		`bob read it from #deploys, decrypted and its signature verified: "deploy of v1.4`,
		`alice read it from #deploys`,
		"nor the topic key",
		"holds none of the plaintext",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "\x1b[") {
		t.Error("colour codes in plain output")
	}
}
