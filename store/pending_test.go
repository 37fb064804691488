package store

import (
	"reflect"
	"testing"

	"github.com/oklog/ulid/v2"
)

// pendingByLookup is PendingFor as it was, every id looked up, and with
// the receipts (which have no delivery record) looked up in the queue.
func pendingByLookup(t testing.TB, s *Store, recipient string, ids []string) []string {
	t.Helper()
	var out []string
	mustView(t, s, func(tx *Tx) error {
		b, err := sub(tx, meshID, bDlv)
		if err != nil {
			return err
		}
		q, err := sub(tx, meshID, bQueue)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if seq, ok := receiptSeq(id); ok {
				if v := q.Get(qkey(recipient, seq)); v != nil && entryIs(v, id) {
					out = append(out, id)
					continue
				}
			}
			var d deliveryRec
			if v := b.Get(dkey(id, recipient)); v != nil && decodeDelivery(v, &d) == nil && d.State == DeliveryPending {
				out = append(out, id)
			}
		}
		return nil
	})
	return out
}

func pendingFor(t testing.TB, s *Store, recipient string, ids []string) []string {
	t.Helper()
	var out []string
	mustView(t, s, func(tx *Tx) error {
		var err error
		out, err = PendingFor(tx, meshID, recipient, ids)
		return err
	})
	return out
}

// TestPendingForShortAndLongQueues: PendingFor names the ids with a
// pending record, in the order asked, whether the recipient's queue is
// short enough to be read whole (the ids without an entry there are not
// looked up) or longer than the ids asked about (each looked up): not
// acked ones, acked ones, expired ones, another recipient's, receipts
// and ids nobody sent, repeated ids included.
func TestPendingForShortAndLongQueues(t *testing.T) {
	s := newMeshStore(t)
	old := msg(id("P", 99), sender, 500, false) // expires below
	appendMsg(t, s, old, r1)
	var toR1, toR2 []string
	for i := range 12 {
		m := msg(id("P", i), sender, int64(1000+i), true)
		if i%3 == 0 {
			appendMsg(t, s, m, r1, r2)
			toR1, toR2 = append(toR1, m.ID), append(toR2, m.ID)
		} else {
			appendMsg(t, s, m, r2)
			toR2 = append(toR2, m.ID)
		}
	}
	// r1 acks one (a receipt is queued for the sender), r2 acks two.
	ackOut := ack(t, s, r1, 2000, toR1[1])
	ack(t, s, r2, 2000, toR2[0], toR2[5])
	if out, _ := expire(t, s, 600, 10); len(out) != 1 {
		t.Fatalf("expired %+v, want the old message only", out)
	}
	invented := []string{ulid.Make().String(), ulid.Make().String()}
	receipt := ackOut[0].NewReceipt.ReceiptID

	for _, c := range []struct {
		name      string
		recipient string
		ids       []string
	}{
		// r1's queue (3 entries) is shorter than the ids asked about.
		{"short queue", r1, []string{toR1[0], invented[0], toR1[1], old.ID, toR2[1], toR1[2], invented[1], toR1[3], toR1[0]}},
		// r2's (10 entries) is longer.
		{"long queue", r2, []string{invented[0], toR2[0], toR2[1], toR2[5], toR2[11]}},
		{"empty queue", r3, []string{toR1[0], invented[0]}},
		{"receipts", sender, []string{receipt, invented[1], toR1[0]}},
		{"another's receipt", r1, []string{receipt, toR1[0]}},
	} {
		want := pendingByLookup(t, s, c.recipient, c.ids)
		if got := pendingFor(t, s, c.recipient, c.ids); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: PendingFor = %v, want %v", c.name, got, want)
		}
	}
	if got := pendingFor(t, s, r1, []string{toR1[0], toR1[1], toR1[2], invented[0]}); !reflect.DeepEqual(got, []string{toR1[0], toR1[2]}) {
		t.Errorf("r1: PendingFor = %v, want the first and third of its messages", got)
	}
	// A receipt queued for its sender is settleable (an ack of it from a
	// fetch was dropped before it reached the store: it was fetched and
	// pushed again for ever), and only until it is acked.
	if got := pendingFor(t, s, sender, []string{invented[0], receipt}); !reflect.DeepEqual(got, []string{receipt}) {
		t.Errorf("sender: PendingFor = %v, want its receipt", got)
	}
	ack(t, s, sender, 3000, receipt)
	if got := pendingFor(t, s, sender, []string{receipt}); len(got) != 0 {
		t.Errorf("sender after its ack: PendingFor = %v, want none", got)
	}
}

// BenchmarkPendingForInventedIDs: a 500-id client_ack of ids nobody sent,
// from a recipient with 20 messages queued, in a mesh of 2,000 (bench
// --adversary's ack flood while mallory's self-DMs wait unacked).
func BenchmarkPendingForInventedIDs(b *testing.B) {
	s := newMeshStore(b)
	for i := range 2000 {
		appendMsg(b, s, msg(ulid.Make().String(), sender, 1000, false), key(3+i%100))
	}
	ids := make([]string, maxAckLookups)
	for i := range ids {
		ids[i] = ulid.Make().String()
	}
	for b.Loop() {
		mustView(b, s, func(tx *Tx) error { _, err := PendingFor(tx, meshID, key(7), ids); return err })
	}
}

// maxAckLookups is the ids one client_ack carries at most (the broker's
// maxAckIDs).
const maxAckLookups = 500
