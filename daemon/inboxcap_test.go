package daemon

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/broker"
	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// The inbox has a size cap (issue 12 item 7: a flood grew a victim's
// daemon.db by 244 MB in 20 s): past it the oldest seen rows are dropped,
// never an unseen one, and `daemon status` warns while unseen rows alone
// hold it over the cap.
func TestInboxCapDropsOldestSeenRowsAndWarns(t *testing.T) {
	const limit = 40 << 10
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	bob := e.daemonWith("bob", Options{InboxMaxBytes: limit, testNoSenderShare: true})
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	body := strings.Repeat("y", 3000) // 20 rows: over the cap, under twice it
	send := func(from, n int) {
		for i := from; i < from+n; i++ {
			if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: fmt.Sprintf("%03d %s", i, body)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	status := func() localapi.Status { return bob.status(t) }
	send(0, 20)
	waitFor(t, 20*time.Second, "20 rows", func() bool { return len(bob.inbox(t)) == 20 })
	// All unseen: kept, over the cap, and said so.
	st := status()
	if st.Inbox == nil || !st.Inbox.OverCap || st.Inbox.UnseenHeld != 20 || st.Inbox.Bytes <= limit || len(st.Warnings) == 0 || !strings.Contains(st.Warnings[0], "over its cap") {
		t.Fatalf("status with 20 unseen rows over the cap: %+v %q", st.Inbox, st.Warnings)
	}
	if n := len(bob.inbox(t)); n != 20 {
		t.Fatalf("an unseen row was dropped: %d rows", n)
	}
	// Once seen, the oldest go until the inbox fits.
	var rows []localapi.InboxRow
	bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
	st = status()
	if st.Inbox.OverCap || st.Inbox.Bytes > limit || st.Inbox.DroppedSeen == 0 || len(st.Warnings) == 0 || !strings.Contains(st.Warnings[0], "dropped") {
		t.Fatalf("status after marking seen: %+v %q", st.Inbox, st.Warnings)
	}
	kept := bob.inbox(t)
	if len(kept) == 0 || len(kept)+int(st.Inbox.DroppedSeen) != 20 || !strings.HasPrefix(kept[0].Body, "019 ") {
		t.Fatalf("%d rows kept, %d dropped; the newest is %.3q", len(kept), st.Inbox.DroppedSeen, kept[0].Body)
	}
	// New (unseen) rows push out more of the old seen ones, never
	// themselves.
	send(20, 5)
	waitFor(t, 20*time.Second, "the new rows, and the inbox trimmed under its cap", func() bool {
		rows := bob.inbox(t)
		return len(rows) > 0 && strings.HasPrefix(rows[0].Body, "024 ") && status().Inbox.Bytes <= limit
	})
	unseen := 0
	oldest := 100
	for _, r := range bob.inbox(t) {
		if r.SeenAt == 0 {
			unseen++
		}
		n, _ := strconv.Atoi(r.Body[:3])
		oldest = min(oldest, n)
	}
	if unseen != 5 {
		t.Fatalf("%d unseen rows kept, want 5", unseen)
	}
	if oldest <= 20-len(kept) {
		t.Fatalf("after 5 more the oldest row is still %d", oldest)
	}
}

// At twice its cap, with unseen rows only, the inbox is full: new messages
// are not stored and not acked, so they wait on the broker, and arrive
// with its redelivery once rows are read. Nothing is lost and daemon.db
// stays bounded.
func TestFullInboxLeavesMessagesOnTheBroker(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	bob := e.daemonWith("bob", Options{InboxMaxBytes: limit, testNoSenderShare: true})
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	body := strings.Repeat("w", 4000)
	const n = 15
	for i := range n {
		if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: fmt.Sprintf("%03d %s", i, body)}); err != nil {
			t.Fatal(err)
		}
	}
	status := func() localapi.Status { return bob.status(t) }
	delivered := func() int { return alice.outboxCount(t, localapi.StatusDelivered) }
	waitFor(t, 20*time.Second, "bob's inbox to fill", func() bool { return status().Inbox.Full })
	st := status()
	if rows := len(bob.inbox(t)); rows >= n || st.Inbox.UnseenHeld != rows || len(st.Warnings) == 0 || !strings.Contains(st.Warnings[0], "stay on the broker") {
		t.Fatalf("full inbox: %d rows, %+v %q", rows, st.Inbox, st.Warnings)
	}
	if k := delivered(); k >= n {
		t.Fatalf("%d of %d delivered: the full inbox acked what it did not keep", k, n)
	}
	// Reading makes room; the broker's redelivery brings the rest.
	read := map[string]bool{}
	for {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
		for _, r := range rows {
			if len(r.Body) >= 3 {
				read[r.Body[:3]] = true
			}
		}
		if delivered() == n && len(read) == n {
			break
		}
		waitFor(t, 20*time.Second, "more of alice's messages", func() bool {
			rows := bob.inbox(t)
			return (delivered() == n && len(read) == n) || (len(rows) > 0 && rows[0].SeenAt == 0)
		})
	}
	if st := status(); st.Inbox.Full || st.Inbox.Bytes > 2*limit+8<<10 {
		t.Fatalf("after reading: %+v", st.Inbox)
	}
}

// A fetch of the broker's queue (`inbox` syncs before it lists) that
// crosses the inbox's hard limit stores the pushes up to it and acks only
// those: the rest stay on the broker and come with a later fetch. It acked
// the whole page, and the broker dropped what was not stored while the
// senders read "delivered" (a new user's trial). The broker here never
// redelivers on its own, so only the fetch brings anything once the inbox
// is full.
func TestInboxFetchAcksOnlyWhatItStored(t *testing.T) {
	const limit = 20000
	e := newEnvWith(t, func(cfg *broker.Config) { cfg.RedeliverAfter = time.Hour })
	e.join("bob")
	alice := e.daemon("alice")
	bob := e.daemonWith("bob", Options{InboxMaxBytes: limit, testNoSenderShare: true})
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	send := func(label string, size int) {
		t.Helper()
		if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: label + " " + strings.Repeat("y", size)}); err != nil {
			t.Fatal(err)
		}
	}
	status := func() localapi.Status { return bob.status(t) }
	outbox := func(st string) int { return alice.outboxCount(t, st) }
	list := func(query string) map[string]bool {
		var rows []localapi.InboxRow
		if _, err := bob.api.Do(ctx, "GET", "/v1/inbox?"+query, nil, &rows); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, r := range rows {
			label, _, _ := strings.Cut(r.Body, " ")
			got[label] = true
		}
		return got
	}
	// Three large messages fill the inbox (the third reaches twice its
	// cap); the next seven wait on the broker, pushed but not acked.
	for _, l := range []string{"big1", "big2", "big3"} {
		send(l, 15000)
	}
	waitFor(t, 20*time.Second, "bob's inbox at its hard limit", func() bool { return status().Inbox.Bytes >= 2*limit })
	for _, l := range []string{"big4", "big5"} {
		send(l, 15000)
	}
	mids := []string{"mid0", "mid1", "mid2", "mid3", "mid4"}
	for _, l := range mids {
		send(l, 5000)
	}
	waitFor(t, 20*time.Second, "the broker to hold alice's seven", func() bool { return outbox(localapi.StatusSent) == 7 && status().Inbox.Full })
	waitFor(t, 20*time.Second, "bob's daemon keeping the seven pushes", func() bool {
		bob.d.parked.mu.Lock()
		defer bob.d.parked.mu.Unlock()
		return len(bob.d.parked.items) == 7
	})
	// Reading makes room for two large ones (the oldest seen rows go), and
	// the daemon stores the pushes it held at once, as far as they fit.
	list("markSeen=true")
	waitFor(t, 20*time.Second, "big4 and big5 stored once room was made", func() bool {
		got := list("")
		return got["big4"] && got["big5"]
	})
	// big4 and big5 now hold the inbox within 9 KB of its hard limit
	// (big3, read, is dropped for them): a fetch brings what the broker
	// still has — the five 5 KB ones, and big4 and big5 again while their
	// acks are on their way — and stores at most two of the five.
	got := list("sync=true")
	var left []string
	for _, l := range mids {
		if !got[l] {
			left = append(left, l)
		}
	}
	if !got["big4"] || !got["big5"] || len(left) < 3 {
		t.Fatalf("after the first fetch bob has %v, want big4 and big5 and at most two of the five", got)
	}
	// The fetch acked only what it stored: the broker keeps, for bob,
	// exactly the ones he did not (a wrong ack never comes back, so this
	// waits only for big4's and big5's acks to be committed).
	mesh := e.meshes["bob"]
	key, _ := cmcrypto.ParseSecretKey(mesh.SecretKey)
	held := func() []string {
		c, err := client.Dial(ctx, client.MeshIdentity{MeshID: mesh.MeshID, MemberID: mesh.MemberID, BrokerURL: mesh.BrokerURL,
			BrokerPubkey: mesh.BrokerPubkey, Member: key}, client.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		q, err := c.FetchQueued(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, rp := range q.Messages {
			if rp.Push == nil {
				continue
			}
			body, _, err := client.Open(rp.Push, mesh.MeshID, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			label, _, _ := strings.Cut(body, " ")
			out = append(out, label)
		}
		return out
	}
	var onBroker []string
	waitFor(t, 20*time.Second, fmt.Sprintf("the broker to hold for bob exactly the ones he did not store, %v", left), func() bool {
		onBroker = held()
		return slices.Equal(onBroker, left)
	})
	// Reading again makes room, and the next fetch brings the rest.
	list("markSeen=true")
	// (Rows read are the first the cap drops: what was listed once counts.)
	read := maps.Clone(got)
	waitFor(t, 20*time.Second, "the rest of the five", func() bool {
		maps.Copy(read, list("sync=true&markSeen=true"))
		for _, l := range mids {
			if !read[l] {
				return false
			}
		}
		return true
	})
	waitFor(t, 20*time.Second, "every message delivered", func() bool { return outbox(localapi.StatusDelivered) == 10 })
}

// Topic posts keep to the inbox's hard limit too (a new user's trial): past it
// they are not stored, they stay in the topic's history on the broker, and
// the catch-up brings every one of them, once, when rows are read.
func TestFullInboxLeavesTopicPostsOnTheBroker(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	bob := e.daemonWith("bob", Options{InboxMaxBytes: limit, TopicSweep: 300 * time.Millisecond, testNoSenderShare: true})
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "flood", Plaintext: true}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.api.Do(ctx, "POST", "/v1/topics/flood/join", localapi.TopicMeshRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("t", 4000)
	const n = 15
	for i := range n {
		alice.post(t, "flood", fmt.Sprintf("%03d %s", i, body))
	}
	status := func() localapi.Status { return bob.status(t) }
	waitFor(t, 20*time.Second, "bob's inbox to fill with topic posts", func() bool { return status().Inbox.Full })
	waitFor(t, 20*time.Second, "alice's posts in the topic's history", func() bool { return len(alice.messages(t, "flood").Messages) == n })
	if st := status(); len(bob.inbox(t)) >= n || st.Inbox.Bytes > 2*limit+8<<10 {
		t.Fatalf("full inbox: %d rows, %+v", len(bob.inbox(t)), st.Inbox)
	}
	// Reading makes room; the catch-up brings the rest, each post once.
	read := map[string]int{}
	for len(read) < n {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
		for _, r := range rows {
			if r.SeenAt == 0 && len(r.Body) >= 3 {
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
	if st := status(); st.Inbox.Full || st.Inbox.Bytes > 2*limit+8<<10 {
		t.Fatalf("after reading: %+v", st.Inbox)
	}
}

// Two paths that store rows at once (live pushes on the inbox worker, a
// topic's catch-up, a fetch's page) share the hard limit: each used to
// check the room left before the other's rows were counted, and each took
// all of it (a catch-up and live posts filled an inbox to 51 KB of a
// 40 KB limit).
func TestInboxStorePathsShareTheHardLimit(t *testing.T) {
	const limit = 16 << 10
	e := newEnv(t)
	e.join("bob")
	bob := e.daemonWith("bob", Options{InboxMaxBytes: limit, testNoSenderShare: true})
	bob.waitOpen(t)
	var m *meshRT
	bob.d.mu.Lock()
	for _, rt := range bob.d.meshes {
		m = rt
	}
	bob.d.mu.Unlock()
	sender, _ := cmcrypto.GenerateIdentity()
	topicID := client.NewID()
	body := strings.Repeat("t", 4000)
	post := func(i int) *wire.Push {
		return &wire.Push{Type: wire.TypePush, MessageID: client.NewID(), MeshID: m.cfg.MeshID, Kind: wire.KindTopic,
			TargetSpec: "#" + topicID, SenderPubkey: sender.PublicHex(), SenderName: "carol", BodyVersion: wire.BodyPlaintext,
			Topic: &wire.TopicRef{ID: topicID, Name: "flood"}, CreatedAt: time.Now().UnixMilli(),
			Ciphertext: cmcrypto.EncodeB64([]byte(fmt.Sprintf("%03d %s", i, body)))}
	}
	// 16 stores at once, each of one 4 KB post: room for 8 at most.
	const n = 16
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := post(i)
			<-start
			bob.d.storeTopicPosts(m, topicID, []*wire.Push{p}, map[string]bool{})
		}()
	}
	close(start)
	wg.Wait()
	// Up to the hard limit and the row that reaches it.
	if st := bob.status(t); st.Inbox.Bytes > 2*limit+5<<10 {
		t.Fatalf("%d rows stored at once: %+v, want at most %d bytes", len(bob.inbox(t)), st.Inbox, 2*limit+5<<10)
	}
}

// daemon status names a small cap in a unit it has one of: 20,000 bytes is
// not "0.0 MiB".
func TestHumanSizeNeverRoundsToZero(t *testing.T) {
	for n, want := range map[int64]string{20000: "19.5 KiB", 512: "512 bytes", 1023: "1023 bytes", 256 << 20: "256.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}
