package cluster

import (
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for s, ok := range map[string]bool{
		"prod": true, "node-1": true, "A_b-9": true, strings.Repeat("x", 32): true,
		"": false, strings.Repeat("x", 33): false, "a.b": false, "a b": false, "nœud": false, "a/b": false,
	} {
		if validName(s) != ok {
			t.Errorf("validName(%q) = %v, want %v", s, !ok, ok)
		}
	}
}
