package client

import (
	"context"
	"fmt"
	"strings"
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
	if bad := r.checkCheckpoint(meshID, pinned, cp); bad != nil {
		return bad
	}
	prev := cmcrypto.AuditGenesisHash
	for i := range entries {
		if bad := r.checkEntry(meshID, &entries[i], uint64(i+1), prev); bad != nil {
			return bad
		}
		prev = entries[i].Hash
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
			// The entries still served must be the ones verified here: a
			// broker that shortened the chain may have rewritten what it
			// kept too, and that is the finding (a rewrite), not the
			// missing tail.
			if uint64(len(last.Hashes)) >= last.Seq {
				for i := range cp.Seq {
					if entries[i].Hash != last.Hashes[i] {
						return r.fail(AuditRewrite, i+1, "the broker now serves %d entries, but %d were verified here on %s, and entries from %d on are not the ones verified here: history was rewritten from entry %d on",
							cp.Seq, last.Seq, last.VerifiedAt.UTC().Format(time.RFC3339), i+1, i+1)
					}
				}
			}
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

// checkCheckpoint fails r unless cp is meshID's checkpoint signed by the
// pinned broker key.
func (r *AuditReport) checkCheckpoint(meshID, pinned string, cp *wire.AuditCheckpoint) *AuditReport {
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
	return nil
}

// checkEntry fails r unless e is entry want of meshID's chain, links to
// prev and hashes to its recorded hash.
func (r *AuditReport) checkEntry(meshID string, e *wire.AuditEntry, want uint64, prev string) *AuditReport {
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
	return nil
}

// FetchAuditChain asks for the broker's signed head, then reads every entry
// up to it, oldest first. Entries appended after the checkpoint are not
// read, so the two always describe the same chain.
func FetchAuditChain(ctx context.Context, c *Conn) (*wire.AuditCheckpoint, []wire.AuditEntry, error) {
	cp, err := c.AuditCheckpoint(ctx)
	if err != nil {
		return nil, nil, err
	}
	entries, err := fetchAuditAfter(ctx, c, cp.Seq, 0)
	if err != nil {
		return nil, nil, err
	}
	return cp, entries, nil
}

// auditPage is how many entries one audit_query asks for (the broker's
// most); tests make it smaller to cross pages.
var auditPage = 500

// fetchAuditAfter reads entries after+1 to head, oldest first, in pages of
// at most auditPage asked for newest first (audit_query pages backwards).
func fetchAuditAfter(ctx context.Context, c *Conn, head, after uint64) ([]wire.AuditEntry, error) {
	var newest []wire.AuditEntry
	before := head + 1
	for before > after+1 {
		page, err := c.AuditQuery(ctx, wire.AuditQuery{Limit: int(min(uint64(auditPage), before-after-1)), Before: before})
		if err != nil {
			return nil, err
		}
		if len(page.Entries) == 0 {
			break
		}
		for _, e := range page.Entries {
			if e.Seq <= after {
				break
			}
			newest = append(newest, e)
		}
		last := page.Entries[len(page.Entries)-1].Seq
		if last >= before {
			return nil, newError(CodeProtocol, "audit_query before %d answered entry %d", before, last)
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
	return out, nil
}

// VerifyMeshAudit fetches one mesh's chain over conn, verifies it against
// the broker key pinned at join and the head last verified on this machine
// (config.AuditHeads in home), and records the new head when it verifies.
// `audit verify` and the daemon's checks both use it, so they keep one
// history. The report is returned with a non-nil error only when the
// chain verified but its head could not be recorded.
func VerifyMeshAudit(ctx context.Context, home, meshID, pinned string, conn *Conn) (*AuditReport, error) {
	cp, entries, err := FetchAuditChain(ctx, conn)
	if err != nil {
		return nil, err
	}
	last, err := verifiedHead(home, meshID)
	if err != nil {
		return nil, err
	}
	rep := VerifyAuditChain(meshID, pinned, cp, entries, last)
	if !rep.OK {
		return rep, nil
	}
	hashes := make([]string, len(entries))
	for i := range entries {
		hashes[i] = entries[i].Hash
	}
	return rep, recordVerified(home, meshID, rep.Head, hashes)
}

// VerifyMeshAuditSince is VerifyMeshAudit for a check this machine
// repeats (the daemon's, at each reconnection to the broker): when home
// holds the head verified before and the hashes of every entry up to it,
// it reads only the entries appended since and checks that they extend
// that head to the broker's signed one. A hash chain makes that as strong
// as reading it all for what was verified here: no entry up to the old
// head can have changed its hash and still be extended by the new ones.
// Anything else (nothing kept, a shorter or a different chain, an entry
// that does not link or hash) is checked in full by VerifyMeshAudit, so a
// failure is found and reported exactly as there.
//
// It does not read again the entries it verified before: an entry whose
// content a broker altered in place while keeping its recorded hash is
// found by the next full check (`audit verify`, or the daemon's first
// check and its daily one), not by this one.
func VerifyMeshAuditSince(ctx context.Context, home, meshID, pinned string, conn *Conn) (*AuditReport, error) {
	last, err := verifiedHead(home, meshID)
	if err != nil {
		return nil, err
	}
	if last == nil || uint64(len(last.Hashes)) != last.Seq || (last.Seq > 0 && last.Hashes[last.Seq-1] != last.Hash) {
		return VerifyMeshAudit(ctx, home, meshID, pinned, conn)
	}
	cp, err := conn.AuditCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	rep := &AuditReport{MeshID: meshID, OK: true, Head: AuditHead{Seq: cp.Seq, Hash: cp.Hash}, Previous: last}
	if bad := rep.checkCheckpoint(meshID, pinned, cp); bad != nil {
		return bad, nil
	}
	if cp.Seq < last.Seq || (cp.Seq == last.Seq && cp.Hash != last.Hash) {
		return VerifyMeshAudit(ctx, home, meshID, pinned, conn)
	}
	entries, err := fetchAuditAfter(ctx, conn, cp.Seq, last.Seq)
	if err != nil {
		return nil, err
	}
	prev := last.Hash
	for i := range entries {
		if rep.checkEntry(meshID, &entries[i], last.Seq+uint64(i)+1, prev) != nil {
			return VerifyMeshAudit(ctx, home, meshID, pinned, conn)
		}
		prev = entries[i].Hash
		rep.Entries++
	}
	if uint64(len(entries)) != cp.Seq-last.Seq || prev != cp.Hash {
		return VerifyMeshAudit(ctx, home, meshID, pinned, conn)
	}
	if len(entries) == 0 {
		return rep, recordVerified(home, meshID, rep.Head, nil) // the same head, checked now
	}
	hashes := make([]string, 0, cp.Seq)
	hashes = append(hashes, last.Hashes...)
	for i := range entries {
		hashes = append(hashes, entries[i].Hash)
	}
	return rep, recordVerified(home, meshID, rep.Head, hashes)
}

// verifiedHead is the head verified in home for meshID (nil if none), with
// the hashes of the entries up to it when they were kept.
func verifiedHead(home, meshID string) (*AuditHead, error) {
	heads, err := config.AuditHeads(home)
	if err != nil {
		return nil, err
	}
	h, ok := heads[meshID]
	if !ok {
		return nil, nil
	}
	at, _ := time.Parse(time.RFC3339, h.VerifiedAt)
	last := &AuditHead{Seq: h.Seq, Hash: h.Hash, VerifiedAt: at}
	// Kept since this machine's first verification with this build;
	// without them a rewrite is located at the head only.
	if last.Hashes, err = config.AuditHashes(home, meshID); err != nil {
		return nil, err
	}
	return last, nil
}

// recordVerified remembers a verified head and the hashes of the entries up
// to it (nil: those recorded already are).
func recordVerified(home, meshID string, head AuditHead, hashes []string) error {
	if hashes != nil {
		if err := config.RecordAuditHashes(home, meshID, hashes); err != nil {
			return err
		}
	}
	now := time.Now().UTC().Format(time.RFC3339)
	return config.RecordAuditHead(home, meshID, config.AuditHead{Seq: head.Seq, Hash: head.Hash, VerifiedAt: now})
}

// AcceptMeshAudit replaces the history verified on this machine with the
// broker's current chain, for a member who has checked out of band (with
// the broker's operator) that a rollback or rewrite it was shown is
// legitimate, such as a restored backup. It accepts only what was shown:
// the chain must verify on its own (every hash, link and the broker's
// signature under the pinned key), and measured against this machine's
// history it must be a rollback or a rewrite whose first bad entry is
// firstBadSeq, the one `audit verify` reported. A chain that verifies as
// it is (nothing to accept) is returned with OK set and nothing changed.
// kept is where the replaced hashes were moved (config.ReplaceAuditHistory).
func AcceptMeshAudit(ctx context.Context, home, meshID, pinned string, conn *Conn, firstBadSeq uint64) (rep *AuditReport, kept string, err error) {
	cp, entries, err := FetchAuditChain(ctx, conn)
	if err != nil {
		return nil, "", err
	}
	last, err := verifiedHead(home, meshID)
	if err != nil {
		return nil, "", err
	}
	rep = VerifyAuditChain(meshID, pinned, cp, entries, last)
	switch {
	case rep.OK:
		return rep, "", nil
	case last == nil || uint64(len(last.Hashes)) < last.Seq:
		// Without the hashes of every entry verified here, which entry a
		// change starts at is unknown: what would be accepted could
		// include a rewrite of older entries.
		return rep, "", fmt.Errorf("this machine kept only the head it verified (no hashes of the entries before it), so it cannot tell which entries changed: nothing can be accepted")
	case rep.Problem != AuditRollback && rep.Problem != AuditRewrite:
		return rep, "", fmt.Errorf("only a rollback or a rewrite of what was verified here can be accepted; this chain is broken on its own (%s at entry %d: %s)",
			strings.ReplaceAll(rep.Problem, "_", " "), rep.FirstBadSeq, rep.Message)
	case rep.FirstBadSeq != firstBadSeq:
		return rep, "", fmt.Errorf("the broker's history now differs from the one verified here from entry %d, not %d: run claudemesh audit verify again and check that finding",
			rep.FirstBadSeq, firstBadSeq)
	}
	// What is accepted: the entries from firstBadSeq on. Every one before
	// it must be the one verified here (VerifyAuditChain compared them;
	// checked again, as this is what the acceptance rests on).
	for i := uint64(0); i+1 < firstBadSeq; i++ {
		if i >= uint64(len(entries)) || i >= uint64(len(last.Hashes)) || entries[i].Hash != last.Hashes[i] {
			return rep, "", fmt.Errorf("entry %d is not the one verified here: nothing accepted", i+1)
		}
	}
	hashes := make([]string, len(entries))
	for i := range entries {
		hashes[i] = entries[i].Hash
	}
	now := time.Now().UTC()
	kept, err = config.ReplaceAuditHistory(home, meshID, config.AuditHead{Seq: cp.Seq, Hash: cp.Hash, VerifiedAt: now.Format(time.RFC3339)},
		hashes, now.Format("20060102T150405Z"))
	return rep, kept, err
}
