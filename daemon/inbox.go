package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"syscall"
	"time"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// inboxItem is a push (or receipt) handed from a connection's reader to the
// inbox worker. Storing takes an fsync, which must not stall the reader.
type inboxItem struct {
	m       *meshRT
	sess    *sessionRT // the session connection it came on; nil: the mesh's own
	push    *wire.Push
	receipt *wire.Receipt
	// conn is the connection the push came on when it is not the mesh's
	// control-plane one (the web presence); the ack goes back on it.
	conn *client.Conn
}

// ackConn is the connection to settle the item on: the one it came on.
func (it inboxItem) ackConn() *client.Conn {
	if it.conn != nil && !isDone(it.conn) {
		return it.conn
	}
	if it.sess != nil {
		return it.sess.ackConn()
	}
	return it.m.ackConn()
}

func isDone(c *client.Conn) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

func (d *Daemon) enqueueInbox(m *meshRT, p *wire.Push) { d.enqueueInboxFrom(m, p, nil) }

// enqueueInboxFrom hands over a push that came on c, a connection of the
// mesh other than its control-plane one (the web presence's).
func (d *Daemon) enqueueInboxFrom(m *meshRT, p *wire.Push, c *client.Conn) {
	select {
	case d.inbox <- inboxItem{m: m, push: p, conn: c}:
	case <-d.ctx.Done():
	}
}

func (d *Daemon) enqueueSessionInbox(m *meshRT, s *sessionRT, p *wire.Push) {
	select {
	case d.inbox <- inboxItem{m: m, sess: s, push: p}:
	case <-d.ctx.Done():
	}
}

// enqueueReceipt hands over a receipt that came on the mesh's connection,
// or on session s's (nil for the mesh's).
func (d *Daemon) enqueueReceipt(m *meshRT, r *wire.Receipt, s *sessionRT) {
	select {
	case d.inbox <- inboxItem{m: m, sess: s, receipt: r}:
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
		case <-d.roomWake:
			// Rows were read or deleted: the pushes refused for room
			// are stored now (below), not at the broker's next
			// redelivery.
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
		var pushes, receipts, topicPushes []inboxItem
		for _, it := range batch {
			switch {
			case it.receipt != nil:
				receipts = append(receipts, it)
			case it.push.Kind == wire.KindTopic:
				topicPushes = append(topicPushes, it)
			default:
				pushes = append(pushes, it)
			}
		}
		if len(topicPushes) > 0 {
			d.storeTopicPushes(topicPushes) // topics.go
		}
		if len(receipts) > 0 {
			d.recordReceipts(receipts, true)
		}
		// Pushes refused for room go first, in the order they came: one
		// sender's messages are stored in their order.
		if parked := d.takeParked(); len(parked) > 0 {
			pushes = append(parked, pushes...)
		}
		if len(pushes) > 0 {
			d.storePushes(pushes)
		}
		d.trimInbox()
	}
}

// storePushes stores and acks the items the inbox has room for (under
// its hard limit, each sender under its share: admitPushes) and returns
// their ids. The others are kept (park) and left unacked on the broker:
// they are stored as soon as rows are read or deleted, or come again with
// the broker's redelivery. A failed store stores and acks none.
func (d *Daemon) storePushes(items []inboxItem) []string {
	d.icap.admit.Lock()
	admitted := true
	defer func() {
		if admitted {
			d.icap.admit.Unlock()
		}
	}()
	// At the hard limit pushes are left on the broker, which pushes them
	// again later (a blocked member's aside: stored as seen). A burst
	// stops at the hard limit too, and at each sender's share: the
	// pushes past them are left on the broker like those that come after
	// (not settled, pushed again later). Checking only before a batch
	// let one burst of pushes, however large, overshoot the limit.
	ok, refused := d.admitPushes(items, d.inboxFull(len(items)))
	var take, left []inboxItem
	for i, it := range items {
		if ok[i] {
			take = append(take, it)
		} else {
			left = append(left, it)
		}
	}
	d.park(left)
	if len(refused) > 0 {
		d.shareRefused(refused)
	}
	items = take
	if len(items) == 0 {
		return nil
	}
	rows := make([]*inboxRow, len(items))
	now := time.Now().UnixMilli()
	tried := map[*meshRT]bool{}
	for i, it := range items {
		p := it.push
		var seenAt int64
		if it.m.isBlocked(pushSender(p)) {
			seenAt = now // blocked.go: kept, not new, not announced
		}
		row := &inboxRow{SeenAt: seenAt,
			Mesh: it.m.cfg.Slug, MeshID: it.m.cfg.MeshID, MessageID: p.MessageID, ClientMessageID: p.ClientMessageID,
			Kind: p.Kind, TargetSpec: wire.ShownTargetSpec(p.TargetSpec), SenderPubkey: p.SenderPubkey, SenderMember: p.SenderMemberPubkey, SenderName: p.SenderName,
			RecipientPubkey: it.m.key.PublicHex(), RecipientKind: recipientMember, Priority: p.Priority,
			ReplyToID: wire.ShownReplyToID(p.ReplyToID), Subtype: p.Subtype, ReceivedAt: now, SentAt: p.CreatedAt,
		}
		var sessionKey *cmcrypto.Identity
		if it.sess != nil {
			sessionKey = it.sess.key
			row.RecipientPubkey, row.RecipientKind = it.sess.rec.Pubkey, recipientSession
		}
		if p.Topic != nil {
			row.Topic = p.Topic.Name
		}
		body, verified, err := client.Open(p, it.m.cfg.MeshID, it.m.key, sessionKey)
		if err != nil {
			// Never shown as garbage text: the reason is stored instead.
			row.DecryptError = err.Error()
		} else {
			row.Body, row.Verified = body, verified
			if verified {
				row.SenderMemberName = it.m.knownMemberName(p.SenderMemberPubkey, tried)
				row.FromSelf, row.Lookalike, row.LookalikeSelf = it.m.senderMarks(p.SenderMemberPubkey, p.SenderName, row.SenderMemberName)
			}
		}
		rows[i] = row
	}
	stored := make([]bool, len(items))
	err := d.update(func(tx *bolt.Tx) error {
		clear(stored)
		for i, row := range rows {
			var err error
			if stored[i], err = putInboxRow(tx, row, items[i].push.Nonce); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		for i := range items {
			if stored[i] && rows[i].SeenAt == 0 {
				d.events.publish(event{id: rows[i].Seq, kind: localapi.EventMessage, meshID: rows[i].MeshID, data: rows[i].api(), inbox: rows[i]})
			}
		}
		d.inboxGrew(rows, stored)
		d.unseenGrew(rows, stored)
	})
	admitted = false
	d.icap.admit.Unlock()
	if err != nil {
		// Not acked: the broker redelivers and we try again.
		d.log.Error("inbox store", "err", err)
		return nil
	}
	if d.failpoint == failInboxAfterStore {
		// Fault injection for the crash tests: die exactly between the
		// durable store and the ack, as kill -9 at the worst moment would.
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	settleItems(items, func(it inboxItem) string { return it.push.MessageID })
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.push.MessageID
	}
	return ids
}

// putInboxRow stores a received row under the next event sequence, once: a
// redelivery (same recipient and message id) or the same ciphertext
// replayed under a new id (same sender and nonce) is recognised and not
// stored again (false).
func putInboxRow(tx *bolt.Tx, row *inboxRow, nonce string) (bool, error) {
	ib, keys, nonces, evs := tx.Bucket(bInbox), tx.Bucket(bInboxKey), tx.Bucket(bInboxNonce), tx.Bucket(bEvents)
	k := keyOf(row.MeshID, row.RecipientPubkey, row.MessageID)
	if keys.Get(k) != nil {
		return false, nil
	}
	// The replay guard is per recipient: one multi message carries the
	// same nonce to the member and to each session.
	nk := keyOf(row.MeshID, row.SenderPubkey, nonce)
	if row.RecipientKind == recipientSession {
		nk = keyOf(row.MeshID, row.SenderPubkey, nonce, row.RecipientPubkey)
	}
	if nonce != "" && nonces.Get(nk) != nil {
		return false, nil
	}
	seq, err := evs.NextSequence()
	if err != nil {
		return false, err
	}
	row.Seq = seq
	if err := putJSON(ib, seqKey(seq), row); err != nil {
		return false, err
	}
	row.size = len(ib.Get(seqKey(seq)))
	if err := keys.Put(k, seqKey(seq)); err != nil {
		return false, err
	}
	if nonce != "" {
		if err := nonces.Put(nk, seqKey(seq)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// settleItems acks each item on the connection it came on, one client_ack
// per connection.
func settleItems(items []inboxItem, id func(inboxItem) string) {
	acks := map[*client.Conn][]string{}
	for _, it := range items {
		if c := it.ackConn(); c != nil {
			acks[c] = append(acks[c], id(it))
		}
	}
	for c, ids := range acks {
		c.ClientAckAsync(ids)
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
			for _, rp := range res.Messages {
				if rp.Push != nil {
					items = append(items, inboxItem{m: m, push: rp.Push})
				}
			}
			var ids []string
			full := false
			if len(items) > 0 {
				// Acked: those stored. The rest (the inbox reached its
				// hard limit or their sender's share, or the store
				// failed) stay on the broker: the next page would start
				// with them again.
				ids = d.storePushes(items)
				full = len(ids) < len(items)
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
			if !res.More || full {
				break
			}
		}
	}
}

// listInbox returns rows newest first: those sc sees (all when sc is nil),
// each with sc's read state.
func (d *Daemon) listInbox(mesh string, since uint64, unreadOnly bool, limit int, sc *sessionScope) ([]*inboxRow, error) {
	return d.listInboxOrder(mesh, since, unreadOnly, limit, sc, false, false)
}

// listInboxOrder is listInbox, oldest first when oldest: then limit takes
// the oldest rows (a backlog read a few at a time, in order). left keeps
// only the rows of meshes this daemon does not serve (left, or forgotten
// from config.json), which it keeps until the inbox cap takes them.
func (d *Daemon) listInboxOrder(mesh string, since uint64, unreadOnly bool, limit int, sc *sessionScope, oldest, left bool) ([]*inboxRow, error) {
	var served map[string]bool
	if left {
		served = map[string]bool{}
		for _, m := range d.meshList() {
			served[m.cfg.Slug], served[m.cfg.MeshID] = true, true
		}
		delete(served, "")
	}
	var out []*inboxRow
	err := d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bInbox).Cursor()
		seen := tx.Bucket(bInboxSeen)
		first, next := c.Last, c.Prev
		if oldest {
			first = func() ([]byte, []byte) { return c.Seek(seqKey(since + 1)) }
			next = c.Next
		}
		for k, v := first(); k != nil; k, v = next() {
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
			if left && (served[r.Mesh] || served[r.MeshID]) {
				continue
			}
			if !sc.sees(&r) {
				continue
			}
			if !sc.owns(&r) {
				r.SeenAt = 0
				if v := seen.Get(seenKey(sc.session, r.Seq)); len(v) == 8 {
					r.SeenAt = int64(binary.BigEndian.Uint64(v))
				}
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

// seenKey is a session's read mark on a row it shares with its member.
func seenKey(session string, seq uint64) []byte {
	return append(append([]byte(session), 0), seqKey(seq)...)
}

// markSeen stamps rows as seen: for sc (nil: the human), only rows sc
// sees; a row sc shares with its member gets sc's own read mark, so one
// session reading a member DM leaves it unread for its siblings.
func (d *Daemon) markSeen(ids []string, sc *sessionScope) (int, error) {
	n := 0
	now := time.Now().UnixMilli()
	var stamped []seenRow // for the chat page's unread counts
	txid := 0
	err := d.db.Update(func(tx *bolt.Tx) error {
		n, stamped, txid = 0, stamped[:0], tx.ID()
		ib := tx.Bucket(bInbox)
		for _, id := range ids {
			seq, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				continue
			}
			var r inboxRow
			if getJSON(ib, seqKey(seq), &r) != nil || !sc.sees(&r) {
				continue
			}
			if !sc.owns(&r) {
				k := seenKey(sc.session, seq)
				if tx.Bucket(bInboxSeen).Get(k) != nil {
					continue
				}
				if err := tx.Bucket(bInboxSeen).Put(k, seqKey(uint64(now))); err != nil {
					return err
				}
				n++
				continue
			}
			if r.SeenAt != 0 {
				continue
			}
			r.SeenAt = now
			if err := putJSON(ib, seqKey(seq), &r); err != nil {
				return err
			}
			n++
			if key, _, ok := inboxThread(&r); ok {
				stamped = append(stamped, seenRow{meshID: r.MeshID, thread: key, seq: seq})
			}
		}
		return nil
	})
	if err == nil && len(stamped) > 0 {
		if d.opts.testSeenWritten != nil {
			d.opts.testSeenWritten()
		}
		d.threadsSeen(txid, stamped)
	}
	if n > 0 {
		d.inboxChanged()
		d.unseenChanged()
		d.trimInbox()
		d.roomMade()
	}
	return n, err
}

// deleteInbox removes rows of a mesh (all meshes when empty) whose id is
// below before (all when 0), or the single row id.
func (d *Daemon) deleteInbox(mesh string, before uint64, only uint64) (int, error) {
	n := 0
	var freed int64
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
		freed = 0
		for _, k := range dead {
			freed += int64(len(tx.Bucket(bInbox).Get(k)))
			if err := tx.Bucket(bInbox).Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err == nil {
		d.inboxShrank(freed)
		d.unseenChanged()
		d.threadsChanged()
		d.roomMade()
	}
	return n, err
}

// pruneInbox deletes rows older than the retention (and their dedupe keys,
// which by then no broker will redeliver against: the queue TTL is shorter).
func (d *Daemon) pruneInbox() {
	cutoff := time.Now().Add(-d.opts.PruneAfter).UnixMilli()
	var freed int64
	err := d.db.Update(func(tx *bolt.Tx) error {
		ib := tx.Bucket(bInbox)
		var dead [][]byte
		var rows []inboxRow
		freed = 0
		c := ib.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var r inboxRow
			if err := decodeRow(v, &r); err != nil {
				return err
			}
			if r.ReceivedAt >= cutoff {
				break // rows are in arrival order
			}
			freed += int64(len(v))
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
		return
	}
	d.inboxShrank(freed)
	d.unseenChanged()
	d.threadsChanged()
	d.trimInbox()
	d.roomMade()
}

func decodeRow(v []byte, r any) error { return json.Unmarshal(v, r) }
