package store

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// BenchmarkAckDM is the committer's part of settling one DM in the steady
// state of `bench --peers 100`: its recipient's ack (which queues a
// receipt for the sender) and the sender's ack of that receipt, each a
// store.Ack call of its own in a transaction of 40 messages' acks, as the
// broker's committer runs them. One op is one message; the messages are
// appended before the timer starts, fsync is off, and the transactions'
// commits are timed with the acks (tx-ns/msg is the wall time inside
// them, what every other write waits behind).
func BenchmarkAckDM(b *testing.B) {
	const peers, batch = 100, 40
	s := openAt(b, dbPath(b), Options{})
	s.db.NoSync = true
	mustUpdate(b, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "bench"}, owner())
	})
	ct := strings.Repeat("A", 364)
	type dm struct{ id, sender, recipient, receipt string }
	n := 0
	appendBatch := func(k int) []dm {
		out := make([]dm, k)
		mustUpdate(b, s, func(tx *Tx) error {
			for i := range out {
				n++
				from, to := n%peers, (n*7+1)%peers
				if to == from {
					to = (to + 1) % peers
				}
				mid, cmid := ulid.Make().String(), ulid.Make().String()
				push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, MeshID: meshID, Kind: wire.KindBox, TargetSpec: key(to),
					SenderPubkey: key(from), SenderMemberPubkey: key(from), SenderName: "peer", Priority: wire.PriorityNext,
					Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Ciphertext: ct, ClientMessageID: cmid, CreatedAt: 1})
				m := &Message{ID: mid, ClientMessageID: cmid, SenderPubkey: key(from), SenderMember: key(from), TargetSpec: key(to),
					Kind: wire.KindBox, Priority: wire.PriorityNext, Fingerprint: strings.Repeat("f", 64), Push: push, Receipts: true,
					CreatedAt: int64(ulid.Now())}
				if _, err := AppendMessage(tx, meshID, m, []NewDelivery{{Recipient: key(to)}}); err != nil {
					return err
				}
				out[i] = dm{id: mid, sender: key(from), recipient: key(to)}
			}
			return nil
		})
		return out
	}
	var inTx time.Duration
	settle := func(ms []dm, receipts bool) {
		t0 := time.Now()
		mustUpdate(b, s, func(tx *Tx) error {
			now := int64(ulid.Now())
			for i := range ms {
				who, id := ms[i].recipient, ms[i].id
				if receipts {
					who, id = ms[i].sender, ms[i].receipt
				}
				out, err := Ack(tx, meshID, who, []string{id}, now)
				if err != nil {
					return err
				}
				if len(out) != 1 {
					return fmt.Errorf("ack of %s settled %d", id, len(out))
				}
				if !receipts {
					ms[i].receipt = out[0].NewReceipt.ReceiptID
				}
			}
			return nil
		})
		inTx += time.Since(t0)
	}
	// The steady state's pipeline: a batch is appended, acked by its
	// recipients a transaction later and its receipts acked the one after,
	// so the queue holds about two batches (only the acks are timed).
	prev := appendBatch(batch)
	settle(prev, false)
	inTx = 0
	var cpu int64
	b.ReportAllocs()
	b.ResetTimer()
	b.StopTimer()
	for done := 0; done < b.N; done += batch {
		cur := appendBatch(min(batch, b.N-done))
		cpu0 := cpuTime()
		b.StartTimer()
		settle(cur, false)
		settle(prev, true)
		b.StopTimer()
		cpu += cpuTime() - cpu0
		prev = cur
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/msg")
	b.ReportMetric(float64(inTx)/float64(b.N), "tx-ns/msg")
}
