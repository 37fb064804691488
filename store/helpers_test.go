package store

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/wire"
)

// testBucket holds the raw keys the group-commit tests write.
var testBucket = []byte("test")

// key returns a valid 64-hex pubkey whose raw form ends in n, so keys with
// adjacent n sit next to each other in every recipient-prefixed bucket.
func key(n int) string { return fmt.Sprintf("%064x", n) }

// id returns a ULID-shaped id (26 Crockford characters) that sorts by n.
func id(prefix string, n int) string {
	return fmt.Sprintf("%s%0*d", prefix, 26-len(prefix), n)
}

// commitLog records OnCommit observations.
type commitLog struct {
	mu    sync.Mutex
	sizes []int
}

func (c *commitLog) observe(_ time.Duration, writes int) {
	c.mu.Lock()
	c.sizes = append(c.sizes, writes)
	c.mu.Unlock()
}

func (c *commitLog) snapshot() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.sizes...)
}

func (c *commitLog) total() int {
	n := 0
	for _, s := range c.snapshot() {
		n += s
	}
	return n
}

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "data", "broker.db") }

// openAt opens the store at path and closes it when the test ends (Close is
// idempotent, so tests may close it earlier).
func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB) *Store { return openAt(t, dbPath(t), Options{}) }

func mustUpdate[F func(*Tx) error | func(*bolt.Tx) error](t testing.TB, s *Store, fn F) {
	t.Helper()
	var err error
	switch f := any(fn).(type) {
	case func(*Tx) error:
		err = s.updateTx(f)
	case func(*bolt.Tx) error:
		err = s.Update(f)
	}
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func mustView(t testing.TB, s *Store, fn func(tx *Tx) error) {
	t.Helper()
	if err := s.viewTx(fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func createTestBucket(t testing.TB, s *Store) {
	t.Helper()
	mustUpdate(t, s, func(tx *Tx) error {
		_, err := tx.CreateBucketIfNotExists(testBucket)
		return err
	})
}

func putRaw(k, v string) func(tx *bolt.Tx) error {
	return func(tx *bolt.Tx) error { return tx.Bucket(testBucket).Put([]byte(k), []byte(v)) }
}

func getRaw(t testing.TB, s *Store, k string) string {
	t.Helper()
	var v []byte
	mustView(t, s, func(tx *Tx) error {
		v = bytes.Clone(tx.Bucket(testBucket).Get([]byte(k)))
		return nil
	})
	return string(v)
}

const meshID = "01J0MESH000000000000000001"

func owner() *Member {
	return &Member{ID: "01J0MEMBER0000000000000001", Pubkey: key(0xA11CE), DisplayName: "Alice", NameKey: "alice",
		Role: wire.MemberOwner, JoinedAt: 1}
}

// newMeshStore is a store holding one mesh owned by alice.
func newMeshStore(t testing.TB) *Store {
	s := newStore(t)
	mustUpdate(t, s, func(tx *Tx) error {
		return CreateMesh(tx, Mesh{ID: meshID, Slug: "team", Name: "Team", CreatedAt: 1}, owner())
	})
	return s
}

// msg builds a message from sender with a recognisable push frame.
func msg(mid, sender string, createdAt int64, receipts bool) *Message {
	push := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: mid, Kind: wire.KindBox, SenderPubkey: sender,
		Ciphertext: "Y3Q=", ClientMessageID: "c-" + mid, CreatedAt: createdAt})
	return &Message{ID: mid, ClientMessageID: "c-" + mid, SenderPubkey: sender, SenderMember: sender, TargetSpec: "t",
		Kind: wire.KindBox, Priority: wire.PriorityNext, Fingerprint: "fp-" + mid, Push: push, Receipts: receipts,
		CreatedAt: createdAt}
}

func appendMsg(t testing.TB, s *Store, m *Message, to ...string) []uint64 {
	t.Helper()
	ds := make([]NewDelivery, len(to))
	for i, r := range to {
		ds[i] = NewDelivery{Recipient: r}
	}
	var seqs []uint64
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		seqs, err = AppendMessage(tx, meshID, m, ds)
		return err
	})
	if len(seqs) != len(to) {
		t.Fatalf("AppendMessage returned %d seqs for %d recipients", len(seqs), len(to))
	}
	return seqs
}

type queued struct {
	Seq uint64
	QueueEntry
}

func scan(t testing.TB, s *Store, recipient string, after uint64) []queued {
	t.Helper()
	var out []queued
	mustView(t, s, func(tx *Tx) error {
		return ScanQueue(tx, meshID, recipient, after, func(seq uint64, e *QueueEntry) bool {
			out = append(out, queued{seq, *e})
			return true
		})
	})
	return out
}

func scanIDs(t testing.TB, s *Store, recipient string) string {
	t.Helper()
	var ids []string
	for _, q := range scan(t, s, recipient, 0) {
		ids = append(ids, q.ID)
	}
	return strings.Join(ids, ",")
}

func ack(t testing.TB, s *Store, recipient string, now int64, ids ...string) []AckOutcome {
	t.Helper()
	var out []AckOutcome
	mustUpdate(t, s, func(tx *Tx) error {
		var err error
		out, err = Ack(tx, meshID, recipient, ids, now)
		return err
	})
	return out
}

func deliveries(t testing.TB, s *Store, mid string) []RecipientDelivery {
	t.Helper()
	var out []RecipientDelivery
	mustView(t, s, func(tx *Tx) error {
		var err error
		out, err = Deliveries(tx, meshID, mid)
		return err
	})
	return out
}

func getMsg(t testing.TB, s *Store, mid string) (*Message, error) {
	t.Helper()
	var m *Message
	var gerr error
	mustView(t, s, func(tx *Tx) error {
		m, gerr = GetMessage(tx, meshID, mid)
		return nil
	})
	return m, gerr
}

func countPending(t testing.TB, s *Store) map[string]int {
	t.Helper()
	var out map[string]int
	mustView(t, s, func(tx *Tx) error {
		var err error
		out, err = CountPending(tx, meshID)
		return err
	})
	return out
}

// ids hands out receipt ids in order.
func ids(prefix string) func() string {
	n := 0
	return func() string { n++; return id(prefix, n) }
}

// updateTx, viewTx and submitTx run record functions (which take a *Tx)
// on the bbolt committer, as the Local engine does.
func (s *Store) updateTx(fn func(tx *Tx) error) error { return s.Update(wrapFn(fn)) }
func (s *Store) viewTx(fn func(tx *Tx) error) error   { return s.View(wrapFn(fn)) }
func (s *Store) submitTx(fn func(tx *Tx) error, after func(error)) error {
	return s.Submit(wrapFn(fn), after)
}
