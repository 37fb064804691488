package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// BenchmarkBroadcastLifecycle is the broker's store work for one broadcast
// of `bench --broadcast --peers 1000` in its steady state: one transaction
// appends the multi message with a queue entry and delivery record for each
// of 1,000 recipients (random keys, as real pubkeys are); its recipients'
// acks settle it in acks= transactions (random order, each queueing a
// receipt for the sender), and the sender's acks of those receipts settle
// them in two more. One op is one broadcast through its whole life; fsync
// is off, so cpu-ns/bcast is the committer's CPU and pages/bcast the pages
// bbolt wrote (each a pwrite of the real broker). The broker folds a
// broadcast's acks into as many commits as arrive while the previous one
// runs: 6–9 per broadcast under the bench on this machine.
func BenchmarkBroadcastLifecycle(b *testing.B) {
	for _, acks := range []int{1, 3, 6} {
		b.Run(fmt.Sprintf("acks=%d", acks), func(b *testing.B) { benchBroadcast(b, acks) })
	}
}

func benchBroadcast(b *testing.B, ackTxs int) {
	const peers = 1000
	s := openAt(b, dbPath(b), Options{})
	s.db.NoSync = true
	mustUpdate(b, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "bench"}, owner())
	})
	randKey := func() string {
		var k [32]byte
		rand.Read(k[:])
		return hex.EncodeToString(k[:])
	}
	sender := randKey()
	recipients := make([]string, peers)
	for i := range recipients {
		recipients[i] = randKey()
	}
	ct := strings.Repeat("A", 364)
	box := strings.Repeat("B", 64)
	nonce := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"
	rng := mrand.New(mrand.NewPCG(1, 2))
	commit := func(fn func(tx *Tx) error) {
		if err := s.db.Update(wrapFn(fn)); err != nil {
			b.Fatal(err)
		}
	}
	one := func() {
		mid, cmid := ulid.Make().String(), ulid.Make().String()
		push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, MeshID: meshID, Kind: wire.KindMulti, TargetSpec: "*",
			SenderPubkey: sender, SenderMemberPubkey: sender, SenderName: "peer", Priority: wire.PriorityNext,
			Nonce: nonce, Ciphertext: ct, Signature: strings.Repeat("5", 128), ClientMessageID: cmid, CreatedAt: 1})
		m := &Message{ID: mid, ClientMessageID: cmid, SenderPubkey: sender, SenderMember: sender, TargetSpec: "*",
			Kind: wire.KindMulti, Priority: wire.PriorityNext, Fingerprint: strings.Repeat("f", 64), Push: push, Receipts: true,
			CreatedAt: int64(ulid.Now())}
		to := make([]NewDelivery, peers)
		for i, r := range recipients {
			to[i] = NewDelivery{Recipient: r, Key: &wire.MultiKey{To: r, Nonce: nonce, Box: box}, From: sender, Charge: 900}
		}
		p := PrepareMessage(m, to)
		commit(func(tx *Tx) error { _, err := p.Append(tx, meshID); return err })
		order := rng.Perm(peers)
		receipts := make([]string, 0, peers)
		per := (peers + ackTxs - 1) / ackTxs
		for lo := 0; lo < peers; lo += per {
			part := order[lo:min(lo+per, peers)]
			commit(func(tx *Tx) error {
				now := int64(ulid.Now())
				for _, i := range part {
					out, err := Ack(tx, meshID, recipients[i], []string{mid}, now)
					if err != nil {
						return err
					}
					if len(out) != 1 || out[0].NewReceipt == nil {
						return fmt.Errorf("ack settled %d", len(out))
					}
					receipts = append(receipts, out[0].NewReceipt.ReceiptID)
				}
				return nil
			})
		}
		for _, part := range [][]string{receipts[:peers/2], receipts[peers/2:]} {
			commit(func(tx *Tx) error {
				out, err := Ack(tx, meshID, sender, part, int64(ulid.Now()))
				if err == nil && len(out) != len(part) {
					err = fmt.Errorf("receipt acks settled %d of %d", len(out), len(part))
				}
				return err
			})
		}
	}
	for range 5 { // the steady state: the buckets hold earlier broadcasts
		one()
	}
	st0 := s.db.Stats().TxStats
	cpu0 := cpuTime()
	t0 := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		one()
	}
	b.StopTimer()
	_ = t0
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/bcast")
	st := s.db.Stats().TxStats
	b.ReportMetric(float64(st.GetWrite()-st0.GetWrite())/float64(b.N), "pages/bcast")
	b.ReportMetric(float64(st.GetSpill()-st0.GetSpill())/float64(b.N), "spills/bcast")
}
