package daemon

import (
	"fmt"
	"maps"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// fillInbox stores n received DMs of about 1 KiB from 20 senders in m's
// inbox, every other one unread, as the inbox worker would.
func fillInbox(t testing.TB, d *Daemon, m *meshRT, n int) {
	t.Helper()
	body := strings.Repeat("x", 1000)
	now := time.Now().UnixMilli()
	for done := 0; done < n; {
		err := d.db.Update(func(tx *bolt.Tx) error {
			for i := 0; i < 1000 && done < n; i, done = i+1, done+1 {
				row := &inboxRow{Mesh: m.cfg.Slug, MeshID: m.cfg.MeshID, MessageID: fmt.Sprintf("m%08d", done), Kind: wire.KindBox,
					SenderPubkey: fmt.Sprintf("%064x", done%20), SenderName: fmt.Sprintf("peer%d", done%20), RecipientPubkey: m.key.PublicHex(),
					RecipientKind: recipientMember, Body: body, Verified: true, Priority: wire.PriorityNext, ReceivedAt: now + int64(done)}
				if done%2 == 0 {
					row.SeenAt = now
				}
				if _, err := putInboxRow(tx, row, ""); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// BenchmarkWebThreads: the chat page's conversation list (GET
// /v1/web/threads) over an inbox of 1,000 or 20,000 rows, nothing changed
// since the last request: what every refresh of the page's side bar costs
// the daemon (after the page's first request, which counts every row).
func BenchmarkWebThreads(b *testing.B) {
	for _, n := range []int{1_000, 20_000} {
		b.Run(fmt.Sprintf("rows=%d", n), func(b *testing.B) {
			alice, m := idleOutbox(b)
			fillInbox(b, alice.d, m, n)
			get := func() {
				w := httptest.NewRecorder()
				alice.d.handleWebThreads(w, httptest.NewRequest("GET", "/v1/web/threads?mesh="+m.cfg.Slug, nil))
				if w.Code != 200 || !strings.Contains(w.Body.String(), `"unread":`) {
					b.Fatalf("threads: %d %s", w.Code, w.Body.String())
				}
			}
			get() // the page's first request (the cache's first count)
			b.ResetTimer()
			for b.Loop() {
				get()
			}
		})
	}
}

// threadsByFullScan is the conversation list counted from scratch, as
// handleWebThreads did on every request before the cache: the reference
// the cache must agree with.
func threadsByFullScan(t *testing.T, d *Daemon, m *meshRT) map[string]localapi.WebThread {
	t.Helper()
	d.threadsChanged()
	list, err := d.meshThreadsNow(m)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]localapi.WebThread{}
	for _, th := range list {
		out[th.Thread] = th
	}
	return out
}

// TestWebThreadsCacheFollowsTheInbox: the cached conversation list agrees
// with one counted from scratch after new rows, rows marked seen (read
// before and after the cache), and deletions.
func TestWebThreadsCacheFollowsTheInbox(t *testing.T) {
	alice, m := idleOutbox(t)
	d := alice.d
	check := func(when string) {
		t.Helper()
		list, err := d.meshThreadsNow(m)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]localapi.WebThread{}
		for _, th := range list {
			got[th.Thread] = th
		}
		want := threadsByFullScan(t, d, m)
		// UpTo is the last event the counts include: an event published
		// between the two reads (the daemon's own status events run on)
		// moves the later read's UpTo without changing a count.
		for k, th := range got {
			if w, ok := want[k]; ok && th.UpTo <= w.UpTo {
				th.UpTo = w.UpTo
				got[k] = th
			}
		}
		if !maps.Equal(got, want) {
			t.Fatalf("%s: the cache says\n%+v\nfrom scratch\n%+v", when, got, want)
		}
	}
	fillInbox(t, d, m, 200)
	check("first read")
	unread := func() []string {
		var ids []string
		for _, r := range alice.inbox(t) {
			if r.SeenAt == 0 {
				ids = append(ids, r.ID)
			}
		}
		return ids
	}
	ids := unread()
	if _, err := d.markSeen(ids[:30], nil); err != nil {
		t.Fatal(err)
	}
	check("30 marked seen")
	fillInbox(t, d, m, 50) // new rows, some of them unread
	if _, err := d.markSeen(unread()[:5], nil); err != nil {
		t.Fatal(err)
	}
	check("new rows, some read before the cache saw them")
	if _, err := d.deleteInbox(m.cfg.Slug, 0, 7); err != nil {
		t.Fatal(err)
	}
	check("a row deleted")
	// A page's read between the write that marks rows seen and the
	// cache's update of the counts (a review's interleaving): the rows it
	// had counted unread before stayed so.
	check("before the interleaving")
	d.opts.testSeenWritten = func() {
		if _, err := d.meshThreadsNow(m); err != nil {
			t.Error(err)
		}
	}
	if _, err := d.markSeen(unread()[:5], nil); err != nil {
		t.Fatal(err)
	}
	d.opts.testSeenWritten = nil
	check("a read between the seen write and the count")
	if len(unread()) == 0 || len(threadsByFullScan(t, d, m)) == 0 {
		t.Fatal("nothing left to check")
	}
}
