package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// One member posting to a topic cannot fill another's inbox alone: a topic
// post counts against its sender's share (half the cap in unseen rows) as a
// DM does. alice posts 15 posts of 4 KB to #flood; bob (cap 16 KiB, share
// 8 KiB) keeps at most her share and one post, not the 32 KiB hard limit;
// carol's post to #flood after them, and her DM, are stored; daemon status
// names alice. What was refused stays in the topic's history: as bob
// reads, the catch-up brings it (started by the reading: the sweep here is
// an hour), each post once, in alice's order, none lost.
func TestTopicPostsKeepToTheSendersShare(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	alice := e.daemon("alice")
	bob := e.daemonWith("bob", Options{InboxMaxBytes: limit, TopicSweep: time.Hour})
	carol := e.daemon("carol")
	alice.waitOpen(t)
	bob.waitOpen(t)
	carol.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "flood", Plaintext: true}, nil); err != nil {
		t.Fatal(err)
	}
	for _, rd := range []*runningDaemon{bob, carol} {
		if _, err := rd.api.Do(ctx, "POST", "/v1/topics/flood/join", localapi.TopicMeshRequest{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	body := strings.Repeat("t", 4000)
	const n = 15
	for i := range n {
		alice.post(t, "flood", fmt.Sprintf("%03d %s", i, body))
	}
	waitFor(t, 20*time.Second, "alice's posts in the topic's history", func() bool { return len(alice.messages(t, "flood").Messages) == n })
	// carol's post and DM come after alice's posts on bob's connection:
	// once they are stored, every post was handled.
	carol.post(t, "flood", "carol in the flood")
	if _, err := carol.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "from carol"}); err != nil {
		t.Fatal(err)
	}
	has := func(body string) bool {
		for _, r := range bob.inbox(t) {
			if r.Body == body {
				return true
			}
		}
		return false
	}
	waitFor(t, 20*time.Second, "carol's DM in bob's inbox", func() bool { return has("from carol") })
	waitFor(t, 20*time.Second, "carol's post to #flood in bob's inbox, past alice's left in the history", func() bool { return has("carol in the flood") })
	waitFor(t, 20*time.Second, "daemon status names alice over her share", func() bool {
		st := bob.status(t)
		return len(st.Inbox.OverShare) == 1 && st.Inbox.OverShare[0].Name == "alice" && strings.Contains(strings.Join(st.Warnings, "\n"), "its share of the inbox")
	})
	if st := bob.status(t); st.Inbox.Full || st.Inbox.Bytes > limit/2+8<<10 {
		t.Fatalf("alice's topic posts alone took %d bytes of bob's inbox (share %d): %+v", st.Inbox.Bytes, limit/2, st.Inbox)
	}
	// Reading makes room; the catch-up brings the rest, each post once,
	// in alice's order.
	read := map[string]int{}
	order := map[int]string{} // row seq → alice's post number
	for len(read) < n {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
		for _, r := range rows {
			if r.SeenAt == 0 && r.Topic == "flood" && r.SenderName == "alice" && len(r.Body) >= 3 {
				read[r.Body[:3]]++
				seq, _ := strconv.Atoi(r.ID)
				order[seq] = r.Body[:3]
			}
		}
		if len(read) == n {
			break
		}
		waitFor(t, 20*time.Second, "more of alice's topic posts", func() bool {
			rows := bob.inbox(t)
			return len(rows) > 0 && rows[0].SeenAt == 0
		})
	}
	for k, c := range read {
		if c != 1 {
			t.Fatalf("post %s read %d times", k, c)
		}
	}
	seqs := slices.Sorted(maps.Keys(order))
	for i := 1; i < len(seqs); i++ {
		if order[seqs[i]] < order[seqs[i-1]] {
			t.Fatalf("alice's posts stored out of her order: %v", order)
		}
	}
	if st := bob.status(t); st.Inbox.Full || len(st.Inbox.OverShare) != 0 || st.Inbox.Bytes > 2*limit+8<<10 {
		t.Fatalf("after reading: %+v", st.Inbox)
	}
}

// The catch-up keeps to the shares too: with bob's daemon down, alice
// floods #flood and carol posts after her; at its start the daemon's
// catch-up stores carol's post and alice's up to her share, keeps its
// cursor before alice's first post left, and, as bob reads, stores the
// rest of hers from there, each once (carol's, read again, is recognised).
func TestTopicCatchUpKeepsToTheSendersShare(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	alice, carol := e.daemon("alice"), e.daemon("carol")
	opts := Options{InboxMaxBytes: limit, TopicSweep: time.Hour}
	bob := e.daemonWith("bob", opts)
	alice.waitOpen(t)
	bob.waitOpen(t)
	carol.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "flood", Plaintext: true}, nil); err != nil {
		t.Fatal(err)
	}
	for _, rd := range []*runningDaemon{bob, carol} {
		if _, err := rd.api.Do(ctx, "POST", "/v1/topics/flood/join", localapi.TopicMeshRequest{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	bob.stop()
	body := strings.Repeat("t", 4000)
	const n = 15
	for i := range n {
		alice.post(t, "flood", fmt.Sprintf("%03d %s", i, body))
	}
	// Posts go out from each daemon's outbox: carol's, posted at once,
	// could reach the broker before alice's, and the catch-up then stored
	// it alone first (a page of its own) while the test looked.
	waitFor(t, 20*time.Second, "alice's posts in the topic's history", func() bool { return len(alice.messages(t, "flood").Messages) == n })
	carol.post(t, "flood", "carol in the flood")
	waitFor(t, 20*time.Second, "the posts in the topic's history", func() bool { return len(alice.messages(t, "flood").Messages) == n+1 })
	bob = e.daemonWith("bob", opts)
	bob.waitOpen(t)
	waitFor(t, 20*time.Second, "carol's post in bob's inbox, past alice's left in the history", func() bool {
		for _, r := range bob.inbox(t) {
			if r.Body == "carol in the flood" {
				return true
			}
		}
		return false
	})
	if st := bob.status(t); st.Inbox.Full || st.Inbox.Bytes > limit/2+8<<10 || len(st.Inbox.OverShare) != 1 {
		t.Fatalf("after the catch-up: %+v", st.Inbox)
	}
	read, carols := map[string]int{}, 0
	for len(read) < n {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
		for _, r := range rows {
			switch {
			case r.SeenAt != 0:
			case r.Body == "carol in the flood":
				carols++
			case r.Topic == "flood" && len(r.Body) >= 3:
				read[r.Body[:3]]++
			}
		}
		if len(read) == n {
			break
		}
		waitFor(t, 20*time.Second, "more of alice's topic posts", func() bool {
			rows := bob.inbox(t)
			return len(rows) > 0 && rows[0].SeenAt == 0
		})
	}
	for k, c := range read {
		if c != 1 {
			t.Fatalf("post %s read %d times", k, c)
		}
	}
	if carols != 1 {
		t.Fatalf("carol's post read %d times", carols)
	}
}

// A poster once refused for its share is not kept waiting once there is
// room: alice's posts to #flood pass her share of bob's inbox and the
// topic is held for her; bob reads, and the catch-up that reading starts
// runs while alice posts again (live, refused: the topic is held for
// her, so her post waits for the catch-up, which stores it in her order).
// That catch-up stored everything, but the topic stayed held (a post was
// left since it began), and no catch-up was started again: every later
// post of alice's waited in the topic's history until bob read something
// else or the sweep ran (an hour here). Each post is stored once.
func TestHeldTopicResumesOnceThereIsRoom(t *testing.T) {
	const limit = 32 << 10 // share 16 KiB
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	var gate atomic.Pointer[chan struct{}]
	entered := make(chan struct{}, 1)
	opts := Options{InboxMaxBytes: limit, TopicSweep: time.Hour}
	opts.testCatchUpRead = func(string) {
		if g := gate.Load(); g != nil {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-*g
		}
	}
	bob := e.daemonWith("bob", opts)
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "flood", Plaintext: true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.api.Do(ctx, "POST", "/v1/topics/flood/join", localapi.TopicMeshRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	m := bob.d.meshBySlug("team")
	var topicID string
	waitFor(t, 20*time.Second, "bob knows #flood", func() bool {
		info, ok := m.topics.topic("flood")
		topicID = info.ID
		return ok
	})
	heldGen := func() (bool, uint64) {
		m.topics.mu.Lock()
		defer m.topics.mu.Unlock()
		h := m.topics.held[topicID]
		if h == nil {
			return false, 0
		}
		return true, h.gen
	}
	body := strings.Repeat("t", 3000)
	const n = 6
	for i := range n {
		alice.post(t, "flood", fmt.Sprintf("%03d %s", i, body))
	}
	waitFor(t, 20*time.Second, "#flood held for alice's share", func() bool { held, _ := heldGen(); return held })

	// bob reads; the catch-up it starts is held at its start while alice
	// posts again.
	g := make(chan struct{})
	gate.Store(&g)
	bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, nil)
	select {
	case <-entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no catch-up after reading")
	}
	_, before := heldGen()
	alice.post(t, "flood", "006 during the catch-up")
	waitFor(t, 20*time.Second, "alice's live post left for the catch-up", func() bool { _, gen := heldGen(); return gen > before })
	gate.Store(nil)
	close(g)

	count := func(prefix string) int {
		c := 0
		for _, r := range bob.inbox(t) {
			if strings.HasPrefix(r.Body, prefix) {
				c++
			}
		}
		return c
	}
	waitFor(t, 20*time.Second, "the catch-up stores alice's post made during it", func() bool { return count("006 ") == 1 })
	alice.post(t, "flood", "007 after the catch-up")
	waitFor(t, 20*time.Second, "alice's next post in bob's inbox (nothing read since)", func() bool { return count("007 ") == 1 })
	for i := range n + 2 {
		if c := count(fmt.Sprintf("%03d ", i)); c != 1 {
			t.Fatalf("post %03d is in bob's inbox %d times", i, c)
		}
	}
	if held, _ := heldGen(); held {
		t.Fatal("#flood is still held with nothing left")
	}
}

// A held topic is not read again from its frozen cursor at every catch-up:
// alice's posts pass her share of bob's inbox and the topic is held for
// her, carol posts 40 small posts after her (stored as they come). Every sweep
// and every inbox read starts a catch-up, and each downloaded and opened
// again every post since the cursor (all of carol's, stored already) for
// as long as alice held her share. Now a catch-up reads on from where the
// last one got to, and opens none of the posts stored already; once bob
// reads, the catch-up goes back to the cursor and stores the rest of
// alice's, each post once, in her order.
func TestHeldTopicIsNotReadAgainFromItsCursor(t *testing.T) {
	const limit = 64 << 10 // share 32 KiB
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	alice := e.daemon("alice")
	var opened atomic.Int64
	opts := Options{InboxMaxBytes: limit, TopicSweep: time.Hour}
	opts.testTopicOpened = func(n int) { opened.Add(int64(n)) }
	bob := e.daemonWith("bob", opts)
	carol := e.daemon("carol")
	alice.waitOpen(t)
	bob.waitOpen(t)
	carol.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "flood", Plaintext: true}, nil); err != nil {
		t.Fatal(err)
	}
	for _, rd := range []*runningDaemon{bob, carol} {
		if _, err := rd.api.Do(ctx, "POST", "/v1/topics/flood/join", localapi.TopicMeshRequest{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	body := strings.Repeat("t", 4000)
	const n, others = 12, 40
	for i := range n {
		alice.post(t, "flood", fmt.Sprintf("%03d %s", i, body))
	}
	// carol's after alice's at the broker (each daemon sends from its
	// outbox): once carol's last is stored, every post of alice's was
	// handled.
	waitFor(t, 20*time.Second, "alice's posts in the topic's history", func() bool { return len(alice.messages(t, "flood").Messages) == n })
	for i := range others {
		carol.post(t, "flood", fmt.Sprintf("carol %d", i))
	}
	rowsOf := func() (alices map[string]int, carols int) {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?limit=0", nil, &rows)
		alices = map[string]int{}
		for _, r := range rows {
			switch {
			case strings.HasPrefix(r.Body, "carol "):
				carols++
			case r.Topic == "flood" && len(r.Body) >= 3:
				alices[r.Body[:3]]++
			}
		}
		return alices, carols
	}
	waitFor(t, 30*time.Second, "carol's posts stored", func() bool { _, c := rowsOf(); return c == others })
	m := bob.mesh(t)
	var id string
	m.topics.mu.Lock()
	for tid := range m.topics.held {
		id = tid
	}
	m.topics.mu.Unlock()
	if id == "" {
		t.Fatal("the topic is not held for alice")
	}
	alices, _ := rowsOf()
	if len(alices) >= n {
		t.Fatalf("all of alice's %d posts stored past her share", n)
	}
	// What each sweep and each inbox read does: the first reads from the
	// cursor (alice's posts left are opened again, carol's are not), the
	// next ones from where it got to.
	for round := range 3 {
		before := opened.Load()
		m.topics.catchUp(id)
		got := opened.Load() - before
		if round == 0 && got > int64(n-len(alices)) {
			t.Fatalf("the first catch-up of the held topic opened %d posts; %d of alice's are left, the rest stored already", got, n-len(alices))
		}
		if round > 0 && got != 0 {
			t.Fatalf("catch-up %d of the held topic opened %d posts, though nothing was posted or read since the last", round, got)
		}
	}
	if held, _ := m.topics.heldFor(id); !held {
		t.Fatal("the topic is no longer held, with alice still over her share")
	}
	// carol posts on: read from where the last catch-up got to, stored.
	carol.post(t, "flood", "carol after")
	waitFor(t, 20*time.Second, "carol's later post stored", func() bool { _, c := rowsOf(); return c == others+1 })
	before := opened.Load()
	m.topics.catchUp(id)
	if got := opened.Load() - before; got != 0 {
		t.Fatalf("a catch-up after carol's live post (stored) opened %d posts", got)
	}
	// bob reads: the rest of alice's posts come, each once, in her order.
	read := map[string]int{}
	order := map[int]string{}
	for len(read) < n {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
		for _, r := range rows {
			if r.SeenAt == 0 && r.Topic == "flood" && r.SenderName == "alice" && len(r.Body) >= 3 {
				read[r.Body[:3]]++
				seq, _ := strconv.Atoi(r.ID)
				order[seq] = r.Body[:3]
			}
		}
		if len(read) == n {
			break
		}
		waitFor(t, 20*time.Second, "more of alice's topic posts", func() bool {
			rows := bob.inbox(t)
			return len(rows) > 0 && rows[0].SeenAt == 0
		})
	}
	for k, c := range read {
		if c != 1 {
			t.Fatalf("post %s stored %d times", k, c)
		}
	}
	seqs := slices.Sorted(maps.Keys(order))
	for i := 1; i < len(seqs); i++ {
		if order[seqs[i]] < order[seqs[i-1]] {
			t.Fatalf("alice's posts stored out of her order: %v", order)
		}
	}
	waitFor(t, 20*time.Second, "the topic no longer held", func() bool { held, _ := m.topics.heldFor(id); return !held })
}
