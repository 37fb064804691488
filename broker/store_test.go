package broker

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"claudemesh/internal/lockedbuf"
	"claudemesh/wire"
)

// TestBrokerRefusesAnEmptyOrMissingStore: a 0-byte broker.db, or none
// beside an existing broker.key, used to start "ready" with no meshes. Now
// the broker refuses with the recovery steps, unless --init; keeping the
// file for inspection is advised only when there is one.
func TestBrokerRefusesAnEmptyOrMissingStore(t *testing.T) {
	cfg := testConfig(t)
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	db := filepath.Join(cfg.DataDir, "broker.db")
	for name, damage := range map[string]func(){
		"empty":   func() { os.Truncate(db, 0) },
		"missing": func() { os.Remove(db) },
	} {
		damage()
		_, err := New(cfg)
		if err == nil || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), "--init") || !strings.Contains(err.Error(), "backup") {
			t.Fatalf("%s broker.db: %v", name, err)
		}
		// A missing file cannot be kept for inspection (a new user's
		// trial: the advice said to mv it).
		if mv := strings.Contains(err.Error(), "mv "); mv != (name == "empty") {
			t.Fatalf("%s broker.db: the advice to keep the file with mv is there: %v: %v", name, mv, err)
		}
		init := cfg
		init.Init = true
		b, err := New(init)
		if err != nil {
			t.Fatalf("%s broker.db with --init: %v", name, err)
		}
		b.Close()
	}
	// --init over a damaged file that is not empty is refused with what to
	// do first (a new user's trial: the refusal repeated, word for word,
	// the steps that had said to start with --init).
	os.WriteFile(db, []byte(strings.Repeat("not a database ", 4000)), 0o600)
	_, plain := New(cfg)
	init := cfg
	init.Init = true
	_, err = New(init)
	if plain == nil || err == nil || err.Error() == plain.Error() || !strings.Contains(err.Error(), "--init makes a new store only where broker.db is empty or missing") ||
		!strings.Contains(err.Error(), "mv "+db+" "+db+".damaged") {
		t.Fatalf("--init on a damaged broker.db: %v", err)
	}
}

// TestBrokerSkipsACorruptRecord: one member record that does not decode
// used to stop the broker from starting. It is skipped and reported; the
// mesh and its other members work.
func TestBrokerSkipsACorruptRecord(t *testing.T) {
	cfg := testConfig(t)
	b := startWith(t, cfg)
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	b.Close()

	raw, err := bolt.Open(filepath.Join(cfg.DataDir, "broker.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = raw.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meshes")).Bucket([]byte(alice.meshID)).Bucket([]byte("members")).Put([]byte(bob.memberID), []byte("{broken"))
	})
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}

	var logs lockedbuf.Buffer
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	b2 := startWith(t, cfg)
	if !strings.Contains(logs.String(), "corrupt record skipped") || !strings.Contains(logs.String(), bob.memberID) {
		t.Fatalf("the skipped record was not reported: %s", logs.String())
	}
	a := connect(t, b2, alice, true, nil)
	var members wire.Members
	a.request(map[string]any{"type": "members_list"}, &members, wire.TypeMembers)
	if len(members.Members) != 1 || members.Members[0].Pubkey != alice.pub() {
		t.Fatalf("members after the skip: %+v", members.Members)
	}
}
