package daemon

import (
	"bytes"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
)

// failLeftMeshes fails the rows waiting to be sent (accepted: pending,
// backing off) of every mesh that is not in config.json any more (want,
// by mesh id): `mesh leave` forgot it, so nothing will ever send them
// (the key is gone) and they must not stay "accepted" for ever. Rows the
// drain is sending are left to it. It runs at every reload, so a mesh
// left while the daemon was down is handled at its start.
func (d *Daemon) failLeftMeshes(want map[string]bool) {
	var seqs []uint64
	d.db.View(func(tx *bolt.Tx) error {
		for _, b := range []*bolt.Bucket{tx.Bucket(bOutboxPending), tx.Bucket(bOutboxRetry)} {
			c := b.Cursor()
			for k, _ := c.First(); k != nil; {
				i := bytes.IndexByte(k, 0)
				if i < 0 {
					k, _ = c.Next()
					continue
				}
				mesh := string(k[:i])
				if want[mesh] {
					// Skip the mesh's entries: seek past its prefix.
					k, _ = c.Seek(append([]byte(mesh), 1))
					continue
				}
				seqs = append(seqs, seqOf(k))
				k, _ = c.Next()
			}
		}
		return nil
	})
	failed := map[uint64]bool{}
	for _, seq := range seqs {
		// The left meshes' drains have stopped (reload stops them
		// first): no round reads these rows, so the claim is released
		// at once (nil mesh). A row still claimed is its drain's.
		d.failUnlessSending(nil, seq, func() {
			d.updateRow(seq, func(cur *outboxRow) bool {
				if cur.State != statePending || want[cur.MeshID] {
					return false
				}
				cur.State, cur.ErrorCode = stateDead, localapi.CodeLeftMesh
				// Not "requeue it": a join has a new key, and this row is
				// sealed and signed with the one that left (requeue).
				cur.LastError = "you left " + cur.Mesh + " before the broker confirmed it; it was sealed and signed with the key you had there, which is gone, so it cannot be sent again: send it anew (after joining again)"
				failed[seq] = true
				return true
			})
		})
	}
	if len(failed) > 0 {
		d.log.Info("failed the unsent rows of meshes no longer joined", "rows", len(failed))
	}
	d.untrackLeftMeshes(want)
}

// untrackLeftMeshes ends the rows the broker had taken (queued, sent) of
// every mesh that is not in config.json any more: the broker still
// delivers them, but with the membership gone no receipt or status
// reaches this machine, and they stayed "queued" in the outbox and in
// daemon status for ever. They become untracked, which says so.
func (d *Daemon) untrackLeftMeshes(want map[string]bool) {
	var seqs []uint64
	d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bOutboxUnsettled).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if r, err := getOutbox(tx, seqOf(k)); err == nil && !want[r.MeshID] {
				seqs = append(seqs, r.Seq)
			}
		}
		return nil
	})
	n := 0
	for _, seq := range seqs {
		d.updateRow(seq, func(cur *outboxRow) bool {
			if !unsettled(cur.State) || want[cur.MeshID] {
				return false
			}
			cur.State, cur.ErrorCode = stateUntracked, localapi.CodeLeftMesh
			cur.LastError = "you left " + cur.Mesh + " after the broker took it: the broker still delivers it, but this machine no longer learns whether it was delivered"
			n++
			return true
		})
	}
	if n > 0 {
		d.log.Info("rows the broker holds for meshes no longer joined are untracked", "rows", n)
	}
}

// untrack ends a queued or sent row whose outcome this machine can no
// longer learn (why says so).
func (d *Daemon) untrack(seq uint64, why string) {
	d.updateRow(seq, func(cur *outboxRow) bool {
		if !unsettled(cur.State) {
			return false
		}
		cur.State, cur.ErrorCode, cur.LastError = stateUntracked, localapi.CodeLeftMesh, why
		return true
	})
}
