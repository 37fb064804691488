package crypto

import (
	"fmt"
	"strings"
	"testing"
)

// TestInviteBrokerURLs: brokerUrls is optional and outside the v1 signed
// string (02-crypto signs brokerUrl only), so an invite with it verifies
// with the same signature as without it; a list that is not ws/wss or too
// long makes the token invalid; the longest allowed list still fits the
// token limit.
func TestInviteBrokerURLs(t *testing.T) {
	issuer, _ := GenerateIdentity()
	broker, _ := GenerateIdentity()
	inv := &Invite{
		V: 1, MeshID: "01JDQM9S346Q3D25VT4F5V37E3", MeshSlug: "team", MeshName: "Team",
		BrokerURL: "wss://a.example.com/ws", BrokerPubkey: broker.PublicHex(),
		InviteID: "01JDQXXQKFBF5KZNWJ47TAN9ZT", Role: "member", ExpiresAt: 1 << 42, MaxUses: 5,
	}
	plain, _ := inv.SignedString()
	inv.BrokerURLs = []string{"wss://a.example.com/ws", "wss://b.example.com/ws"}
	withURLs, _ := inv.SignedString()
	if plain != withURLs {
		t.Fatalf("brokerUrls changed the signed string:\n%s\n%s", plain, withURLs)
	}
	if err := inv.Sign(issuer); err != nil {
		t.Fatal(err)
	}
	link, _ := inv.Link()
	got, _, err := ParseInvite(link)
	if err != nil || got.Verify() != nil || strings.Join(got.BrokerURLs, " ") != "wss://a.example.com/ws wss://b.example.com/ws" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// Unsigned: changing the list keeps the signature valid (the client
	// never trusts a URL beyond the broker key its challenge must prove).
	got.BrokerURLs = []string{"wss://evil.example.com/ws"}
	if err := got.Verify(); err != nil {
		t.Fatalf("a changed brokerUrls broke the signature: %v", err)
	}
	got.BrokerURLs = nil
	if err := got.Verify(); err != nil {
		t.Fatalf("without brokerUrls: %v", err)
	}
	for _, bad := range [][]string{{}, {"https://b.example.com/ws"}, {"ws://u:p@b/ws"}} {
		got.BrokerURLs = bad
		if err := got.Verify(); err == nil {
			t.Errorf("brokerUrls %q accepted", bad)
		}
	}
	var long []string
	for i := range 17 {
		long = append(long, fmt.Sprintf("wss://n%02d.%s/ws", i, strings.Repeat("x", 230)))
	}
	got.BrokerURLs = long
	if err := got.Verify(); err == nil {
		t.Error("17 broker URLs accepted")
	}
	got.BrokerURLs = long[:16]
	if err := got.Sign(issuer); err != nil {
		t.Fatal(err)
	}
	link, err = got.Link()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ParseInvite(link); err != nil {
		t.Fatalf("the longest allowed list does not fit a token: %v", err)
	}
}
