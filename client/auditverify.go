package client

import (
	"context"
	"fmt"
	"time"

	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// Verifying a mesh's audit chain (02-crypto "Audit chain"): the broker's
// signed checkpoint must verify under the broker key pinned at join, every
// entry must hash to what it says and link to the one before, the chain
// must end at the checkpoint's head, and that head must extend the last
// head this client verified. The last check is what catches a broker that
// rewrites or truncates history consistently: it can always produce a
// chain that verifies on its own, never one that agrees with a head it
// already signed unless it kept what came before.

// Audit problems (AuditReport.Problem).
const (
	AuditBadCheckpoint = "bad_checkpoint" // not signed by the pinned broker key, or for another mesh
	AuditIncomplete    = "incomplete"     // the broker did not serve every entry up to its head
	AuditTampered      = "tampered"       // an entry's hash does not match its content
	AuditBrokenLink    = "broken_link"    // an entry's prevHash is not the hash before it
	AuditHeadMismatch  = "head_mismatch"  // the signed head is not the chain's last entry
	AuditRollback      = "rollback"       // the chain is shorter than one verified before
	AuditRewrite       = "rewrite"        // an entry verified before has changed
)

// AuditHead is a verified (seq, hash) of a chain.
type AuditHead struct {
	Seq        uint64
	Hash       string
	VerifiedAt time.Time
	// Hashes, when known, are the hashes of entries 1 to Seq as verified
	// then: they locate the first entry a rewrite changed.
	Hashes []string
}

// AuditReport is the outcome of verifying one mesh's chain.
type AuditReport struct {
	MeshID string
	OK     bool
	// Head is the broker's signed head (seq 0 for an empty chain).
	Head AuditHead
	// Entries is how many entries were checked.
	Entries int
	// Problem, FirstBadSeq and Message describe a failure: the first
	// sequence number that is wrong (for a rollback, the first one that
	// disappeared; for a consistent rewrite, the first entry that differs
	// from the one verified here — or, when this machine kept only the
	// head, the head's entry: history at or before it was changed).
	Problem     string
	FirstBadSeq uint64
	Message     string
	// Previous is the head verified before this run, if any.
	Previous *AuditHead
}

func (r *AuditReport) fail(problem string, seq uint64, format string, args ...any) *AuditReport {
	r.OK, r.Problem, r.FirstBadSeq, r.Message = false, problem, seq, fmt.Sprintf(format, args...)
	return r
}

// VerifyAuditChain checks a chain served by a broker: cp is its
// audit_checkpoint, entries every entry from seq 1 to cp.Seq in order,
// pinned the broker key pinned at join, last the head verified before (nil
// if none). It never trusts the broker's word for anything it can check.
func VerifyAuditChain(meshID, pinned string, cp *wire.AuditCheckpoint, entries []wire.AuditEntry, last *AuditHead) *AuditReport {
	r := &AuditReport{MeshID: meshID, OK: true, Head: AuditHead{Seq: cp.Seq, Hash: cp.Hash}, Previous: last}
	key, err := cmcrypto.ParsePublicKey(pinned)
	if err != nil {
		return r.fail(AuditBadCheckpoint, 0, "the pinned broker key is invalid: %v", err)
	}
	if cp.MeshID != meshID {
		return r.fail(AuditBadCheckpoint, 0, "the checkpoint is for mesh %s, not %s", cp.MeshID, meshID)
	}
	if cp.BrokerPubkey != pinned {
		return r.fail(AuditBadCheckpoint, 0, "the checkpoint names broker key %s, but this mesh pinned %s", cp.BrokerPubkey, pinned)
	}
	s, err := cmcrypto.AuditHeadString(meshID, cp.Seq, cp.Hash)
	if err == nil && !wire.IsHex(cp.Hash, 64) {
		err = fmt.Errorf("head hash is not 64 lowercase hex")
	}
	if err == nil {
		err = cmcrypto.Verify(key, s, cp.Signature)
	}
	if err != nil {
		return r.fail(AuditBadCheckpoint, 0, "the checkpoint is not signed by the pinned broker key: %v", err)
	}
	prev := cmcrypto.AuditGenesisHash
	for i := range entries {
		e := &entries[i]
		want := uint64(i + 1)
		if e.Seq != want {
			return r.fail(AuditIncomplete, want, "the broker skipped entry %d (served %d in its place)", want, e.Seq)
		}
		if e.PrevHash != prev {
			return r.fail(AuditBrokenLink, e.Seq, "entry %d does not link to entry %d", e.Seq, e.Seq-1)
		}
		canon, err := cmcrypto.CanonicalJSON(e.Payload)
		if err != nil {
			return r.fail(AuditTampered, e.Seq, "entry %d has an unreadable payload: %v", e.Seq, err)
		}
		h, err := cmcrypto.AuditHash(e.PrevHash, meshID, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
		if err != nil || h != e.Hash {
			return r.fail(AuditTampered, e.Seq, "entry %d (%s) was altered: its content does not hash to its recorded hash", e.Seq, e.EventType)
		}
		prev = e.Hash
		r.Entries++
	}
	if uint64(len(entries)) != cp.Seq {
		return r.fail(AuditIncomplete, uint64(len(entries))+1, "the broker signed a head at entry %d but served %d entries", cp.Seq, len(entries))
	}
	if prev != cp.Hash {
		return r.fail(AuditHeadMismatch, cp.Seq, "the signed head %s is not the hash of the chain's last entry", cp.Hash)
	}
	if last != nil {
		switch {
		case cp.Seq < last.Seq:
			return r.fail(AuditRollback, cp.Seq+1, "the broker now serves %d entries, but %d were verified here on %s: entries from %d on are gone",
				cp.Seq, last.Seq, last.VerifiedAt.UTC().Format(time.RFC3339), cp.Seq+1)
		case last.Seq > 0 && entries[last.Seq-1].Hash != last.Hash:
			if uint64(len(last.Hashes)) >= last.Seq && last.Hashes[last.Seq-1] == last.Hash {
				for i := range last.Seq {
					if entries[i].Hash != last.Hashes[i] {
						return r.fail(AuditRewrite, i+1, "entries %d to %d are not the ones verified here on %s: history was rewritten from entry %d on",
							i+1, last.Seq, last.VerifiedAt.UTC().Format(time.RFC3339), i+1)
					}
				}
			}
			return r.fail(AuditRewrite, last.Seq, "entry %d is not the one verified here on %s: history at or before entry %d was rewritten",
				last.Seq, last.VerifiedAt.UTC().Format(time.RFC3339), last.Seq)
		}
	}
	return r
}

// FetchAuditChain asks for the broker's signed head, then reads every entry
// up to it, oldest first. Entries appended after the checkpoint are not
// read, so the two always describe the same chain.
func FetchAuditChain(ctx context.Context, c *Conn) (*wire.AuditCheckpoint, []wire.AuditEntry, error) {
	cp, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return nil, nil, err
	}
	var newest []wire.AuditEntry
	before := cp.Seq + 1
	for before > 1 {
		page, err := c.AuditQuery(ctx, wire.AuditQuery{Limit: 500, Before: before})
		if err != nil {
			return nil, nil, err
		}
		if len(page.Entries) == 0 {
			break
		}
		newest = append(newest, page.Entries...)
		last := page.Entries[len(page.Entries)-1].Seq
		if last >= before {
			return nil, nil, newError(CodeProtocol, "audit_query before %d answered entry %d", before, last)
		}
		before = last
		if !page.More {
			break
		}
	}
	out := make([]wire.AuditEntry, len(newest))
	for i, e := range newest {
		out[len(newest)-1-i] = e
	}
	return cp, out, nil
}

// VerifyMeshAudit fetches one mesh's chain over conn, verifies it against
// the broker key pinned at join and the head last verified on this machine
// (config.AuditHeads in home), and records the new head when it verifies.
// `audit verify` and the daemon's daily check both use it, so they keep
// one history. The report is returned with a non-nil error only when the
// chain verified but its head could not be recorded.
func VerifyMeshAudit(ctx context.Context, home, meshID, pinned string, conn *Conn) (*AuditReport, error) {
	cp, entries, err := FetchAuditChain(ctx, conn)
	if err != nil {
		return nil, err
	}
	heads, err := config.AuditHeads(home)
	if err != nil {
		return nil, err
	}
	var last *AuditHead
	if h, ok := heads[meshID]; ok {
		at, _ := time.Parse(time.RFC3339, h.VerifiedAt)
		last = &AuditHead{Seq: h.Seq, Hash: h.Hash, VerifiedAt: at}
		// Kept since this machine's first verification with this
		// build; without them a rewrite is located at the head only.
		if last.Hashes, err = config.AuditHashes(home, meshID); err != nil {
			return nil, err
		}
	}
	rep := VerifyAuditChain(meshID, pinned, cp, entries, last)
	if rep.OK {
		hashes := make([]string, len(entries))
		for i := range entries {
			hashes[i] = entries[i].Hash
		}
		if err := config.RecordAuditHashes(home, meshID, hashes); err != nil {
			return rep, err
		}
		now := time.Now().UTC().Format(time.RFC3339)
		if err := config.RecordAuditHead(home, meshID, config.AuditHead{Seq: rep.Head.Seq, Hash: rep.Head.Hash, VerifiedAt: now}); err != nil {
			return rep, err
		}
	}
	return rep, nil
}
