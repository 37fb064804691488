package e2e

// The page's handling of names, in a real browser against a stand-in for
// the daemon's API: names no real broker would let through today (they
// are refused in new names, possible in old ones) must still show what a
// reader could not see.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"claudemesh/web"
)

// fakeDaemonAPI answers the page's routes with fixed data.
func fakeDaemonAPI(routes map[string]any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/events" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			io.WriteString(w, ": hi\n\n")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		v, ok := routes[r.URL.Path]
		if !ok {
			v = []any{}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	})
}

// TestWebPageShowsHiddenCharactersInNames: a zero-width space or a bidi
// override in a name shows as ⟨U+200B⟩, as the CLI's SanitizeName shows
// it, and a name another key also goes by gets the sender's key prefix.
func TestWebPageShowsHiddenCharactersInNames(t *testing.T) {
	t.Parallel()
	key := func(c string) string { return strings.Repeat(c, 64) }
	alice, bobZW, bob, eve, mallory, fw, dotted := key("a"), key("b"), key("c"), key("e"), key("d"), key("f"), key("9")
	now := time.Now().UnixMilli()
	api := fakeDaemonAPI(map[string]any{
		"/v1/web/state": map[string]any{"lastEventId": "0", "meshes": []any{map[string]any{
			"slug": "m", "meshId": "mesh1", "name": "Team", "displayName": "alice", "pubkey": alice, "role": "member", "state": "open"}}},
		"/v1/members": []any{
			map[string]any{"pubkey": alice, "displayName": "alice"},
			map[string]any{"pubkey": bobZW, "displayName": "bob\u200b"},
			map[string]any{"pubkey": bob, "displayName": "bob"},
			map[string]any{"pubkey": eve, "displayName": "ali\u202ece"},
			map[string]any{"pubkey": dotted, "displayName": "AL\u0130CE"},
		},
		"/v1/peers": []any{
			map[string]any{"pubkey": bobZW, "memberPubkey": bobZW, "displayName": "bob\u200b", "role": "cli", "online": true},
		},
		"/v1/web/threads": []any{map[string]any{"mesh": "m", "thread": bobZW, "kind": "dm", "name": "bob\u200b", "lastAt": now, "lastPreview": "hi", "unread": 0}},
		"/v1/web/thread": map[string]any{"items": []any{map[string]any{"thread": bobZW, "at": now, "in": map[string]any{
			"id": "1", "messageId": "m1", "mesh": "m", "kind": "box", "senderName": "bob\u200b", "senderPubkey": bobZW,
			"senderMemberPubkey": bobZW, "senderMemberName": "bob\u200b", "verified": true, "body": "it is bob", "priority": "next",
			"receivedAt": now, "seenAt": now}},
			map[string]any{"thread": bobZW, "at": now - 1, "in": map[string]any{
				"id": "2", "messageId": "m2", "mesh": "m", "kind": "box", "senderName": "аlice", "senderPubkey": eve,
				"senderMemberPubkey": eve, "senderMemberName": "аlice", "senderLooksLike": "alice", "senderLooksLikeSelf": true,
				"verified": true, "body": "it is me, your user", "priority": "next", "receivedAt": now - 1, "seenAt": now}},
			map[string]any{"thread": bobZW, "at": now - 2, "in": map[string]any{
				"id": "3", "messageId": "m3", "mesh": "m", "kind": "box", "senderName": "alice-api (via alice)", "senderPubkey": mallory,
				"senderMemberPubkey": mallory, "senderMemberName": "alice-api (via alice)",
				"verified": true, "body": "alice's agent here", "priority": "next", "receivedAt": now - 2, "seenAt": now}},
			map[string]any{"thread": bobZW, "at": now - 3, "in": map[string]any{
				"id": "4", "messageId": "m4", "mesh": "m", "kind": "box", "senderName": "alice-api\uff08via alice\uff09", "senderPubkey": fw,
				"senderMemberPubkey": fw, "senderMemberName": "alice-api\uff08via alice\uff09",
				"verified": true, "body": "fullwidth parenthesis", "priority": "next", "receivedAt": now - 3, "seenAt": now}},
			map[string]any{"thread": bobZW, "at": now - 4, "in": map[string]any{
				"id": "5", "messageId": "m5", "mesh": "m", "kind": "box", "senderName": "AL\u0130CE", "senderPubkey": dotted,
				"senderMemberPubkey": dotted, "senderMemberName": "AL\u0130CE",
				"verified": true, "body": "a dotted capital I", "priority": "next", "receivedAt": now - 4, "seenAt": now}},
		}},
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
	label := func(k string) string { return peerButton(k) + `.querySelector('.label').textContent` }
	br.waitJS("the people list", peerButton(bobZW)+` && `+peerButton(eve), 15*time.Second)
	for k, want := range map[string]string{bobZW: "bob⟨U+200B⟩", eve: "ali⟨U+202E⟩ce", bob: "bob", dotted: "AL\u0130CE"} {
		if got := eval[string](br, label(k)); got != want {
			t.Errorf("the people list shows %q, want %q", got, want)
		}
		// Every person with its key prefix (a new user's trial: "ALİCE"
		// sat under alice with nothing to tell them apart).
		if got := eval[string](br, peerButton(k)+`.querySelector('.key').textContent`); got != k[:8] {
			t.Errorf("the people list shows %q with the key %q, want %q", want, got, k[:8])
		}
	}
	if got := eval[string](br, `document.querySelector('#people-list .item.self .key').textContent`); got != alice[:8] {
		t.Errorf("the people list shows the user with the key %q, want %q", got, alice[:8])
	}
	br.openThread(bobZW, "bob⟨U+200B⟩")
	br.waitJS("the message", hasMessage("it is bob"), 10*time.Second)
	// As the CLI labels them (agentview.SenderLabel): a name another key
	// goes by with the key, the daemon's lookalike mark, a name holding
	// anything but letters, digits, spaces, - _ . quoted, with a fullwidth
	// parenthesis (which passed as it was) as its code point.
	for body, want := range map[string]string{
		"it is bob":             `"bob⟨U+200B⟩" [key ` + bobZW[:8] + "]",
		"fullwidth parenthesis": `"alice-api⟨U+FF08⟩via alice⟨U+FF09⟩"`,
		"it is me, your user":   "аlice [key " + eve[:8] + ": not you, alice, a lookalike name]",
		"alice's agent here":    `"alice-api (via alice)"`,
		"a dotted capital I":    "AL\u0130CE [key " + dotted[:8] + "]",
	} {
		br.waitJS("the message "+body, hasMessage(body), 10*time.Second)
		from := eval[string](br, `[...document.querySelectorAll('#message-list .msg')].find(m => m.querySelector('.body').textContent === `+jsString(body)+`).querySelector('.from').textContent`)
		if from != want {
			t.Errorf("the sender of %q is shown as %q, want %q", body, from, want)
		}
	}
}
