package store

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// TestOpenRefusesEmptyAndDamagedFiles: an empty file is refused unless
// Init (bbolt would make it a new database and the broker would start
// "ready" with nothing); a damaged one — garbage, truncated, or with
// garbage pages — is ErrCorrupt with its path, never a panic.
func TestOpenRefusesEmptyAndDamagedFiles(t *testing.T) {
	empty := dbPath(t)
	os.MkdirAll(strings.TrimSuffix(empty, "/broker.db"), 0o700)
	os.WriteFile(empty, nil, 0o600)
	if _, err := Open(empty, Options{}); !errors.Is(err, ErrEmptyFile) || !strings.Contains(err.Error(), empty) {
		t.Fatalf("empty file: %v", err)
	}
	if err := CheckFile(empty, false); !errors.Is(err, ErrEmptyFile) {
		t.Fatalf("CheckFile of an empty file: %v", err)
	}
	openAt(t, empty, Options{Init: true}).Close()

	garbage := dbPath(t)
	os.MkdirAll(strings.TrimSuffix(garbage, "/broker.db"), 0o700)
	junk := make([]byte, 64<<10)
	rand.Read(junk)
	os.WriteFile(garbage, junk, 0o600)

	// A real store with some data, then cut in half.
	truncated := dbPath(t)
	s := openAt(t, truncated, Options{})
	createTestBucket(t, s)
	mustUpdate(t, s, func(tx *bolt.Tx) error {
		for i := range 2000 {
			if err := tx.Bucket(testBucket).Put([]byte(strings.Repeat("k", 10)+string(rune(i))), []byte(strings.Repeat("v", 500))); err != nil {
				return err
			}
		}
		return nil
	})
	s.Close()
	fi, _ := os.Stat(truncated)
	os.Truncate(truncated, fi.Size()/2)

	// The header intact, every other page overwritten.
	mangled := dbPath(t)
	s = openAt(t, mangled, Options{})
	createTestBucket(t, s)
	mustUpdate(t, s, putRaw("keep", "me"))
	s.Close()
	data, _ := os.ReadFile(mangled)
	page := os.Getpagesize()
	for i := 2 * page; i < len(data); i++ {
		data[i] = 0xa5
	}
	os.WriteFile(mangled, data, 0o600)

	// A new user's trial: random bytes over a page of the tree below the
	// root (dd … seek=1 count=2 hit one). A read-only open (CheckFile)
	// reads none of them, so the file passed the check; the daemon's
	// writer open (which walks the tree to rebuild the freelist) refused
	// it only at its start, in its log.
	deep := dbPath(t)
	s = openAt(t, deep, Options{})
	createTestBucket(t, s)
	mustUpdate(t, s, func(tx *bolt.Tx) error {
		for i := range 2000 {
			if err := tx.Bucket(testBucket).Put(fmt.Appendf(nil, "key-%05d", i), []byte(strings.Repeat("v", 100))); err != nil {
				return err
			}
		}
		return nil
	})
	s.Close()
	if err := CheckFile(deep, false); err != nil {
		t.Fatalf("CheckFile of a sound file: %v", err)
	}
	// The test bucket's root page (a branch: 2000 keys do not fit a
	// leaf), below the file's root bucket.
	var root int
	if db, err := bolt.Open(deep, 0o600, &bolt.Options{ReadOnly: true}); err == nil {
		db.View(func(tx *bolt.Tx) error { root = int(tx.Bucket(testBucket).Root()); return nil })
		db.Close()
	}
	if root < 2 {
		t.Fatalf("test bucket root page %d", root)
	}
	data, _ = os.ReadFile(deep)
	rand.Read(data[root*page : (root+1)*page])
	data[root*page] ^= 0xff // not its own id, whatever rand gave
	os.WriteFile(deep, data, 0o600)

	for name, path := range map[string]string{"garbage": garbage, "truncated": truncated, "mangled": mangled, "deep": deep} {
		if err := CheckFile(path, false); !errors.Is(err, ErrCorrupt) {
			t.Errorf("CheckFile(%s): %v", name, err)
		}
		if st, err := Open(path, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
			if st != nil {
				st.Close()
			}
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

// TestLoadingSkipsCorruptRecords: a member record that does not decode is
// reported and skipped; the rest of the mesh loads.
func TestLoadingSkipsCorruptRecords(t *testing.T) {
	s := newStore(t)
	mustUpdate(t, s, func(tx *Tx) error {
		if err := CreateMesh(tx, Mesh{ID: meshID, Slug: "team"}, owner()); err != nil {
			return err
		}
		return meshBucket(tx, meshID).Bucket(bMembers).Put([]byte("01BROKENRECORD0000000000000"), []byte("{not json"))
	})
	var got []Member
	var bad []Corrupt
	mustView(t, s, func(tx *Tx) error {
		return EachMember(tx, meshID, func(m Member) error { got = append(got, m); return nil }, func(c Corrupt) { bad = append(bad, c) })
	})
	if len(got) != 1 || got[0].Pubkey != owner().Pubkey || len(bad) != 1 || string(bad[0].Key) != "01BROKENRECORD0000000000000" {
		t.Fatalf("members %v, corrupt %v", got, bad)
	}
}
