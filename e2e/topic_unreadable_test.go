package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A new member of a topic whose only key holder left: nobody can share the
// key, and tail and history say so (not "a member shares it"). After the
// member rotates, tail shows what it can read — its own posts, live too —
// and says once how many older posts stay unreadable (their generation's
// key never comes: members share only the current one) instead of waiting
// for them; history labels such a post unreadable, not as a forged one.
// Both paths; SIGTERM ends the tail with 130.
func TestTopicTailLeavesOutPostsNobodyCanShare(t *testing.T) {
	t.Parallel()
	onBothPaths(t, func(t *testing.T, viaDaemon bool) {
		b := startBroker(t, t.TempDir(), "127.0.0.1:0")
		u := setupMesh(t, b, "alice", "carol")
		alice, carol := u[0], u[1]
		if viaDaemon {
			alice.startDaemon()
			carol.startDaemon()
			alice.waitDaemonOpen()
			carol.waitDaemonOpen()
		}
		inHistory := func(who *user, body string) {
			t.Helper()
			eventually(t, 20*time.Second, body+" in the history", func() bool {
				return slices.ContainsFunc(who.history("rel"), func(l topicLine) bool { return l.Body == body })
			})
		}
		alice.ok("topic", "create", "rel")
		alice.ok("topic", "post", "rel", "first post")
		inHistory(alice, "first post")
		alice.ok("topic", "leave", "rel")
		carol.ok("topic", "join", "rel")

		// Nobody holds the key: no member will share it.
		e := carol.fails(1, "topic_key_missing", "topic", "tail", "rel", "--no-follow")
		if !strings.Contains(e.Error.Message, "no member does") {
			t.Fatalf("tail --no-follow without any key holder: %+v", e.Error)
		}
		tl := carol.tail("rel")
		w := tl.waitFor("the waiting line", func(l topicLine) bool { return l.WaitingForKey })
		if !strings.Contains(w.Message, "nobody in #rel holds its current key") || !strings.Contains(w.Message, "topic rotate rel") {
			t.Fatalf("waiting line: %+v", w)
		}

		// A rotation gives carol a key: the running tail shows her posts.
		carol.ok("topic", "rotate", "rel")
		carol.ok("topic", "post", "rel", "carol can post")
		tl.waitBody("carol can post")
		carol.ok("topic", "post", "rel", "live")
		tl.waitBody("live")
		n := tl.waitFor("the unreadable notice", func(l topicLine) bool { return l.UnreadablePosts > 0 })
		if n.UnreadablePosts != 1 || !slices.Equal(n.KeyGens, []int{1}) || n.ID != "" {
			t.Fatalf("notice: %+v", n)
		}
		for _, l := range tl.all() {
			if l.ID != "" && l.Body != "carol can post" && l.Body != "live" {
				t.Fatalf("tail printed %+v", l)
			}
		}
		tl.stopWith(syscall.SIGTERM)

		// --no-follow: the same, exit 0.
		inHistory(carol, "live")
		r := carol.ok("topic", "tail", "rel", "--no-follow", "--json")
		var notices, posts []topicLine
		for _, ln := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			var l topicLine
			if err := json.Unmarshal([]byte(ln), &l); err != nil {
				t.Fatalf("line %q: %v", ln, err)
			}
			if l.ID == "" {
				notices = append(notices, l)
			} else {
				posts = append(posts, l)
			}
		}
		if len(notices) != 1 || notices[0].UnreadablePosts != 1 || len(posts) != 2 ||
			posts[0].Body != "carol can post" || posts[1].Body != "live" || !posts[1].Verified {
			t.Fatalf("tail --no-follow: %s", r)
		}
		r = carol.ok("topic", "tail", "rel", "--no-follow")
		if !strings.Contains(r.stderr, "1 older post of #rel cannot be read") || strings.Contains(r.stderr, "waiting") {
			t.Fatalf("tail --no-follow (human): %s", r)
		}

		// history shows the old post as unreadable, not as forged.
		r = carol.ok("topic", "history", "rel")
		if !strings.Contains(r.stdout, "unreadable post") || !strings.Contains(r.stdout, "key missing") ||
			strings.Contains(r.stdout, "unverified") || !strings.Contains(r.stdout, "carol: live") {
			t.Fatalf("history: %s", r)
		}
	})
}
