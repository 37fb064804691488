package verbs

import (
	"strings"
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

// TestSenderLabelQuotesNamesThatImitateIt: inbox showed a member enrolled
// as "alice-api (via alice)" exactly as alice's session alice-api.
func TestSenderLabelQuotesNamesThatImitateIt(t *testing.T) {
	alice, session, mallory := hexKey64("a"), hexKey64("5"), hexKey64("9")
	real := inboxRow{Verified: true, SenderName: "alice-api", SenderPubkey: session, SenderMemberPubkey: alice, SenderMemberName: "alice"}
	fake := inboxRow{Verified: true, SenderName: "alice-api (via alice)", SenderPubkey: mallory, SenderMemberPubkey: mallory, SenderMemberName: "alice-api (via alice)"}
	if got := senderLabel(real); got != "alice-api (via alice)" {
		t.Fatalf("real: %q", got)
	}
	if got := senderLabel(fake); got != `"alice-api (via alice)"` {
		t.Fatalf("fake: %q", got)
	}
	fake.SenderName, fake.SenderLooksLike = "\u0430lice", "alice"
	if got := senderLabel(fake); got != "\u0430lice [not alice, a lookalike name]" {
		t.Fatalf("lookalike: %q", got)
	}
}

func hexKey64(c string) string { return strings.Repeat(c, 64) }
