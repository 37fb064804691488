package verbs

import (
	"bytes"
	"strings"
	"testing"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// TestUnsignedLabelsAreCheckedAndSanitised: a push's replyToId and a box's
// targetSpec are signed by nobody, and inbox printed them raw, as peer list
// printed a peer's status: a broker (or a hand-written frame) could put
// terminal escapes or words such as "(via alice)" there. They are dropped
// when not of their wire form, and printed sanitised (rows stored before).
func TestUnsignedLabelsAreCheckedAndSanitised(t *testing.T) {
	key, _ := cmcrypto.GenerateIdentity()
	junk := &wire.Push{MessageID: "01JABCDEFGHJKMNPQRSTVWXYZ0", Kind: wire.KindMulti, SenderPubkey: strings.Repeat("9", 64),
		ReplyToID: "01J\x1b]52;c;ZWNobyBwd25lZA==\x07 (via alice)", TargetSpec: "@ops\x1b[2J"}
	row := openRow(&config.Mesh{Slug: "acme", MeshID: "m"}, key, junk, 1)
	if row.ReplyToID != "" || row.TargetSpec != "" {
		t.Fatalf("kept: reply %q target %q", row.ReplyToID, row.TargetSpec)
	}
	good := &wire.Push{MessageID: "01JABCDEFGHJKMNPQRSTVWXYZ0", Kind: wire.KindMulti, SenderPubkey: strings.Repeat("9", 64),
		ReplyToID: "01JABCDEFGHJKMNPQRSTVWXYZ1", TargetSpec: "@ops/eu"}
	if row := openRow(&config.Mesh{Slug: "acme", MeshID: "m"}, key, good, 1); row.ReplyToID != good.ReplyToID || row.TargetSpec != good.TargetSpec {
		t.Fatalf("dropped: %+v", row)
	}

	var out bytes.Buffer
	body := "hi"
	stored := inboxRow{MessageID: "x", Mesh: "acme", SenderPubkey: strings.Repeat("9", 64), Body: &body,
		ReplyToID: junk.ReplyToID, TargetSpec: junk.TargetSpec}
	printMessage(cliui.NewOut(&out, nil, false, false, false), stored, false)
	printPeers(cliui.NewOut(&out, nil, false, false, false), []peerRow{{Mesh: "acme", Pubkey: strings.Repeat("8", 64),
		DisplayName: "bob", Online: true, Status: "working\x1b]0;pwned\x07\x1b[2J"}}, false)
	if strings.ContainsAny(out.String(), "\x1b\x07") {
		t.Fatalf("controls printed: %q", out.String())
	}
}
