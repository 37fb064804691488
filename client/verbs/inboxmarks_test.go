package verbs

import (
	"testing"

	"claudemesh/daemon/localapi"
)

// TestInboxRowKeepsTheDaemonsMarks: inbox --json carries the daemon's
// fromSelf and senderLooksLike for a verified row, none for an unverified
// one.
func TestInboxRowKeepsTheDaemonsMarks(t *testing.T) {
	r := localapi.InboxRow{Verified: true, SenderName: "\u0430lice", FromSelf: false, SenderLooksLike: "alice", SenderLooksLikeSelf: true}
	if row := inboxRowOf(r); row.SenderLooksLike != "alice" || !row.SenderLooksLikeSelf {
		t.Fatalf("%+v", row)
	}
	r.Verified = false
	if row := inboxRowOf(r); row.SenderLooksLike != "" || row.SenderLooksLikeSelf {
		t.Fatalf("unverified: %+v", row)
	}
	own := inboxRowOf(localapi.InboxRow{Verified: true, SenderName: "alice", FromSelf: true})
	if !own.FromSelf {
		t.Fatalf("own: %+v", own)
	}
}
