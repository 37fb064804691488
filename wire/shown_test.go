package wire

import (
	"strings"
	"testing"
)

func TestShownTargetSpecAndReplyToID(t *testing.T) {
	for s, want := range map[string]bool{"*": true, "@ops": true, "@ops/eu": true, "#01JABCDEFGHJKMNPQRSTVWXYZ0": true,
		strings.Repeat("a", 64): true, "": false, "@": false, "@Ops": false, "#": false, "# x": false, "bob": false,
		strings.Repeat("a", 63): false, "@ops\x1b[2J": false, "* (via alice)": false} {
		if got := ShownTargetSpec(s) == s && s != ""; got != want {
			t.Errorf("ShownTargetSpec(%q) kept = %v", s, got)
		}
	}
	if ShownReplyToID("01J:a.b-c") != "01J:a.b-c" || ShownReplyToID("01J (via alice)") != "" || ShownReplyToID(strings.Repeat("a", 65)) != "" {
		t.Error("ShownReplyToID")
	}
}
