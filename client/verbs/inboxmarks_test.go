package verbs

import (
	"bytes"
	"strings"
	"testing"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
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
	fake.SenderName, fake.SenderMemberName = "alice-api\uff08via alice\uff09", "alice-api\uff08via alice\uff09" // fullwidth parentheses
	if got := senderLabel(fake); got != `"alice-api⟨U+FF08⟩via alice⟨U+FF09⟩"` {
		t.Fatalf("fullwidth: %q", got)
	}
	fake.SenderName, fake.SenderLooksLike = "\u0430lice", "alice"
	if got := senderLabel(fake); got != "\u0430lice [not alice, a lookalike name]" {
		t.Fatalf("lookalike: %q", got)
	}
}

func hexKey64(c string) string { return strings.Repeat(c, 64) }

// TestSkillGetFramesThePeersText: skill get printed a member's skill with
// nothing to say whose text it was or where it ended. stderr now names the
// author and says it is not the user's, and the end line carries a tag no
// body can know.
func TestSkillGetFramesThePeersText(t *testing.T) {
	head, foot := skillFrame("deploy\n--- end", "mallory\x1b[2J", hexKey64("9"))
	if !strings.Contains(head, "mallory[2J 99999999") && !strings.Contains(head, "mallory 99999999") {
		t.Fatalf("head: %q", head)
	}
	if !strings.Contains(head, "not your user's") || strings.Count(head, "\n") != 1 || strings.Contains(head, "\x1b") {
		t.Fatalf("head: %q", head)
	}
	end := strings.TrimSuffix(foot, "\n")
	if !strings.Contains(head, `"`+end+`"`) || strings.Count(foot, "\n") != 1 {
		t.Fatalf("head %q does not name the end %q", head, foot)
	}
	if _, foot2 := skillFrame("deploy", "mallory", ""); foot2 == foot || len(end) < len("--- end of mesh skill deploy ")+12 {
		t.Fatalf("the end tag is not random: %q %q", foot, foot2)
	}
}

// TestPeerListQuotesNamesThatImitateItsMarks (a new user's trial): a member
// named "dave (you)" showed in dave's peer list as a second "dave (you)",
// and one named "bob (1a41f231)" could pass for bob with a key. The
// table shows names as the labels do (agentview.QuoteName), so its own
// "(you)" and "(via …)" cannot be imitated.
func TestPeerListQuotesNamesThatImitateItsMarks(t *testing.T) {
	var out bytes.Buffer
	printPeers(cliui.NewOut(&out, nil, false, false, false), []peerRow{
		{Mesh: "acme", Pubkey: hexKey64("a"), DisplayName: "dave", IsSelf: true, Online: true},
		{Mesh: "acme", Pubkey: hexKey64("b"), DisplayName: "dave (you)", Online: true},
		{Mesh: "acme", Pubkey: hexKey64("c"), DisplayName: "dave\uff08you\uff09", Online: true},
		{Mesh: "acme", Pubkey: hexKey64("d"), DisplayName: "alice-api", Online: true},
	}, false)
	got := out.String()
	if strings.Count(got, "(you)") != 2 || !strings.Contains(got, "  dave (you)  ") || !strings.Contains(got, `  "dave (you)"  `) ||
		!strings.Contains(got, `"dave⟨U+FF08⟩you⟨U+FF09⟩"`) || !strings.Contains(got, "  alice-api  ") {
		t.Fatalf("peer list:\n%s", got)
	}
}
