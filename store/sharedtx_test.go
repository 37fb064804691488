package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"
)

// openLocal is the broker's engine on a fresh file holding one mesh.
func openLocal(t *testing.T) *Local {
	t.Helper()
	l, err := OpenLocal(filepath.Join(t.TempDir(), "broker.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.Update(func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "team", Name: "Team", CreatedAt: 1}, owner())
	}); err != nil {
		t.Fatal(err)
	}
	return l
}

// submitTogether submits the writes while the committer is held in a
// write of its own, so that they are applied in one transaction, and
// waits for their outcomes.
func submitTogether(t *testing.T, l *Local, fns ...func(tx *Tx) error) []error {
	t.Helper()
	hold, held := make(chan struct{}), make(chan struct{})
	if err := l.Submit(func(tx *Tx) error {
		close(held)
		<-hold
		return nil
	}, nil); err != nil {
		t.Fatal(err)
	}
	<-held
	errs := make([]error, len(fns))
	var wg sync.WaitGroup
	for i, fn := range fns {
		wg.Add(1)
		if err := l.Submit(fn, func(err error) { errs[i] = err; wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	close(hold)
	wg.Wait()
	return errs
}

// The writes a commit applies share one Tx, and with it the mesh's
// buckets: each of a broadcast's 1,000 acks opened the same five buckets
// of its own. A write that fails rolls the transaction back; the others
// run again, in transactions (and Txs) of their own, and commit.
func TestLocalWritesOfOneCommitShareATx(t *testing.T) {
	l := openLocal(t)
	var mu sync.Mutex
	var seen []*Tx
	var meshes []*Bucket
	record := func(tx *Tx) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, tx)
		meshes = append(meshes, meshBucket(tx, meshID))
		return nil
	}
	for _, err := range submitTogether(t, l, record, record, record) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) != 3 || seen[0] != seen[1] || seen[1] != seen[2] {
		t.Fatalf("the three writes of one commit ran in Txs %p, want one Tx", seen)
	}
	if meshes[0] == nil || meshes[0] != meshes[1] || meshes[1] != meshes[2] {
		t.Fatalf("the three writes of one commit opened mesh buckets %p, want one", meshes)
	}

	// One failing write: its neighbours commit, each run again in a Tx
	// that is not the failed transaction's.
	seen, meshes = nil, nil
	bad := errors.New("refused")
	put := func(k string) func(tx *Tx) error {
		return func(tx *Tx) error {
			record(tx)
			return meshBucket(tx, meshID).Bucket(bMsgs).Put([]byte(k), []byte("v"))
		}
	}
	errs := submitTogether(t, l, put("a"), func(tx *Tx) error { record(tx); return bad }, put("b"))
	if errs[0] != nil || !errors.Is(errs[1], bad) || errs[2] != nil {
		t.Fatalf("outcomes %v, want nil, %v, nil", errs, bad)
	}
	first := seen[0]
	for i, tx := range seen[2:] {
		if tx == first {
			t.Fatalf("run %d after the failure reused the failed transaction's Tx", i+2)
		}
	}
	if err := l.View(func(tx *Tx) error {
		for _, k := range []string{"a", "b"} {
			if meshBucket(tx, meshID).Bucket(bMsgs).Get([]byte(k)) == nil {
				return fmt.Errorf("%s was not committed", k)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// A bucket deleted through a mesh bucket the Tx remembers is not handed
// out again.
func TestTxForgetsADeletedMeshBucket(t *testing.T) {
	l := openLocal(t)
	if err := l.Update(func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		if mb.Bucket(bLargeBodies) == nil {
			return errors.New("no largeBodies bucket")
		}
		if err := mb.DeleteBucket(bLargeBodies); err != nil {
			return err
		}
		if b := meshBucket(tx, meshID).Bucket(bLargeBodies); b != nil {
			return errors.New("the deleted bucket was handed out again")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// Settling a receipt touches the queue alone and, in a commit's shared
// Tx, opens no bucket again: it allocated 12 times (6 now), half of them
// the mesh's and the queue's buckets' lookups and wrappers, and a
// message's ack 39 (31 now; its body's record is also found and deleted
// with one descent).
func TestAckAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts say nothing under the race detector")
	}
	s := newMeshStore(t)
	const n = 60
	ids := make([]string, n)
	for i := range ids {
		ids[i] = ulid.Make().String()
		appendMsg(t, s, msg(ids[i], sender, 1, true), r1)
	}
	mustUpdate(t, s, func(tx *Tx) error {
		meshBucket(tx, meshID) // a commit's earlier writes opened it
		i := 0
		var receipts []string
		var err error
		acks := testing.AllocsPerRun(n/2-1, func() {
			var out []AckOutcome
			if out, err = Ack(tx, meshID, r1, []string{ids[i]}, 2); err == nil && len(out) == 1 && out[0].NewReceipt != nil {
				receipts = append(receipts, out[0].NewReceipt.ReceiptID)
			}
			i++
		})
		if err != nil || len(receipts) != n/2 {
			return fmt.Errorf("acks: %v, %d receipts", err, len(receipts))
		}
		j := 0
		settled := 0
		rcpts := testing.AllocsPerRun(n/2-1, func() {
			var out []AckOutcome
			if out, err = Ack(tx, meshID, sender, []string{receipts[j]}, 3); err == nil && len(out) == 1 && out[0].Receipt {
				settled++
			}
			j++
		})
		if err != nil || settled != n/2 {
			return fmt.Errorf("receipt acks: %v, %d settled", err, settled)
		}
		t.Logf("allocations: %.1f a message's ack, %.1f a receipt's", acks, rcpts)
		if rcpts > 8 {
			t.Errorf("a receipt's ack allocated %.1f times, want at most 8", rcpts)
		}
		if acks > 35 {
			t.Errorf("a message's ack allocated %.1f times, want at most 35", acks)
		}
		return nil
	})
}
