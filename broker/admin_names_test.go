package broker

import (
	"strings"
	"testing"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
)

// TestAdminTargetSessionNamedLikeAKeyPrefix: a session's display name is
// the connecting client's choice; one named like a prefix of a member's
// key makes that prefix ambiguous for the admin verbs too (it matched the
// member alone, so `kick 4e3adf4f` meant for the session kicked bob).
func TestAdminTargetSessionNamedLikeAKeyPrefix(t *testing.T) {
	ms := (&hub{}).newMeshState(store.Mesh{ID: "m"})
	bob := &member{Member: store.Member{ID: "b", Pubkey: "4e3adf4f" + strings.Repeat("a", 56), DisplayName: "bob", NameKey: cmcrypto.NameKey("bob")}}
	carol := &member{Member: store.Member{ID: "c", Pubkey: strings.Repeat("c", 64), DisplayName: "carol", NameKey: cmcrypto.NameKey("carol")}}
	for _, m := range []*member{bob, carol} {
		ms.members[m.Pubkey] = m
		ms.memberByID[m.ID] = m
	}
	sk := strings.Repeat("d", 64)
	ms.putSessionLocked(sk, &store.Session{Pubkey: sk, ParentMemberID: "c", DisplayName: "4e3adf4f"})
	if out := ms.matchTargets("4e3adf4f"); len(out) != 2 {
		t.Errorf("matchTargets found %d targets, want bob and carol's session (ambiguous)", len(out))
	}
	if out := ms.matchTargets("4e3adf4fa"); len(out) != 1 || out[0].member != bob {
		t.Errorf("a longer prefix: %d targets, want bob alone", len(out))
	}
}
