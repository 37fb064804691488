package store

import (
	"fmt"
	"strings"
	"testing"

	"claudemesh/wire"
)

// TestMigrationTrimsOversizedGroups: a schema-2 file holding a member with
// thousands of groups (what repeated hellos produced before the cap) and a
// session with invalid and duplicate ones is trimmed on open to MaxGroups
// valid, distinct groups, keeping their order and the rest of the record.
func TestMigrationTrimsOversizedGroups(t *testing.T) {
	path := dbPath(t)
	old := openAt(t, path, Options{Migrations: BrokerMigrations[:2]})
	var many []wire.Group
	for i := range 3000 {
		many = append(many, wire.Group{Name: fmt.Sprintf("g%04d/%s", i, strings.Repeat("x", 30)), Role: "r"})
	}
	bad := []wire.Group{{Name: "Upper"}, {Name: "ok"}, {Name: "ok"}, {Name: "fine", Role: "bad\x01role"}, {Name: "last"}}
	mustUpdate(t, old, func(tx *Tx) error {
		o := owner()
		o.Groups = many
		if err := CreateMesh(tx, Mesh{ID: meshID, Slug: "team"}, o); err != nil {
			return err
		}
		return PutSession(tx, meshID, &Session{Pubkey: key(7), ParentMemberID: o.ID, ParentPubkey: o.Pubkey, SessionID: "s", DisplayName: "s", Groups: bad})
	})
	old.Close()
	if v, _ := schemaOf(t, path); v != 2 {
		t.Fatalf("setup: schema %d", v)
	}

	s := openAt(t, path, Options{})
	mustView(t, s, func(tx *Tx) error {
		m, err := MemberByPubkey(tx, meshID, owner().Pubkey)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Groups) != MaxGroups || m.Groups[0] != many[0] || m.Groups[MaxGroups-1] != many[MaxGroups-1] {
			t.Errorf("member groups after migration: %d, first %v", len(m.Groups), m.Groups[:min(2, len(m.Groups))])
		}
		if m.DisplayName != owner().DisplayName || m.Role != owner().Role {
			t.Errorf("member record changed beyond its groups: %+v", m)
		}
		ss, err := ListSessions(tx, meshID)
		if err != nil || len(ss) != 1 {
			t.Fatalf("sessions %v %v", ss, err)
		}
		want := []wire.Group{{Name: "ok"}, {Name: "last"}}
		if fmt.Sprint(ss[0].Groups) != fmt.Sprint(want) {
			t.Errorf("session groups after migration = %v, want %v", ss[0].Groups, want)
		}
		return nil
	})
}
