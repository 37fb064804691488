package daemon

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"syscall"
	"time"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// inboxItem is a push (or receipt) handed from a connection's reader to the
// inbox worker. Storing takes an fsync, which must not stall the reader.
type inboxItem struct {
	m       *meshRT
	push    *wire.Push
	receipt *wire.Receipt
}

func (d *Daemon) enqueueInbox(m *meshRT, p *wire.Push) {
	select {
	case d.inbox <- inboxItem{m: m, push: p}:
	case <-d.ctx.Done():
	}
}

func (d *Daemon) enqueueReceipt(m *meshRT, r *wire.Receipt) {
	select {
	case d.inbox <- inboxItem{m: m, receipt: r}:
	case <-d.ctx.Done():
	}
}

// inboxLoop drains pushes in batches: decrypt each, store the batch in one
// transaction, then ack every message of it. A crash between the commit and
// the ack means a redelivery, which the (mesh, recipient, messageId) key
// recognises: stored once, acked again.
func (d *Daemon) inboxLoop() {
	for {
		var batch []inboxItem
		select {
		case <-d.ctx.Done():
			return
		case it := <-d.inbox:
			batch = append(batch, it)
		}
	fill:
		for len(batch) < 256 {
			select {
			case it := <-d.inbox:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		var pushes, receipts []inboxItem
		for _, it := range batch {
			if it.receipt != nil {
				receipts = append(receipts, it)
			} else {
				pushes = append(pushes, it)
			}
		}
		if len(receipts) > 0 {
			d.recordReceipts(receipts, true)
		}
		if len(pushes) > 0 {
			d.storePushes(pushes)
		}
	}
}

func (d *Daemon) storePushes(items []inboxItem) {
	rows := make([]*inboxRow, len(items))
	now := time.Now().UnixMilli()
	for i, it := range items {
		p := it.push
		row := &inboxRow{
			Mesh: it.m.cfg.Slug, MeshID: it.m.cfg.MeshID, MessageID: p.MessageID, ClientMessageID: p.ClientMessageID,
			Kind: p.Kind, SenderPubkey: p.SenderPubkey, SenderMember: p.SenderMemberPubkey, SenderName: p.SenderName,
			RecipientPubkey: it.m.key.PublicHex(), RecipientKind: "member", Priority: p.Priority,
			ReplyToID: p.ReplyToID, Subtype: p.Subtype, ReceivedAt: now,
		}
		if p.Topic != nil {
			row.Topic = p.Topic.Name
		}
		body, verified, err := client.Open(p, it.m.cfg.MeshID, it.m.key, nil)
		if err != nil {
			// Never shown as garbage text: the reason is stored instead.
			row.DecryptError = err.Error()
		} else {
			row.Body, row.Verified = body, verified
		}
		rows[i] = row
	}
	stored := make([]bool, len(items))
	err := d.update(func(tx *bolt.Tx) error {
		clear(stored)
		ib, keys, nonces, evs := tx.Bucket(bInbox), tx.Bucket(bInboxKey), tx.Bucket(bInboxNonce), tx.Bucket(bEvents)
		for i, row := range rows {
			k := keyOf(row.MeshID, row.RecipientPubkey, row.MessageID)
			if keys.Get(k) != nil {
				continue // a redelivery: acked again below, not stored twice
			}
			nk := keyOf(row.MeshID, row.SenderPubkey, items[i].push.Nonce)
			if items[i].push.Nonce != "" && nonces.Get(nk) != nil {
				continue // the same ciphertext replayed under a new id
			}
			seq, err := evs.NextSequence()
			if err != nil {
				return err
			}
			row.Seq = seq
			if err := putJSON(ib, seqKey(seq), row); err != nil {
				return err
			}
			if err := keys.Put(k, seqKey(seq)); err != nil {
				return err
			}
			if items[i].push.Nonce != "" {
				if err := nonces.Put(nk, seqKey(seq)); err != nil {
					return err
				}
			}
			stored[i] = true
		}
		return nil
	}, func() {
		for i := range items {
			if stored[i] {
				d.events.publish(event{id: rows[i].Seq, kind: localapi.EventMessage, meshID: rows[i].MeshID, data: rows[i].api()})
			}
		}
	})
	if err != nil {
		// Not acked: the broker redelivers and we try again.
		d.log.Error("inbox store", "err", err)
		return
	}
	if d.failpoint == failInboxAfterStore {
		// Fault injection for the crash tests: die exactly between the
		// durable store and the ack, as kill -9 at the worst moment would.
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	acks := map[*meshRT][]string{}
	for _, it := range items {
		acks[it.m] = append(acks[it.m], it.push.MessageID)
	}
	for m, ids := range acks {
		if c := m.ackConn(); c != nil {
			c.ClientAckAsync(ids)
		}
	}
}

// syncInbox makes sure what the broker holds for this member is in the
// inbox before a human lists it: a daemon started a moment ago may still be
// connecting, and queued pushes may still be on their way through the
// inbox worker. For each mesh it waits (briefly) for the connection, then
// fetches the queue and stores and settles it the same way pushes are.
// Anything already stored is recognised and only acked again.
func (d *Daemon) syncInbox(ctx context.Context, meshes []*meshRT) {
	for _, m := range meshes {
		if m.getState() == localapi.MeshConnecting {
			m.waitOpen(3 * time.Second)
		}
		c := m.conn()
		if c == nil {
			continue // broker unreachable: list what is stored
		}
		for page := 0; page < 20; page++ {
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			res, err := c.FetchQueued(fctx, 500)
			if err != nil {
				cancel()
				break
			}
			var items []inboxItem
			var ids []string
			for _, rp := range res.Messages {
				if rp.Push != nil {
					items = append(items, inboxItem{m: m, push: rp.Push})
					ids = append(ids, rp.Push.MessageID)
				}
			}
			if len(items) > 0 {
				d.storePushes(items)
			}
			var receipts []inboxItem
			for i := range res.Receipts {
				receipts = append(receipts, inboxItem{m: m, receipt: &res.Receipts[i]})
			}
			// Acked below with the pushes, once recorded.
			if len(receipts) > 0 && d.recordReceipts(receipts, false) == nil {
				for _, r := range res.Receipts {
					ids = append(ids, r.ReceiptID)
				}
			}
			// Settle synchronously so the next page is really the next.
			if len(ids) > 0 {
				c.ClientAck(fctx, ids)
			}
			cancel()
			if !res.More {
				break
			}
		}
	}
}

// listInbox returns rows newest first.
func (d *Daemon) listInbox(mesh string, since uint64, unreadOnly bool, limit int) ([]*inboxRow, error) {
	var out []*inboxRow
	err := d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bInbox).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if seqOf(k) <= since {
				break
			}
			var r inboxRow
			if err := decodeRow(v, &r); err != nil {
				return err
			}
			if mesh != "" && r.Mesh != mesh && r.MeshID != mesh {
				continue
			}
			if unreadOnly && r.SeenAt != 0 {
				continue
			}
			out = append(out, &r)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// markSeen stamps rows as seen.
func (d *Daemon) markSeen(ids []string) (int, error) {
	n := 0
	now := time.Now().UnixMilli()
	err := d.db.Update(func(tx *bolt.Tx) error {
		n = 0
		ib := tx.Bucket(bInbox)
		for _, id := range ids {
			seq, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				continue
			}
			var r inboxRow
			if getJSON(ib, seqKey(seq), &r) != nil || r.SeenAt != 0 {
				continue
			}
			r.SeenAt = now
			if err := putJSON(ib, seqKey(seq), &r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// deleteInbox removes rows of a mesh (all meshes when empty) whose id is
// below before (all when 0), or the single row id.
func (d *Daemon) deleteInbox(mesh string, before uint64, only uint64) (int, error) {
	n := 0
	err := d.db.Update(func(tx *bolt.Tx) error {
		n = 0
		var dead [][]byte
		c := tx.Bucket(bInbox).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			seq := seqOf(k)
			if only != 0 && seq != only {
				continue
			}
			if before != 0 && seq >= before {
				break
			}
			var r inboxRow
			if err := decodeRow(v, &r); err != nil {
				return err
			}
			if mesh != "" && r.Mesh != mesh && r.MeshID != mesh {
				continue
			}
			dead = append(dead, bytes.Clone(k))
		}
		// The dedupe keys stay: a late redelivery of a deleted message
		// must not bring it back.
		for _, k := range dead {
			if err := tx.Bucket(bInbox).Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// pruneInbox deletes rows older than the retention (and their dedupe keys,
// which by then no broker will redeliver against: the queue TTL is shorter).
func (d *Daemon) pruneInbox() {
	cutoff := time.Now().Add(-d.opts.PruneAfter).UnixMilli()
	err := d.db.Update(func(tx *bolt.Tx) error {
		ib := tx.Bucket(bInbox)
		var dead [][]byte
		var rows []inboxRow
		c := ib.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var r inboxRow
			if err := decodeRow(v, &r); err != nil {
				return err
			}
			if r.ReceivedAt >= cutoff {
				break // rows are in arrival order
			}
			dead = append(dead, bytes.Clone(k))
			rows = append(rows, r)
		}
		for i, k := range dead {
			if err := ib.Delete(k); err != nil {
				return err
			}
			r := rows[i]
			tx.Bucket(bInboxKey).Delete(keyOf(r.MeshID, r.RecipientPubkey, r.MessageID))
		}
		return nil
	})
	if err != nil {
		d.log.Error("inbox prune", "err", err)
	}
}

func decodeRow(v []byte, r any) error { return json.Unmarshal(v, r) }
