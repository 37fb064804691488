package broker

import (
	"fmt"
	"testing"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// TestLastSeenWritesAreBatched: a member whose presences come and go in
// a loop (bench --adversary's churn) has its lastSeenAt written to the
// store about once a second, not once per connection: each write was a
// member read, decode, encode and write on the committer every mesh
// shares. The last time is stored all the same, and one that waits is
// written when the broker shuts down.
func TestLastSeenWritesAreBatched(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.PresenceRate = 0 })
	alice := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, alice, "team", "bob")
	ms := b.hub.mesh(bob.meshID)
	inMemory := func() int64 {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		return ms.members[bob.pub()].LastSeenAt
	}
	stored := func() int64 {
		var m *store.Member
		if err := b.store.View(func(tx *store.Tx) error {
			var err error
			m, err = store.GetMember(tx, bob.meshID, bob.memberID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return m.LastSeenAt
	}
	commits := func() float64 { return counterValue(t, b, "claudemesh_store_commit_seconds_count", "") }

	before, start := commits(), time.Now()
	const n = 20
	for i := range n {
		r := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = fmt.Sprintf("churn%d", i); h.Role = wire.RoleCLI })
		r.closeClean()
		waitFor(t, fmt.Sprintf("presence %d detached", i), func() bool {
			ms.mu.Lock()
			defer ms.mu.Unlock()
			return ms.conns[bob.pub()] == nil
		})
	}
	elapsed := time.Since(start)
	last := inMemory()
	waitFor(t, "the last connection's time to be stored", func() bool { return stored() == last })
	got := commits() - before
	if limit := 2 + elapsed.Seconds()/seenEvery.Seconds(); got > limit {
		t.Fatalf("%d connections ended in %v took %v commits, want at most %.1f", n, elapsed.Round(time.Millisecond), got, limit)
	}

	// One more waits for the second to end; shutdown writes it.
	r := connect(t, b, bob, true, func(h *wire.Hello) { h.SessionID = "final"; h.Role = wire.RoleCLI })
	r.closeClean()
	waitFor(t, "the final presence detached", func() bool {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		return ms.conns[bob.pub()] == nil && ms.members[bob.pub()].LastSeenAt > last
	})
	final := inMemory()
	path := b.StorePath()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := store.OpenLocal(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var m *store.Member
	if err := s.View(func(tx *store.Tx) error {
		var err error
		m, err = store.GetMember(tx, bob.meshID, bob.memberID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if m.LastSeenAt != final {
		t.Fatalf("after shutdown the stored lastSeenAt is %d, want the last connection's %d", m.LastSeenAt, final)
	}
}
