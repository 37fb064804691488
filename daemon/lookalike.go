package daemon

import (
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// memberNames indexes a mesh's member names (revoked ones included: a
// name that looks like a removed member's misleads as much) by their
// case-folded key and their confusable skeleton, for senderMarks.
type memberNames struct {
	byKey, bySkeleton map[string][]wire.Member
}

func newMemberNames(members []wire.Member) *memberNames {
	n := &memberNames{byKey: map[string][]wire.Member{}, bySkeleton: map[string][]wire.Member{}}
	for _, m := range members {
		k, sk := cmcrypto.NameKey(m.DisplayName), cmcrypto.NameSkeleton(m.DisplayName)
		n.byKey[k] = append(n.byKey[k], m)
		n.bySkeleton[sk] = append(n.bySkeleton[sk], m)
	}
	return n
}

// senderMarks are what an inbox row says about a verified sender beyond
// its names (docs/security.md "Impersonation by name"): whether it is this
// daemon's own member or one of its sessions (fromSelf), and, when it is
// not, the name of a member its display name or its member's name can be
// taken for (lookalike; lookalikeSelf when that member is this daemon's
// own: "аlice" in Cyrillic, or "a1ice", writing to alice's agent). A
// sender's own member is never its lookalike.
func (m *meshRT) senderMarks(senderMember string, names ...string) (fromSelf bool, lookalike string, lookalikeSelf bool) {
	self := m.key.PublicHex()
	if senderMember == self {
		return true, "", false
	}
	m.mu.Lock()
	if m.names == nil {
		m.names = newMemberNames(m.cache.Members)
	}
	idx := m.names
	m.mu.Unlock()
	for _, name := range names {
		if name == "" {
			continue
		}
		for _, list := range [][]wire.Member{idx.byKey[cmcrypto.NameKey(name)], idx.bySkeleton[cmcrypto.NameSkeleton(name)]} {
			for _, mem := range list {
				switch {
				case mem.Pubkey == senderMember:
				case mem.Pubkey == self:
					return false, mem.DisplayName, true
				case lookalike == "":
					lookalike = mem.DisplayName
				}
			}
		}
	}
	return false, lookalike, false
}
