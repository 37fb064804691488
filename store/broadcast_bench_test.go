package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
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

// BenchmarkSendBehindAcks is the wait of a broadcast's send behind the
// previous broadcast's acks in the group committer, as in `bench
// --broadcast --peers 1000`: the 1,000 acks of broadcast k (client_acks
// without reqId, so deferrable, each settling one delivery and queueing a
// receipt) are being applied when the send of broadcast k+1 (1,000
// deliveries) is submitted. send-µs is that send's time from its submit
// to its callback (the fan-out starts there); one op is one broadcast's
// acks and the next one's send. With preempt=false the send waits for
// all 1,000 acks to be applied and committed, then for its own commit;
// with preempt=true (Options.PreemptDeferred, the broker's setting) it is
// applied after the ack under way and commits with those applied so far.
// fsync is off, so the numbers are the committer's CPU.
func BenchmarkSendBehindAcks(b *testing.B) {
	for _, preempt := range []bool{false, true} {
		b.Run(fmt.Sprintf("preempt=%v", preempt), func(b *testing.B) { benchSendBehindAcks(b, preempt) })
	}
}

func benchSendBehindAcks(b *testing.B, preempt bool) {
	const peers = 1000
	s := openAt(b, dbPath(b), Options{PreemptDeferred: preempt})
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
	ct, box, nonce := strings.Repeat("A", 364), strings.Repeat("B", 64), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX"
	prepare := func() (string, *PreparedMessage) {
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
		return mid, PrepareMessage(m, to)
	}
	submitSend := func(p *PreparedMessage, done chan<- time.Duration) {
		t0 := time.Now()
		if err := s.Submit(wrapFn(func(tx *Tx) error { _, err := p.Append(tx, meshID); return err }), func(err error) {
			if err != nil {
				b.Error(err)
			}
			done <- time.Since(t0)
		}); err != nil {
			b.Fatal(err)
		}
	}
	rng := mrand.New(mrand.NewPCG(1, 2))
	// one acks broadcast mid and submits the next send once the committer
	// is applying the acks; it returns the send's message id once all are
	// committed, and how long the send took.
	one := func(mid string) (string, time.Duration) {
		release := blockCommitter(b, s)
		applying := make(chan struct{})
		var acked sync.WaitGroup
		for n, i := range rng.Perm(peers) {
			r := recipients[i]
			acked.Add(1)
			fn := func(tx *Tx) error {
				_, err := Ack(tx, meshID, r, []string{mid}, int64(ulid.Now()))
				return err
			}
			if n == 0 {
				ack := fn
				var once sync.Once
				fn = func(tx *Tx) error {
					once.Do(func() { close(applying) })
					return ack(tx)
				}
			}
			if err := s.SubmitDeferred(wrapFn(fn), func(err error) {
				if err != nil {
					b.Error(err)
				}
				acked.Done()
			}); err != nil {
				b.Fatal(err)
			}
		}
		next, p := prepare()
		release()
		<-applying
		took := make(chan time.Duration, 1)
		submitSend(p, took)
		d := <-took
		acked.Wait()
		return next, d
	}
	mid, p := prepare()
	first := make(chan time.Duration, 1)
	submitSend(p, first)
	<-first
	for range 3 { // the steady state: the buckets hold earlier broadcasts
		mid, _ = one(mid)
	}
	var total time.Duration
	b.ResetTimer()
	for b.Loop() {
		var d time.Duration
		mid, d = one(mid)
		total += d
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "send-µs")
}

// BenchmarkBroadcastAppend is the committer's work for a broadcast's send
// alone: appending a message to 1,000 recipients (random keys) in a
// transaction, rolled back so that every op finds the same store (an
// empty queue, as between broadcasts of `bench --broadcast`); no commit.
func BenchmarkBroadcastAppend(b *testing.B) {
	const peers = 1000
	s := openAt(b, dbPath(b), Options{})
	mustUpdate(b, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "bench"}, owner())
	})
	recipients := make([]string, peers)
	for i := range recipients {
		var k [32]byte
		rand.Read(k[:])
		recipients[i] = hex.EncodeToString(k[:])
	}
	nonce, box := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", strings.Repeat("B", 64)
	mid, cmid := ulid.Make().String(), ulid.Make().String()
	push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, MeshID: meshID, Kind: wire.KindMulti, TargetSpec: "*",
		SenderPubkey: recipients[0], Nonce: nonce, Ciphertext: strings.Repeat("A", 364), ClientMessageID: cmid, CreatedAt: 1})
	m := &Message{ID: mid, ClientMessageID: cmid, SenderPubkey: recipients[0], SenderMember: recipients[0], TargetSpec: "*",
		Kind: wire.KindMulti, Priority: wire.PriorityNext, Push: push, Receipts: true, CreatedAt: int64(ulid.Now())}
	to := make([]NewDelivery, peers)
	for i, r := range recipients {
		to[i] = NewDelivery{Recipient: r, Key: &wire.MultiKey{To: r, Nonce: nonce, Box: box}, From: recipients[0], Charge: 900}
	}
	p := PrepareMessage(m, to)
	b.ReportAllocs()
	for b.Loop() {
		tx, err := s.db.Begin(true)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Append(WrapTx(tx, nil), meshID); err != nil {
			b.Fatal(err)
		}
		tx.Rollback()
	}
}
