package client

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"claudemesh/broker"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/store/storetest"
	"claudemesh/wire"
)

const testMesh = "01JDQM9S346Q3D25VT4F5V37E3"

// buildChain makes n valid entries, each payload recomputed through
// CanonicalJSON like the broker does.
func buildChain(t testing.TB, n int, payload func(i int) string) []wire.AuditEntry {
	t.Helper()
	prev := cmcrypto.AuditGenesisHash
	var out []wire.AuditEntry
	for i := 1; i <= n; i++ {
		canon, err := cmcrypto.CanonicalJSON([]byte(payload(i)))
		if err != nil {
			t.Fatal(err)
		}
		e := wire.AuditEntry{Seq: uint64(i), EventType: wire.AuditKick, ActorPubkey: "actor", Payload: canon, PrevHash: prev,
			CreatedAt: cmcrypto.AuditTime(time.Unix(int64(1700000000+i), 0))}
		e.Hash, err = cmcrypto.AuditHash(prev, testMesh, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func checkpoint(t testing.TB, key *cmcrypto.Identity, chain []wire.AuditEntry) *wire.AuditCheckpoint {
	t.Helper()
	cp := &wire.AuditCheckpoint{MeshID: testMesh, Hash: cmcrypto.AuditGenesisHash, BrokerPubkey: key.PublicHex()}
	if len(chain) > 0 {
		cp.Seq, cp.Hash = chain[len(chain)-1].Seq, chain[len(chain)-1].Hash
	}
	s, err := cmcrypto.AuditHeadString(testMesh, cp.Seq, cp.Hash)
	if err != nil {
		t.Fatal(err)
	}
	cp.Signature = key.Sign(s)
	return cp
}

func TestVerifyAuditChain(t *testing.T) {
	broker, _ := cmcrypto.GenerateIdentity()
	other, _ := cmcrypto.GenerateIdentity()
	pinned := broker.PublicHex()
	payload := func(i int) string { return fmt.Sprintf(`{"i":%d,"note":"a|b <c>"}`, i) }
	chain := buildChain(t, 12, payload)
	good := checkpoint(t, broker, chain)
	expect := func(name string, r *AuditReport, problem string, seq uint64) {
		t.Helper()
		if r.Problem != problem || r.FirstBadSeq != seq || r.OK != (problem == "") {
			t.Errorf("%s: %+v, want %q at %d", name, r, problem, seq)
		}
	}
	expect("valid", VerifyAuditChain(testMesh, pinned, good, chain, nil), "", 0)
	expect("empty", VerifyAuditChain(testMesh, pinned, checkpoint(t, broker, nil), nil, nil), "", 0)

	// Checkpoint signed by another key, or naming another key or mesh.
	expect("other key", VerifyAuditChain(testMesh, pinned, func() *wire.AuditCheckpoint {
		cp := checkpoint(t, other, chain)
		cp.BrokerPubkey = pinned // claims the pinned key, signed by another
		return cp
	}(), chain, nil), AuditBadCheckpoint, 0)
	expect("names other key", VerifyAuditChain(testMesh, pinned, checkpoint(t, other, chain), chain, nil), AuditBadCheckpoint, 0)
	wrongMesh := *good
	wrongMesh.MeshID = "01JDQM9S346Q3D25VT4F5V37E4"
	expect("other mesh", VerifyAuditChain(testMesh, pinned, &wrongMesh, chain, nil), AuditBadCheckpoint, 0)

	// An entry whose payload was edited in place.
	tampered := append([]wire.AuditEntry(nil), chain...)
	tampered[6].Payload = []byte(`{"i":7,"note":"edited"}`)
	expect("tampered", VerifyAuditChain(testMesh, pinned, good, tampered, nil), AuditTampered, 7)
	// An entry removed from the middle.
	skipped := append(append([]wire.AuditEntry(nil), chain[:4]...), chain[5:]...)
	expect("skipped", VerifyAuditChain(testMesh, pinned, good, skipped, nil), AuditIncomplete, 5)
	// A consistent rewrite from entry 5 on (every hash recomputed) with a
	// fresh valid checkpoint verifies on its own...
	rewritten := buildChain(t, 12, func(i int) string {
		if i >= 5 {
			return fmt.Sprintf(`{"i":%d,"note":"rewritten"}`, i)
		}
		return payload(i)
	})
	rcp := checkpoint(t, broker, rewritten)
	expect("rewrite, fresh client", VerifyAuditChain(testMesh, pinned, rcp, rewritten, nil), "", 0)
	// ...but not against a head verified before: at the head's entry.
	seen := &AuditHead{Seq: 9, Hash: chain[8].Hash, VerifiedAt: time.Now()}
	expect("rewrite", VerifyAuditChain(testMesh, pinned, rcp, rewritten, seen), AuditRewrite, 9)
	// With the hashes verified then, the first changed entry is named.
	var known []string
	for _, e := range chain[:9] {
		known = append(known, e.Hash)
	}
	seenAll := &AuditHead{Seq: 9, Hash: chain[8].Hash, VerifiedAt: time.Now(), Hashes: known}
	expect("rewrite located", VerifyAuditChain(testMesh, pinned, rcp, rewritten, seenAll), AuditRewrite, 5)
	// A shorter valid chain after a longer one was verified.
	short := chain[:6]
	expect("rollback", VerifyAuditChain(testMesh, pinned, checkpoint(t, broker, short), short, &AuditHead{Seq: 12, Hash: chain[11].Hash}), AuditRollback, 7)
	// A shorter chain whose kept entries were rewritten too (entry 3
	// altered and every hash after it recomputed): with the hashes
	// verified here, a rewrite at entry 3, not a rollback at 7, which
	// would hide the altered entry (and let audit verify --accept 7 take
	// it in).
	var all []string
	for _, e := range chain {
		all = append(all, e.Hash)
	}
	shortRewritten := buildChain(t, 6, func(i int) string {
		if i == 3 {
			return `{"i":3,"note":"altered"}`
		}
		return payload(i)
	})
	expect("rollback hiding a rewrite", VerifyAuditChain(testMesh, pinned, checkpoint(t, broker, shortRewritten), shortRewritten,
		&AuditHead{Seq: 12, Hash: chain[11].Hash, Hashes: all}), AuditRewrite, 3)
	expect("rollback, hashes kept", VerifyAuditChain(testMesh, pinned, checkpoint(t, broker, short), short,
		&AuditHead{Seq: 12, Hash: chain[11].Hash, Hashes: all}), AuditRollback, 7)
	// A longer chain that extends the verified head is fine.
	expect("extends", VerifyAuditChain(testMesh, pinned, good, chain, seen), "", 0)
	// A checkpoint over a head that is not the chain's last entry.
	bad := checkpoint(t, broker, chain[:11])
	expect("head mismatch", VerifyAuditChain(testMesh, pinned, bad, chain[:11][:10], nil), AuditIncomplete, 11)
	lie := *good
	lie.Hash = chain[10].Hash
	s, _ := cmcrypto.AuditHeadString(testMesh, lie.Seq, lie.Hash)
	lie.Signature = broker.Sign(s)
	expect("signed wrong head", VerifyAuditChain(testMesh, pinned, &lie, chain, nil), AuditHeadMismatch, 12)
}

// BenchmarkVerifyAuditChain10k verifies a 10,000-entry chain (what audit
// verify does after fetching it): per op, the whole chain.
func BenchmarkVerifyAuditChain10k(b *testing.B) {
	t := b
	broker, _ := cmcrypto.GenerateIdentity()
	chain := buildChain(t, 10000, func(i int) string {
		return fmt.Sprintf(`{"messageId":"01JDQM9S346Q3D25VT4F5V%04d","kind":"box","recipients":1,"targetSpec":"%064d"}`, i, i)
	})
	cp := checkpoint(t, broker, chain)
	b.ReportAllocs()
	for b.Loop() {
		if r := VerifyAuditChain(testMesh, broker.PublicHex(), cp, chain, nil); !r.OK {
			b.Fatal(r.Message)
		}
	}
}

// TestVerifyMeshAuditSince: against a real broker, the repeated check
// reads only the entries appended after the head verified in the home
// (across audit_query pages), records the longer chain, and hands
// anything that does not extend that head to the full check, which
// reports it as `audit verify` does.
func TestVerifyMeshAuditSince(t *testing.T) {
	old := auditPage
	auditPage = 2 // several pages for a few entries
	t.Cleanup(func() { auditPage = old })
	data := t.TempDir()
	b := startTestBroker(t, func(cfg *broker.Config) { cfg.DataDir = data })
	owner, mesh := b.createMesh(t, "acme")
	ctx := testCtx(t)
	c := mustDial(t, ctx, owner, DialOptions{})
	defer c.Close()
	topics := 0
	grow := func(n int) {
		t.Helper()
		for range n {
			topics++
			if _, _, err := c.TopicCreate(ctx, TopicCreateOptions{Name: fmt.Sprintf("t%d", topics)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	home := t.TempDir()
	verifyIn := func(home string, since bool) *AuditReport {
		t.Helper()
		f := VerifyMeshAudit
		if since {
			f = VerifyMeshAuditSince
		}
		rep, err := f(ctx, home, owner.MeshID, mesh.BrokerPubkey, c)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	verify := func(since bool) *AuditReport { t.Helper(); return verifyIn(home, since) }
	grow(4)
	// Nothing verified here yet: the whole chain.
	first := verify(true)
	if !first.OK || first.Entries != int(first.Head.Seq) || first.Head.Seq < 5 {
		t.Fatalf("first check: %+v", first)
	}
	n := first.Head.Seq
	grow(5)
	next := verify(true)
	if !next.OK || next.Entries != 5 || next.Head.Seq != n+5 || next.Previous == nil || next.Previous.Seq != n {
		t.Fatalf("after five more entries: %+v", next)
	}
	if hashes, err := config.AuditHashes(home, owner.MeshID); err != nil || uint64(len(hashes)) != n+5 {
		t.Fatalf("hashes kept: %d, %v; want %d", len(hashes), err, n+5)
	}
	if again := verify(true); !again.OK || again.Entries != 0 || again.Head.Seq != n+5 {
		t.Fatalf("nothing new: %+v", again)
	}

	// A home whose head is not on the broker's chain (entries up to it
	// rewritten since it was verified): the new entries do not link to
	// it, and the full check reports where the chains part.
	hashes, err := config.AuditHashes(home, owner.MeshID)
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	forged := slices.Clone(hashes[:n])
	forged[n-1] = strings.Repeat("cd", 32)
	if err := config.RecordAuditHashes(other, owner.MeshID, forged); err != nil {
		t.Fatal(err)
	}
	if err := config.RecordAuditHead(other, owner.MeshID, config.AuditHead{Seq: n, Hash: forged[n-1], VerifiedAt: time.Now().UTC().Format(time.RFC3339)}); err != nil {
		t.Fatal(err)
	}
	if rep := verifyIn(other, true); rep.OK || rep.Problem != AuditRewrite || rep.FirstBadSeq != n {
		t.Fatalf("a head that is not on the chain: %+v", rep)
	}

	// Entry 1 edited in place in broker.db (its recorded hash kept): the
	// repeated check does not read it again, the full one does.
	c.Close()
	b.Close()
	storetest.EditAuditEntry(t, filepath.Join(data, "broker.db"), 1, func(e map[string]any) { e["payload"] = map[string]any{"edited": true} })
	b = startTestBroker(t, func(cfg *broker.Config) { cfg.DataDir = data })
	owner.BrokerURL = b.URL()
	c = mustDial(t, ctx, owner, DialOptions{})
	defer c.Close()
	if rep := verify(true); !rep.OK || rep.Entries != 0 || rep.Head.Seq != n+5 {
		t.Fatalf("the repeated check read entries verified before: %+v", rep)
	}
	if rep := verify(false); rep.OK || rep.Problem != AuditTampered || rep.FirstBadSeq != 1 {
		t.Fatalf("full check after entry 1 was edited: %+v", rep)
	}
}
