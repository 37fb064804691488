package store

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// BenchmarkDMLifecycle is the broker's store work for one DM in the steady
// state of `bench --peers 100`: each transaction appends a batch of
// messages, settles the batch before it (each recipient acks, which queues
// a receipt for the sender) and settles the receipts of the batch before
// that (each sender acks its receipt). One op is one message through its
// whole life; fsync is off so the number is the committer's CPU. The
// "after" variants first push that many messages through, to show how the
// cost and the file grow with what was ever written. The three trees that
// keep every message (msgs, dlv, idem) gain their fourth level between
// 100,000 and 300,000 messages and keep it past 1,000,000: after=300000 is
// the plateau a long run reaches (about 7 % more pages written a message
// than after=100000, and the same at 600,000).
func BenchmarkDMLifecycle(b *testing.B) {
	for _, prefill := range []int{0, 100_000, 300_000} {
		b.Run(fmt.Sprintf("after=%d", prefill), func(b *testing.B) { benchLifecycle(b, prefill, 0) })
	}
	// One message in a hundred is a 64 KiB DM its sender sends herself and
	// never acks (`bench --adversary --attacks self`): what its body costs
	// the other 99 messages' transactions.
	b.Run("large=1%", func(b *testing.B) { benchLifecycle(b, 0, 100) })
}

type lifecycleMsg struct {
	id, sender, recipient string
	receipt               string // the receipt's id once acked
}

func benchLifecycle(b *testing.B, prefill, largeEvery int) {
	const peers, batch = 100, 40
	s := openAt(b, dbPath(b), Options{})
	s.db.NoSync = true
	mustUpdate(b, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "bench"}, owner())
	})
	ct, largeCT := strings.Repeat("A", 364), strings.Repeat("A", 87_400)
	rng := rand.New(rand.NewPCG(1, 2))
	sent := 0
	newMsg := func() (*Message, lifecycleMsg) {
		from, to := rng.IntN(peers), rng.IntN(peers-1)
		if to >= from {
			to++
		}
		ct := ct
		if sent++; largeEvery > 0 && sent%largeEvery == 0 {
			ct, to = largeCT, from
		}
		mid, cmid := ulid.Make().String(), ulid.Make().String()
		push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, MeshID: meshID, Kind: wire.KindBox, TargetSpec: key(to),
			SenderPubkey: key(from), SenderMemberPubkey: key(from), SenderName: "peer", Priority: wire.PriorityNext,
			Nonce: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYX", Ciphertext: ct, ClientMessageID: cmid, CreatedAt: 1})
		return &Message{ID: mid, ClientMessageID: cmid, SenderPubkey: key(from), SenderMember: key(from), TargetSpec: key(to),
				Kind: wire.KindBox, Priority: wire.PriorityNext, Fingerprint: strings.Repeat("f", 64), Push: push, Receipts: true,
				CreatedAt: int64(ulid.Now())},
			lifecycleMsg{id: mid, sender: key(from), recipient: key(to)}
	}
	// step runs one transaction of the pipeline: append n new messages,
	// ack the previous batch, ack the receipts of the one before.
	var prev, prev2 []lifecycleMsg
	var inTx time.Duration
	step := func(n int) {
		cur := make([]lifecycleMsg, 0, n)
		// As the broker does, a message's records are encoded before
		// the transaction, on the sender's goroutine.
		prepared := make([]*PreparedMessage, 0, n)
		for i := 0; i < n; i++ {
			m, lm := newMsg()
			prepared = append(prepared, PrepareMessage(m, []NewDelivery{{Recipient: lm.recipient}}))
			if lm.recipient != lm.sender { // a large self-DM is never acked
				cur = append(cur, lm)
			}
		}
		t0 := time.Now()
		defer func() { inTx += time.Since(t0) }()
		err := s.db.Update(wrapFn(func(tx *Tx) error {
			for _, p := range prepared {
				if _, err := p.Append(tx, meshID); err != nil {
					return err
				}
			}
			now := int64(ulid.Now())
			for i := range prev {
				out, err := Ack(tx, meshID, prev[i].recipient, []string{prev[i].id}, now)
				if err != nil {
					return err
				}
				if len(out) != 1 || out[0].NewReceipt == nil {
					return fmt.Errorf("ack of %s settled %d", prev[i].id, len(out))
				}
				prev[i].receipt = out[0].NewReceipt.ReceiptID
			}
			for _, m := range prev2 {
				out, err := Ack(tx, meshID, m.sender, []string{m.receipt}, now)
				if err != nil {
					return err
				}
				if len(out) != 1 || !out[0].Receipt {
					return fmt.Errorf("receipt ack of %s settled %d", m.receipt, len(out))
				}
			}
			return nil
		}))
		if err != nil {
			b.Fatal(err)
		}
		prev2, prev = prev, cur
	}
	for done := 0; done < prefill; done += batch {
		step(batch)
	}
	inTx = 0
	before := fileSize(b, s)
	st0 := s.db.Stats().TxStats
	cpu0 := cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		step(min(batch, b.N-done))
	}
	step(0)
	step(0)
	b.StopTimer()
	// CPU time (user + system) per message is steadier than wall time on
	// a machine shared with other work.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/msg")
	// The committer's part: wall time inside the write transactions
	// (no fsync here), what every other write waits behind.
	b.ReportMetric(float64(inTx)/float64(b.N), "tx-ns/msg")
	b.ReportMetric(float64(fileSize(b, s)-before)/float64(b.N), "file-B/msg")
	st := s.db.Stats().TxStats
	b.ReportMetric(float64(st.GetWrite()-st0.GetWrite())/float64(b.N), "writes/msg")
	b.ReportMetric(float64(st.GetPageAlloc()-st0.GetPageAlloc())/float64(b.N), "pageB/msg")
	b.ReportMetric(float64(st.GetSplit()-st0.GetSplit())/float64(b.N), "splits/msg")
}

// cpuTime is the process's user and system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func fileSize(b *testing.B, s *Store) int64 {
	fi, err := os.Stat(s.Path())
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}
