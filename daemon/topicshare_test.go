package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// One member posting to a topic cannot fill another's inbox alone: a topic
// post counts against its sender's share (half the cap in unseen rows) as a
// DM does. alice posts 15 posts of 4 KB to #flood; bob (cap 16 KiB, share
// 8 KiB) keeps at most her share and one post, not the 32 KiB hard limit;
// carol's DM is stored; daemon status names alice. What was refused stays
// in the topic's history: as bob reads, the catch-up brings it (started by
// the reading: the sweep here is an hour), each post once, none lost.
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
	if _, err := bob.api.Do(ctx, "POST", "/v1/topics/flood/join", localapi.TopicMeshRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("t", 4000)
	const n = 15
	for i := range n {
		alice.post(t, "flood", fmt.Sprintf("%03d %s", i, body))
	}
	waitFor(t, 20*time.Second, "alice's posts in the topic's history", func() bool { return len(alice.messages(t, "flood").Messages) == n })
	// carol's DM comes after alice's posts on bob's connection: once it is
	// stored, every post was handled.
	if _, err := carol.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "from carol"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "carol's DM in bob's inbox", func() bool {
		for _, r := range bob.inbox(t) {
			if r.Body == "from carol" {
				return true
			}
		}
		return false
	})
	st := bob.status(t)
	if st.Inbox.Full || st.Inbox.Bytes > limit/2+6<<10 {
		t.Fatalf("alice's topic posts alone took %d bytes of bob's inbox (share %d): %+v", st.Inbox.Bytes, limit/2, st.Inbox)
	}
	if len(st.Inbox.OverShare) != 1 || st.Inbox.OverShare[0].Name != "alice" || !strings.Contains(strings.Join(st.Warnings, "\n"), "its share of the inbox") {
		t.Fatalf("daemon status does not name alice over her share: %+v %q", st.Inbox.OverShare, st.Warnings)
	}
	// Reading makes room; the catch-up brings the rest, each post once.
	read := map[string]int{}
	for len(read) < n {
		var rows []localapi.InboxRow
		bob.api.Do(ctx, "GET", "/v1/inbox?markSeen=true", nil, &rows)
		for _, r := range rows {
			if r.SeenAt == 0 && r.Topic == "flood" && len(r.Body) >= 3 {
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
	if st := bob.status(t); st.Inbox.Full || len(st.Inbox.OverShare) != 0 || st.Inbox.Bytes > 2*limit+8<<10 {
		t.Fatalf("after reading: %+v", st.Inbox)
	}
}
