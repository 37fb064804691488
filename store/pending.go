package store

import (
	"bytes"

	"claudemesh/internal/binrec"
)

// PendingFor returns the ids among ids that have a pending delivery record
// for recipient, or are receipts queued for it: the ones a client_ack from
// recipient would settle. It only reads, so the broker can drop unknown and already-settled
// ids before they reach the committer, which every mesh shares: a flood of
// acks for ids that settle nothing must cost its sender, not everyone.
//
// Every pending record has its entry in the recipient's queue (they are
// written, and removed, together: AppendMessage, Ack, expiry), and a queue
// is usually short next to the ids one ack carries. So the queue is read
// first, at most len(ids) entries of it: when that is all of it, an id
// without an entry there has no pending record and is not looked up. A
// longer queue has the ids looked up one by one, as they all used to be.
// A `client_ack` of 500 invented ids (bench --adversary's flood: 20,000
// of them in its first moments, while the member's lookup budget lasts)
// cost 500 descents of the delivery tree; against a queue of a few dozen
// entries it now costs those entries and 500 map lookups.
func PendingFor(tx *Tx, meshID, recipient string, ids []string) ([]string, error) {
	b, err := sub(tx, meshID, bDlv)
	if err != nil {
		return nil, err
	}
	q, err := sub(tx, meshID, bQueue)
	if err != nil {
		return nil, err
	}
	queued, whole := queueIDs(tx, meshID, recipient, len(ids))
	raw := pk(recipient)
	var out []string
	for _, id := range ids {
		if whole {
			if _, ok := queued[id]; !ok {
				continue // no queue entry: no pending record
			}
		}
		if seq, ok := receiptSeq(id); ok {
			// A receipt (from schema 6) has no delivery record: its
			// queue entry, found from its id, is what an ack removes.
			if v := q.Get(rawQkey(raw, seq)); v != nil && entryIs(v, id) {
				out = append(out, id)
				continue
			}
		}
		v := b.Get(dkey(id, recipient))
		if v == nil {
			continue
		}
		var d deliveryRec
		if err := decodeDelivery(v, &d); err != nil {
			return nil, err
		}
		if d.State == DeliveryPending {
			out = append(out, id)
		}
	}
	return out, nil
}

// queueIDs returns the ids of recipient's queue entries and true when it
// has at most max of them; false when it has more, or one it cannot read
// in place.
func queueIDs(tx *Tx, meshID, recipient string, max int) (map[string]struct{}, bool) {
	q, err := sub(tx, meshID, bQueue)
	if err != nil {
		return nil, false
	}
	prefix := pk(recipient)
	var found [][]byte // in place: valid for the transaction
	c := q.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		id, ok := queueEntryID(v)
		if !ok || len(found) == max {
			return nil, false
		}
		found = append(found, id)
	}
	ids := make(map[string]struct{}, len(found))
	for _, id := range found {
		ids[string(id)] = struct{}{}
	}
	return ids, true
}

// queueEntryID reads the id of an encoded queue entry in place (entryIs);
// false for one it cannot read so.
func queueEntryID(v []byte) ([]byte, bool) {
	if binrec.IsJSON(v) {
		return nil, false
	}
	r := binrec.NewReader(v)
	r.Header()
	r.Varint()
	n := r.Uvarint()
	if n > uint64(len(v)) {
		return nil, false
	}
	id := r.Take(int(n))
	return id, id != nil
}
