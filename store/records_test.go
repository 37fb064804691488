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
		var got QueueEntry
		v := encodeQueueEntry(want)
		if err := decodeQueueEntry(v, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("queue entry round trip:\n got %+v\nwant %+v", got, *want)
		}
		if from, charge := entryQuota(v); from != want.From || charge != want.Charge {
			t.Errorf("entryQuota of %+v: %q %d", *want, from, charge)
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
	}
	decoders := []func([]byte) error{
		func(v []byte) error { var m Message; return decodeMessage(v, id("M", 1), &m) },
		func(v []byte) error { var e QueueEntry; return decodeQueueEntry(v, &e) },
		func(v []byte) error { var d deliveryRec; return decodeDelivery(v, &d) },
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
// writes for it.
func TestPreparedDeliveryValue(t *testing.T) {
	for _, receipts := range []bool{true, false} {
		m := &Message{ID: "01JM0000000000000000000001", ClientMessageID: "c-1", SenderPubkey: key(7), SenderMember: key(7), Receipts: receipts}
		p := PrepareMessage(m, []NewDelivery{{Recipient: key(1)}})
		for _, seq := range []uint64{0, 1, 127, 128, 1 << 40} {
			want := encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: seq, State: DeliveryPending}, Sender: m.SenderPubkey, CMID: m.ClientMessageID, NoReceipts: !receipts})
			if got := p.deliveryValue(seq); !bytes.Equal(got, want) {
				t.Errorf("receipts %v seq %d: %x, want %x", receipts, seq, got, want)
			}
		}
	}
}
