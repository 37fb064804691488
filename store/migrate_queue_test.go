package store

import (
	"reflect"
	"testing"

	"github.com/oklog/ulid/v2"
)

// TestMigrationToAppendLayout: a schema-5 file with a message queued the
// old way (push inline, idempotency key sender first, expiry indexes) and a
// receipt queued the old way (with its delivery record) migrates on open:
// the message is still found by its client id, delivered and acked, the
// old receipt is settled by its id, another expires with its record, and
// the dropped indexes are gone.
func TestMigrationToAppendLayout(t *testing.T) {
	path := dbPath(t)
	old := openAt(t, path, Options{Migrations: BrokerMigrations[:5]})
	m := msg(ulid.Make().String(), sender, 1000, true)
	// Receipt ids before schema 6 are random ULIDs, with no sequence
	// number inside; these two carry by chance (one in 256) the tag of the
	// ids that do, which once left an expired one's record behind.
	rc1, rc2 := legacyReceiptIDWithTag(), legacyReceiptIDWithTag()
	var mseq, rseq1, rseq2 uint64
	mustUpdate(t, old, func(tx *Tx) error {
		if err := CreateMesh(tx, Mesh{ID: meshID, Slug: "team"}, owner()); err != nil {
			return err
		}
		mb := meshBucket(tx, meshID)
		if err := mb.DeleteBucket(bBodies); err != nil {
			return err
		}
		for _, name := range [][]byte{bMsgExp, bRcptExp, bMsgDel} {
			if _, err := mb.CreateBucket(name); err != nil {
				return err
			}
		}
		m.Recipients = 1
		q := mb.Bucket(bQueue)
		mseq, _ = q.NextSequence()
		rseq1, _ = q.NextSequence()
		rseq2, _ = q.NextSequence()
		puts := []struct {
			b    []byte
			k, v []byte
		}{
			{bMsgs, []byte(m.ID), encodeMessage(m)},
			{bIdem, legacyIdemKey(sender, m.ClientMessageID), []byte(m.ID)},
			{bMsgExp, cat(u64(1000), []byte(m.ID)), nil},
			{bQueue, qkey(r1, mseq), encodeQueueEntry(&QueueEntry{ID: m.ID, Priority: m.Priority, CreatedAt: 1000})},
			{bDlv, dkey(m.ID, r1), encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: mseq, State: DeliveryPending}, Sender: sender, CMID: m.ClientMessageID})},
			{bQueue, qkey(sender, rseq1), encodeQueueEntry(&QueueEntry{ID: rc1, Receipt: true, Frame: []byte(`{"type":"receipt"}`), CreatedAt: 900})},
			{bDlv, dkey(rc1, sender), encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: rseq1, State: DeliveryPending}, Receipt: true})},
			{bRcptExp, cat(u64(900), pk(sender), u64(rseq1)), []byte(rc1)},
			{bQueue, qkey(sender, rseq2), encodeQueueEntry(&QueueEntry{ID: rc2, Receipt: true, Frame: []byte(`{"type":"receipt"}`), CreatedAt: 950})},
			{bDlv, dkey(rc2, sender), encodeDelivery(&deliveryRec{Delivery: Delivery{Seq: rseq2, State: DeliveryPending}, Receipt: true})},
		}
		for _, p := range puts {
			if err := mb.Bucket(p.b).Put(p.k, p.v); err != nil {
				return err
			}
		}
		return nil
	})
	old.Close()

	s := openAt(t, path, Options{})
	mustView(t, s, func(tx *Tx) error {
		if v := be64(tx.Bucket(bucketMeta).Get(keySchema)); v != SchemaVersion {
			t.Fatalf("schema %d after open", v)
		}
		return nil
	})
	mustView(t, s, func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		for _, name := range [][]byte{bMsgExp, bRcptExp, bMsgDel} {
			if mb.Bucket(name) != nil {
				t.Errorf("bucket %s survived the migration", name)
			}
		}
		if mb.Bucket(bBodies) == nil {
			t.Error("no bodies bucket")
		}
		got, err := LookupIdempotent(tx, meshID, sender, m.ClientMessageID)
		if err != nil || got.ID != m.ID || string(got.Push) != string(m.Push) {
			t.Errorf("lookup by client id after migration = %+v, %v", got, err)
		}
		return nil
	})
	if got := scanIDs(t, s, r1); got != m.ID {
		t.Fatalf("r1 queue = %q", got)
	}
	out := ack(t, s, r1, 2000, m.ID)
	if len(out) != 1 || out[0].NewReceipt == nil || out[0].ReceiptFor != sender {
		t.Fatalf("ack of the old message = %+v", out)
	}
	// The old receipt is settled by its id, and its record goes with it.
	if out := ack(t, s, sender, 2000, rc1); len(out) != 1 || !out[0].Receipt || out[0].Seq != rseq1 {
		t.Fatalf("ack of an old receipt = %+v", out)
	}
	if d := deliveries(t, s, rc1); len(d) != 0 {
		t.Fatalf("old receipt's record survived its ack: %+v", d)
	}
	// The other old receipt expires, record and all; the new receipt stays.
	exp, _ := expire(t, s, 1000, 10)
	if !reflect.DeepEqual(exp, []Expired{{Recipient: sender, MessageID: rc2, Seq: rseq2, Receipt: true}}) {
		t.Fatalf("expired %+v", exp)
	}
	if d := deliveries(t, s, rc2); len(d) != 0 {
		t.Fatalf("expired old receipt kept its record: %+v", d)
	}
	if got := scanIDs(t, s, sender); got != out[0].NewReceipt.ReceiptID {
		t.Fatalf("sender queue = %q", got)
	}
}

// legacyReceiptIDWithTag is a random ULID, as receipt ids were before
// schema 6, whose first random byte is receiptTag.
func legacyReceiptIDWithTag() string {
	u := ulid.Make()
	u[6] = receiptTag
	if _, ok := receiptSeq(u.String()); !ok {
		panic("the tag is not where receiptSeq looks")
	}
	return u.String()
}

// TestBodyGoesWithLastHolder: the push (the ciphertext) is kept while any
// recipient holds the message, and goes in the commit that settles the
// last one — by ack, expiry or a dropped queue. The header stays.
func TestBodyGoesWithLastHolder(t *testing.T) {
	s := newMeshStore(t)
	a := msg(id("M", 1), sender, 10, true)
	appendMsg(t, s, a, r1, r2, r3)
	hasBody := func(mid string) bool {
		m, err := getMsg(t, s, mid)
		if err != nil {
			t.Fatal(err)
		}
		return m.Push != nil
	}
	ack(t, s, r1, 20, a.ID)
	mustUpdate(t, s, func(tx *Tx) error { _, err := DropQueue(tx, meshID, r2); return err })
	if !hasBody(a.ID) {
		t.Fatal("body gone while r3 still holds the message")
	}
	ack(t, s, r3, 30, a.ID)
	if hasBody(a.ID) {
		t.Fatal("body kept after every recipient settled")
	}
	if m, _ := getMsg(t, s, a.ID); m.ClientMessageID != a.ClientMessageID || m.Fingerprint != a.Fingerprint || m.Recipients != 3 || m.SenderPubkey != sender {
		t.Fatalf("header after settlement = %+v", m)
	}
	// Expiry settles a holder too.
	b := msg(id("M", 2), sender, 40, false)
	appendMsg(t, s, b, r1)
	expire(t, s, 41, 10)
	if hasBody(b.ID) {
		t.Fatal("body kept after expiry")
	}
	mustView(t, s, func(tx *Tx) error {
		if n := meshBucket(tx, meshID).Bucket(bBodies).Stats().KeyN; n != 0 {
			t.Errorf("%d bodies left", n)
		}
		return nil
	})
}

// TestForgedReceiptIDSettlesNothing: an id shaped like a receipt's whose
// sequence number points at another entry of the acker's queue settles
// nothing.
func TestForgedReceiptIDSettlesNothing(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, true)
	seqs := appendMsg(t, s, m, r1)
	forged := newReceiptID(10, seqs[0])
	if out := ack(t, s, r1, 20, forged); len(out) != 0 {
		t.Fatalf("forged receipt id settled %+v", out)
	}
	if got := scanIDs(t, s, r1); got != m.ID {
		t.Fatalf("r1 queue = %q", got)
	}
}
