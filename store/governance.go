package store

// Grants and skills: per-mesh records the broker keeps for governance
// (01-protocol §6). Both are small and written rarely, so they stay JSON.

// Grants are one recipient's explicit grants: sender member pubkey → the
// capabilities it may use towards the recipient ([] = blocked). Senders not
// listed have the defaults.
type Grants map[string][]string

// PutGrants replaces a recipient's explicit grants; an empty map deletes
// the record.
func PutGrants(tx *Tx, meshID, recipient string, g Grants) error {
	b, err := sub(tx, meshID, bGrants)
	if err != nil {
		return err
	}
	if len(g) == 0 {
		return b.Delete(pk(recipient))
	}
	return b.Put(pk(recipient), enc(g))
}

// GetGrants returns a recipient's explicit grants (empty when none).
func GetGrants(tx *Tx, meshID, recipient string) (Grants, error) {
	b, err := sub(tx, meshID, bGrants)
	if err != nil {
		return nil, err
	}
	g := Grants{}
	if v := b.Get(pk(recipient)); v != nil {
		if err := dec(v, &g); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// ListGrants returns every recipient's explicit grants in a mesh.
func ListGrants(tx *Tx, meshID string) (map[string]Grants, error) {
	b, err := sub(tx, meshID, bGrants)
	if err != nil {
		return nil, err
	}
	out := map[string]Grants{}
	err = b.ForEach(func(k, v []byte) error {
		g := Grants{}
		if err := dec(v, &g); err != nil {
			return err
		}
		out[hexKey(k)] = g
		return nil
	})
	return out, err
}

// Skill is a shared agent instruction published to a mesh. Its body is
// plaintext: every member may read it, and so can the broker's operator.
type Skill struct {
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Body         string   `json:"body"`
	Tags         []string `json:"tags,omitempty"`
	AuthorPubkey string   `json:"authorPubkey"`
	AuthorName   string   `json:"authorName"`
	CreatedAt    int64    `json:"createdAt"`
	UpdatedAt    int64    `json:"updatedAt"`
}

// PutSkill inserts or replaces a skill by name.
func PutSkill(tx *Tx, meshID string, s *Skill) error {
	b, err := sub(tx, meshID, bSkills)
	if err != nil {
		return err
	}
	return b.Put([]byte(s.Name), enc(s))
}

// GetSkill loads a skill by name, or ErrNotFound.
func GetSkill(tx *Tx, meshID, name string) (*Skill, error) {
	b, err := sub(tx, meshID, bSkills)
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(name))
	if v == nil {
		return nil, ErrNotFound
	}
	var s Skill
	return &s, dec(v, &s)
}

// DeleteSkill removes a skill by name.
func DeleteSkill(tx *Tx, meshID, name string) error {
	b, err := sub(tx, meshID, bSkills)
	if err != nil {
		return err
	}
	return b.Delete([]byte(name))
}

// ListSkills returns a mesh's skills in name order.
func ListSkills(tx *Tx, meshID string) ([]Skill, error) {
	b, err := sub(tx, meshID, bSkills)
	if err != nil {
		return nil, err
	}
	var out []Skill
	err = b.ForEach(func(_, v []byte) error {
		var s Skill
		if err := dec(v, &s); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// EndMemberSessions forgets a member's agent sessions and drops everything
// queued for the member key and those session keys (a ban, a removal, a
// leave), returning the session keys and what was dropped.
func EndMemberSessions(tx *Tx, meshID string, m *Member) (sessions []string, dropped []Expired, err error) {
	if sessions, err = DeleteSessionsOf(tx, meshID, m.ID); err != nil {
		return nil, nil, err
	}
	for _, k := range append([]string{m.Pubkey}, sessions...) {
		d, err := DropQueue(tx, meshID, k)
		if err != nil {
			return nil, nil, err
		}
		dropped = append(dropped, d...)
	}
	return sessions, dropped, nil
}

// RemoveMember deletes a member that left or was removed: its sessions and
// queues (EndMemberSessions), its grants and its record, whose name and key
// become free.
func RemoveMember(tx *Tx, meshID string, m *Member) (sessions []string, dropped []Expired, err error) {
	if sessions, dropped, err = EndMemberSessions(tx, meshID, m); err != nil {
		return nil, nil, err
	}
	if err := PutGrants(tx, meshID, m.Pubkey, nil); err != nil {
		return nil, nil, err
	}
	return sessions, dropped, DeleteMember(tx, meshID, m)
}
