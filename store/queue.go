package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/oklog/ulid/v2"

	"claudemesh/internal/binrec"
	"claudemesh/wire"
)

// The message queue's layout is shaped by the group committer, which is the
// broker's throughput ceiling: every write lands on one goroutine, and in
// bbolt the cost of a transaction is the B+tree pages it touches (each is
// read into a node, rewritten and written back). So:
//
//   - Records that live long are written once, with keys that grow in time
//     (broker ULIDs; client ids, which our clients also mint as ULIDs), so
//     each commit appends at the right edge of its trees, filled to the
//     brim (fillAppend), instead of rewriting pages all over the file.
//   - The ciphertext lives apart from the message's header, in bodies, and
//     goes in the commit of the last recipient's ack (or expiry): what the
//     broker keeps afterwards is what message_status and idempotency need.
//   - A push larger than a page (largeBody) gets a bucket of its own, so no
//     other record shares its pages (putBody).
//   - An ack writes small records only: the delivery record (state and
//     time), and a queue entry out, a receipt in. A receipt is one queue
//     entry, found again by the sequence number its id carries, with no
//     delivery record of its own.
//   - The queue's pages are packed full too (fillAppend), though its keys
//     are not in time order: a broadcast puts one entry in each of its
//     1,000 recipients' ranges, and bbolt's half-full split made those
//     entries take twice the pages, each written by the send's commit and
//     again by every commit of acks that settles an entry in it (205 and
//     753 pages a broadcast in BenchmarkBroadcastLifecycle/acks=6, 113 and
//     549 packed). A page that an insert overfills splits into a full one
//     and the rest, as at the right edge; DMs write about as many pages
//     either way.
//   - Expiry walks each recipient's queue from its head (the queue is FIFO,
//     so the oldest entries are there), and purge walks the messages from
//     the oldest: no index is written per message just to find it again.

// Delivery states of a (message, recipient) record.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryExpired   = "expired"
)

// largeBody is the size of a body record above which its push is kept in a
// bucket of its own (largeBodies/<messageId>), with only the recipients'
// count left in bodies. bbolt rewrites a whole leaf, overflow pages
// included, whenever any key in it changes: a 64 KiB push in bodies shared
// its leaf with its neighbours, so every small message appended, settled or
// merged next to it rewrote ~88 KB in some other sender's commit (one large
// message in a hundred, never acked, doubled the committer's time per
// message; BenchmarkDMLifecycle/large=1%). In a bucket of its own the push
// is written once and freed once, and settling one recipient of a large
// multi rewrites only its count.
const largeBody = 4096

// manyRecipients is the number of recipients from which a message's push
// is kept apart as a large one's is, whatever its size. Each recipient's
// ack or expiry rewrites the body record with the count one lower; with
// the push in the record that copied the push once per recipient: a
// broadcast of a short message to 1,000 allocated and copied ~1 MB in its
// acks (13 % of what BenchmarkBroadcastLifecycle allocated). With
// the push apart, each rewrites a few bytes; the push's own bucket is
// written once, with the message, and freed with the last recipient.
const manyRecipients = 8

// keyPush is the push frame's key in a large body's own bucket.
var keyPush = []byte("p")

// fillAppend is the fill percent of buckets written in key order: a page
// left behind at the right edge is never written again, so it is packed
// full instead of bbolt's half-full split.
const fillAppend = 1.0

// Message is a stored message. Push is the encoded push frame without any
// recipient's key: encoded once at send time, it is what every delivery and
// redelivery writes to the wire (with a multi key spliced in). Push is nil
// once every recipient has settled the message.
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
	Expired         bool           `json:"expired,omitzero"` // records before schema 6 only
}

// Delivery is the state of one message for one recipient.
type Delivery struct {
	Seq         uint64 `json:"seq"`
	State       string `json:"state"`
	DeliveredAt int64  `json:"deliveredAt,omitzero"`
}

// deliveryRec is a Delivery as stored. While it is pending it carries what
// an ack needs of its message, so settling a delivery never reads the
// message; the settled record drops those copies.
type deliveryRec struct {
	Delivery   `json:",inline"`
	Receipt    bool   `json:"receipt,omitzero"` // a receipt's record (before schema 6 only)
	Sender     string `json:"sender,omitempty"`
	CMID       string `json:"cmid,omitempty"`
	NoReceipts bool   `json:"noReceipts,omitzero"`
}

// QueueEntry is one item waiting in a recipient's queue: a message (whose
// bytes are in bodies) or a receipt (whose frame is inline).
type QueueEntry struct {
	ID        string         `json:"id"`
	Receipt   bool           `json:"receipt,omitzero"`
	Priority  string         `json:"priority,omitempty"`
	Key       *wire.MultiKey `json:"key,omitempty"`
	Frame     jsontext.Value `json:"frame,omitempty"`
	CreatedAt int64          `json:"createdAt"`
	// From and Charge say whose quota this delivery counts against (the
	// sending member's key) and by how many bytes, as the broker reserved
	// them at send time: settling the entry gives back exactly what was
	// taken, and the counts are derived again from the queue at start.
	// Empty and 0 for entries queued before quotas (they count nowhere).
	From   string `json:"from,omitempty"`
	Charge int64  `json:"charge,omitzero"`
}

// NewDelivery addresses a new message to one recipient key. From and
// Charge are stored in its queue entry (QueueEntry).
type NewDelivery struct {
	Recipient string
	Key       *wire.MultiKey
	From      string
	Charge    int64
}

func qkey(recipient string, seq uint64) []byte { return cat(pk(recipient), u64(seq)) }
func dkey(id, recipient string) []byte         { return cat([]byte(id), pk(recipient)) }

// idemKey leads with the client's id: ULIDs, as every client of this
// project mints them, make the index grow at its right edge like the
// others. The sender's raw key closes it, so ids of any length stay
// unambiguous.
func idemKey(sender, clientMessageID string) []byte {
	return cat([]byte(clientMessageID), pk(sender))
}

// appendOnly returns a bucket of mb set up for in-order writes.
func appendOnly(mb *Bucket, name []byte) *Bucket {
	b := mb.Bucket(name)
	b.SetFillPercent(fillAppend)
	return b
}

// packed returns a bucket of mb whose split pages are packed full: the
// queue, whose pages each commit rewrites whole wherever it touches them.
func packed(mb *Bucket, name []byte) *Bucket { return appendOnly(mb, name) }

// AppendMessage stores a message, its idempotency record, its body and one
// queue entry plus delivery record per recipient, returning each
// recipient's queue sequence number (in the order of to).
func AppendMessage(tx *Tx, meshID string, msg *Message, to []NewDelivery) ([]uint64, error) {
	return PrepareMessage(msg, to).Append(tx, meshID)
}

// PreparedMessage is a message's records encoded ahead of its commit.
// Everything that does not depend on the transaction (the header, the
// body, the idempotency key, each recipient's queue entry and delivery
// record but for the queue sequence number) is encoded by PrepareMessage
// on the sender's goroutine, so the group committer, which every write of
// the broker waits for, only puts bytes. Append does not modify it: a
// write that runs again (engine contract) appends the same records.
type PreparedMessage struct {
	msgKey, idem, idemValue, header, body []byte
	to                                    []preparedDelivery
	// The pending delivery record is dlvHead, the sequence number, dlvTail.
	dlvHead, dlvTail []byte
}

type preparedDelivery struct {
	recipient []byte // raw key: the queue key's prefix
	entry     []byte // the encoded QueueEntry
	dkey      []byte
	index     int // in the message's recipients as given
}

// PrepareMessage encodes msg's records for its recipients (it sets
// msg.Recipients).
func PrepareMessage(msg *Message, to []NewDelivery) *PreparedMessage {
	return PrepareMessageBody(msg, to, nil)
}

// BodyHeader appends to dst the start of a message's body record for
// recipients. A sender that encodes the push frame right after it
// (wire.AppendPush) and passes the whole as PrepareMessageBody's body saves
// the body its copy of the frame.
func BodyHeader(dst []byte, recipients int) []byte {
	return binary.AppendUvarint(dst, uint64(recipients))
}

// PrepareMessageBody is PrepareMessage with the body record already made:
// BodyHeader(len(to)) followed by msg.Push. A body that is not exactly that
// is ignored and encoded again.
func PrepareMessageBody(msg *Message, to []NewDelivery, body []byte) *PreparedMessage {
	msg.Recipients = len(to)
	p := &PreparedMessage{
		msgKey:    []byte(msg.ID),
		idem:      idemKey(msg.SenderPubkey, msg.ClientMessageID),
		idemValue: encodeIdemValue(msg.ID),
		header:    encodeHeader(msg),
		to:        make([]preparedDelivery, len(to)),
	}
	if len(to) > 0 {
		if left, n := binary.Uvarint(body); n > 0 && left == uint64(len(to)) && bytes.Equal(body[n:], msg.Push) {
			p.body = body
		} else {
			p.body = encodeBody(len(to), msg.Push)
		}
	}
	// What an ack needs of the message (its sender and client id) goes in
	// the queue entries, which the acks delete, so each delivery record
	// keeps its size from now to its purge (records.go). A sender key not
	// in lower-case hex stays in the delivery record, as before schema 8.
	dr := deliveryRec{Delivery: Delivery{State: DeliveryPending}, NoReceipts: !msg.Receipts}
	var ackSender, ackCMID string
	if isHexKey(msg.SenderPubkey) {
		ackSender, ackCMID = msg.SenderPubkey, msg.ClientMessageID
	} else {
		dr.Sender, dr.CMID = msg.SenderPubkey, msg.ClientMessageID
	}
	rec := encodeDelivery(&dr)
	// encodeDelivery writes recBinary, flags, state, uvarint seq (one byte
	// for 0), then the rest.
	p.dlvHead, p.dlvTail = rec[:3], rec[4:]
	for i, d := range to {
		e := QueueEntry{ID: msg.ID, Priority: msg.Priority, Key: d.Key, CreatedAt: msg.CreatedAt, From: d.From, Charge: d.Charge}
		p.to[i] = preparedDelivery{recipient: pk(d.Recipient), entry: encodeQueueEntryFor(&e, ackSender, ackCMID), dkey: dkey(msg.ID, d.Recipient), index: i}
	}
	// Appended in key order. bbolt inserts into a node's sorted slice,
	// moving every entry after the new one: a broadcast's 1,000 queue
	// entries and delivery records, put in the order of their random
	// keys, moved ~32 MB of bbolt's entries in the committer (each of
	// the two buckets' nodes grows by all of them until the commit
	// splits it). In order, each lands at or near its node's end. A
	// delivery record's key is the message id then the recipient, so
	// both buckets are in the recipients' order.
	slices.SortFunc(p.to, func(a, b preparedDelivery) int { return bytes.Compare(a.recipient, b.recipient) })
	return p
}

// deliveryValue is the pending delivery record for queue position seq.
func (p *PreparedMessage) deliveryValue(seq uint64) []byte {
	b := make([]byte, 0, len(p.dlvHead)+binary.MaxVarintLen64+len(p.dlvTail))
	b = append(b, p.dlvHead...)
	b = binary.AppendUvarint(b, seq)
	return append(b, p.dlvTail...)
}

// Append writes the prepared records, returning each recipient's queue
// sequence number (in the order PrepareMessage was given them).
func (p *PreparedMessage) Append(tx *Tx, meshID string) ([]uint64, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	if err := appendOnly(mb, bMsgs).Put(p.msgKey, p.header); err != nil {
		return nil, err
	}
	if err := appendOnly(mb, bIdem).Put(p.idem, p.idemValue); err != nil {
		return nil, err
	}
	if p.body != nil {
		if err := putBody(mb, p.msgKey, p.body); err != nil {
			return nil, err
		}
	}
	queue, dlv := packed(mb, bQueue), appendOnly(mb, bDlv)
	seqs := make([]uint64, len(p.to))
	for _, d := range p.to {
		seq, err := queue.NextSequence()
		if err != nil {
			return nil, err
		}
		if err := queue.Put(rawQkey(d.recipient, seq), d.entry); err != nil {
			return nil, err
		}
		if err := dlv.Put(d.dkey, p.deliveryValue(seq)); err != nil {
			return nil, err
		}
		seqs[d.index] = seq
	}
	return seqs, nil
}

// encodeIdemValue is an idempotency record's value, the message's id: from
// schema 8 a canonical ULID is stored as a zero byte and its 16 bytes
// (17 bytes, not 26), any other id as its text (which never starts with a
// zero byte). idemID reads either.
func encodeIdemValue(id string) []byte {
	if u, ok := canonicalULID(id); ok {
		return append([]byte{0}, u[:]...)
	}
	return []byte(id)
}

func idemID(v []byte) string {
	if len(v) == 17 && v[0] == 0 {
		return ulid.ULID(v[1:]).String()
	}
	return string(v)
}

// IdempotentID is the id of the message a sender sent under a
// clientMessageId while the broker remembers the id (the message itself
// may be settled and gone), or "".
func IdempotentID(tx *Tx, meshID, sender, clientMessageID string) string {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return ""
	}
	v := mb.Bucket(bIdem).Get(idemKey(sender, clientMessageID))
	if v == nil {
		return ""
	}
	return idemID(v)
}

// LookupIdempotent returns the message a sender already sent under a
// clientMessageId, or ErrNotFound.
func LookupIdempotent(tx *Tx, meshID, sender, clientMessageID string) (*Message, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	v := mb.Bucket(bIdem).Get(idemKey(sender, clientMessageID))
	if v == nil {
		return nil, ErrNotFound
	}
	return GetMessage(tx, meshID, idemID(v))
}

// GetMessage loads a message by id, with its push frame while any
// recipient has yet to settle it.
func GetMessage(tx *Tx, meshID, id string) (*Message, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	v := mb.Bucket(bMsgs).Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var m Message
	if err := decodeMessage(v, id, &m); err != nil {
		return nil, err
	}
	if m.ID == "" {
		m.ID = id
	}
	if m.Push == nil {
		if bv := mb.Bucket(bBodies).Get([]byte(id)); bv != nil {
			_, push, err := decodeBody(bv)
			if err != nil {
				return nil, err
			}
			if len(push) == 0 {
				push = largePush(mb, []byte(id))
			}
			m.Push = push
		}
	}
	return &m, nil
}

// RecipientDelivery is one recipient's row of a message's status.
type RecipientDelivery struct {
	Recipient string
	Delivery
}

// Deliveries lists a message's per-recipient states.
func Deliveries(tx *Tx, meshID, messageID string) ([]RecipientDelivery, error) {
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
	// From and Charge are the settled queue entry's (QueueEntry): the
	// quota the delivery held, now free.
	From   string
	Charge int64
}

// queueBuckets are the buckets settling a delivery touches, each opened
// when it is first needed: an ack of a receipt touches the queue alone, so
// it does not look up the other three (each a lookup in the mesh bucket
// and a wrapper).
type queueBuckets struct {
	mb            *Bucket
	queue         *Bucket
	dlvB, bodiesB *Bucket
	largeB        *Bucket
	largeOpen     bool
}

func openQueue(mb *Bucket) *queueBuckets {
	return &queueBuckets{mb: mb, queue: packed(mb, bQueue)}
}

func (qb *queueBuckets) dlv() *Bucket {
	if qb.dlvB == nil {
		qb.dlvB = appendOnly(qb.mb, bDlv)
	}
	return qb.dlvB
}

func (qb *queueBuckets) bodies() *Bucket {
	if qb.bodiesB == nil {
		qb.bodiesB = appendOnly(qb.mb, bBodies)
	}
	return qb.bodiesB
}

// large is the large bodies' bucket, nil in a file from before it.
func (qb *queueBuckets) large() *Bucket {
	if !qb.largeOpen {
		qb.largeB, qb.largeOpen = qb.mb.Bucket(bLargeBodies), true
	}
	return qb.largeB
}

// release drops one recipient's hold on a message's body, deleting the body
// with the last one. The record is found and, for the last recipient (every
// DM's), deleted with one descent of the tree.
func (qb *queueBuckets) release(id []byte) error {
	c := qb.bodies().Cursor()
	k, v := c.Seek(id)
	if k == nil || !bytes.Equal(k, id) {
		return nil // settled before bodies were kept apart, or already gone
	}
	left, n := binary.Uvarint(v)
	if n <= 0 {
		return fmt.Errorf("store: corrupt message body")
	}
	if left <= 1 {
		countOnly := len(v) == n
		if err := c.Delete(); err != nil {
			return err
		}
		return deleteLarge(qb.large(), id, countOnly)
	}
	// encodeBody(left-1, push) without copying the push twice: v is
	// bbolt's and valid until the Put. A large body's record is its count
	// alone.
	return qb.bodies().Put(id, encodeBody(int(left-1), v[n:]))
}

// putBody stores a message's body record (BodyHeader ‖ push): in bodies
// when it is small and for few recipients, else the push in a bucket of
// its own under largeBodies and the count alone in bodies.
func putBody(mb *Bucket, id, body []byte) error {
	bodies := appendOnly(mb, bBodies)
	recipients, n := binary.Uvarint(body)
	if n <= 0 {
		return fmt.Errorf("store: corrupt message body")
	}
	if len(body) <= largeBody && recipients < manyRecipients {
		return bodies.Put(id, body)
	}
	own, err := appendOnly(mb, bLargeBodies).CreateBucket(id)
	if err != nil {
		return err
	}
	if err := own.Put(keyPush, body[n:]); err != nil {
		return err
	}
	return bodies.Put(id, body[:n])
}

// largePush is a copy of a large body's push, nil if it has none.
func largePush(mb *Bucket, id []byte) []byte {
	if lb := mb.Bucket(bLargeBodies); lb != nil {
		if own := lb.Bucket(id); own != nil {
			return bytes.Clone(own.Get(keyPush))
		}
	}
	return nil
}

// deleteBody deletes a message's body record and, for a large one (its
// record is a count alone), the push's own bucket.
func deleteBody(bodies, large *Bucket, id []byte, countOnly bool) error {
	if err := bodies.Delete(id); err != nil {
		return err
	}
	return deleteLarge(large, id, countOnly)
}

// deleteLarge deletes a large body's own bucket, if the deleted body
// record was a count alone and there is one.
func deleteLarge(large *Bucket, id []byte, countOnly bool) error {
	if !countOnly || large == nil || large.Bucket(id) == nil {
		return nil
	}
	return large.DeleteBucket(id)
}

// Ack settles ids for one recipient: pending messages become delivered (and
// queue a receipt for their sender when asked), receipts are removed.
// Unknown or already-settled ids are skipped: acks are idempotent.
func Ack(tx *Tx, meshID, recipient string, ids []string, now int64) ([]AckOutcome, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	qb := openQueue(mb)
	raw := pk(recipient)
	var out []AckOutcome
	for _, id := range ids {
		if seq, ok := receiptSeq(id); ok {
			// One descent of the tree finds the entry and deletes it.
			qc := qb.queue.Cursor()
			if k, v := qc.Seek(rawQkey(raw, seq)); k != nil && len(k) == len(raw)+8 && bytes.HasPrefix(k, raw) && be64(k[len(raw):]) == seq && entryIs(v, id) {
				if err := qc.Delete(); err != nil {
					return nil, err
				}
				out = append(out, AckOutcome{ID: id, Seq: seq, Receipt: true})
				continue
			}
		}
		dk := make([]byte, 0, len(id)+len(raw))
		dk = append(append(dk, id...), raw...)
		dlv := qb.dlv()
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
		qk := rawQkey(raw, d.Seq)
		if d.Receipt {
			// A receipt queued before schema 6, located by its record.
			present := qb.queue.Get(qk) != nil
			if err := qb.queue.Delete(qk); err != nil {
				return nil, err
			}
			if err := dlv.Delete(dk); err != nil {
				return nil, err
			}
			if present {
				out = append(out, AckOutcome{ID: id, Seq: d.Seq, Receipt: true})
			}
			continue
		}
		var ea entryAckInfo
		qc := qb.queue.Cursor()
		if k, v := qc.Seek(qk); k != nil && bytes.Equal(k, qk) {
			ea = entryAck(v)
			if err := qc.Delete(); err != nil {
				return nil, err
			}
		}
		m := Message{ID: id, ClientMessageID: d.CMID, SenderPubkey: d.Sender, Receipts: !d.NoReceipts}
		if m.SenderPubkey == "" {
			// From schema 8 the queue entry carries them.
			m.SenderPubkey, m.ClientMessageID = ea.sender, ea.cmid
		}
		if m.SenderPubkey == "" {
			// A record written before the header was copied into it.
			mv := mb.Bucket(bMsgs).Get([]byte(id))
			if mv == nil {
				continue
			}
			if err := decodeMessage(mv, id, &m); err != nil {
				return nil, err
			}
			m.ID, m.Push = id, nil
		}
		if err := qb.release([]byte(id)); err != nil {
			return nil, err
		}
		settled := deliveryRec{Delivery: Delivery{Seq: d.Seq, State: DeliveryDelivered, DeliveredAt: now}}
		if err := dlv.Put(dk, encodeDelivery(&settled)); err != nil {
			return nil, err
		}
		o := AckOutcome{ID: id, Seq: d.Seq, Message: &m, From: ea.from, Charge: ea.charge}
		if m.Receipts {
			seq, err := qb.queue.NextSequence()
			if err != nil {
				return nil, err
			}
			r := &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: newReceiptID(now, seq), MessageID: m.ID, ClientMessageID: m.ClientMessageID, RecipientPubkey: recipient, DeliveredAt: now}
			frame := wire.EncodeReceipt(r)
			e := QueueEntry{ID: r.ReceiptID, Receipt: true, Frame: frame, CreatedAt: now}
			if err := qb.queue.Put(qkey(m.SenderPubkey, seq), encodeQueueEntry(&e)); err != nil {
				return nil, err
			}
			o.NewReceipt, o.ReceiptFor, o.ReceiptSeq, o.ReceiptFrame = r, m.SenderPubkey, seq, frame
		}
		out = append(out, o)
	}
	return out, nil
}

// Receipt ids are ULIDs (the time of the ack, then 80 bits) whose 80 bits
// are a tag byte, the receipt's 48-bit queue sequence number and 24 random
// bits: the ack that settles a receipt finds its queue entry from the id
// alone. The tag only saves message acks a lookup; a receipt is settled
// only when the entry at that place really carries the id.
const receiptTag = 0xA5

func newReceiptID(now int64, seq uint64) string {
	var u ulid.ULID
	if err := u.SetTime(uint64(now)); err != nil {
		u.SetTime(0)
	}
	u[6] = receiptTag
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], seq)
	copy(u[7:13], s[2:])
	r := rand.Uint32()
	u[13], u[14], u[15] = byte(r>>16), byte(r>>8), byte(r)
	return u.String()
}

// receiptSeq extracts the queue sequence number from a receipt id.
func receiptSeq(id string) (uint64, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil || u[6] != receiptTag {
		return 0, false
	}
	var s [8]byte
	copy(s[2:], u[7:13])
	return binary.BigEndian.Uint64(s[:]), true
}

// entryIs reports whether an encoded queue entry carries id. It reads the
// id in place (an ack of a receipt runs on the committer).
func entryIs(v []byte, id string) bool {
	if binrec.IsJSON(v) {
		var e QueueEntry
		return decodeQueueEntry(v, &e) == nil && e.ID == id
	}
	r := binrec.NewReader(v)
	r.Header()
	r.Varint()
	n := r.Uvarint()
	if n != uint64(len(id)) {
		return false
	}
	got := r.Take(int(n))
	return got != nil && string(got) == id
}

// rawQkey is qkey for a recipient key already in raw form.
func rawQkey(raw []byte, seq uint64) []byte {
	k := make([]byte, 0, len(raw)+8)
	return binary.BigEndian.AppendUint64(append(k, raw...), seq)
}

// ScanQueue walks a recipient's queue in FIFO order starting after seq
// `after` (0 = from the start) until fn returns false.
func ScanQueue(tx *Tx, meshID, recipient string, after uint64, fn func(seq uint64, e *QueueEntry) bool) error {
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
func CountPending(tx *Tx, meshID string) (map[string]int, error) {
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
	From      string // the quota the entry held (QueueEntry)
	Charge    int64
}

// ExpireBefore expires, at most max at a time, the queue entries (message
// deliveries and receipts) created before cutoff. Each recipient's queue is
// FIFO, so the walk looks at the head of each queue and stops there at the
// first entry young enough to stay. Expired deliveries stay readable (for
// message_status) until the message is purged.
func ExpireBefore(tx *Tx, meshID string, cutoff int64, max int) (out []Expired, more bool, err error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, false, ErrNotFound
	}
	qb := openQueue(mb)
	var keys [][]byte
	c := qb.queue.Cursor()
	for k, v := c.First(); k != nil; {
		var e QueueEntry
		if err := decodeQueueEntry(v, &e); err != nil {
			return nil, false, err
		}
		if e.CreatedAt >= cutoff {
			// The rest of this recipient's queue is younger: next one.
			next := nextPrefix(k[:32])
			if next == nil {
				break
			}
			k, v = c.Seek(next)
			continue
		}
		if len(out) == max {
			more = true
			break
		}
		keys = append(keys, bytes.Clone(k))
		out = append(out, Expired{Recipient: hexKey(k[:32]), MessageID: e.ID, Seq: be64(k[32:]), Receipt: e.Receipt, From: e.From, Charge: e.Charge})
		k, v = c.Next()
	}
	for i, k := range keys {
		if err := qb.expire(k, out[i]); err != nil {
			return nil, false, err
		}
	}
	return out, more, nil
}

// expire removes one queue entry and marks what it delivered expired.
func (qb *queueBuckets) expire(qk []byte, e Expired) error {
	if err := qb.queue.Delete(qk); err != nil {
		return err
	}
	dk := dkey(e.MessageID, e.Recipient)
	if e.Receipt {
		// A receipt from before schema 6 has a delivery record. Its id
		// cannot tell: it is a random ULID, and one in 256 carries the
		// tag of the ids that name their sequence number (receiptSeq),
		// so delete whatever record there is.
		return qb.dlv().Delete(dk)
	}
	if err := qb.release([]byte(e.MessageID)); err != nil {
		return err
	}
	return qb.dlv().Put(dk, encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: e.Seq, State: DeliveryExpired}}))
}

// nextPrefix is the smallest key after every key starting with p (nil when
// p is all 0xff).
func nextPrefix(p []byte) []byte {
	n := bytes.Clone(p)
	for i := len(n) - 1; i >= 0; i-- {
		if n[i]++; n[i] != 0 {
			return n
		}
	}
	return nil
}

// PurgeBefore deletes, at most max at a time, the messages created before
// cutoff with their delivery records and idempotency keys, oldest first. A
// message with a delivery still pending is left for expiry to settle.
func PurgeBefore(tx *Tx, meshID string, cutoff int64, max int) (n int, more bool, err error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return 0, false, ErrNotFound
	}
	msgs, dlv, idem, bodies := mb.Bucket(bMsgs), mb.Bucket(bDlv), mb.Bucket(bIdem), mb.Bucket(bBodies)
	type gone struct {
		id   []byte
		idem [][]byte
		dks  [][]byte
	}
	var purge []gone
	c := msgs.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var m Message
		if err := decodeMessage(v, string(k), &m); err != nil {
			return 0, false, err
		}
		if m.CreatedAt >= cutoff {
			break // messages are keyed by time-ordered ids
		}
		if len(purge) == max {
			more = true
			break
		}
		g := gone{id: bytes.Clone(k)}
		pending := false
		dc := dlv.Cursor()
		for dk, dv := dc.Seek(k); dk != nil && bytes.HasPrefix(dk, k); dk, dv = dc.Next() {
			if len(dk) != len(k)+32 {
				continue
			}
			var d deliveryRec
			if err := decodeDelivery(dv, &d); err != nil {
				return 0, false, err
			}
			if d.State == DeliveryPending {
				pending = true
				break
			}
			g.dks = append(g.dks, bytes.Clone(dk))
		}
		if pending {
			continue
		}
		if isHexKey(m.SenderPubkey) {
			g.idem = append(g.idem, idemKey(m.SenderPubkey, m.ClientMessageID), legacyIdemKey(m.SenderPubkey, m.ClientMessageID))
		}
		purge = append(purge, g)
	}
	for _, g := range purge {
		for _, k := range g.idem {
			// Only if it still names this message: a client may have
			// reused its id since.
			if v := idem.Get(k); v != nil && idemID(v) == string(g.id) {
				if err := idem.Delete(k); err != nil {
					return 0, false, err
				}
			}
		}
		for _, dk := range g.dks {
			if err := dlv.Delete(dk); err != nil {
				return 0, false, err
			}
		}
		bv := bodies.Get(g.id)
		if bv != nil {
			_, n := binary.Uvarint(bv)
			if err := deleteBody(bodies, mb.Bucket(bLargeBodies), g.id, n > 0 && len(bv) == n); err != nil {
				return 0, false, err
			}
		}
		if err := msgs.Delete(g.id); err != nil {
			return 0, false, err
		}
	}
	return len(purge), more, nil
}

// DropQueue expires everything queued for a recipient (a member who left or
// was removed), returning what was dropped.
func DropQueue(tx *Tx, meshID, recipient string) ([]Expired, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	qb := openQueue(mb)
	var out []Expired
	var keys [][]byte
	prefix := pk(recipient)
	c := qb.queue.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		var e QueueEntry
		if err := decodeQueueEntry(v, &e); err != nil {
			return nil, err
		}
		keys = append(keys, bytes.Clone(k))
		out = append(out, Expired{Recipient: recipient, MessageID: e.ID, Seq: be64(k[32:]), Receipt: e.Receipt, From: e.From, Charge: e.Charge})
	}
	for i, k := range keys {
		if err := qb.expire(k, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}
