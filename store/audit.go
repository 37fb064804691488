package store

import (
	"errors"
	"fmt"
	"time"

	json "github.com/go-json-experiment/json"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// The audit chain (02-crypto "Audit chain") lives in each mesh's "audit"
// bucket: seq (8 bytes big-endian, from 1) → the entry as JSON. Entries are
// appended inside the same bbolt write transaction as the change they
// record, so there is never a change without its entry or an entry without
// its change; bbolt's single writer serialises appends, so seq and prevHash
// need no lock of their own.

// AuditEvent is a change to record.
type AuditEvent struct {
	Type    string // wire.Audit*
	Actor   string // pubkey of who made the change (the broker's for the operator)
	Payload any    // a JSON object (or a CanonicalPayload); nil is {}
	// At is when it happened; zero means now.
	At time.Time
}

// CanonicalPayload is an audit payload already in canonical JSON
// (Canonicalize). A hot path (--audit-messages) prepares it before
// submitting its write, so the store's single committer only hashes and
// stores.
type CanonicalPayload []byte

// Canonicalize turns a payload (a JSON object; nil is {}) into the
// canonical JSON the chain hashes.
func Canonicalize(payload any) (CanonicalPayload, error) {
	if payload == nil {
		payload = struct{}{}
	}
	raw, err := json.Marshal(payload, json.Deterministic(true))
	if err != nil {
		return nil, fmt.Errorf("store: audit payload: %w", err)
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("store: audit payload must be a JSON object, not %s", raw)
	}
	return cmcrypto.CanonicalJSON(raw)
}

// ErrAuditNoChain means the mesh has no audit bucket (a store that was not
// migrated; Open migrates every store, so this is a bug).
var ErrAuditNoChain = errors.New("store: mesh has no audit chain")

func auditBucket(tx *Tx, meshID string) (*Bucket, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	b := mb.Bucket(bAudit)
	if b == nil {
		return nil, ErrAuditNoChain
	}
	return b, nil
}

// AppendAudit appends ev to the mesh's chain inside the caller's write
// transaction and returns the entry. If the transaction rolls back, so does
// the entry: callers put it in the same transaction as the change.
func AppendAudit(tx *Tx, meshID string, ev AuditEvent) (*wire.AuditEntry, error) {
	b, err := auditBucket(tx, meshID)
	if err != nil {
		return nil, err
	}
	if ev.Type == "" {
		return nil, fmt.Errorf("store: audit event without a type")
	}
	canon, ok := ev.Payload.(CanonicalPayload)
	if !ok {
		if canon, err = Canonicalize(ev.Payload); err != nil {
			return nil, err
		}
	}
	seq, prev, err := auditHead(b)
	if err != nil {
		return nil, err
	}
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	e := &wire.AuditEntry{
		Seq: seq + 1, EventType: ev.Type, ActorPubkey: ev.Actor, Payload: wire.RawJSON(canon),
		PrevHash: prev, CreatedAt: cmcrypto.AuditTime(at),
	}
	e.Hash, err = cmcrypto.AuditHash(e.PrevHash, meshID, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
	if err != nil {
		return nil, err
	}
	if err := b.Put(u64(e.Seq), enc(e)); err != nil {
		return nil, err
	}
	return e, nil
}

// auditHead is the last entry's (seq, hash), or (0, genesis) for an empty
// chain.
func auditHead(b *Bucket) (uint64, string, error) {
	k, v := b.Cursor().Last()
	if k == nil {
		return 0, cmcrypto.AuditGenesisHash, nil
	}
	var e wire.AuditEntry
	if err := dec(v, &e); err != nil {
		return 0, "", err
	}
	return be64(k), e.Hash, nil
}

// AuditHead returns the head of a mesh's chain: the last entry's seq and
// hash, or (0, 64 zeros) when nothing was recorded yet. The broker signs it
// for audit_checkpoint.
func AuditHead(tx *Tx, meshID string) (seq uint64, hash string, err error) {
	b, err := auditBucket(tx, meshID)
	if err != nil {
		return 0, "", err
	}
	return auditHead(b)
}

// AuditQuery selects entries for QueryAudit.
type AuditQuery struct {
	Limit     int    // at most this many (must be positive)
	Before    uint64 // only seq < Before; 0 = from the head
	EventType string // only this type; "" = all
}

// QueryAudit returns entries newest first, and whether older matching
// entries remain. Entries are returned as stored, so a verifier sees
// exactly what the broker holds.
func QueryAudit(tx *Tx, meshID string, q AuditQuery) ([]wire.AuditEntry, bool, error) {
	b, err := auditBucket(tx, meshID)
	if err != nil {
		return nil, false, err
	}
	if q.Limit <= 0 {
		return nil, false, fmt.Errorf("store: audit query needs a positive limit")
	}
	c := b.Cursor()
	var k, v []byte
	if q.Before == 0 {
		k, v = c.Last()
	} else {
		k, v = c.Seek(u64(q.Before))
		if k == nil {
			k, v = c.Last()
		} else {
			k, v = c.Prev()
		}
	}
	out := []wire.AuditEntry{}
	for ; k != nil; k, v = c.Prev() {
		if q.Before != 0 && be64(k) >= q.Before {
			continue
		}
		var e wire.AuditEntry
		if err := dec(v, &e); err != nil {
			return nil, false, err
		}
		if q.EventType != "" && e.EventType != q.EventType {
			continue
		}
		if len(out) == q.Limit {
			return out, true, nil
		}
		out = append(out, e)
	}
	return out, false, nil
}
