package broker

import (
	"testing"

	"claudemesh/wire"
)

// TestKickOfYourselfSaysSo (a new user's trial): the owner's `kick alice`
// of herself, her daemon connected, answered "skipped: the owner" for
// the daemon and "skipped: not connected" (untrue) for the rest. A kick
// of the caller's own member is skipped once, as itself, as ban says
// "that is you".
func TestKickOfYourselfSaysSo(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	connect(t, b, alice, true, nil) // her daemon
	c := connect(t, b, alice, false, nil)
	var res wire.AdminResult
	c.request(map[string]any{"type": wire.TypeKick, "target": "alice"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 0 || len(res.Skipped) != 1 || res.Skipped[0].Reason != wire.SkipSelf {
		t.Fatalf("kick of yourself: %+v, want one skipped row, self", res)
	}
}
