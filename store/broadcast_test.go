package store

import (
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
