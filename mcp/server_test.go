package mcp

import (
	"strings"
	"testing"

	"claudemesh/internal/agentview"
)

// TestInstructionsReplyToTheKey: the server's instructions used to say
// `claudemesh send "<from_name>" "..."`, which runs a sender's name such as
// `$(curl …;sh)` in bash; they name the key and a quoted heredoc now, and the
// send_message tool when it is offered.
func TestInstructionsReplyToTheKey(t *testing.T) {
	for _, tools := range []bool{false, true} {
		s := serverInstructions(Options{Tools: tools})
		if strings.Contains(s, "<from_name>") || strings.Contains(s, `send "`) || !strings.Contains(s, agentview.ReplyCommand) {
			t.Fatalf("tools %v: %s", tools, s)
		}
		if strings.Contains(s, "send_message") != tools {
			t.Fatalf("tools %v: send_message mentioned wrongly: %s", tools, s)
		}
	}
}
