package store

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"claudemesh/wire"
)

// TestRecordsRoundTrip: every field of the binary queue records survives a
// write and a read, including the empty and absent ones.
func TestRecordsRoundTrip(t *testing.T) {
	m := msg(id("M", 1), sender, 1764100000123, true)
	m.Recipients, m.Expired = 1000, true
	empty := &Message{}
	for _, want := range []*Message{m, empty} {
		var got Message
		if err := decodeMessage(encodeMessage(want), want.ID, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("message round trip:\n got %+v\nwant %+v", got, *want)
		}
	}

	receipt := wire.MustEncode(&wire.Receipt{Type: wire.TypeReceipt, ReceiptID: id("R", 1), MessageID: id("M", 1)})
	for _, want := range []*QueueEntry{
		{ID: id("M", 1), Priority: wire.PriorityNow, CreatedAt: 42},
		{ID: id("M", 2), Key: &wire.MultiKey{To: r1, Nonce: "bm9uY2U=", Box: "Ym94"}, CreatedAt: -1},
		{ID: id("R", 1), Receipt: true, Frame: receipt, CreatedAt: 7},
		{ID: id("M", 3), Priority: wire.PriorityLow, CreatedAt: 9, From: sender, Charge: 89000},
		{ID: id("M", 4), Key: &wire.MultiKey{To: r1, Nonce: "bm9uY2U=", Box: "Ym94"}, CreatedAt: 9, From: sender, Charge: 1 << 40},
		{},
	} {
		// Without and with what an ack needs of the message (schema 8).
		// The sender may be From (stored once) and the client id a ULID
		// (stored as 16 bytes).
		for _, ack := range []entryAckInfo{{}, {sender: key(0xBEEF), cmid: "01KAY8VJBR0000000000000038"}, {sender: sender},
			{sender: sender, cmid: "c-1"}, {sender: sender, cmid: "01KAY8VJBR0000000000000038"}, {sender: sender, cmid: "01kay8vjbr0000000000000038"}} {
			var got QueueEntry
			v := encodeQueueEntryFor(want, ack.sender, ack.cmid)
			if err := decodeQueueEntry(v, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(&got, want) {
				t.Errorf("queue entry round trip:\n got %+v\nwant %+v", got, *want)
			}
			ack.from, ack.charge = want.From, want.Charge
			if a := entryAck(v); a != ack {
				t.Errorf("entryAck of %+v = %+v, want %+v", *want, a, ack)
			}
		}
	}

	for _, want := range []*deliveryRec{
		{Delivery: Delivery{Seq: 1 << 40, State: DeliveryPending}, Sender: sender, CMID: "p12.345"},
		{Delivery: Delivery{Seq: 3, State: DeliveryDelivered, DeliveredAt: 1764100000999}, Sender: sender, NoReceipts: true},
		{Delivery: Delivery{Seq: 9, State: DeliveryExpired}},
		{Delivery: Delivery{Seq: 2, State: DeliveryPending}, Receipt: true},
		// Not a 64-hex key: kept as text rather than mangled.
		{Delivery: Delivery{Seq: 5, State: DeliveryPending}, Sender: strings.ToUpper(sender), CMID: "x"},
	} {
		var got deliveryRec
		if err := decodeDelivery(encodeDelivery(want), &got); err != nil {
			t.Fatal(err)
		}
		if got != *want {
			t.Errorf("delivery record round trip:\n got %+v\nwant %+v", got, *want)
		}
	}
}

// TestRecordsCorrupt: a damaged binary record is an error, never a panic
// or a silently wrong value.
func TestRecordsCorrupt(t *testing.T) {
	good := [][]byte{
		encodeMessage(msg(id("M", 1), sender, 10, true)),
		encodeQueueEntry(&QueueEntry{ID: id("M", 1), Key: &wire.MultiKey{To: r1, Nonce: "n", Box: "b"}, CreatedAt: 1}),
		encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: 1, State: DeliveryPending}, Sender: sender, CMID: "c"}),
		encodeHeader(dm(1764100000123, 1, sender, r1)),
		encodeQueueEntryFor(&QueueEntry{ID: id("M", 1), CreatedAt: 1, From: sender, Charge: 9}, key(3), "c"),
		encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: 300, State: DeliveryDelivered, DeliveredAt: 1764100000999}}),
		encodeQueueEntryFor(&QueueEntry{ID: id("M", 1), CreatedAt: 1, From: sender, Charge: 9}, sender, "01KAY8VJBR0000000000000038"),
	}
	decodeEntry := func(v []byte) error { var e QueueEntry; return decodeQueueEntry(v, &e) }
	decodeDlv := func(v []byte) error { var d deliveryRec; return decodeDelivery(v, &d) }
	decoders := []func([]byte) error{
		func(v []byte) error { var m Message; return decodeMessage(v, id("M", 1), &m) },
		decodeEntry,
		decodeDlv,
		func(v []byte) error { var m Message; return decodeMessage(v, dm(1764100000123, 1, sender, r1).ID, &m) },
		decodeEntry,
		decodeDlv,
		decodeEntry,
	}
	for i, v := range good {
		for n := 0; n < len(v); n++ {
			if err := decoders[i](v[:n]); err == nil {
				t.Errorf("record %d truncated to %d of %d bytes decoded without error", i, n, len(v))
			}
		}
		if err := decoders[i](append(append([]byte(nil), v...), 0)); err == nil {
			t.Errorf("record %d with a trailing byte decoded without error", i)
		}
		bad := append([]byte{0x7f}, v[1:]...)
		if err := decoders[i](bad); err == nil {
			t.Errorf("record %d with an unknown format byte decoded without error", i)
		}
	}
	bad := encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: 1, State: DeliveryPending}})
	bad[2] = 9 // the state byte
	var d deliveryRec
	if err := decodeDelivery(bad, &d); err == nil {
		t.Error("a delivery record with an unknown state decoded without error")
	}
}

// TestLegacyJSONRecords: a data directory written before schema version 2
// holds JSON queue records; they are still scanned, acked (queueing a
// receipt) and reported, next to binary ones.
func TestLegacyJSONRecords(t *testing.T) {
	s := newMeshStore(t)
	old := msg(id("M", 1), sender, 10, true)
	mustUpdate(t, s, func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		old.Recipients = 1
		if err := mb.Bucket(bMsgs).Put([]byte(old.ID), enc(old)); err != nil {
			return err
		}
		seq, err := mb.Bucket(bQueue).NextSequence()
		if err != nil {
			return err
		}
		if err := mb.Bucket(bQueue).Put(qkey(r1, seq), enc(&QueueEntry{ID: old.ID, Priority: old.Priority, CreatedAt: 10})); err != nil {
			return err
		}
		// The oldest delivery records carried only seq and state.
		return mb.Bucket(bDlv).Put(dkey(old.ID, r1), enc(&Delivery{Seq: seq, State: DeliveryPending}))
	})
	fresh := msg(id("M", 2), sender, 11, true)
	appendMsg(t, s, fresh, r1)

	if got := scanIDs(t, s, r1); got != old.ID+","+fresh.ID {
		t.Fatalf("queue = %s", got)
	}
	if got, err := getMsg(t, s, old.ID); err != nil || string(got.Push) != string(old.Push) || got.SenderPubkey != sender {
		t.Fatalf("legacy message = %+v, %v", got, err)
	}
	outs := ack(t, s, r1, 100, old.ID, fresh.ID)
	if len(outs) != 2 {
		t.Fatalf("ack outcomes = %+v", outs)
	}
	for _, o := range outs {
		if o.Message == nil || o.Message.SenderPubkey != sender || o.Message.ClientMessageID != "c-"+o.ID || o.NewReceipt == nil || o.ReceiptFor != sender {
			t.Errorf("outcome for %s = %+v", o.ID, o)
		}
	}
	for _, mid := range []string{old.ID, fresh.ID} {
		if dl := deliveries(t, s, mid); len(dl) != 1 || dl[0].State != DeliveryDelivered || dl[0].DeliveredAt != 100 || dl[0].Recipient != r1 {
			t.Errorf("deliveries of %s = %+v", mid, dl)
		}
	}
	var receipts []string
	for _, o := range outs {
		receipts = append(receipts, o.NewReceipt.ReceiptID)
	}
	if got := scanIDs(t, s, sender); got != strings.Join(receipts, ",") {
		t.Errorf("receipts queued for the sender = %s, want %v", got, receipts)
	}
}

func BenchmarkRecordEncode(b *testing.B) {
	m := msg(id("M", 1), sender, 10, true)
	e := &QueueEntry{ID: m.ID, Key: &wire.MultiKey{To: r1, Nonce: "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25jZQ==", Box: strings.Repeat("Ym94", 16)}, CreatedAt: 10}
	d := &deliveryRec{Delivery: Delivery{Seq: 12345, State: DeliveryPending}, Sender: sender, CMID: "p12.345"}
	b.Run("binary", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encodeHeader(m)
			encodeQueueEntry(e)
			encodeDelivery(d)
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			enc(m)
			enc(e)
			enc(d)
		}
	})
}

// A prepared message's pending delivery record, completed with its queue
// sequence number in the transaction, is exactly what encodeDelivery
// writes for it: from schema 8 without the sender and client id, which are
// in the queue entry, and the size it keeps when settled; a sender key not
// in lower-case hex stays in the record, as before.
func TestPreparedDeliveryValue(t *testing.T) {
	for _, c := range []struct {
		sender string
		inRec  bool
	}{{key(7), false}, {strings.ToUpper(key(0xABC)), true}} {
		for _, receipts := range []bool{true, false} {
			m := &Message{ID: "01JM0000000000000000000001", ClientMessageID: "c-1", SenderPubkey: c.sender, SenderMember: c.sender, Receipts: receipts}
			p := PrepareMessage(m, []NewDelivery{{Recipient: key(1)}})
			for _, seq := range []uint64{0, 1, 127, 128, 1 << 40} {
				rec := deliveryRec{Delivery: Delivery{Seq: seq, State: DeliveryPending}, NoReceipts: !receipts}
				if c.inRec {
					rec.Sender, rec.CMID = m.SenderPubkey, m.ClientMessageID
				}
				want := encodeDelivery(&rec)
				if got := p.deliveryValue(seq); !bytes.Equal(got, want) {
					t.Errorf("sender %s receipts %v seq %d: %x, want %x", c.sender, receipts, seq, got, want)
				}
				for _, st := range []string{DeliveryDelivered, DeliveryExpired} {
					end := encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: seq, State: st, DeliveredAt: 1764100000999}})
					if !c.inRec && len(end) != len(want) {
						t.Errorf("seq %d: the %s record is %d bytes, the pending one %d", seq, st, len(end), len(want))
					}
				}
			}
			if a := entryAck(p.to[0].entry); c.inRec == (a.sender != "") || !c.inRec && (a.sender != m.SenderPubkey || a.cmid != m.ClientMessageID) {
				t.Errorf("sender %s: the queue entry gives an ack %+v", c.sender, a)
			}
		}
	}
}
