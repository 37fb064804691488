package store

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// chainOf reads a mesh's whole chain, oldest first.
func chainOf(t *testing.T, s *Store, mesh string) []wire.AuditEntry {
	t.Helper()
	var all []wire.AuditEntry
	mustView(t, s, func(tx *Tx) error {
		var before uint64
		for {
			page, more, err := QueryAudit(tx, mesh, AuditQuery{Limit: 7, Before: before})
			if err != nil {
				return err
			}
			all = append(all, page...)
			if !more {
				return nil
			}
			before = page[len(page)-1].Seq
		}
	})
	// QueryAudit pages newest first; put them oldest first.
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all
}

// verifyChain recomputes every hash and link.
func verifyChain(t *testing.T, mesh string, chain []wire.AuditEntry) {
	t.Helper()
	prev := cmcrypto.AuditGenesisHash
	for i, e := range chain {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		if e.PrevHash != prev {
			t.Fatalf("seq %d: prevHash %s, want %s", e.Seq, e.PrevHash, prev)
		}
		canon, err := cmcrypto.CanonicalJSON(e.Payload)
		if err != nil || string(canon) != string(e.Payload) {
			t.Fatalf("seq %d: payload %s not canonical (%v)", e.Seq, e.Payload, err)
		}
		h, err := cmcrypto.AuditHash(e.PrevHash, mesh, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
		if err != nil || h != e.Hash {
			t.Fatalf("seq %d: hash %s, recomputed %s (%v)", e.Seq, e.Hash, h, err)
		}
		prev = e.Hash
	}
}

func TestAuditAppendQueryHead(t *testing.T) {
	s := newMeshStore(t)
	mustView(t, s, func(tx *Tx) error {
		seq, hash, err := AuditHead(tx, meshID)
		if err != nil || seq != 0 || hash != cmcrypto.AuditGenesisHash {
			t.Errorf("empty head = %d %s %v", seq, hash, err)
		}
		return nil
	})
	at := time.Date(2025, 11, 25, 18, 0, 0, 5, time.UTC)
	for i := range 20 {
		typ := wire.AuditKick
		if i%3 == 0 {
			typ = wire.AuditMemberBanned
		}
		mustUpdate(t, s, func(tx *Tx) error {
			e, err := AppendAudit(tx, meshID, AuditEvent{Type: typ, Actor: key(1), At: at,
				Payload: map[string]any{"z": i, "a": "<b>&|" + fmt.Sprint(i)}})
			if err == nil && e.Seq != uint64(i+1) {
				t.Errorf("append %d got seq %d", i, e.Seq)
			}
			return err
		})
	}
	chain := chainOf(t, s, meshID)
	if len(chain) != 20 {
		t.Fatalf("chain has %d entries", len(chain))
	}
	verifyChain(t, meshID, chain)
	if got := string(chain[4].Payload); got != `{"a":"<b>&|4","z":4}` {
		t.Errorf("payload stored as %s", got)
	}
	if chain[0].CreatedAt != "2025-11-25T18:00:00.000000005Z" {
		t.Errorf("createdAt %s", chain[0].CreatedAt)
	}
	mustView(t, s, func(tx *Tx) error {
		seq, hash, err := AuditHead(tx, meshID)
		if err != nil || seq != 20 || hash != chain[19].Hash {
			t.Errorf("head = %d %s %v", seq, hash, err)
		}
		// Filter and page by type, newest first.
		page, more, err := QueryAudit(tx, meshID, AuditQuery{Limit: 3, EventType: wire.AuditMemberBanned})
		if err != nil || !more || len(page) != 3 || page[0].Seq != 19 || page[2].Seq != 13 {
			t.Errorf("banned page = %+v more=%v %v", page, more, err)
		}
		page, more, err = QueryAudit(tx, meshID, AuditQuery{Limit: 10, Before: 13, EventType: wire.AuditMemberBanned})
		if err != nil || more || len(page) != 4 || page[0].Seq != 10 || page[3].Seq != 1 {
			t.Errorf("banned before 13 = %+v more=%v %v", page, more, err)
		}
		// before beyond the head is the head.
		page, _, err = QueryAudit(tx, meshID, AuditQuery{Limit: 1, Before: 1000})
		if err != nil || len(page) != 1 || page[0].Seq != 20 {
			t.Errorf("before 1000 = %+v %v", page, err)
		}
		page, more, err = QueryAudit(tx, meshID, AuditQuery{Limit: 5, Before: 1})
		if err != nil || more || len(page) != 0 {
			t.Errorf("before 1 = %+v %v %v", page, more, err)
		}
		if _, _, err := QueryAudit(tx, "nope", AuditQuery{Limit: 1}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown mesh: %v", err)
		}
		return nil
	})
}

// TestAuditAppendRollsBackWithTheChange: an entry appended in a transaction
// that fails is gone with it, and the next append reuses its seq.
func TestAuditAppendRollsBackWithTheChange(t *testing.T) {
	s := newMeshStore(t)
	boom := errors.New("boom")
	err := s.updateTx(func(tx *Tx) error {
		if _, err := AppendAudit(tx, meshID, AuditEvent{Type: wire.AuditKick, Actor: key(1)}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	mustUpdate(t, s, func(tx *Tx) error {
		e, err := AppendAudit(tx, meshID, AuditEvent{Type: wire.AuditKick, Actor: key(1)})
		if err == nil && (e.Seq != 1 || string(e.Payload) != "{}") {
			t.Errorf("after rollback: %+v", e)
		}
		return err
	})
	mustUpdate(t, s, func(tx *Tx) error {
		if _, err := AppendAudit(tx, meshID, AuditEvent{Type: wire.AuditKick, Payload: []int{1}}); err == nil {
			t.Error("a non-object payload was accepted")
		}
		if _, err := AppendAudit(tx, meshID, AuditEvent{Payload: map[string]int{}}); err == nil {
			t.Error("an event without a type was accepted")
		}
		return nil
	})
}

// TestAuditConcurrentMeshes: appends from many goroutines into two meshes,
// folded into shared group commits, give one gapless valid chain per mesh
// with every event exactly once.
func TestAuditConcurrentMeshes(t *testing.T) {
	s := newMeshStore(t)
	const other = "01J0MESH000000000000000002"
	mustUpdate(t, s, func(tx *Tx) error {
		o := owner()
		return CreateMesh(tx, Mesh{ID: other, Slug: "other"}, o)
	})
	const n = 100
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			mesh := meshID
			if i%2 == 1 {
				mesh = other
			}
			if err := s.updateTx(func(tx *Tx) error {
				_, err := AppendAudit(tx, mesh, AuditEvent{Type: wire.AuditKick, Actor: key(i), Payload: map[string]int{"i": i}})
				return err
			}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for _, mesh := range []string{meshID, other} {
		chain := chainOf(t, s, mesh)
		verifyChain(t, mesh, chain)
		seen := map[string]bool{}
		for _, e := range chain {
			if seen[string(e.Payload)] {
				t.Errorf("%s: %s twice", mesh, e.Payload)
			}
			seen[string(e.Payload)] = true
		}
		if len(seen) != n/2 {
			t.Errorf("%s has %d events, want %d", mesh, len(seen), n/2)
		}
	}
}

// TestMigrationAddsGovernanceBuckets: a mesh written by a schema-2 broker
// gains its audit chain on open.
func TestMigrationAddsGovernanceBuckets(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{})
	mustUpdate(t, s, func(tx *Tx) error {
		if err := CreateMesh(tx, Mesh{ID: meshID, Slug: "team"}, owner()); err != nil {
			return err
		}
		// Make it look like schema 2: no governance buckets.
		mb := meshBucket(tx, meshID)
		for _, b := range [][]byte{bAudit, bGrants, bSkills} {
			if err := mb.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, u64(2))
	})
	s.Close()
	s = openAt(t, path, Options{})
	mustUpdate(t, s, func(tx *Tx) error {
		_, err := AppendAudit(tx, meshID, AuditEvent{Type: wire.AuditKick})
		return err
	})
	verifyChain(t, meshID, chainOf(t, s, meshID))
}

// BenchmarkAppendAuditInTx is the cost AppendAudit adds to a transaction
// (canonical payload, head lookup, hash, put), without the commit: many
// appends in one transaction, as a chain of --audit-messages entries grows.
func BenchmarkAppendAuditInTx(b *testing.B) {
	s := newMeshStore(b)
	payload := map[string]any{"messageId": id("M", 1), "clientMessageId": id("C", 1), "senderPubkey": key(1),
		"targetSpec": key(2), "kind": "box", "recipients": 1, "fingerprint": strings.Repeat("ab", 32)}
	b.ReportAllocs()
	err := s.updateTx(func(tx *Tx) error {
		for b.Loop() {
			if _, err := AppendAudit(tx, meshID, AuditEvent{Type: wire.AuditMessageSent, Actor: key(1), Payload: payload}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
