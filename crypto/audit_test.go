package crypto

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// auditVectors is testdata/audit-vectors.json, made by an independent
// implementation (testdata/gen-audit-vectors.mjs, node:crypto).
type auditVectors struct {
	MeshID       string
	BrokerPubkey string
	Entries      []struct {
		Seq              uint64
		EventType        string
		ActorPubkey      string
		Payload          json.RawMessage
		CanonicalPayload string
		PrevHash, Hash   string
		CreatedAt        string
	}
	Checkpoint struct {
		MeshID       string
		Seq          uint64
		Hash         string
		String       string
		Signature    string
		BrokerPubkey string
	}
	Canonical []struct{ Input, Canonical string }
}

func loadAuditVectors(t *testing.T) *auditVectors {
	t.Helper()
	b, err := os.ReadFile("../testdata/audit-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	v := new(auditVectors)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
	if len(v.Entries) < 3 || len(v.Canonical) == 0 || v.Checkpoint.Signature == "" {
		t.Fatal("audit vectors did not parse into the expected shape")
	}
	return v
}

// TestAuditVectorChain recomputes every entry's canonical payload and hash
// and checks the chain links.
func TestAuditVectorChain(t *testing.T) {
	v := loadAuditVectors(t)
	prev := AuditGenesisHash
	for _, e := range v.Entries {
		canon, err := CanonicalJSON(e.Payload)
		if err != nil {
			t.Fatalf("seq %d: %v", e.Seq, err)
		}
		eq(t, "canonical payload", string(canon), e.CanonicalPayload)
		eq(t, "prevHash", e.PrevHash, prev)
		h, err := AuditHash(e.PrevHash, v.MeshID, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		eq(t, "hash", h, e.Hash)
		prev = e.Hash
		// Any change to any field changes the hash.
		for name, alt := range map[string]func() (string, error){
			"seq": func() (string, error) {
				return AuditHash(e.PrevHash, v.MeshID, e.Seq+1, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
			},
			"mesh": func() (string, error) {
				return AuditHash(e.PrevHash, v.MeshID+"X", e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
			},
			"payload": func() (string, error) {
				return AuditHash(e.PrevHash, v.MeshID, e.Seq, e.EventType, e.ActorPubkey, append(canon[:len(canon):len(canon)], ' '), e.CreatedAt)
			},
			"createdAt": func() (string, error) {
				return AuditHash(e.PrevHash, v.MeshID, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt+"0")
			},
		} {
			if h2, _ := alt(); h2 == e.Hash {
				t.Errorf("seq %d: changing %s kept the hash", e.Seq, name)
			}
		}
	}
}

// TestAuditVectorCheckpoint rebuilds the signed head string and checks the
// broker's signature, re-signing with the broker seed (ed25519 is
// deterministic).
func TestAuditVectorCheckpoint(t *testing.T) {
	v := loadAuditVectors(t)
	cp := v.Checkpoint
	head := v.Entries[len(v.Entries)-1]
	if cp.Seq != head.Seq || cp.Hash != head.Hash {
		t.Fatal("checkpoint does not name the chain's head")
	}
	s, err := AuditHeadString(cp.MeshID, cp.Seq, cp.Hash)
	if err != nil {
		t.Fatal(err)
	}
	eq(t, "checkpoint string", s, cp.String)
	broker := loadVectors(t).identity(t, "broker")
	eq(t, "broker pubkey", broker.PublicHex(), cp.BrokerPubkey)
	eq(t, "signature", broker.Sign(s), cp.Signature)
	if err := Verify(broker.Public(), s, cp.Signature); err != nil {
		t.Fatal(err)
	}
	other := loadVectors(t).identity(t, "carol")
	if err := Verify(other.Public(), s, cp.Signature); !errors.Is(err, ErrBadSignature) {
		t.Errorf("checkpoint verified under another key: %v", err)
	}
}

func TestAuditVectorCanonical(t *testing.T) {
	v := loadAuditVectors(t)
	for _, c := range v.Canonical {
		got, err := CanonicalJSON([]byte(c.Input))
		if err != nil {
			t.Errorf("%q: %v", c.Input, err)
			continue
		}
		eq(t, c.Input, string(got), c.Canonical)
		// Canonical form is a fixed point.
		again, err := CanonicalJSON(got)
		if err != nil || string(again) != string(got) {
			t.Errorf("%q is not stable: %q %v", got, again, err)
		}
	}
}

func TestCanonicalJSONRejects(t *testing.T) {
	for _, in := range []string{``, `{`, `{"a":1,"a":2}`, "\"\xff\"", `{"a":1} {}`, `{"a":1}x`, `[1,]`, `nul`} {
		if _, err := CanonicalJSON([]byte(in)); !errors.Is(err, ErrBadJSON) {
			t.Errorf("%q: accepted (%v)", in, err)
		}
	}
}

func TestAuditTime(t *testing.T) {
	ts := time.Date(2025, 11, 25, 19, 0, 0, 120, time.FixedZone("CET", 3600))
	eq(t, "createdAt", AuditTime(ts), "2025-11-25T18:00:00.000000120Z")
	if _, err := AuditHash(AuditGenesisHash, "m|x", 1, "t", "", []byte("{}"), "now"); err == nil {
		t.Error("a '|' in meshId was accepted")
	}
	if AuditGenesisHash != strings.Repeat("0", 64) {
		t.Error("genesis hash")
	}
}
