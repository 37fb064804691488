package store

import (
	"bytes"
)

// Corrupt is a record that did not decode. Loading skips it and reports
// it, instead of refusing to start over one bad record (issue: a single
// corrupt member record stopped the broker from starting).
type Corrupt struct {
	MeshID string
	Bucket string
	Key    []byte
	Err    error
}

// EachMesh calls fn for every mesh whose record decodes and bad for the
// others.
func EachMesh(tx *Tx, fn func(Mesh) error, bad func(Corrupt)) error {
	return tx.Bucket(bucketMeshes).ForEachBucket(func(k []byte) error {
		m, err := GetMesh(tx, string(k))
		if err != nil {
			bad(Corrupt{MeshID: string(k), Bucket: "meshes", Key: bytes.Clone(k), Err: err})
			return nil
		}
		return fn(*m)
	})
}

// EachMember calls fn for every member record of a mesh that decodes
// (revoked ones included) and bad for the others.
func EachMember(tx *Tx, meshID string, fn func(Member) error, bad func(Corrupt)) error {
	b, err := sub(tx, meshID, bMembers)
	if err != nil {
		return err
	}
	return b.ForEach(func(k, v []byte) error {
		var m Member
		if err := dec(v, &m); err != nil {
			bad(Corrupt{MeshID: meshID, Bucket: string(bMembers), Key: bytes.Clone(k), Err: err})
			return nil
		}
		return fn(m)
	})
}

// EachSession is EachMember for known session keys.
func EachSession(tx *Tx, meshID string, fn func(Session) error, bad func(Corrupt)) error {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return err
	}
	return b.ForEach(func(k, v []byte) error {
		var s Session
		if err := dec(v, &s); err != nil {
			bad(Corrupt{MeshID: meshID, Bucket: string(bSessions), Key: bytes.Clone(k), Err: err})
			return nil
		}
		return fn(s)
	})
}

// CountPendingSkipping is CountPending that skips (and reports) queue
// entries that do not decode.
func CountPendingSkipping(tx *Tx, meshID string, bad func(Corrupt)) (map[string]int, error) {
	out := map[string]int{}
	err := EachQueued(tx, meshID, func(recipient string, e *QueueEntry) {
		if !e.Receipt {
			out[recipient]++
		}
	}, bad)
	return out, err
}

// EachQueued calls fn for every queue entry of a mesh (messages and
// receipts, in key order) that decodes, and bad for the others: the broker
// derives its per-recipient counts and its quotas from it at start.
func EachQueued(tx *Tx, meshID string, fn func(recipient string, e *QueueEntry), bad func(Corrupt)) error {
	b, err := sub(tx, meshID, bQueue)
	if err != nil {
		return err
	}
	return b.ForEach(func(k, v []byte) error {
		var e QueueEntry
		if len(k) < 32 || decodeQueueEntry(v, &e) != nil {
			bad(Corrupt{MeshID: meshID, Bucket: string(bQueue), Key: bytes.Clone(k), Err: ErrCorrupt})
			return nil
		}
		fn(hexKey(k[:32]), &e)
		return nil
	})
}
