package store

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

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
//	QueueEntry:  recBinary, flags (1 receipt, 2 key), varint createdAt,
//	             str id, priority, [str to, nonce, box], bytes frame
//	deliveryRec: recBinary, flags (1 receipt, 2 noReceipts, 4 sender is raw),
//	             state, uvarint seq, varint deliveredAt, sender (key), str cmid
const recBinary byte = 0x01

// errShortRecord means a binary record ended before its last field.
var errShortRecord = errors.New("truncated record")

const (
	msgReceipts = 1 << iota
	msgExpired
)

const (
	qeReceipt = 1 << iota
	qeKey
)

const (
	dlvReceipt = 1 << iota
	dlvNoReceipts
	dlvRawSender
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

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func strsLen(ss ...string) int {
	n := 0
	for _, s := range ss {
		n += len(s) + binary.MaxVarintLen64
	}
	return n
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
		strsLen(m.ID, m.ClientMessageID, m.SenderPubkey, m.SenderMember, m.TargetSpec, m.Kind, m.Priority, m.Fingerprint))
	b = append(b, recBinary, flags)
	b = binary.AppendVarint(b, m.CreatedAt)
	b = binary.AppendUvarint(b, uint64(m.Recipients))
	for _, s := range [...]string{m.ID, m.ClientMessageID, m.SenderPubkey, m.SenderMember, m.TargetSpec, m.Kind, m.Priority, m.Fingerprint} {
		b = appendStr(b, s)
	}
	return appendBytes(b, m.Push)
}

func decodeMessage(v []byte, m *Message) error {
	if isJSONRecord(v) {
		return dec(v, m)
	}
	r := recordReader{b: v}
	flags := r.header()
	m.CreatedAt = r.varint()
	m.Recipients = int(r.uvarint())
	for _, p := range [...]*string{&m.ID, &m.ClientMessageID, &m.SenderPubkey, &m.SenderMember, &m.TargetSpec, &m.Kind, &m.Priority, &m.Fingerprint} {
		*p = r.str()
	}
	m.Push = r.bytes()
	m.Receipts, m.Expired = flags&msgReceipts != 0, flags&msgExpired != 0
	return r.done(m)
}

func encodeQueueEntry(e *QueueEntry) []byte {
	var flags byte
	if e.Receipt {
		flags |= qeReceipt
	}
	n := 2 + binary.MaxVarintLen64 + strsLen(e.ID, e.Priority) + len(e.Frame) + binary.MaxVarintLen64
	if e.Key != nil {
		flags |= qeKey
		n += strsLen(e.Key.To, e.Key.Nonce, e.Key.Box)
	}
	b := make([]byte, 0, n)
	b = append(b, recBinary, flags)
	b = binary.AppendVarint(b, e.CreatedAt)
	b = appendStr(b, e.ID)
	b = appendStr(b, e.Priority)
	if e.Key != nil {
		b = appendStr(b, e.Key.To)
		b = appendStr(b, e.Key.Nonce)
		b = appendStr(b, e.Key.Box)
	}
	return appendBytes(b, e.Frame)
}

func decodeQueueEntry(v []byte, e *QueueEntry) error {
	if isJSONRecord(v) {
		return dec(v, e)
	}
	r := recordReader{b: v}
	flags := r.header()
	e.CreatedAt = r.varint()
	e.ID = r.str()
	e.Priority = r.str()
	e.Key = nil
	if flags&qeKey != 0 {
		e.Key = &wire.MultiKey{To: r.str(), Nonce: r.str(), Box: r.str()}
	}
	e.Frame = nil
	if f := r.bytes(); len(f) > 0 {
		e.Frame = f
	}
	e.Receipt = flags&qeReceipt != 0
	return r.done(e)
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
	var raw [32]byte
	rawSender := len(d.Sender) == 64 && isLowerHex(d.Sender)
	if rawSender {
		hex.Decode(raw[:], []byte(d.Sender))
		flags |= dlvRawSender
	}
	b := make([]byte, 0, 3+2*binary.MaxVarintLen64+strsLen(d.Sender, d.CMID))
	b = append(b, recBinary, flags, state)
	b = binary.AppendUvarint(b, d.Seq)
	b = binary.AppendVarint(b, d.DeliveredAt)
	if rawSender {
		b = append(b, raw[:]...)
	} else {
		b = appendStr(b, d.Sender)
	}
	return appendStr(b, d.CMID)
}

func decodeDelivery(v []byte, d *deliveryRec) error {
	if isJSONRecord(v) {
		*d = deliveryRec{}
		return dec(v, d)
	}
	r := recordReader{b: v}
	flags := r.header()
	state := r.byte()
	d.Seq = r.uvarint()
	d.DeliveredAt = r.varint()
	if flags&dlvRawSender != 0 {
		d.Sender = hex.EncodeToString(r.take(32))
	} else {
		d.Sender = r.str()
	}
	d.CMID = r.str()
	d.Receipt, d.NoReceipts = flags&dlvReceipt != 0, flags&dlvNoReceipts != 0
	if r.err == nil {
		d.State, r.err = stateName(state)
	}
	return r.done(d)
}

// isJSONRecord tells a record written as JSON (before schema version 2)
// from a binary one.
func isJSONRecord(v []byte) bool { return len(v) > 0 && v[0] == '{' }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// recordReader reads a binary record field by field; the first error
// sticks and later reads return zero values, so a decoder checks once, at
// the end.
type recordReader struct {
	b   []byte
	err error
}

// header checks the format byte and returns the flags byte after it.
func (r *recordReader) header() byte {
	if f := r.byte(); r.err == nil && f != recBinary {
		r.err = fmt.Errorf("unknown record format %#x", f)
	}
	return r.byte()
}

func (r *recordReader) byte() byte {
	p := r.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

// take returns the next n bytes, aliasing the record (which bbolt owns):
// callers copy what outlives the transaction.
func (r *recordReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShortRecord
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *recordReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShortRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShortRecord
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *recordReader) str() string {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errShortRecord
		return ""
	}
	return string(r.take(int(n)))
}

// bytes returns a copy of a length-prefixed field: the record belongs to
// bbolt and is only valid inside its transaction.
func (r *recordReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errShortRecord
		return nil
	}
	p := r.take(int(n))
	if p == nil {
		return nil
	}
	return append([]byte(nil), p...)
}

// done reports the first error, or trailing bytes, as a corrupt record.
func (r *recordReader) done(v any) error {
	if r.err == nil && len(r.b) > 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("store: corrupt record %T: %w", v, r.err)
	}
	return nil
}
