package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"claudemesh/web"
)

// holdRequests holds the page's requests whose URL matches pattern
// (DevTools wildcards) until release, which lets them through.
func (b *browser) holdRequests(pattern string) (release func()) {
	b.t.Helper()
	var mu sync.Mutex
	var held []fetch.RequestID
	released := false
	cont := func(id fetch.RequestID) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: id})
	}
	chromedp.Listen(b.ctx, func(ev any) {
		e, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if released {
			go cont(e.RequestID)
			return
		}
		held = append(held, e.RequestID)
	})
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}}); err != nil {
		b.t.Fatalf("intercepting %s: %v", pattern, err)
	}
	return func() {
		mu.Lock()
		ids := held
		held, released = nil, true
		mu.Unlock()
		for _, id := range ids {
			cont(id)
		}
	}
}

// After a reload the page opens the thread named in its address once the
// sidebar's lists are loaded. A thread the user opened meanwhile (the
// people list comes first; on a loaded machine the threads' list came
// seconds later) was replaced by it: the page jumped to the old thread
// under the user (TestWebChat/topic, once under load, waited for a topic's
// join bar on the thread it had left). The user's choice stays.
func TestWebReloadKeepsTheThreadOpenedWhileItLoads(t *testing.T) {
	t.Parallel()
	key := func(c string) string { return strings.Repeat(c, 64) }
	alice, bob, carol := key("a"), key("b"), key("c")
	now := time.Now().UnixMilli()
	api := fakeDaemonAPI(map[string]any{
		"/v1/web/state": map[string]any{"lastEventId": "0", "meshes": []any{map[string]any{
			"slug": "m", "meshId": "mesh1", "name": "Team", "displayName": "alice", "pubkey": alice, "role": "member", "state": "open"}}},
		"/v1/members": []any{
			map[string]any{"pubkey": alice, "displayName": "alice"},
			map[string]any{"pubkey": bob, "displayName": "bob"},
			map[string]any{"pubkey": carol, "displayName": "carol"},
		},
		"/v1/peers": []any{
			map[string]any{"pubkey": bob, "memberPubkey": bob, "displayName": "bob", "role": "cli", "online": true},
			map[string]any{"pubkey": carol, "memberPubkey": carol, "displayName": "carol", "role": "cli", "online": true},
		},
		"/v1/web/threads": []any{
			map[string]any{"mesh": "m", "thread": carol, "kind": "dm", "name": "carol", "lastAt": now, "lastPreview": "from carol", "unread": 0},
			// A group only this list names: its row says the list came.
			map[string]any{"mesh": "m", "thread": "@ops", "kind": "group", "name": "@ops", "lastAt": now, "lastPreview": "in ops", "unread": 0},
		},
	})
	srv, err := web.New(web.Options{Addr: "127.0.0.1:0", API: api})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(srv.Close)
	br := newBrowser(t, 1280, 800)
	link, _ := srv.LoginURL()
	br.do("login", chromedpNavigate(link))
	br.openThread(carol, "carol")

	release := br.holdRequests("*/web/threads*")
	t.Cleanup(release)
	br.do("reload", chromedp.Reload())
	br.openThread(bob, "bob")
	release()
	br.waitJS("the threads' list", peerButton("@ops"), 10*time.Second)
	if got := eval[string](br, `document.getElementById('thread-title').textContent`); got != "bob" {
		t.Fatalf("the open thread is %q once the page loaded, not bob, which the user opened", got)
	}
}
