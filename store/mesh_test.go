package store

import (
	"errors"
	"reflect"
	"testing"

	"claudemesh/wire"
)

func TestCreateMeshSlugUnique(t *testing.T) {
	s := newMeshStore(t)
	other := &Member{ID: "01J0MEMBER0000000000000002", Pubkey: key(0xB0B), DisplayName: "Bob", NameKey: "bob", Role: wire.MemberOwner}

	err := s.updateTx(func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: "01J0MESH000000000000000002", Slug: "team", Name: "Other"}, other)
	})
	if !errors.Is(err, ErrSlugTaken) {
		t.Fatalf("CreateMesh with a taken slug = %v, want ErrSlugTaken", err)
	}
	err = s.updateTx(func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "fresh", Name: "Dup id"}, other)
	})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("CreateMesh with a taken id = %v, want ErrExists", err)
	}
	mustView(t, s, func(tx *Tx) error {
		if _, err := GetMesh(tx, "01J0MESH000000000000000002"); !errors.Is(err, ErrNotFound) {
			t.Errorf("refused mesh exists: %v", err)
		}
		if NameTaken(tx, meshID, "bob") {
			t.Error("refused CreateMesh left its owner in the existing mesh")
		}
		meshes, err := ListMeshes(tx)
		if err != nil || len(meshes) != 1 || meshes[0].Name != "Team" {
			t.Errorf("ListMeshes = %+v, %v", meshes, err)
		}
		if v := tx.Bucket(bucketSlugs).Get([]byte("fresh")); v != nil {
			t.Errorf("refused CreateMesh reserved slug fresh → %q", v)
		}
		return nil
	})

	// A different slug works, and both meshes are listed.
	mustUpdate(t, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: "01J0MESH000000000000000002", Slug: "team-2", Name: "Other"}, other)
	})
	mustView(t, s, func(tx *Tx) error {
		meshes, err := ListMeshes(tx)
		if err != nil || len(meshes) != 2 {
			t.Fatalf("ListMeshes = %+v, %v", meshes, err)
		}
		m, err := MemberByPubkey(tx, "01J0MESH000000000000000002", other.Pubkey)
		if err != nil || m.ID != other.ID {
			t.Errorf("owner of second mesh = %+v, %v", m, err)
		}
		// Meshes are separate namespaces: bob is not a member of the first.
		if _, err := MemberByPubkey(tx, meshID, other.Pubkey); !errors.Is(err, ErrNotFound) {
			t.Errorf("bob found in the first mesh: %v", err)
		}
		return nil
	})
}

func TestCreateMeshStoresOwner(t *testing.T) {
	s := newMeshStore(t)
	mustView(t, s, func(tx *Tx) error {
		m, err := GetMesh(tx, meshID)
		if err != nil || *m != (Mesh{ID: meshID, Slug: "team", Name: "Team", CreatedAt: 1}) {
			t.Errorf("GetMesh = %+v, %v", m, err)
		}
		o, err := GetMember(tx, meshID, owner().ID)
		if err != nil || !reflect.DeepEqual(o, owner()) {
			t.Errorf("GetMember = %+v, %v", o, err)
		}
		if _, err := GetMesh(tx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetMesh(unknown) = %v", err)
		}
		if _, err := GetMember(tx, meshID, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetMember(unknown) = %v", err)
		}
		if _, err := GetMember(tx, "nope", owner().ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetMember(unknown mesh) = %v", err)
		}
		return nil
	})
}

func TestPutMemberNameUnique(t *testing.T) {
	s := newMeshStore(t)
	bob := &Member{ID: "01J0MEMBER0000000000000002", Pubkey: key(0xB0B), DisplayName: "ALICE", NameKey: "alice", Role: wire.MemberMember}

	err := s.updateTx(func(tx *Tx) error { return PutMember(tx, meshID, bob) })
	if !errors.Is(err, ErrNameTaken) {
		t.Fatalf("PutMember with alice's name = %v, want ErrNameTaken", err)
	}
	mustView(t, s, func(tx *Tx) error {
		if _, err := GetMember(tx, meshID, bob.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("refused member stored: %v", err)
		}
		if _, err := MemberByPubkey(tx, meshID, bob.Pubkey); !errors.Is(err, ErrNotFound) {
			t.Errorf("refused member's key indexed: %v", err)
		}
		return nil
	})

	bob.DisplayName, bob.NameKey = "Bob", "bob"
	mustUpdate(t, s, func(tx *Tx) error { return PutMember(tx, meshID, bob) })

	// Re-putting a member under its own name is an update, not a clash.
	a := owner()
	a.Status = wire.StatusWorking
	mustUpdate(t, s, func(tx *Tx) error { return PutMember(tx, meshID, a) })

	// Rename bob → robert frees "bob".
	bob.DisplayName, bob.NameKey = "Robert", "robert"
	mustUpdate(t, s, func(tx *Tx) error { return PutMember(tx, meshID, bob) })
	mustView(t, s, func(tx *Tx) error {
		if NameTaken(tx, meshID, "bob") {
			t.Error(`"bob" still taken after the rename`)
		}
		if !NameTaken(tx, meshID, "robert") || !NameTaken(tx, meshID, "alice") {
			t.Error("names robert/alice not taken")
		}
		if NameTaken(tx, "nope", "alice") {
			t.Error("NameTaken in an unknown mesh")
		}
		m, err := MemberByPubkey(tx, meshID, bob.Pubkey)
		if err != nil || m.DisplayName != "Robert" {
			t.Errorf("bob after rename = %+v, %v", m, err)
		}
		return nil
	})
	carol := &Member{ID: "01J0MEMBER0000000000000003", Pubkey: key(0xCA401), DisplayName: "bob", NameKey: "bob", Role: wire.MemberMember}
	mustUpdate(t, s, func(tx *Tx) error { return PutMember(tx, meshID, carol) })
	// …and robert is still robert's.
	dave := &Member{ID: "01J0MEMBER0000000000000004", Pubkey: key(0xDA7E), DisplayName: "Robert", NameKey: "robert"}
	if err := s.updateTx(func(tx *Tx) error { return PutMember(tx, meshID, dave) }); !errors.Is(err, ErrNameTaken) {
		t.Fatalf("PutMember with robert's name = %v, want ErrNameTaken", err)
	}

	mustView(t, s, func(tx *Tx) error {
		ms, err := ListMembers(tx, meshID)
		if err != nil {
			return err
		}
		names := map[string]string{}
		for _, m := range ms {
			names[m.ID] = m.NameKey
		}
		want := map[string]string{a.ID: "alice", bob.ID: "robert", carol.ID: "bob"}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("members %v, want %v", names, want)
		}
		return nil
	})

	if err := s.updateTx(func(tx *Tx) error { return PutMember(tx, "nope", dave) }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PutMember in unknown mesh = %v, want ErrNotFound", err)
	}
}

func TestDeleteMemberFreesNameAndKey(t *testing.T) {
	s := newMeshStore(t)
	bob := &Member{ID: "01J0MEMBER0000000000000002", Pubkey: key(0xB0B), DisplayName: "Bob", NameKey: "bob"}
	mustUpdate(t, s, func(tx *Tx) error { return PutMember(tx, meshID, bob) })
	mustUpdate(t, s, func(tx *Tx) error { return DeleteMember(tx, meshID, bob) })
	mustView(t, s, func(tx *Tx) error {
		if NameTaken(tx, meshID, "bob") {
			t.Error("name still taken")
		}
		if _, err := MemberByPubkey(tx, meshID, bob.Pubkey); !errors.Is(err, ErrNotFound) {
			t.Errorf("key still known: %v", err)
		}
		if _, err := GetMember(tx, meshID, bob.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("member still stored: %v", err)
		}
		return nil
	})
	bob2 := &Member{ID: "01J0MEMBER0000000000000005", Pubkey: key(0xB0B2), DisplayName: "bob", NameKey: "bob"}
	mustUpdate(t, s, func(tx *Tx) error { return PutMember(tx, meshID, bob2) })
}

func TestSessionsAndInvites(t *testing.T) {
	s := newMeshStore(t)
	s1 := &Session{Pubkey: key(0x51), ParentMemberID: owner().ID, ParentPubkey: owner().Pubkey, SessionID: "a",
		Attestation: wire.Attestation{SessionPubkey: key(0x51), ParentPubkey: owner().Pubkey, ExpiresAt: 9, Signature: "s"},
		Groups:      []wire.Group{{Name: "ops"}}, LastSeenAt: 3}
	s2 := &Session{Pubkey: key(0x52), ParentMemberID: "someone-else", SessionID: "b"}
	mustUpdate(t, s, func(tx *Tx) error {
		if err := PutSession(tx, meshID, s1); err != nil {
			return err
		}
		return PutSession(tx, meshID, s2)
	})
	var gone []string
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		gone, err = DeleteSessionsOf(tx, meshID, owner().ID)
		return err
	})
	if !reflect.DeepEqual(gone, []string{s1.Pubkey}) {
		t.Fatalf("DeleteSessionsOf = %v, want [%s]", gone, s1.Pubkey)
	}
	mustView(t, s, func(tx *Tx) error {
		ss, err := ListSessions(tx, meshID)
		if err != nil || len(ss) != 1 || !reflect.DeepEqual(ss[0], *s2) {
			t.Errorf("ListSessions = %+v, %v", ss, err)
		}
		return nil
	})

	inv := &Invite{ID: "01J0INVITE0000000000000001", Token: "tok.sig", Role: wire.MemberMember, IssuerPubkey: owner().Pubkey,
		ExpiresAt: 100, MaxUses: 3, CreatedAt: 1}
	mustUpdate(t, s, func(tx *Tx) error { return PutInvite(tx, meshID, inv) })
	inv.Uses, inv.RevokedAt = 1, 50
	mustUpdate(t, s, func(tx *Tx) error { return PutInvite(tx, meshID, inv) })
	mustView(t, s, func(tx *Tx) error {
		got, err := GetInvite(tx, meshID, inv.ID)
		if err != nil || !reflect.DeepEqual(got, inv) {
			t.Errorf("GetInvite = %+v, %v", got, err)
		}
		if got.Info() != (wire.InviteInfo{InviteID: inv.ID, Role: wire.MemberMember, ExpiresAt: 100, MaxUses: 3, Uses: 1, CreatedAt: 1, RevokedAt: 50}) {
			t.Errorf("Info = %+v", got.Info())
		}
		list, err := ListInvites(tx, meshID)
		if err != nil || len(list) != 1 {
			t.Errorf("ListInvites = %+v, %v", list, err)
		}
		if _, err := GetInvite(tx, meshID, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetInvite(unknown) = %v", err)
		}
		return nil
	})
}

// TestForgetSession: a forgotten recording of a session key is deleted
// with its queue when the store holds it (or none), or an earlier
// recording of the same node (the one its memory replaced, the forgotten
// one's write cancelled before it ran); another node's recording is kept
// whichever HelloAt is greater: across cluster nodes the clocks that stamp
// HelloAt need not agree, and deleting a later recording that looks
// earlier would drop a connected session's queue.
func TestForgetSession(t *testing.T) {
	s := newMeshStore(t)
	rec := func(helloAt int64, node string) *Session {
		return &Session{Pubkey: key(0x61), ParentMemberID: owner().ID, ParentPubkey: owner().Pubkey, SessionID: "a", HelloAt: helloAt, Node: node}
	}
	stored := func() (out *Session) {
		mustView(t, s, func(tx *Tx) error {
			ss, err := ListSessions(tx, meshID)
			for _, r := range ss {
				if r.Pubkey == key(0x61) {
					out = &r
				}
			}
			return err
		})
		return out
	}
	for _, c := range []struct {
		name           string
		stored, forgot int64
		storedBy       string // the node that made the stored recording; the forgotten one is n1's
		none, deleted  bool
	}{
		{name: "Same", stored: 5, storedBy: "n1", forgot: 5, deleted: true},
		{name: "Earlier", stored: 4, storedBy: "n2", forgot: 5, deleted: false},
		{name: "Later", stored: 6, storedBy: "n2", forgot: 5, deleted: false},
		{name: "EarlierSameNode", stored: 4, storedBy: "n1", forgot: 5, deleted: true},
		{name: "LaterSameNode", stored: 6, storedBy: "n1", forgot: 5, deleted: false},
		{name: "None", none: true, forgot: 5, deleted: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			if !c.none {
				mustUpdate(t, s, func(tx *Tx) error { return PutSession(tx, meshID, rec(c.stored, c.storedBy)) })
			}
			var kept *Session
			mustUpdate(t, s, func(tx *Tx) error {
				var err error
				_, kept, err = ForgetSession(tx, meshID, rec(c.forgot, "n1"))
				return err
			})
			deleted := kept == nil
			if deleted != c.deleted || (stored() == nil) != (c.deleted || c.none) || (kept != nil && !SameRecording(kept, rec(c.stored, c.storedBy))) {
				t.Fatalf("kept %+v, stored %+v; want deleted %v", kept, stored(), c.deleted)
			}
			mustUpdate(t, s, func(tx *Tx) error { return DeleteSession(tx, meshID, key(0x61)) })
		})
	}
}

// TestSessionWritesFollowTheirOrder: a hello's recording of a session key
// (PutSession) replaces whatever the store holds, whatever the HelloAt of
// either: the write that comes later (in a cluster, later in the log) is
// the later hello, and two nodes' clocks that stamp HelloAt need not
// agree. A change of a recording (UpdateSession, a group change) is
// written only over that recording or none: one of a connection a later
// hello replaced must not bring its recording back.
func TestSessionWritesFollowTheirOrder(t *testing.T) {
	s := newMeshStore(t)
	rec := func(helloAt int64, node, name string) *Session {
		return &Session{Pubkey: key(0x62), ParentMemberID: owner().ID, ParentPubkey: owner().Pubkey, SessionID: name, HelloAt: helloAt, Node: node}
	}
	stored := func() (out Session) {
		mustView(t, s, func(tx *Tx) error {
			ss, err := ListSessions(tx, meshID)
			for _, r := range ss {
				if r.Pubkey == key(0x62) {
					out = r
				}
			}
			return err
		})
		return out
	}
	for _, step := range []struct {
		update bool
		put    *Session
		want   string
	}{
		{true, rec(5, "n1", "a change over none"), "a change over none"},
		{false, rec(5, "n1", "first"), "first"},
		{true, rec(5, "n1", "a change of it"), "a change of it"},
		{false, rec(7, "n1", "later"), "later"},
		{false, rec(6, "n2", "later, on a node whose clock is behind"), "later, on a node whose clock is behind"},
		{true, rec(7, "n1", "a change of the replaced one"), "later, on a node whose clock is behind"},
		{true, rec(6, "n1", "same stamp, another node"), "later, on a node whose clock is behind"},
		{true, rec(6, "n2", "a change of the last"), "a change of the last"},
	} {
		mustUpdate(t, s, func(tx *Tx) error {
			if step.update {
				return UpdateSession(tx, meshID, step.put)
			}
			return PutSession(tx, meshID, step.put)
		})
		if got := stored(); got.SessionID != step.want {
			t.Fatalf("after %q (HelloAt %d on %s, update %v): stored %q, want %q", step.put.SessionID, step.put.HelloAt, step.put.Node, step.update, got.SessionID, step.want)
		}
	}
}
