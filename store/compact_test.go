package store

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// ulidAt is a canonical ULID of time ms (n tells ids of one time apart).
func ulidAt(ms uint64, n byte) string {
	var entropy [10]byte
	entropy[9] = n
	return ulid.MustNew(ms, bytes.NewReader(entropy[:])).String()
}

// dm is a message as the broker stores a DM of one of this project's
// clients: ULID ids, 64-hex keys and fingerprint.
func dm(ms uint64, n byte, from, to string) *Message {
	mid := ulidAt(ms, n)
	push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, Kind: wire.KindBox, SenderPubkey: from,
		Ciphertext: "Y3Q=", CreatedAt: int64(ms)})
	return &Message{ID: mid, ClientMessageID: ulidAt(ms-3, n+100), SenderPubkey: from, SenderMember: from, TargetSpec: to,
		Kind: wire.KindBox, Priority: wire.PriorityNext, Fingerprint: key(0xF1F0 + int(n)), Push: push, Receipts: true,
		CreatedAt: int64(ms), Recipients: 1}
}

// header is what a header record keeps of m (no push; the id is its key).
func header(m *Message) Message {
	h := *m
	h.ID, h.Push = "", nil
	return h
}

// TestCompactHeader: the header a delivered message keeps for the queue TTL
// + 24 h is 117 bytes for a DM of this project's clients (145 in schema
// 6 and 7), and reads back exactly; a message the compact form cannot hold
// keeps the schema-6 form.
func TestCompactHeader(t *testing.T) {
	const ms = 1764100000123
	plain := dm(ms, 1, sender, r1)
	if v := encodeHeader(plain); len(v) != 117 || v[1]&msgCompact == 0 {
		t.Errorf("a DM's header is %d bytes (flags %#x), want 117, compact", len(v), v[1])
	}

	other := dm(ms, 2, sender, r1)
	other.SenderMember, other.Kind, other.Priority, other.Recipients = r2, wire.KindMulti, wire.PriorityNow, 1000
	other.CreatedAt, other.Receipts = ms-5, false // a time before its id's
	topic := dm(ms, 3, sender, r1)
	topic.Kind, topic.Priority, topic.CreatedAt = wire.KindTopic, wire.PriorityLow, ms+1<<40
	for _, m := range []*Message{plain, other, topic} {
		v := encodeHeader(m)
		if v[1]&msgCompact == 0 {
			t.Errorf("%+v: not compact", *m)
		}
		var got Message
		if err := decodeMessage(v, m.ID, &got); err != nil {
			t.Fatalf("%+v: %v", *m, err)
		}
		if want := header(m); !reflect.DeepEqual(got, want) {
			t.Errorf("compact header round trip:\n got %+v\nwant %+v", got, want)
		}
	}

	legacy := func(change func(m *Message)) *Message {
		m := dm(ms, 4, sender, r1)
		change(m)
		return m
	}
	for _, m := range []*Message{
		legacy(func(m *Message) { m.ID = id("M", 1) }),
		legacy(func(m *Message) { m.ID = strings.ToLower(m.ID) }),
		legacy(func(m *Message) { m.ClientMessageID = "c-1" }),
		legacy(func(m *Message) { m.ClientMessageID = strings.ToLower(m.ClientMessageID) }),
		legacy(func(m *Message) { m.ClientMessageID = m.ClientMessageID[:25] + "O" }), // not Crockford's
		legacy(func(m *Message) { m.ClientMessageID = "8" + m.ClientMessageID[1:] }),  // past 48 bits of time
		legacy(func(m *Message) { m.TargetSpec = "@team" }),
		legacy(func(m *Message) { m.SenderMember = strings.ToUpper(key(0xABC)) }),
		legacy(func(m *Message) { m.Fingerprint = "fp" }),
		legacy(func(m *Message) { m.Kind = "other" }),
		legacy(func(m *Message) { m.Priority = "" }),
	} {
		v := encodeHeader(m)
		if v[1]&msgCompact != 0 {
			t.Errorf("%+v: compact", *m)
		}
		var got Message
		if err := decodeMessage(v, m.ID, &got); err != nil {
			t.Fatalf("%+v: %v", *m, err)
		}
		if want := header(m); !reflect.DeepEqual(got, want) {
			t.Errorf("schema-6 header round trip:\n got %+v\nwant %+v", got, want)
		}
	}

	// A compact record is read under its own key only, and checked.
	good := encodeHeader(plain)
	badCode := bytes.Clone(good)
	badCode[len(badCode)-33] = 0x30 // kind 3: none
	for name, c := range map[string]struct {
		v  []byte
		id string
	}{
		"under a key that is not a ULID": {good, id("M", 1)},
		"truncated":                      {good[:len(good)-1], plain.ID},
		"trailing bytes":                 {append(bytes.Clone(good), 0), plain.ID},
		"unknown kind":                   {badCode, plain.ID},
	} {
		var got Message
		if err := decodeMessage(c.v, c.id, &got); err == nil {
			t.Errorf("%s: decoded %+v", name, got)
		}
	}
}

// TestIdemValue: an idempotency record names a ULID message in 17 bytes
// (26 in schema 6 and 7), any other id as its text; both read back.
func TestIdemValue(t *testing.T) {
	u := ulidAt(1764100000123, 1)
	for _, c := range []struct {
		id   string
		size int
	}{{u, 17}, {strings.ToLower(u), 26}, {id("M", 1), 26}, {"m1", 2}} {
		v := encodeIdemValue(c.id)
		if len(v) != c.size || idemID(v) != c.id {
			t.Errorf("idempotency value of %q = %x (%d bytes, reads %q), want %d bytes", c.id, v, len(v), idemID(v), c.size)
		}
	}
}

// TestCompactAndSchema7Records: a file holds messages of both forms after
// the upgrade to schema 8, delivered or pending; lookup, ack (with its
// receipt), status and purge treat them alike.
func TestCompactAndSchema7Records(t *testing.T) {
	s := newMeshStore(t)
	const ms = 1764100000000
	old, cur := dm(ms, 1, sender, r1), dm(ms+10, 2, sender, r1)
	// old as schema 7 wrote it: the schema-6 header, the id as text, the
	// sender and client id in the pending delivery record, not in the
	// queue entry.
	seq := appendMsg(t, s, old, r1)[0]
	mustUpdate(t, s, func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		flags := byte(msgHeader | msgReceipts | msgSelf)
		if err := mb.Bucket(bMsgs).Put([]byte(old.ID), encodeHeader6(old, flags)); err != nil {
			return err
		}
		pending := encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: seq, State: DeliveryPending}, Sender: old.SenderPubkey, CMID: old.ClientMessageID})
		if err := mb.Bucket(bDlv).Put(dkey(old.ID, r1), pending); err != nil {
			return err
		}
		entry := encodeQueueEntry(&QueueEntry{ID: old.ID, Priority: old.Priority, CreatedAt: old.CreatedAt})
		if err := mb.Bucket(bQueue).Put(qkey(r1, seq), entry); err != nil {
			return err
		}
		return mb.Bucket(bIdem).Put(idemKey(old.SenderPubkey, old.ClientMessageID), []byte(old.ID))
	})
	appendMsg(t, s, cur, r1)
	mustView(t, s, func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		for _, c := range []struct {
			m       *Message
			compact bool
			idem    int
		}{{old, false, 26}, {cur, true, 17}} {
			if v := mb.Bucket(bMsgs).Get([]byte(c.m.ID)); v[1]&msgCompact != 0 != c.compact {
				t.Errorf("%s: header flags %#x, compact want %v", c.m.ID, v[1], c.compact)
			}
			if v := mb.Bucket(bIdem).Get(idemKey(c.m.SenderPubkey, c.m.ClientMessageID)); len(v) != c.idem {
				t.Errorf("%s: idempotency value of %d bytes, want %d", c.m.ID, len(v), c.idem)
			}
			got, err := LookupIdempotent(tx, meshID, c.m.SenderPubkey, c.m.ClientMessageID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.m) {
				t.Errorf("LookupIdempotent:\n got %+v\nwant %+v", *got, *c.m)
			}
		}
		return nil
	})
	for _, m := range []*Message{old, cur} {
		out := ack(t, s, r1, int64(ms+100), m.ID)
		if len(out) != 1 || out[0].NewReceipt == nil || out[0].NewReceipt.ClientMessageID != m.ClientMessageID || out[0].ReceiptFor != sender {
			t.Fatalf("ack of %s = %+v", m.ID, out)
		}
		ack(t, s, sender, int64(ms+200), out[0].NewReceipt.ReceiptID)
		got, err := getMsg(t, s, m.ID)
		want := header(m)
		want.ID = m.ID
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("GetMessage after delivery = %+v, %v\nwant %+v", got, err, want)
		}
		if d := deliveries(t, s, m.ID); len(d) != 1 || d[0].State != DeliveryDelivered || d[0].DeliveredAt != ms+100 {
			t.Errorf("deliveries of %s = %+v", m.ID, d)
		}
	}
	if n, more := purge(t, s, ms+11, 100); n != 2 || more {
		t.Fatalf("PurgeBefore = %d, %v; want both", n, more)
	}
	mustView(t, s, func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		for _, name := range [][]byte{bMsgs, bIdem, bDlv} {
			if k, _ := mb.Bucket(name).Cursor().First(); k != nil {
				t.Errorf("%s keeps %q after the purge", name, k)
			}
		}
		for _, m := range []*Message{old, cur} {
			if _, err := LookupIdempotent(tx, meshID, m.SenderPubkey, m.ClientMessageID); !errors.Is(err, ErrNotFound) {
				t.Errorf("idempotency of purged %s: %v", m.ID, err)
			}
		}
		return nil
	})
}
