package daemon

import (
	"testing"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// TestSenderMarks: a message from this daemon's own member (or one of its
// sessions) is marked fromSelf; a sender whose name, or whose member's
// name, can be taken for a member's it is not ("аlice", "a1ice") names that
// member, and says when it is this daemon's own. Hook blocks and channel
// pushes used to show only the name, so "аlice" passed for the user.
func TestSenderMarks(t *testing.T) {
	self, _ := cmcrypto.GenerateIdentity()
	bob, mallory, carol := hexKey("b"), hexKey("9"), hexKey("c")
	m := &meshRT{key: self}
	m.cache.Members = []wire.Member{
		{Pubkey: self.PublicHex(), DisplayName: "alice"},
		{Pubkey: bob, DisplayName: "bob"},
		{Pubkey: mallory, DisplayName: "m\u0430llory"},
		{Pubkey: carol, DisplayName: "carol"},
	}
	for _, tc := range []struct {
		member   string
		names    []string
		self     bool
		like     string
		likeSelf bool
	}{
		{self.PublicHex(), []string{"alice", "alice"}, true, "", false},
		{self.PublicHex(), []string{"alice-api", "alice"}, true, "", false},
		{bob, []string{"bob", "bob"}, false, "", false},
		{bob, []string{"reviewer", "bob"}, false, "", false},
		{mallory, []string{"\u0430lice", "\u0430lice"}, false, "alice", true},
		{mallory, []string{"a1ice", "m\u0430llory"}, false, "alice", true},
		{mallory, []string{"B0B", "m\u0430llory"}, false, "bob", false},
		{mallory, []string{"AL\u0130CE", "m\u0430llory"}, false, "alice", true}, // capital I with a dot
		{mallory, []string{"alice.", "m\u0430llory"}, false, "alice", true},
		{mallory, []string{"al ice", "m\u0430llory"}, false, "alice", true},
		{carol, []string{"carol-api", "carol"}, false, "", false},
	} {
		s, like, likeSelf := m.senderMarks(tc.member, tc.names...)
		if s != tc.self || like != tc.like || likeSelf != tc.likeSelf {
			t.Errorf("senderMarks(%s, %q) = %v %q %v, want %v %q %v", tc.member[:4], tc.names, s, like, likeSelf, tc.self, tc.like, tc.likeSelf)
		}
	}
}

func hexKey(c string) string {
	s := ""
	for range 64 {
		s += c
	}
	return s
}
