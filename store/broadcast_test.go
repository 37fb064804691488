package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"

	"claudemesh/wire"
)

// broadcastTo appends one multi message from sender to recipients (each
// with a key entry of a real multi's size) and returns its id.
func broadcastTo(t *testing.T, s *Store, recipients []string) string {
	t.Helper()
	mid := ulid.Make().String()
	m := msg(mid, sender, 1000, true)
	m.Kind, m.TargetSpec = wire.KindMulti, "*"
	m.Push = wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, Kind: wire.KindMulti, SenderPubkey: sender,
		Ciphertext: strings.Repeat("Q", 364), ClientMessageID: m.ClientMessageID, CreatedAt: 1000})
	to := make([]NewDelivery, len(recipients))
	for i, r := range recipients {
		to[i] = NewDelivery{Recipient: r, Key: &wire.MultiKey{To: r, Nonce: strings.Repeat("n", 32), Box: strings.Repeat("b", 64)}, From: sender, Charge: 900}
	}
	mustUpdate(t, s, func(tx *Tx) error {
		_, err := AppendMessage(tx, meshID, m, to)
		return err
	})
	return mid
}

// randomKeys returns n random recipient keys, spread over the key space as
// real public keys are.
func randomKeys(n int) []string {
	out := make([]string, n)
	for i := range out {
		var k [32]byte
		rand.Read(k[:])
		out[i] = hex.EncodeToString(k[:])
	}
	return out
}

// TestBroadcastQueuePagesArePacked: a broadcast puts one queue entry in
// each of its recipients' ranges of the queue; the pages they take are
// packed full, not left half empty by bbolt's default split (each of
// those pages is written by the send's commit and again by every commit
// of acks that settles an entry in it).
func TestBroadcastQueuePagesArePacked(t *testing.T) {
	s := newMeshStore(t)
	recipients := randomKeys(1000)
	broadcastTo(t, s, recipients)
	mustView(t, s, func(tx *Tx) error {
		st := meshBucket(tx, meshID).Bucket(bQueue).b.Stats()
		if st.KeyN != len(recipients) {
			t.Fatalf("%d queue entries, want %d", st.KeyN, len(recipients))
		}
		if fill := float64(st.LeafInuse) / float64(st.LeafAlloc); fill < 0.85 {
			t.Errorf("the queue's %d leaf pages are %.0f %% full, want at least 85 %%", st.LeafPageN, 100*fill)
		}
		return nil
	})
}

// TestBroadcastAcksDoNotCopyThePush: the push of a message to many
// recipients is kept apart from its recipients' count, as a large one's
// is, so each ack rewrites the count alone instead of copying the push;
// the push is read back whole until the last recipient settles and goes
// with it.
func TestBroadcastAcksDoNotCopyThePush(t *testing.T) {
	s := newMeshStore(t)
	recipients := randomKeys(manyRecipients)
	mid := broadcastTo(t, s, recipients)
	var want []byte
	mustView(t, s, func(tx *Tx) error {
		if v := meshBucket(tx, meshID).Bucket(bBodies).Get([]byte(mid)); len(v) != 1 || v[0] != manyRecipients {
			t.Errorf("the body record is %d bytes, want the count alone", len(v))
		}
		m, err := GetMessage(tx, meshID, mid)
		if err != nil {
			return err
		}
		want = m.Push
		return nil
	})
	if record, own := bodyState(t, s, mid); !record || !own {
		t.Fatalf("body record %v, own bucket %v: want both", record, own)
	}
	for i, r := range recipients {
		mustUpdate(t, s, func(tx *Tx) error {
			out, err := Ack(tx, meshID, r, []string{mid}, 2000)
			if err == nil && (len(out) != 1 || out[0].Message == nil) {
				t.Errorf("ack %d settled %+v", i, out)
			}
			return err
		})
		record, own := bodyState(t, s, mid)
		if last := i == len(recipients)-1; record == last || own == last {
			t.Fatalf("after %d acks: body record %v, own bucket %v", i+1, record, own)
		}
		if i == len(recipients)-2 {
			mustView(t, s, func(tx *Tx) error {
				m, err := GetMessage(tx, meshID, mid)
				if err == nil && !bytes.Equal(m.Push, want) {
					t.Errorf("the push read back before the last ack differs")
				}
				return err
			})
		}
	}
}

// TestBroadcastAppendsInKeyOrder: a message's queue entries and delivery
// records are put in the order of their keys (the recipients'), each one
// at its node's end, rather than in the order the recipients were given
// (bbolt moves every entry after a key inserted before them); the
// sequence numbers still come back in the recipients' order.
func TestBroadcastAppendsInKeyOrder(t *testing.T) {
	s := newMeshStore(t)
	recipients := randomKeys(50)
	m := msg(ulid.Make().String(), sender, 1000, true)
	to := make([]NewDelivery, len(recipients))
	for i, r := range recipients {
		to[i] = NewDelivery{Recipient: r}
	}
	var seqs []uint64
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		seqs, err = AppendMessage(tx, meshID, m, to)
		return err
	})
	for i, r := range recipients {
		got := scan(t, s, r, 0)
		if len(got) != 1 || got[0].Seq != seqs[i] || got[0].ID != m.ID {
			t.Fatalf("recipient %d: queue %+v, want %s at seq %d", i, got, m.ID, seqs[i])
		}
		for j, o := range recipients {
			if (r < o) != (seqs[i] < seqs[j]) {
				t.Fatalf("recipient %d (seq %d) and %d (seq %d): appended out of key order", i, seqs[i], j, seqs[j])
			}
		}
	}
}
