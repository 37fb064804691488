package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/oklog/ulid/v2"

	"claudemesh/internal/binrec"
	"claudemesh/wire"
)

// The records of the message queue — Message, QueueEntry and the delivery
// records — are written in a compact binary layout rather than JSON. They
// are written and read on the group committer for every delivery (a
// broadcast to a thousand members writes a thousand queue entries and
// delivery records, rewrites the records on ack and queues a receipt for
// each), where JSON encoding and decoding was a tenth of the broker's CPU,
// the embedded push frame was re-validated on every write, and the larger
// values cost bbolt page writes. Mesh, member, session and invite records
// stay JSON: they are written rarely.
//
// A binary record starts with recBinary; a JSON record, as written before
// schema version 2, starts with '{' and is still read, so a data directory
// from an earlier broker keeps working without a rewrite.
//
// Layouts (str and bytes are a uvarint length and the bytes; key is a
// 32-byte raw public key, or a str when the value is not a 64-hex key):
//
//	Message:     recBinary, flags (1 receipts, 2 expired), varint createdAt,
//	             uvarint recipients, str id, clientMessageId, senderPubkey,
//	             senderMember, targetSpec, kind, priority, fingerprint,
//	             bytes push
//	QueueEntry:  recBinary, flags (1 receipt, 2 key, 4 quota, 8 ack, 16
//	             sender is from, 32 cmid is a ULID), varint createdAt, str
//	             id, priority, [str to, nonce, box], bytes frame, [32-byte
//	             from, uvarint charge], [[32-byte sender unless 16], cmid:
//	             16 bytes if 32, else str]
//	deliveryRec: recBinary, flags (1 receipt, 2 noReceipts, 4 sender is raw),
//	             state, uvarint seq, varint deliveredAt, sender (key), str cmid;
//	             from schema 8, one without sender or cmid: recBinary, flags
//	             (8 fixed, 2 noReceipts), state, uvarint seq, 8-byte
//	             deliveredAt
//
// What an ack needs of a message (its sender and client id) was in the
// pending delivery record until schema 8, and is in the queue entry since:
// the entry goes in the ack's commit, while the delivery record stays for
// the queue TTL + 24 h. A record that lost those ~60 bytes on its ack left
// its page, packed full when it was appended, a quarter empty for as long;
// the fixed form keeps its size from append to ack and expiry.
const recBinary = binrec.Format

const (
	msgReceipts = 1 << iota
	msgExpired
	msgHeader  // schema 6: a header without its push (in bodies), keys raw
	msgSelf    // the sending member is the sender (no second key stored)
	msgCompact // schema 8: the compact header (encodeHeader)
)

const (
	qeReceipt = 1 << iota
	qeKey
	qeQuota   // From (raw key) and Charge follow the frame
	qeAck     // schema 8: the message's sender (raw key) and client id follow
	qeAckFrom // with qeAck: the sender is From, not stored again
	qeAckULID // with qeAck: the client id is a ULID, stored as its 16 bytes
)

const (
	dlvReceipt = 1 << iota
	dlvNoReceipts
	dlvRawSender
	dlvFixed // schema 8: no sender or cmid, deliveredAt in 8 bytes
)

// stateByte and stateName map delivery states to their one-byte form.
func stateByte(s string) (byte, error) {
	switch s {
	case DeliveryPending:
		return 0, nil
	case DeliveryDelivered:
		return 1, nil
	case DeliveryExpired:
		return 2, nil
	}
	return 0, fmt.Errorf("store: unknown delivery state %q", s)
}

func stateName(b byte) (string, error) {
	switch b {
	case 0:
		return DeliveryPending, nil
	case 1:
		return DeliveryDelivered, nil
	case 2:
		return DeliveryExpired, nil
	}
	return "", fmt.Errorf("unknown delivery state %d", b)
}

func encodeMessage(m *Message) []byte {
	var flags byte
	if m.Receipts {
		flags |= msgReceipts
	}
	if m.Expired {
		flags |= msgExpired
	}
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64+len(m.Push)+
		binrec.SizeOf(m.ID, m.ClientMessageID, m.SenderPubkey, m.SenderMember, m.TargetSpec, m.Kind, m.Priority, m.Fingerprint))
	b = append(b, recBinary, flags)
	b = binary.AppendVarint(b, m.CreatedAt)
	b = binary.AppendUvarint(b, uint64(m.Recipients))
	for _, s := range [...]string{m.ID, m.ClientMessageID, m.SenderPubkey, m.SenderMember, m.TargetSpec, m.Kind, m.Priority, m.Fingerprint} {
		b = binrec.AppendStr(b, s)
	}
	return binrec.AppendBytes(b, m.Push)
}

// encodeHeader is a message's record from schema 6 on: what it keeps after
// delivery, for message_status and idempotency, without the push (which
// lives in bodies until the last recipient settles it) and without the id
// (the record's key). Keys and the fingerprint are stored raw:
//
//	recBinary, flags (1 receipts, 4 header, 8 self), varint createdAt,
//	uvarint recipients, str clientMessageId, key sender, [key
//	senderMember unless self], key targetSpec, str kind, str priority,
//	key fingerprint
//
// From schema 8, a message whose id and clientMessageId are canonical
// ULIDs (as the broker and every client of this project mint them), whose
// keys and fingerprint are 64-hex and whose kind and priority are known
// gets the compact form (flag 16), 28 bytes shorter for a DM (145 → 117):
// the time is the difference from its id's, which is 0 or a millisecond,
// the client's id is its 16 bytes, the keys go without their marker bytes
// and kind and priority share a byte:
//
//	recBinary, flags (1 receipts, 4 header, 8 self, 16 compact), varint
//	createdAt − the id's time, uvarint recipients, 16 bytes
//	clientMessageId, 32 sender, [32 senderMember unless self], 32
//	targetSpec, byte kind×16+priority, 32 fingerprint
//
// The record is kept for the queue TTL + 24 h after delivery: with its key
// and bbolt's 16 bytes it was 187 of the ~430 bytes a delivered DM keeps
// in the file (BENCHMARKS.md, the tail as the store fills).
func encodeHeader(m *Message) []byte {
	flags := byte(msgHeader)
	if m.Receipts {
		flags |= msgReceipts
	}
	if m.SenderMember == m.SenderPubkey {
		flags |= msgSelf
	}
	if b := encodeCompactHeader(m, flags); b != nil {
		return b
	}
	return encodeHeader6(m, flags)
}

// encodeHeader6 is the header as schema 6 and 7 wrote every message's.
func encodeHeader6(m *Message, flags byte) []byte {
	b := make([]byte, 0, 2+2*binary.MaxVarintLen64+4*33+binrec.SizeOf(m.ClientMessageID, m.Kind, m.Priority))
	b = append(b, recBinary, flags)
	b = binary.AppendVarint(b, m.CreatedAt)
	b = binary.AppendUvarint(b, uint64(m.Recipients))
	b = binrec.AppendStr(b, m.ClientMessageID)
	b = appendKey(b, m.SenderPubkey)
	if flags&msgSelf == 0 {
		b = appendKey(b, m.SenderMember)
	}
	b = appendKey(b, m.TargetSpec)
	b = binrec.AppendStr(b, m.Kind)
	b = binrec.AppendStr(b, m.Priority)
	return appendKey(b, m.Fingerprint)
}

// headerKinds and headerPriorities are the compact header's codes (an
// index; append only: the codes are on disk).
var (
	headerKinds      = [...]string{wire.KindBox, wire.KindMulti, wire.KindTopic}
	headerPriorities = [...]string{wire.PriorityNext, wire.PriorityNow, wire.PriorityLow}
)

func codeOf(list []string, s string) (byte, bool) {
	for i, v := range list {
		if v == s {
			return byte(i), true
		}
	}
	return 0, false
}

// encodeCompactHeader is m's compact header, or nil when m does not have
// one (encodeHeader).
func encodeCompactHeader(m *Message, flags byte) []byte {
	id, ok := canonicalULID(m.ID)
	if !ok {
		return nil
	}
	cmid, ok := canonicalULID(m.ClientMessageID)
	if !ok {
		return nil
	}
	kind, ok := codeOf(headerKinds[:], m.Kind)
	if !ok {
		return nil
	}
	prio, ok := codeOf(headerPriorities[:], m.Priority)
	if !ok {
		return nil
	}
	keys := [...]string{m.SenderPubkey, m.SenderMember, m.TargetSpec, m.Fingerprint}
	for _, k := range keys {
		if !isHexKey(k) {
			return nil
		}
	}
	flags |= msgCompact
	b := make([]byte, 0, 2+2*binary.MaxVarintLen64+16+4*32+1)
	b = append(b, recBinary, flags)
	b = binary.AppendVarint(b, m.CreatedAt-int64(id.Time()))
	b = binary.AppendUvarint(b, uint64(m.Recipients))
	b = append(b, cmid[:]...)
	b = appendRawKey(b, m.SenderPubkey)
	if flags&msgSelf == 0 {
		b = appendRawKey(b, m.SenderMember)
	}
	b = appendRawKey(b, m.TargetSpec)
	b = append(b, kind<<4|prio)
	return appendRawKey(b, m.Fingerprint)
}

// canonicalULID parses s if it is a ULID in its canonical text, so that
// the text comes back exactly from the 16 bytes: ParseStrict also takes
// lower-case letters, which the text of the 16 bytes does not have.
func canonicalULID(s string) (ulid.ULID, bool) {
	if len(s) != ulid.EncodedSize {
		return ulid.ULID{}, false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'a' && c <= 'z' {
			return ulid.ULID{}, false
		}
	}
	u, err := ulid.ParseStrict(s)
	if err != nil {
		return ulid.ULID{}, false
	}
	return u, true
}

// appendRawKey appends the 32 bytes of a 64-hex key (isHexKey).
func appendRawKey(b []byte, s string) []byte {
	var raw [32]byte
	hex.Decode(raw[:], []byte(s))
	return append(b, raw[:]...)
}

// appendKey stores a 64-hex string as a marker byte (32) and its 32 raw
// bytes, anything else as a marker byte 0 and a length-prefixed string.
func appendKey(b []byte, s string) []byte {
	if isHexKey(s) {
		b = append(b, 32)
		var raw [32]byte
		hex.Decode(raw[:], []byte(s))
		return append(b, raw[:]...)
	}
	b = append(b, 0)
	return binrec.AppendStr(b, s)
}

func readKey(r *binrec.Reader) string {
	if r.Byte() == 32 {
		return hex.EncodeToString(r.Take(32))
	}
	return r.Str()
}

func isHexKey(s string) bool { return len(s) == 64 && isLowerHex(s) }

// encodeBody is a message's push while recipients still hold it: the number
// of recipients yet to settle it, then the frame.
func encodeBody(left int, push []byte) []byte {
	b := make([]byte, 0, binary.MaxVarintLen64+len(push))
	b = binary.AppendUvarint(b, uint64(left))
	return append(b, push...)
}

// decodeBody returns the count and a copy of the frame (the record is
// bbolt's, valid only in its transaction).
func decodeBody(v []byte) (int, []byte, error) {
	left, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, nil, fmt.Errorf("store: corrupt message body")
	}
	return int(left), bytes.Clone(v[n:]), nil
}

// decodeMessage reads a message record; id is its key (a compact header's
// time is relative to it).
func decodeMessage(v []byte, id string, m *Message) error {
	if binrec.IsJSON(v) {
		return dec(v, m)
	}
	if len(v) > 1 && v[1]&msgHeader != 0 {
		return decodeHeader(v, id, m)
	}
	r := binrec.NewReader(v)
	flags := r.Header()
	m.CreatedAt = r.Varint()
	m.Recipients = int(r.Uvarint())
	for _, p := range [...]*string{&m.ID, &m.ClientMessageID, &m.SenderPubkey, &m.SenderMember, &m.TargetSpec, &m.Kind, &m.Priority, &m.Fingerprint} {
		*p = r.Str()
	}
	m.Push = r.Bytes()
	m.Receipts, m.Expired = flags&msgReceipts != 0, flags&msgExpired != 0
	return recordErr(r.Done("message"))
}

func decodeHeader(v []byte, id string, m *Message) error {
	r := binrec.NewReader(v)
	flags := r.Header()
	if flags&msgCompact != 0 {
		return decodeCompactHeader(r, flags, id, m)
	}
	*m = Message{CreatedAt: r.Varint(), Recipients: int(r.Uvarint()), ClientMessageID: r.Str()}
	m.SenderPubkey = readKey(r)
	m.SenderMember = m.SenderPubkey
	if flags&msgSelf == 0 {
		m.SenderMember = readKey(r)
	}
	m.TargetSpec = readKey(r)
	m.Kind = r.Str()
	m.Priority = r.Str()
	m.Fingerprint = readKey(r)
	m.Receipts = flags&msgReceipts != 0
	return recordErr(r.Done("message"))
}

func decodeCompactHeader(r *binrec.Reader, flags byte, id string, m *Message) error {
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return recordErr(fmt.Errorf("compact message record under id %q: %w", id, err))
	}
	*m = Message{CreatedAt: r.Varint() + int64(u.Time()), Recipients: int(r.Uvarint())}
	var cmid ulid.ULID
	copy(cmid[:], r.Take(16))
	m.ClientMessageID = cmid.String()
	m.SenderPubkey = hex.EncodeToString(r.Take(32))
	m.SenderMember = m.SenderPubkey
	if flags&msgSelf == 0 {
		m.SenderMember = hex.EncodeToString(r.Take(32))
	}
	m.TargetSpec = hex.EncodeToString(r.Take(32))
	code := r.Byte()
	if int(code>>4) >= len(headerKinds) || int(code&15) >= len(headerPriorities) {
		r.Fail(fmt.Errorf("unknown kind and priority code %#x", code))
	} else {
		m.Kind, m.Priority = headerKinds[code>>4], headerPriorities[code&15]
	}
	m.Fingerprint = hex.EncodeToString(r.Take(32))
	m.Receipts = flags&msgReceipts != 0
	return recordErr(r.Done("message"))
}

func encodeQueueEntry(e *QueueEntry) []byte { return encodeQueueEntryFor(e, "", "") }

// encodeQueueEntryFor is a message's queue entry carrying what an ack needs
// of the message, its sender (a 64-hex key; none if empty) and client id.
func encodeQueueEntryFor(e *QueueEntry, sender, cmid string) []byte {
	var flags byte
	if e.Receipt {
		flags |= qeReceipt
	}
	n := 2 + binary.MaxVarintLen64 + binrec.SizeOf(e.ID, e.Priority) + len(e.Frame) + binary.MaxVarintLen64
	if e.Key != nil {
		flags |= qeKey
		n += binrec.SizeOf(e.Key.To, e.Key.Nonce, e.Key.Box)
	}
	var from [32]byte
	quota := isHexKey(e.From)
	if quota {
		hex.Decode(from[:], []byte(e.From))
		flags |= qeQuota
		n += 32 + binary.MaxVarintLen64
	}
	ack := sender != ""
	var cmidULID ulid.ULID
	if ack {
		flags |= qeAck
		n += 32 + binrec.SizeOf(cmid)
		if quota && sender == e.From {
			flags |= qeAckFrom
		}
		if u, ok := canonicalULID(cmid); ok {
			flags |= qeAckULID
			cmidULID = u
		}
	}
	b := make([]byte, 0, n)
	b = append(b, recBinary, flags)
	b = binary.AppendVarint(b, e.CreatedAt)
	b = binrec.AppendStr(b, e.ID)
	b = binrec.AppendStr(b, e.Priority)
	if e.Key != nil {
		b = binrec.AppendStr(b, e.Key.To)
		b = binrec.AppendStr(b, e.Key.Nonce)
		b = binrec.AppendStr(b, e.Key.Box)
	}
	b = binrec.AppendBytes(b, e.Frame)
	if quota {
		b = append(b, from[:]...)
		b = binary.AppendUvarint(b, uint64(e.Charge))
	}
	if ack {
		if flags&qeAckFrom == 0 {
			b = appendRawKey(b, sender)
		}
		if flags&qeAckULID != 0 {
			b = append(b, cmidULID[:]...)
		} else {
			b = binrec.AppendStr(b, cmid)
		}
	}
	return b
}

func decodeQueueEntry(v []byte, e *QueueEntry) error {
	if binrec.IsJSON(v) {
		return dec(v, e)
	}
	r := binrec.NewReader(v)
	flags := r.Header()
	e.CreatedAt = r.Varint()
	e.ID = r.Str()
	e.Priority = r.Str()
	e.Key = nil
	if flags&qeKey != 0 {
		e.Key = &wire.MultiKey{To: r.Str(), Nonce: r.Str(), Box: r.Str()}
	}
	e.Frame = r.Bytes()
	e.From, e.Charge = "", 0
	if flags&qeQuota != 0 {
		e.From = hex.EncodeToString(r.Take(32))
		e.Charge = int64(r.Uvarint())
	}
	if flags&qeAck != 0 {
		skipAck(r, flags) // the sender and client id are for the ack (entryAck)
	}
	e.Receipt = flags&qeReceipt != 0
	return recordErr(r.Done("queue entry"))
}

// entryAck reads what an ack needs of an encoded queue entry: From and
// Charge (what it gives back) and, from schema 8, the message's sender and
// client id, skipping the rest without copying it: the ack path runs on
// the committer.
func entryAck(v []byte) (a entryAckInfo) {
	if binrec.IsJSON(v) {
		var e QueueEntry
		if dec(v, &e) != nil {
			return entryAckInfo{}
		}
		return entryAckInfo{from: e.From, charge: e.Charge}
	}
	r := binrec.NewReader(v)
	flags := r.Header()
	if flags&(qeQuota|qeAck) == 0 {
		return entryAckInfo{}
	}
	r.Varint()
	skip := 3 // id, priority, frame
	if flags&qeKey != 0 {
		skip += 3 // to, nonce, box
	}
	for range skip {
		r.Take(int(r.Uvarint()))
	}
	if flags&qeQuota != 0 {
		a.from = hex.EncodeToString(r.Take(32))
		a.charge = int64(r.Uvarint())
	}
	if flags&qeAck != 0 {
		a.sender, a.cmid = readAck(r, flags, a.from)
	}
	if r.Done("queue entry") != nil {
		return entryAckInfo{}
	}
	return a
}

// readAck reads a queue entry's sender and client id (flags has qeAck).
func readAck(r *binrec.Reader, flags byte, from string) (sender, cmid string) {
	sender = from
	if flags&qeAckFrom == 0 {
		sender = hex.EncodeToString(r.Take(32))
	}
	if flags&qeAckULID == 0 {
		return sender, r.Str()
	}
	if raw := r.Take(16); raw != nil {
		cmid = ulid.ULID(raw).String()
	}
	return sender, cmid
}

// skipAck skips what readAck reads.
func skipAck(r *binrec.Reader, flags byte) {
	if flags&qeAckFrom == 0 {
		r.Take(32)
	}
	if flags&qeAckULID == 0 {
		r.Take(int(r.Uvarint()))
	} else {
		r.Take(16)
	}
}

// entryAckInfo is what entryAck reads.
type entryAckInfo struct {
	from, sender, cmid string
	charge             int64
}

func encodeDelivery(d *deliveryRec) []byte {
	state, err := stateByte(d.State)
	if err != nil {
		// States are this package's constants; anything else is a bug
		// that must not be written as some other state.
		panic(err.Error())
	}
	var flags byte
	if d.Receipt {
		flags |= dlvReceipt
	}
	if d.NoReceipts {
		flags |= dlvNoReceipts
	}
	if d.Sender == "" && d.CMID == "" && !d.Receipt {
		b := make([]byte, 0, 3+binary.MaxVarintLen64+8)
		b = append(b, recBinary, flags|dlvFixed, state)
		b = binary.AppendUvarint(b, d.Seq)
		return binary.BigEndian.AppendUint64(b, uint64(d.DeliveredAt))
	}
	var raw [32]byte
	rawSender := len(d.Sender) == 64 && isLowerHex(d.Sender)
	if rawSender {
		hex.Decode(raw[:], []byte(d.Sender))
		flags |= dlvRawSender
	}
	b := make([]byte, 0, 3+2*binary.MaxVarintLen64+binrec.SizeOf(d.Sender, d.CMID))
	b = append(b, recBinary, flags, state)
	b = binary.AppendUvarint(b, d.Seq)
	b = binary.AppendVarint(b, d.DeliveredAt)
	if rawSender {
		b = append(b, raw[:]...)
	} else {
		b = binrec.AppendStr(b, d.Sender)
	}
	return binrec.AppendStr(b, d.CMID)
}

func decodeDelivery(v []byte, d *deliveryRec) error {
	if binrec.IsJSON(v) {
		*d = deliveryRec{}
		return dec(v, d)
	}
	r := binrec.NewReader(v)
	flags := r.Header()
	state := r.Byte()
	d.Seq = r.Uvarint()
	switch {
	case flags&dlvFixed != 0:
		d.DeliveredAt, d.Sender, d.CMID = 0, "", ""
		if at := r.Take(8); at != nil {
			d.DeliveredAt = int64(binary.BigEndian.Uint64(at))
		}
	case flags&dlvRawSender != 0:
		d.DeliveredAt = r.Varint()
		d.Sender = hex.EncodeToString(r.Take(32))
		d.CMID = r.Str()
	default:
		d.DeliveredAt = r.Varint()
		d.Sender = r.Str()
		d.CMID = r.Str()
	}
	d.Receipt, d.NoReceipts = flags&dlvReceipt != 0, flags&dlvNoReceipts != 0
	st, err := stateName(state)
	if err != nil {
		r.Fail(err)
	}
	d.State = st
	return recordErr(r.Done("delivery"))
}

// recordErr marks a decoding error as the store's.
func recordErr(err error) error {
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
