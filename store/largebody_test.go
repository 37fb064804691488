package store

import (
	"bytes"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// largeMsg is a message whose push carries a 64 KiB ciphertext, as
// `bench --adversary --attacks self` sends.
func largeMsg(sender string) *Message {
	mid := ulid.Make().String()
	m := msg(mid, sender, 1000, false)
	m.Push = wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, Kind: wire.KindBox, SenderPubkey: sender,
		Ciphertext: strings.Repeat("Q", 87_400), ClientMessageID: m.ClientMessageID, CreatedAt: 1000})
	return m
}

// bodyState reports whether a message has a body record and a bucket of
// its own for a large push.
func bodyState(t *testing.T, s *Store, mid string) (record, own bool) {
	t.Helper()
	mustView(t, s, func(tx *Tx) error {
		mb := meshBucket(tx, meshID)
		record = mb.Bucket(bBodies).Get([]byte(mid)) != nil
		own = mb.Bucket(bLargeBodies).Bucket([]byte(mid)) != nil
		return nil
	})
	return record, own
}

// pageAlloc is the bytes of pages the store's transactions have allocated.
func pageAlloc(s *Store) int64 {
	st := s.db.Stats().TxStats
	return st.GetPageAlloc()
}

// TestLargeBodyDoesNotWeighOnOthers: after a 64 KiB message that nobody
// acks, each transaction that appends a small message and settles the one
// before it writes no more pages than the same transaction without the
// large message (bbolt rewrites a whole leaf with its overflow pages when
// any key in it changes, so with the push beside the small bodies every
// such transaction rewrote its ~88 KB).
func TestLargeBodyDoesNotWeighOnOthers(t *testing.T) {
	const rounds = 20
	run := func(withLarge bool) []int {
		s := newMeshStore(t)
		if withLarge {
			appendMsg(t, s, largeMsg(sender), sender)
		}
		r2 := key(2)
		var prev string
		out := make([]int, 0, rounds)
		for i := 0; i < rounds; i++ {
			m := msg(ulid.Make().String(), r1, 1000, false)
			before := pageAlloc(s)
			mustUpdate(t, s, func(tx *Tx) error {
				if _, err := AppendMessage(tx, meshID, m, []NewDelivery{{Recipient: r2}}); err != nil {
					return err
				}
				if prev != "" {
					if _, err := Ack(tx, meshID, r2, []string{prev}, 2000); err != nil {
						return err
					}
				}
				return nil
			})
			out = append(out, int(pageAlloc(s)-before))
			prev = m.ID
		}
		return out
	}
	without, with := run(false), run(true)
	for i := range with {
		if extra := with[i] - without[i]; extra > 2*largeBody {
			t.Errorf("round %d: the transaction allocated %d bytes of pages, %d more than without the large message", i, with[i], extra)
		}
	}
}

// TestLargeBodyLifecycle: a large push is read back whole, survives the
// first of two recipients' acks, and goes (record and bucket) with the
// last; one expired with its recipient's queue goes too; an unsettled one
// is kept through a purge.
func TestLargeBodyLifecycle(t *testing.T) {
	s := newMeshStore(t)
	r2 := key(2)
	m := largeMsg(sender)
	appendMsg(t, s, m, r1, r2)
	if rec, own := bodyState(t, s, m.ID); !rec || !own {
		t.Fatalf("after append: body record %v, own bucket %v; want both", rec, own)
	}
	check := func(when string) {
		t.Helper()
		got, err := getMsg(t, s, m.ID)
		if err != nil || !bytes.Equal(got.Push, m.Push) {
			t.Fatalf("%s: GetMessage push %d bytes (err %v), want the %d sent", when, len(got.Push), err, len(m.Push))
		}
	}
	check("after append")
	ack(t, s, r1, 2000, m.ID)
	check("after the first ack")
	mustUpdate(t, s, func(tx *Tx) error {
		n, _, err := PurgeBefore(tx, meshID, 5000, 100)
		if n != 0 {
			t.Errorf("purge removed %d messages with a delivery pending", n)
		}
		return err
	})
	check("after a purge")
	ack(t, s, r2, 2000, m.ID)
	if rec, own := bodyState(t, s, m.ID); rec || own {
		t.Errorf("after the last ack: body record %v, own bucket %v; want neither", rec, own)
	}
	if got, err := getMsg(t, s, m.ID); err != nil || got.Push != nil {
		t.Errorf("after the last ack: GetMessage push %d bytes (err %v), want none", len(got.Push), err)
	}

	dropped := largeMsg(sender)
	appendMsg(t, s, dropped, r1)
	mustUpdate(t, s, func(tx *Tx) error {
		_, err := DropQueue(tx, meshID, r1)
		return err
	})
	if rec, own := bodyState(t, s, dropped.ID); rec || own {
		t.Errorf("after its queue was dropped: body record %v, own bucket %v; want neither", rec, own)
	}
}

// TestMigrationToLargeBodies: a schema-6 mesh (no largeBodies bucket) gains
// it on open and takes a large message.
func TestMigrationToLargeBodies(t *testing.T) {
	path := dbPath(t)
	old := openAt(t, path, Options{Migrations: BrokerMigrations[:6]})
	mustUpdate(t, old, func(tx *Tx) error {
		if err := CreateMesh(tx, Mesh{ID: meshID, Slug: "team"}, owner()); err != nil {
			return err
		}
		return meshBucket(tx, meshID).DeleteBucket(bLargeBodies)
	})
	old.Close()
	s := openAt(t, path, Options{})
	m := largeMsg(sender)
	appendMsg(t, s, m, r1)
	if got, err := getMsg(t, s, m.ID); err != nil || !bytes.Equal(got.Push, m.Push) {
		t.Fatalf("GetMessage after the migration: err %v", err)
	}
}
