package store

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"testing"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

var (
	sender = key(0x5E)
	r1     = key(1) // r1 and r2 are adjacent in every recipient-keyed bucket
	r2     = key(2)
	r3     = key(3)
)

func TestAppendMessageScanQueueFIFO(t *testing.T) {
	s := newMeshStore(t)
	mk := &wire.MultiKey{To: r1, Nonce: "bg==", Box: "Yg=="}
	type sent struct {
		m  *Message
		to []NewDelivery
	}
	plan := []sent{
		{msg(id("M", 1), sender, 10, true), []NewDelivery{{Recipient: r1}}},
		{msg(id("M", 2), sender, 11, true), []NewDelivery{{Recipient: r2}, {Recipient: r1}}},
		{msg(id("M", 3), sender, 12, true), []NewDelivery{{Recipient: r2}}},
		{msg(id("M", 4), sender, 13, true), []NewDelivery{{Recipient: r1, Key: mk}}},
		{msg(id("M", 5), sender, 14, true), []NewDelivery{{Recipient: r1}}},
	}
	plan[3].m.Priority = wire.PriorityNow
	seqOf := map[string]uint64{} // "msg/recipient" → seq
	for _, p := range plan {
		var seqs []uint64
		mustUpdate(t, s, func(tx *Tx) error {
			var err error
			seqs, err = AppendMessage(tx, meshID, p.m, p.to)
			return err
		})
		if len(seqs) != len(p.to) {
			t.Fatalf("%d seqs for %d recipients", len(seqs), len(p.to))
		}
		for i, d := range p.to {
			seqOf[p.m.ID+"/"+d.Recipient] = seqs[i]
		}
	}

	check := func(recipient string, after uint64, want ...int) {
		t.Helper()
		got := scan(t, s, recipient, after)
		if len(got) != len(want) {
			t.Fatalf("ScanQueue(%s…, after %d) = %d entries, want %d: %+v", recipient[60:], after, len(got), len(want), got)
		}
		var prev uint64
		for i, n := range want {
			p := plan[n-1]
			e := got[i]
			if e.ID != p.m.ID {
				t.Fatalf("entry %d = %s, want %s", i, e.ID, p.m.ID)
			}
			if e.Seq != seqOf[p.m.ID+"/"+recipient] || e.Seq <= prev || e.Seq <= after {
				t.Fatalf("entry %d seq %d (prev %d, after %d, appended as %d)", i, e.Seq, prev, after, seqOf[p.m.ID+"/"+recipient])
			}
			prev = e.Seq
			if e.Receipt || e.Priority != p.m.Priority || e.CreatedAt != p.m.CreatedAt || e.Frame != nil {
				t.Fatalf("entry %d = %+v", i, e.QueueEntry)
			}
			var wantKey *wire.MultiKey
			for _, d := range p.to {
				if d.Recipient == recipient {
					wantKey = d.Key
				}
			}
			if !reflect.DeepEqual(e.Key, wantKey) {
				t.Fatalf("entry %d key %+v, want %+v", i, e.Key, wantKey)
			}
		}
	}
	check(r1, 0, 1, 2, 4, 5)
	check(r2, 0, 2, 3)
	check(r3, 0)
	check(r1, seqOf[id("M", 2)+"/"+r1], 4, 5)
	check(r1, seqOf[id("M", 1)+"/"+r1], 2, 4, 5)
	check(r1, seqOf[id("M", 5)+"/"+r1] /* nothing after the last */)
	check(r2, seqOf[id("M", 3)+"/"+r2])

	// fn returning false stops the walk.
	n := 0
	mustView(t, s, func(tx *Tx) error {
		return ScanQueue(tx, meshID, r1, 0, func(uint64, *QueueEntry) bool { n++; return n < 2 })
	})
	if n != 2 {
		t.Fatalf("ScanQueue kept going after false: %d calls", n)
	}

	m2, err := getMsg(t, s, id("M", 2))
	if err != nil || m2.Recipients != 2 || string(m2.Push) != string(plan[1].m.Push) || m2.Fingerprint != "fp-"+id("M", 2) || !m2.Receipts {
		t.Fatalf("stored message = %+v, %v", m2, err)
	}
	var p wire.Push
	if err := wire.Decode(m2.Push, &p); err != nil || p.MessageID != id("M", 2) {
		t.Fatalf("stored push does not decode: %v %+v", err, p)
	}
	if _, err := getMsg(t, s, id("M", 99)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMessage(unknown) = %v", err)
	}
	if err := s.updateTx(func(tx *Tx) error {
		_, err := AppendMessage(tx, "nope", msg(id("M", 9), sender, 1, true), []NewDelivery{{Recipient: r1}})
		return err
	}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("AppendMessage(unknown mesh) = %v", err)
	}
	if err := s.viewTx(func(tx *Tx) error {
		return ScanQueue(tx, "nope", r1, 0, func(uint64, *QueueEntry) bool { return true })
	}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ScanQueue(unknown mesh) = %v", err)
	}
	if got := countPending(t, s); !reflect.DeepEqual(got, map[string]int{r1: 4, r2: 2}) {
		t.Fatalf("CountPending = %v", got)
	}
}

func TestLookupIdempotent(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, true)
	m.ClientMessageID = "retry-me"
	appendMsg(t, s, m, r1)
	other := msg(id("M", 2), r2, 10, true)
	other.ClientMessageID = "retry-me" // same client id, different sender
	appendMsg(t, s, other, r1)

	mustView(t, s, func(tx *Tx) error {
		got, err := LookupIdempotent(tx, meshID, sender, "retry-me")
		if err != nil || got.ID != m.ID || got.Fingerprint != m.Fingerprint {
			t.Errorf("LookupIdempotent(sender) = %+v, %v", got, err)
		}
		got, err = LookupIdempotent(tx, meshID, r2, "retry-me")
		if err != nil || got.ID != other.ID {
			t.Errorf("LookupIdempotent(r2) = %+v, %v", got, err)
		}
		for _, c := range []struct{ who, cid, mesh string }{
			{r1, "retry-me", meshID}, {sender, "retry-m", meshID}, {sender, "retry-me2", meshID}, {sender, "retry-me", "nope"},
		} {
			if got, err := LookupIdempotent(tx, c.mesh, c.who, c.cid); !errors.Is(err, ErrNotFound) {
				t.Errorf("LookupIdempotent(%s…, %q, %s) = %+v, %v; want ErrNotFound", c.who[60:], c.cid, c.mesh, got, err)
			}
		}
		return nil
	})
}

func TestAckSettlesAndQueuesReceipt(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, true)
	seqs := appendMsg(t, s, m, r1, r2)

	out := ack(t, s, r1, 500, m.ID)
	if len(out) != 1 {
		t.Fatalf("Ack = %+v, want one outcome", out)
	}
	o := out[0]
	if o.NewReceipt == nil {
		t.Fatalf("no receipt: %+v", o)
	}
	// The receipt's id is a ULID of the ack's time that carries the
	// receipt's place in the sender's queue.
	if u, err := ulid.ParseStrict(o.NewReceipt.ReceiptID); err != nil || u.Time() != 500 {
		t.Fatalf("receipt id %q: %v", o.NewReceipt.ReceiptID, err)
	}
	if seq, ok := receiptSeq(o.NewReceipt.ReceiptID); !ok || seq != o.ReceiptSeq {
		t.Fatalf("receipt id carries seq %d (%v), queued at %d", seq, ok, o.ReceiptSeq)
	}
	wantReceipt := &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: o.NewReceipt.ReceiptID, MessageID: m.ID, ClientMessageID: m.ClientMessageID,
		RecipientPubkey: r1, DeliveredAt: 500}
	if o.ID != m.ID || o.Seq != seqs[0] || o.Receipt || o.Message == nil || o.Message.ID != m.ID ||
		!reflect.DeepEqual(o.NewReceipt, wantReceipt) || o.ReceiptFor != sender || o.ReceiptSeq == 0 {
		t.Fatalf("outcome = %+v (receipt %+v)", o, o.NewReceipt)
	}

	// r1's entry is gone, r2's is untouched.
	if got := scanIDs(t, s, r1); got != "" {
		t.Fatalf("r1 queue after ack = %q", got)
	}
	if got := scanIDs(t, s, r2); got != m.ID {
		t.Fatalf("r2 queue after r1's ack = %q", got)
	}
	// The receipt waits in the sender's queue, its frame ready to send.
	q := scan(t, s, sender, 0)
	if len(q) != 1 || q[0].Seq != o.ReceiptSeq || q[0].ID != wantReceipt.ReceiptID || !q[0].Receipt || q[0].CreatedAt != 500 {
		t.Fatalf("sender queue = %+v", q)
	}
	var r wire.Receipt
	if err := wire.Decode(q[0].Frame, &r); err != nil || r != *wantReceipt {
		t.Fatalf("queued receipt frame %s → %+v, %v", q[0].Frame, r, err)
	}
	got := map[string]Delivery{}
	for _, d := range deliveries(t, s, m.ID) {
		got[d.Recipient] = d.Delivery
	}
	want := map[string]Delivery{
		r1: {Seq: seqs[0], State: DeliveryDelivered, DeliveredAt: 500},
		r2: {Seq: seqs[1], State: DeliveryPending},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("deliveries %+v, want %+v", got, want)
	}

	// The sender acks the receipt: it is removed, nothing else changes.
	out = ack(t, s, sender, 600, wantReceipt.ReceiptID)
	if len(out) != 1 || !out[0].Receipt || out[0].ID != wantReceipt.ReceiptID || out[0].Seq != o.ReceiptSeq ||
		out[0].Message != nil || out[0].NewReceipt != nil {
		t.Fatalf("receipt ack = %+v", out)
	}
	if q := scan(t, s, sender, 0); len(q) != 0 {
		t.Fatalf("sender queue after acking the receipt = %+v", q)
	}
	if d := deliveries(t, s, wantReceipt.ReceiptID); len(d) != 0 {
		t.Fatalf("receipt delivery record survived its ack: %+v", d)
	}
	// Acking the receipt again is a no-op.
	if out := ack(t, s, sender, 700, wantReceipt.ReceiptID); len(out) != 0 {
		t.Fatalf("second receipt ack = %+v", out)
	}
}

func TestAckIsIdempotent(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, true)
	appendMsg(t, s, m, r1)
	if out := ack(t, s, r1, 500, m.ID); len(out) != 1 || out[0].NewReceipt == nil {
		t.Fatalf("first ack = %+v", out)
	}
	before := deliveries(t, s, m.ID)
	senderQ := scan(t, s, sender, 0)

	// Again, later, and twice in one call: nothing changes, no second receipt.
	out := ack(t, s, r1, 900, m.ID, m.ID)
	if len(out) != 0 {
		t.Fatalf("second ack = %+v", out)
	}
	if after := deliveries(t, s, m.ID); !reflect.DeepEqual(after, before) {
		t.Fatalf("deliveries changed: %+v → %+v", before, after)
	}
	if q := scan(t, s, sender, 0); !reflect.DeepEqual(q, senderQ) {
		t.Fatalf("sender queue changed: %+v → %+v", senderQ, q)
	}

	// The same id twice in the first call settles once.
	m2 := msg(id("M", 2), sender, 11, true)
	appendMsg(t, s, m2, r1)
	if out := ack(t, s, r1, 950, m2.ID, m2.ID); len(out) != 1 {
		t.Fatalf("duplicate ids in one ack = %d outcomes, want 1", len(out))
	}
	if got := len(scan(t, s, sender, 0)); got != 2 {
		t.Fatalf("sender has %d receipts, want 2", got)
	}
}

func TestAckUnknownIsNoop(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, true)
	appendMsg(t, s, m, r1)
	// Unknown ids, an id for another recipient, and the empty id.
	if out := ack(t, s, r1, 5, id("M", 404), "", "not-a-ulid"); len(out) != 0 {
		t.Fatalf("unknown ids = %+v", out)
	}
	if out := ack(t, s, r2, 5, m.ID); len(out) != 0 {
		t.Fatalf("r2 acked r1's message: %+v", out)
	}
	if out := ack(t, s, sender, 5, m.ID); len(out) != 0 {
		t.Fatalf("the sender acked its own message: %+v", out)
	}
	if q := scan(t, s, sender, 0); len(q) != 0 {
		t.Fatalf("a no-op ack queued %+v", q)
	}
	if got := scanIDs(t, s, r1); got != m.ID {
		t.Fatalf("r1 queue = %q", got)
	}
	if d := deliveries(t, s, m.ID); len(d) != 1 || d[0].State != DeliveryPending {
		t.Fatalf("deliveries = %+v", d)
	}
	if err := s.updateTx(func(tx *Tx) error {
		_, err := Ack(tx, "nope", r1, []string{m.ID}, 1)
		return err
	}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Ack(unknown mesh) = %v", err)
	}
}

func TestAckWithoutReceipts(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, false)
	appendMsg(t, s, m, r1)
	out := ack(t, s, r1, 500, m.ID)
	if len(out) != 1 || out[0].NewReceipt != nil || out[0].ReceiptFor != "" || out[0].ReceiptSeq != 0 || out[0].Message == nil {
		t.Fatalf("Ack = %+v", out)
	}
	if q := scan(t, s, sender, 0); len(q) != 0 {
		t.Fatalf("sender got %+v for a receipts:false message", q)
	}
}

func TestDeliveriesStates(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 10, false)
	seqs := appendMsg(t, s, m, r3, r1, r2)
	other := msg(id("M", 2), sender, 10, false) // must not leak into M1's rows
	appendMsg(t, s, other, r1)

	ack(t, s, r1, 77, m.ID)
	mustUpdate(t, s, func(tx *Tx) error { _, err := DropQueue(tx, meshID, r3); return err })

	got := deliveries(t, s, m.ID)
	want := []RecipientDelivery{ // sorted by raw recipient key
		{r1, Delivery{Seq: seqs[1], State: DeliveryDelivered, DeliveredAt: 77}},
		{r2, Delivery{Seq: seqs[2], State: DeliveryPending}},
		{r3, Delivery{Seq: seqs[0], State: DeliveryExpired}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Deliveries = %+v\nwant %+v", got, want)
	}
	if d := deliveries(t, s, id("M", 3)); len(d) != 0 {
		t.Fatalf("Deliveries(unknown) = %+v", d)
	}
	if err := s.viewTx(func(tx *Tx) error { _, err := Deliveries(tx, "nope", m.ID); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Deliveries(unknown mesh) = %v", err)
	}
}

func TestCountPendingExcludesReceipts(t *testing.T) {
	s := newMeshStore(t)
	a, b := msg(id("M", 1), sender, 10, true), msg(id("M", 2), sender, 11, true)
	appendMsg(t, s, a, r1, r2)
	appendMsg(t, s, b, r1)
	ack(t, s, r2, 20, a.ID) // queues a receipt for sender
	if n := len(scan(t, s, sender, 0)); n != 1 {
		t.Fatalf("setup: sender has %d queued receipts", n)
	}
	if got, want := countPending(t, s), map[string]int{r1: 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("CountPending = %v, want %v", got, want)
	}
	ack(t, s, r1, 30, b.ID)
	if got, want := countPending(t, s), map[string]int{r1: 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("CountPending after ack = %v, want %v", got, want)
	}
}

func expire(t *testing.T, s *Store, cutoff int64, max int) ([]Expired, bool) {
	t.Helper()
	var out []Expired
	var more bool
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		out, more, err = ExpireBefore(tx, meshID, cutoff, max)
		return err
	})
	return out, more
}

func purge(t *testing.T, s *Store, cutoff int64, max int) (int, bool) {
	t.Helper()
	var n int
	var more bool
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		n, more, err = PurgeBefore(tx, meshID, cutoff, max)
		return err
	})
	return n, more
}

func sortExpired(e []Expired) {
	sort.Slice(e, func(i, j int) bool {
		if e[i].Receipt != e[j].Receipt {
			return !e[i].Receipt
		}
		return fmt.Sprint(e[i]) < fmt.Sprint(e[j])
	})
}

// expiryFixture: old (t=1000) to r1 (pending) and r2 (delivered at 1500,
// which queued receipt rc for sender), fresh (t=5000) to r1, and an old
// receipt the sender already collected.
type expiryFixture struct {
	old, fresh, collected *Message
	oldSeqs, freshSeqs    []uint64
	rc                    *AckOutcome
}

func newExpiryFixture(t *testing.T, s *Store) expiryFixture {
	var f expiryFixture
	// Ids sort by creation time, as the broker's ULIDs do.
	f.old = msg(id("M", 1), sender, 1000, true)
	f.collected = msg(id("M", 2), sender, 1000, true)
	f.fresh = msg(id("M", 3), sender, 5000, true)
	f.oldSeqs = appendMsg(t, s, f.old, r1, r2)
	f.freshSeqs = appendMsg(t, s, f.fresh, r1)
	appendMsg(t, s, f.collected, r3)
	out := ack(t, s, r2, 1500, f.old.ID)
	f.rc = &out[0]
	out = ack(t, s, r3, 1600, f.collected.ID)
	ack(t, s, sender, 1700, out[0].NewReceipt.ReceiptID)
	return f
}

func TestExpireBefore(t *testing.T) {
	s := newMeshStore(t)
	f := newExpiryFixture(t, s)

	out, more := expire(t, s, 2000, 100)
	if more {
		t.Fatal("more = true with room to spare")
	}
	sortExpired(out)
	want := []Expired{
		{Recipient: r1, MessageID: f.old.ID, Seq: f.oldSeqs[0]},
		{Recipient: sender, MessageID: f.rc.NewReceipt.ReceiptID, Seq: f.rc.ReceiptSeq, Receipt: true},
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("ExpireBefore = %+v\nwant %+v", out, want)
	}

	// The old message is expired for r1, still delivered for r2, readable,
	// and flagged; the fresh one is untouched.
	got := deliveries(t, s, f.old.ID)
	wantD := []RecipientDelivery{
		{r1, Delivery{Seq: f.oldSeqs[0], State: DeliveryExpired}},
		{r2, Delivery{Seq: f.oldSeqs[1], State: DeliveryDelivered, DeliveredAt: 1500}},
	}
	if !reflect.DeepEqual(got, wantD) {
		t.Fatalf("old deliveries = %+v\nwant %+v", got, wantD)
	}
	// Its body went with its last holder; the fresh one keeps its body.
	if m, err := getMsg(t, s, f.old.ID); err != nil || m.Push != nil {
		t.Fatalf("old message = %+v, %v; want its header only", m, err)
	}
	if m, err := getMsg(t, s, f.fresh.ID); err != nil || m.Push == nil {
		t.Fatalf("fresh message = %+v, %v", m, err)
	}
	if d := deliveries(t, s, f.fresh.ID); len(d) != 1 || d[0].State != DeliveryPending {
		t.Fatalf("fresh deliveries = %+v", d)
	}
	if got := scanIDs(t, s, r1); got != f.fresh.ID {
		t.Fatalf("r1 queue = %q, want only the fresh message", got)
	}
	if q := scan(t, s, sender, 0); len(q) != 0 {
		t.Fatalf("sender queue = %+v, want the old receipt gone", q)
	}
	if d := deliveries(t, s, f.rc.NewReceipt.ReceiptID); len(d) != 0 {
		t.Fatalf("expired receipt's delivery record survived: %+v", d)
	}
	if got := countPending(t, s); !reflect.DeepEqual(got, map[string]int{r1: 1}) {
		t.Fatalf("CountPending = %v", got)
	}
	// Acking the expired delivery or receipt now does nothing.
	if o := ack(t, s, r1, 2500, f.old.ID); len(o) != 0 {
		t.Fatalf("ack of an expired delivery = %+v", o)
	}
	if o := ack(t, s, sender, 2500, f.rc.NewReceipt.ReceiptID); len(o) != 0 {
		t.Fatalf("ack of an expired receipt = %+v", o)
	}

	// Running it again finds nothing new.
	if out, more := expire(t, s, 2000, 100); len(out) != 0 || more {
		t.Fatalf("second ExpireBefore = %+v, %v", out, more)
	}
	// A later cutoff catches the fresh message.
	out, _ = expire(t, s, 6000, 100)
	if len(out) != 1 || out[0] != (Expired{Recipient: r1, MessageID: f.fresh.ID, Seq: f.freshSeqs[0]}) {
		t.Fatalf("ExpireBefore(6000) = %+v", out)
	}
	if got := countPending(t, s); len(got) != 0 {
		t.Fatalf("CountPending after everything expired = %v", got)
	}
	if err := s.updateTx(func(tx *Tx) error { _, _, err := ExpireBefore(tx, "nope", 1, 1); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ExpireBefore(unknown mesh) = %v", err)
	}
}

func TestExpireBeforeCutoffIsExclusive(t *testing.T) {
	s := newMeshStore(t)
	m := msg(id("M", 1), sender, 1000, true)
	appendMsg(t, s, m, r1)
	if out, _ := expire(t, s, 1000, 10); len(out) != 0 {
		t.Fatalf("message created at the cutoff expired: %+v", out)
	}
	if out, _ := expire(t, s, 1001, 10); len(out) != 1 {
		t.Fatalf("message created before the cutoff did not expire: %+v", out)
	}
}

func TestExpireBeforeBatches(t *testing.T) {
	s := newMeshStore(t)
	const n = 5
	for i := 1; i <= n; i++ {
		appendMsg(t, s, msg(id("M", i), sender, int64(100+i), true), r1)
	}
	var all []string
	calls := 0
	for {
		out, more := expire(t, s, 1000, 2)
		calls++
		if len(out) > 2 {
			t.Fatalf("batch of %d with max 2", len(out))
		}
		for _, e := range out {
			all = append(all, e.MessageID)
		}
		if !more {
			break
		}
		if calls > n {
			t.Fatal("more never turned false")
		}
	}
	if calls != 3 {
		t.Errorf("%d calls for %d messages in batches of 2, want 3", calls, n)
	}
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, id("M", i))
	}
	if !reflect.DeepEqual(all, want) {
		t.Fatalf("expired %v, want oldest first %v", all, want)
	}
	if q := scan(t, s, r1, 0); len(q) != 0 {
		t.Fatalf("queue after batched expiry = %+v", q)
	}
}

func TestPurgeBefore(t *testing.T) {
	s := newMeshStore(t)
	f := newExpiryFixture(t, s)

	// A message someone has yet to settle is not purged, however old;
	// one every recipient settled is, once older than the cutoff.
	if n, _ := purge(t, s, 1000, 100); n != 0 {
		t.Fatalf("PurgeBefore(1000) purged %d messages created at 1000", n)
	}
	if n, more := purge(t, s, 2000, 100); n != 1 || more {
		t.Fatalf("PurgeBefore before expiry = %d, %v; want only the settled one", n, more)
	}
	if _, err := getMsg(t, s, f.old.ID); err != nil {
		t.Fatalf("unsettled message purged: %v", err)
	}
	expire(t, s, 2000, 100) // expires old's delivery to r1 (t=1000)
	n, more := purge(t, s, 2000, 100)
	if n != 1 || more {
		t.Fatalf("PurgeBefore after expiry = %d, %v; want 1, false", n, more)
	}
	for _, m := range []*Message{f.old, f.collected} {
		if _, err := getMsg(t, s, m.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("purged message %s still readable: %v", m.ID, err)
		}
		if d := deliveries(t, s, m.ID); len(d) != 0 {
			t.Fatalf("purged message %s kept deliveries %+v", m.ID, d)
		}
		mustView(t, s, func(tx *Tx) error {
			if _, err := LookupIdempotent(tx, meshID, sender, m.ClientMessageID); !errors.Is(err, ErrNotFound) {
				t.Errorf("idempotency key of purged %s survived: %v", m.ID, err)
			}
			return nil
		})
	}
	// The fresh message is intact, with its idempotency key.
	mustView(t, s, func(tx *Tx) error {
		got, err := LookupIdempotent(tx, meshID, sender, f.fresh.ClientMessageID)
		if err != nil || got.ID != f.fresh.ID {
			t.Errorf("fresh message after purge = %+v, %v", got, err)
		}
		return nil
	})
	if got := scanIDs(t, s, r1); got != f.fresh.ID {
		t.Fatalf("r1 queue after purge = %q", got)
	}
	if n, more := purge(t, s, 2000, 100); n != 0 || more {
		t.Fatalf("second PurgeBefore = %d, %v", n, more)
	}
	// A client may reuse the client id of a purged message.
	again := msg(id("M", 9), sender, 9000, true)
	again.ClientMessageID = f.old.ClientMessageID
	appendMsg(t, s, again, r1)
	mustView(t, s, func(tx *Tx) error {
		got, err := LookupIdempotent(tx, meshID, sender, f.old.ClientMessageID)
		if err != nil || got.ID != again.ID {
			t.Errorf("reused client id = %+v, %v", got, err)
		}
		return nil
	})
	if err := s.updateTx(func(tx *Tx) error { _, _, err := PurgeBefore(tx, "nope", 1, 1); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("PurgeBefore(unknown mesh) = %v", err)
	}
}

func TestPurgeBeforeBatches(t *testing.T) {
	s := newMeshStore(t)
	for i := 1; i <= 3; i++ {
		appendMsg(t, s, msg(id("M", i), sender, int64(i), true), r1)
	}
	expire(t, s, 100, 100)
	n, more := purge(t, s, 100, 2)
	if n != 2 || !more {
		t.Fatalf("first batch = %d, %v; want 2, true", n, more)
	}
	if _, err := getMsg(t, s, id("M", 3)); err != nil {
		t.Fatalf("newest message purged in the first batch: %v", err)
	}
	n, more = purge(t, s, 100, 2)
	if n != 1 || more {
		t.Fatalf("second batch = %d, %v; want 1, false", n, more)
	}
}

func TestDropQueue(t *testing.T) {
	s := newMeshStore(t)
	// r1 has two messages and a receipt (for something r1 sent that r2 acked).
	a, b := msg(id("M", 1), sender, 10, true), msg(id("M", 2), sender, 11, true)
	aSeqs := appendMsg(t, s, a, r1, r2)
	bSeqs := appendMsg(t, s, b, r1)
	fromR1 := msg(id("M", 3), r1, 12, true)
	appendMsg(t, s, fromR1, r2)
	rc := ack(t, s, r2, 20, fromR1.ID)[0]

	var out []Expired
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		out, err = DropQueue(tx, meshID, r1)
		return err
	})
	want := []Expired{ // queue (FIFO) order
		{Recipient: r1, MessageID: a.ID, Seq: aSeqs[0]},
		{Recipient: r1, MessageID: b.ID, Seq: bSeqs[0]},
		{Recipient: r1, MessageID: rc.NewReceipt.ReceiptID, Seq: rc.ReceiptSeq, Receipt: true},
	}
	if !reflect.DeepEqual(out, want) {
		t.Fatalf("DropQueue = %+v\nwant %+v", out, want)
	}
	if q := scan(t, s, r1, 0); len(q) != 0 {
		t.Fatalf("r1 queue after drop = %+v", q)
	}
	if d := deliveries(t, s, a.ID); d[0].Recipient != r1 || d[0].State != DeliveryExpired || d[1].State != DeliveryPending {
		t.Fatalf("deliveries of a = %+v", d)
	}
	if d := deliveries(t, s, rc.NewReceipt.ReceiptID); len(d) != 0 {
		t.Fatalf("dropped receipt kept its delivery record: %+v", d)
	}
	// r2's queue is untouched; acks from r1 are now no-ops.
	if got := scanIDs(t, s, r2); got != a.ID {
		t.Fatalf("r2 queue = %q", got)
	}
	if o := ack(t, s, r1, 30, a.ID, b.ID, rc.NewReceipt.ReceiptID); len(o) != 0 {
		t.Fatalf("acks after drop = %+v", o)
	}
	if got := countPending(t, s); !reflect.DeepEqual(got, map[string]int{r2: 1}) {
		t.Fatalf("CountPending = %v", got)
	}
	// Later expiry reports only what is still pending (a for r2): neither
	// r1's dropped deliveries nor the dropped receipt come back.
	if out, _ := expire(t, s, 25, 10); !reflect.DeepEqual(out, []Expired{{Recipient: r2, MessageID: a.ID, Seq: aSeqs[1]}}) {
		t.Fatalf("ExpireBefore after DropQueue = %+v", out)
	}
	// Dropping an empty queue is a no-op.
	mustUpdate(t, s, func(tx *Tx) error {
		out, err := DropQueue(tx, meshID, r3)
		if len(out) != 0 {
			t.Errorf("DropQueue(empty) = %+v", out)
		}
		return err
	})
}
