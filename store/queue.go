package store

import (
	"bytes"

	"github.com/go-json-experiment/json/jsontext"
	bolt "go.etcd.io/bbolt"

	"claudemesh/wire"
)

// Delivery states of a (message, recipient) record.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryExpired   = "expired"
)

// Message is a stored message. Push is the encoded push frame without any
// recipient's key: encoded once at send time, it is what every delivery and
// redelivery writes to the wire (with a multi key spliced in).
type Message struct {
	ID              string         `json:"id"`
	ClientMessageID string         `json:"clientMessageId"`
	SenderPubkey    string         `json:"senderPubkey"`
	SenderMember    string         `json:"senderMember"` // the sending member's pubkey (for message_status)
	TargetSpec      string         `json:"targetSpec"`
	Kind            string         `json:"kind"`
	Priority        string         `json:"priority"`
	Fingerprint     string         `json:"fingerprint"`
	Push            jsontext.Value `json:"push"`
	Receipts        bool           `json:"receipts"`
	CreatedAt       int64          `json:"createdAt"`
	Recipients      int            `json:"recipients"`
	Expired         bool           `json:"expired,omitzero"`
}

// Delivery is the state of one message for one recipient. For receipts it
// only locates the queue entry.
type Delivery struct {
	Seq         uint64 `json:"seq"`
	State       string `json:"state"`
	DeliveredAt int64  `json:"deliveredAt,omitzero"`
}

// deliveryRec is a Delivery as stored, with what an ack needs of its
// message copied in, so settling a delivery never decodes the whole message
// (with its ciphertext): on a broadcast that is a thousand decodes per
// message.
type deliveryRec struct {
	Delivery   `json:",inline"`
	Receipt    bool   `json:"receipt,omitzero"` // this record locates a receipt
	Sender     string `json:"sender,omitempty"`
	CMID       string `json:"cmid,omitempty"`
	NoReceipts bool   `json:"noReceipts,omitzero"`
}

// QueueEntry is one item waiting in a recipient's queue: a message (whose
// bytes are in msgs) or a receipt (whose frame is inline).
type QueueEntry struct {
	ID        string         `json:"id"`
	Receipt   bool           `json:"receipt,omitzero"`
	Priority  string         `json:"priority,omitempty"`
	Key       *wire.MultiKey `json:"key,omitempty"`
	Frame     jsontext.Value `json:"frame,omitempty"`
	CreatedAt int64          `json:"createdAt"`
}

// NewDelivery addresses a new message to one recipient key.
type NewDelivery struct {
	Recipient string
	Key       *wire.MultiKey
}

func qkey(recipient string, seq uint64) []byte { return cat(pk(recipient), u64(seq)) }
func dkey(id, recipient string) []byte         { return cat([]byte(id), pk(recipient)) }

// AppendMessage stores a message, its idempotency record and one queue entry
// plus delivery record per recipient, returning each recipient's queue
// sequence number (in the order of to).
func AppendMessage(tx *bolt.Tx, meshID string, msg *Message, to []NewDelivery) ([]uint64, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	msg.Recipients = len(to)
	if err := mb.Bucket(bMsgs).Put([]byte(msg.ID), encodeMessage(msg)); err != nil {
		return nil, err
	}
	if err := mb.Bucket(bIdem).Put(cat(pk(msg.SenderPubkey), []byte(msg.ClientMessageID)), []byte(msg.ID)); err != nil {
		return nil, err
	}
	if err := mb.Bucket(bMsgExp).Put(cat(u64(uint64(msg.CreatedAt)), []byte(msg.ID)), nil); err != nil {
		return nil, err
	}
	queue, dlv := mb.Bucket(bQueue), mb.Bucket(bDlv)
	seqs := make([]uint64, len(to))
	for i, d := range to {
		seq, err := queue.NextSequence()
		if err != nil {
			return nil, err
		}
		e := QueueEntry{ID: msg.ID, Priority: msg.Priority, Key: d.Key, CreatedAt: msg.CreatedAt}
		if err := queue.Put(qkey(d.Recipient, seq), encodeQueueEntry(&e)); err != nil {
			return nil, err
		}
		rec := deliveryRec{Delivery: Delivery{Seq: seq, State: DeliveryPending}, Sender: msg.SenderPubkey, CMID: msg.ClientMessageID, NoReceipts: !msg.Receipts}
		if err := dlv.Put(dkey(msg.ID, d.Recipient), encodeDelivery(&rec)); err != nil {
			return nil, err
		}
		seqs[i] = seq
	}
	return seqs, nil
}

// LookupIdempotent returns the message a sender already sent under a
// clientMessageId, or ErrNotFound.
func LookupIdempotent(tx *bolt.Tx, meshID, sender, clientMessageID string) (*Message, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	id := mb.Bucket(bIdem).Get(cat(pk(sender), []byte(clientMessageID)))
	if id == nil {
		return nil, ErrNotFound
	}
	return GetMessage(tx, meshID, string(id))
}

// GetMessage loads a message by id.
func GetMessage(tx *bolt.Tx, meshID, id string) (*Message, error) {
	b, err := sub(tx, meshID, bMsgs)
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var m Message
	return &m, decodeMessage(v, &m)
}

// RecipientDelivery is one recipient's row of a message's status.
type RecipientDelivery struct {
	Recipient string
	Delivery
}

// Deliveries lists a message's per-recipient states.
func Deliveries(tx *bolt.Tx, meshID, messageID string) ([]RecipientDelivery, error) {
	b, err := sub(tx, meshID, bDlv)
	if err != nil {
		return nil, err
	}
	var out []RecipientDelivery
	prefix := []byte(messageID)
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != len(prefix)+32 {
			continue
		}
		var d deliveryRec
		if err := decodeDelivery(v, &d); err != nil {
			return nil, err
		}
		out = append(out, RecipientDelivery{Recipient: hexKey(k[len(prefix):]), Delivery: d.Delivery})
	}
	return out, nil
}

// AckOutcome reports what one acknowledged id settled.
type AckOutcome struct {
	ID      string
	Seq     uint64
	Receipt bool // the id was a receipt, now settled
	// Message is the delivered message's header (ID, ClientMessageID,
	// SenderPubkey, Receipts); its Push is not loaded. Nil for receipts.
	Message *Message
	// NewReceipt is set when the delivery produced a receipt for the
	// sender, queued at ReceiptSeq under ReceiptFor. ReceiptFrame is its
	// encoding, the bytes queued, so the push need not encode it again.
	NewReceipt   *wire.Receipt
	ReceiptFor   string
	ReceiptSeq   uint64
	ReceiptFrame []byte
}

// Ack settles ids for one recipient: pending messages become delivered (and
// queue a receipt for their sender when asked), receipts are removed.
// Unknown or already-settled ids are skipped: acks are idempotent.
func Ack(tx *bolt.Tx, meshID, recipient string, ids []string, now int64, newID func() string) ([]AckOutcome, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	queue, dlv, msgs := mb.Bucket(bQueue), mb.Bucket(bDlv), mb.Bucket(bMsgs)
	var out []AckOutcome
	for _, id := range ids {
		dk := dkey(id, recipient)
		v := dlv.Get(dk)
		if v == nil {
			continue
		}
		var d deliveryRec
		if err := decodeDelivery(v, &d); err != nil {
			return nil, err
		}
		if d.State != DeliveryPending {
			continue
		}
		qk := qkey(recipient, d.Seq)
		qv := queue.Get(qk)
		if err := queue.Delete(qk); err != nil {
			return nil, err
		}
		var m Message
		switch {
		case d.Receipt:
		case d.Sender != "":
			m = Message{ID: id, ClientMessageID: d.CMID, SenderPubkey: d.Sender, Receipts: !d.NoReceipts}
		default:
			// A record written before the header was copied into it.
			if mv := msgs.Get([]byte(id)); mv != nil {
				if err := decodeMessage(mv, &m); err != nil {
					return nil, err
				}
				m.Push = nil
			} else {
				d.Receipt = true
			}
		}
		if d.Receipt {
			// A receipt: its delivery record only located the entry.
			if err := dlv.Delete(dk); err != nil {
				return nil, err
			}
			if qv != nil {
				out = append(out, AckOutcome{ID: id, Seq: d.Seq, Receipt: true})
			}
			continue
		}
		d.State, d.DeliveredAt = DeliveryDelivered, now
		if err := dlv.Put(dk, encodeDelivery(&d)); err != nil {
			return nil, err
		}
		o := AckOutcome{ID: id, Seq: d.Seq, Message: &m}
		if m.Receipts {
			r := &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: newID(), MessageID: m.ID, ClientMessageID: m.ClientMessageID, RecipientPubkey: recipient, DeliveredAt: now}
			seq, err := queue.NextSequence()
			if err != nil {
				return nil, err
			}
			frame := wire.MustEncode(r)
			e := QueueEntry{ID: r.ReceiptID, Receipt: true, Frame: frame, CreatedAt: now}
			if err := queue.Put(qkey(m.SenderPubkey, seq), encodeQueueEntry(&e)); err != nil {
				return nil, err
			}
			if err := dlv.Put(dkey(r.ReceiptID, m.SenderPubkey), encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: seq, State: DeliveryPending}, Receipt: true})); err != nil {
				return nil, err
			}
			if err := mb.Bucket(bRcptExp).Put(cat(u64(uint64(now)), pk(m.SenderPubkey), u64(seq)), []byte(r.ReceiptID)); err != nil {
				return nil, err
			}
			o.NewReceipt, o.ReceiptFor, o.ReceiptSeq, o.ReceiptFrame = r, m.SenderPubkey, seq, frame
		}
		out = append(out, o)
	}
	return out, nil
}

// ScanQueue walks a recipient's queue in FIFO order starting after seq
// `after` (0 = from the start) until fn returns false.
func ScanQueue(tx *bolt.Tx, meshID, recipient string, after uint64, fn func(seq uint64, e *QueueEntry) bool) error {
	b, err := sub(tx, meshID, bQueue)
	if err != nil {
		return err
	}
	prefix := pk(recipient)
	c := b.Cursor()
	for k, v := c.Seek(qkey(recipient, after+1)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var e QueueEntry
		if err := decodeQueueEntry(v, &e); err != nil {
			return err
		}
		if !fn(be64(k[32:]), &e) {
			return nil
		}
	}
	return nil
}

// CountPending counts the undelivered messages (not receipts) per recipient,
// which the hub keeps in memory to enforce --max-pending.
func CountPending(tx *bolt.Tx, meshID string) (map[string]int, error) {
	b, err := sub(tx, meshID, bQueue)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	err = b.ForEach(func(k, v []byte) error {
		var e QueueEntry
		if err := decodeQueueEntry(v, &e); err != nil {
			return err
		}
		if !e.Receipt {
			out[hexKey(k[:32])]++
		}
		return nil
	})
	return out, err
}

// Expired describes a delivery that timed out.
type Expired struct {
	Recipient string
	MessageID string
	Seq       uint64
	Receipt   bool
}

// ExpireBefore expires, at most max at a time, the pending deliveries of
// messages created before cutoff and the receipts queued before it. Expired
// messages stay readable (for message_status) until PurgeBefore.
func ExpireBefore(tx *bolt.Tx, meshID string, cutoff int64, max int) (out []Expired, more bool, err error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, false, ErrNotFound
	}
	queue, dlv, msgs, exp, del := mb.Bucket(bQueue), mb.Bucket(bDlv), mb.Bucket(bMsgs), mb.Bucket(bMsgExp), mb.Bucket(bMsgDel)
	c := exp.Cursor()
	var done [][]byte
	for k, _ := c.First(); k != nil && int64(be64(k[:8])) < cutoff; k, _ = c.Next() {
		if len(done) >= max {
			more = true
			break
		}
		id := k[8:]
		done = append(done, bytes.Clone(k))
		mv := msgs.Get(id)
		if mv == nil {
			continue
		}
		var m Message
		if err := decodeMessage(mv, &m); err != nil {
			return nil, false, err
		}
		dc := dlv.Cursor()
		var updates [][2][]byte
		for dk, dv := dc.Seek(id); dk != nil && bytes.HasPrefix(dk, id); dk, dv = dc.Next() {
			if len(dk) != len(id)+32 {
				continue
			}
			var d deliveryRec
			if err := decodeDelivery(dv, &d); err != nil {
				return nil, false, err
			}
			if d.State != DeliveryPending {
				continue
			}
			recipient := hexKey(dk[len(id):])
			if err := queue.Delete(qkey(recipient, d.Seq)); err != nil {
				return nil, false, err
			}
			d.State = DeliveryExpired
			updates = append(updates, [2][]byte{bytes.Clone(dk), encodeDelivery(&d)})
			out = append(out, Expired{Recipient: recipient, MessageID: m.ID, Seq: d.Seq})
		}
		for _, u := range updates {
			if err := dlv.Put(u[0], u[1]); err != nil {
				return nil, false, err
			}
		}
		m.Expired = true
		if err := msgs.Put(id, encodeMessage(&m)); err != nil {
			return nil, false, err
		}
		if err := del.Put(k, nil); err != nil {
			return nil, false, err
		}
	}
	for _, k := range done {
		if err := exp.Delete(k); err != nil {
			return nil, false, err
		}
	}
	// Receipts nobody collected.
	rexp := mb.Bucket(bRcptExp)
	rc := rexp.Cursor()
	var rdone [][]byte
	for k, v := rc.First(); k != nil && int64(be64(k[:8])) < cutoff; k, v = rc.Next() {
		if len(rdone) >= max {
			more = true
			break
		}
		rdone = append(rdone, bytes.Clone(k))
		recipient, seq := hexKey(k[8:40]), be64(k[40:48])
		if queue.Get(k[8:48]) != nil {
			if err := queue.Delete(k[8:48]); err != nil {
				return nil, false, err
			}
			out = append(out, Expired{Recipient: recipient, MessageID: string(v), Seq: seq, Receipt: true})
		}
		if err := dlv.Delete(dkey(string(v), recipient)); err != nil {
			return nil, false, err
		}
	}
	for _, k := range rdone {
		if err := rexp.Delete(k); err != nil {
			return nil, false, err
		}
	}
	return out, more, nil
}

// PurgeBefore deletes, at most max at a time, expired messages created before
// cutoff, with their delivery records and idempotency keys.
func PurgeBefore(tx *bolt.Tx, meshID string, cutoff int64, max int) (n int, more bool, err error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return 0, false, ErrNotFound
	}
	dlv, msgs, del, idem := mb.Bucket(bDlv), mb.Bucket(bMsgs), mb.Bucket(bMsgDel), mb.Bucket(bIdem)
	c := del.Cursor()
	var done [][]byte
	for k, _ := c.First(); k != nil && int64(be64(k[:8])) < cutoff; k, _ = c.Next() {
		if len(done) >= max {
			more = true
			break
		}
		done = append(done, bytes.Clone(k))
		id := k[8:]
		if mv := msgs.Get(id); mv != nil {
			var m Message
			if err := decodeMessage(mv, &m); err != nil {
				return 0, false, err
			}
			if err := idem.Delete(cat(pk(m.SenderPubkey), []byte(m.ClientMessageID))); err != nil {
				return 0, false, err
			}
		}
		var dks [][]byte
		dc := dlv.Cursor()
		for dk, _ := dc.Seek(id); dk != nil && bytes.HasPrefix(dk, id); dk, _ = dc.Next() {
			if len(dk) == len(id)+32 {
				dks = append(dks, bytes.Clone(dk))
			}
		}
		for _, dk := range dks {
			if err := dlv.Delete(dk); err != nil {
				return 0, false, err
			}
		}
		if err := msgs.Delete(id); err != nil {
			return 0, false, err
		}
		n++
	}
	for _, k := range done {
		if err := del.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return n, more, nil
}

// DropQueue expires everything queued for a recipient (a member who left or
// was removed), returning what was dropped.
func DropQueue(tx *bolt.Tx, meshID, recipient string) ([]Expired, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	queue, dlv := mb.Bucket(bQueue), mb.Bucket(bDlv)
	var out []Expired
	var keys [][]byte
	prefix := pk(recipient)
	c := queue.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var e QueueEntry
		if err := decodeQueueEntry(v, &e); err != nil {
			return nil, err
		}
		keys = append(keys, bytes.Clone(k))
		out = append(out, Expired{Recipient: recipient, MessageID: e.ID, Seq: be64(k[32:]), Receipt: e.Receipt})
	}
	for i, k := range keys {
		if err := queue.Delete(k); err != nil {
			return nil, err
		}
		dk := dkey(out[i].MessageID, recipient)
		if out[i].Receipt {
			if err := dlv.Delete(dk); err != nil {
				return nil, err
			}
			continue
		}
		if err := dlv.Put(dk, encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: out[i].Seq, State: DeliveryExpired}})); err != nil {
			return nil, err
		}
	}
	return out, nil
}
