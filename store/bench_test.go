package store

import (
	"strings"
	"sync/atomic"
	"testing"

	"claudemesh/wire"
)

// BenchmarkAppendMessageGroupCommit is the broker's send path through the
// store: many goroutines (8 per CPU, standing in for connections) each
// Update one message with one delivery. ns/op is wall time per durable
// message and includes the fsync, amortised over whatever the group
// committer folded into each transaction (reported as writes/commit).
func BenchmarkAppendMessageGroupCommit(b *testing.B) { benchAppend(b, 8) }

// BenchmarkAppendMessageSerial is the same with one writer: every message
// pays a whole transaction and fsync, the baseline group commit amortises.
func BenchmarkAppendMessageSerial(b *testing.B) { benchAppend(b, 0) }

func benchAppend(b *testing.B, parallelism int) {
	var log commitLog
	s := openAt(b, dbPath(b), Options{OnCommit: log.observe})
	mustUpdate(b, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "bench"}, owner())
	})
	push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: id("M", 0), Kind: wire.KindBox, SenderPubkey: sender,
		Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Ciphertext: strings.Repeat("A", 364), CreatedAt: 1})
	var n atomic.Int64
	commitsBefore := len(log.snapshot())
	b.ReportAllocs()
	one := func(i int) error {
		m := &Message{ID: id("M", i), ClientMessageID: id("C", i), SenderPubkey: sender, SenderMember: sender,
			TargetSpec: r1, Kind: wire.KindBox, Priority: wire.PriorityNext, Fingerprint: "fp", Push: push,
			Receipts: true, CreatedAt: int64(i)}
		return s.updateTx(func(tx *Tx) error {
			_, err := AppendMessage(tx, meshID, m, []NewDelivery{{Recipient: key(1 + i%100)}})
			return err
		})
	}
	b.ResetTimer()
	if parallelism == 0 {
		for b.Loop() {
			if err := one(int(n.Add(1))); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := one(int(n.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.StopTimer()
	if commits := len(log.snapshot()) - commitsBefore; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "writes/commit")
	}
}

// BenchmarkScanQueue walks 256 entries (one replay window) of a recipient
// whose queue holds 10,000, among other recipients' entries.
func BenchmarkScanQueue(b *testing.B) {
	s := openAt(b, dbPath(b), Options{})
	mustUpdate(b, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "bench"}, owner())
	})
	push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: id("M", 0), Ciphertext: strings.Repeat("A", 364)})
	const total = 10000
	for start := 0; start < total; start += 1000 {
		mustUpdate(b, s, func(tx *Tx) error {
			for i := start; i < start+1000; i++ {
				m := &Message{ID: id("M", i), ClientMessageID: id("C", i), SenderPubkey: sender, Push: push, CreatedAt: int64(i)}
				if _, err := AppendMessage(tx, meshID, m, []NewDelivery{{Recipient: r1}, {Recipient: r2}}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		n := 0
		if err := s.viewTx(func(tx *Tx) error {
			return ScanQueue(tx, meshID, r1, 0, func(uint64, *QueueEntry) bool { n++; return n < 256 })
		}); err != nil || n != 256 {
			b.Fatalf("scanned %d, %v", n, err)
		}
	}
}
