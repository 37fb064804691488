package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/web"
)

// impostor is another local user's server on the page's port: it records
// what reaches it and holds every request until released, then answers
// as the daemon's API would, with a message of its own.
type impostor struct {
	mu      sync.Mutex
	reqs    []string // "METHOD path body"
	release chan struct{}
	state   any
	refuse  bool // answer everything as a refusal before the API's checks does
}

func (im *impostor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	im.mu.Lock()
	im.reqs = append(im.reqs, r.Method+" "+r.URL.Path+" "+string(body))
	im.mu.Unlock()
	select {
	case <-im.release:
	case <-r.Context().Done():
		return
	}
	if im.refuse {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	switch r.URL.Path {
	case "/api/v1/events":
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, "retry: 1000\n\nevent: instance\ndata: "+strings.Repeat("0", 64)+"\n\n")
		io.WriteString(w, `id: 99`+"\nevent: message\ndata: "+`{"id":"99","messageId":"f1","mesh":"m","kind":"box","senderName":"bob","senderPubkey":"`+strings.Repeat("b", 64)+
			`","senderMemberPubkey":"`+strings.Repeat("b", 64)+`","verified":true,"body":"forged by the impostor","priority":"next","receivedAt":1}`+"\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case "/api/v1/web/state":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(im.state)
	default:
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true,"status":"sent","items":[]}`)
	}
}

func (im *impostor) seen(prefix string) []string {
	im.mu.Lock()
	defer im.mu.Unlock()
	var out []string
	for _, r := range im.reqs {
		if strings.HasPrefix(r, prefix) {
			out = append(out, r)
		}
	}
	return out
}

// TestAPageStopsWhenAnotherServerTakesItsPort: while the daemon restarts,
// another local user can take the page's port (the daemon binds the same
// address again). An open tab then sent its requests there: what the
// human typed went to that user's server, and whatever it answered
// showed as messages. The daemon's page server names itself in every
// answer and at the start of every event stream with a value only its
// tabs receive; a tab that finds another stops, sends nothing more, and
// says why. A plain refusal (403, as the daemon's own peer check answers
// before the API's checks) is not called another server, and settles
// nothing either.
func TestAPageStopsWhenAnotherServerTakesItsPort(t *testing.T) {
	t.Parallel()
	for _, refuse := range []bool{false, true} {
		t.Run(map[bool]string{false: "Answers", true: "Refuses"}[refuse], func(t *testing.T) {
			t.Parallel()
			pageMeetsImpostor(t, refuse)
		})
	}
}

func pageMeetsImpostor(t *testing.T, refuse bool) {
	alice, bob := strings.Repeat("a", 64), strings.Repeat("b", 64)
	now := time.Now().UnixMilli()
	state := map[string]any{"lastEventId": "0", "meshes": []any{map[string]any{
		"slug": "m", "meshId": "mesh1", "name": "Team", "displayName": "alice", "pubkey": alice, "role": "member", "state": "open"}}}
	api := fakeDaemonAPI(map[string]any{
		"/v1/web/state":   state,
		"/v1/members":     []any{map[string]any{"pubkey": alice, "displayName": "alice"}, map[string]any{"pubkey": bob, "displayName": "bob"}},
		"/v1/peers":       []any{map[string]any{"pubkey": bob, "memberPubkey": bob, "displayName": "bob", "role": "cli", "online": true}},
		"/v1/web/threads": []any{map[string]any{"mesh": "m", "thread": bob, "kind": "dm", "name": "bob", "lastAt": now, "lastPreview": "hi", "unread": 0}},
		"/v1/web/thread": map[string]any{"items": []any{map[string]any{"thread": bob, "at": now, "in": map[string]any{
			"id": "1", "messageId": "m1", "mesh": "m", "kind": "box", "senderName": "bob", "senderPubkey": bob,
			"senderMemberPubkey": bob, "senderMemberName": "bob", "verified": true, "body": "hi", "priority": "next",
			"receivedAt": now, "seenAt": now}}}},
	})
	srv, err := web.New(web.Options{Addr: "127.0.0.1:0", API: api})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	br := newBrowser(t, 1280, 800)
	link, _ := srv.LoginURL()
	br.do("login", chromedpNavigate(link))
	br.openThread(bob, "bob")
	br.waitJS("the message", hasMessage("hi"), 10*time.Second)

	// The daemon stops; another server takes its address.
	u, _ := url.Parse(link)
	srv.Close()
	br.waitJS("the page noticing", `document.getElementById('banner').textContent.includes('Lost contact')`, 15*time.Second)
	im := &impostor{release: make(chan struct{}), state: state, refuse: refuse}
	imSrv := &http.Server{Addr: u.Host, Handler: im}
	ln, err := net.Listen("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	go imSrv.Serve(ln)
	t.Cleanup(func() { imSrv.Close() })

	// The human types before the page has heard from the impostor.
	br.send("my secret plan")
	eventually(t, 15*time.Second, "the send reaching the impostor, or the page asking it who it is", func() bool {
		return len(im.seen("GET /api/v1/web/state"))+len(im.seen("POST /api/v1/send")) > 0
	})
	close(im.release)
	if refuse {
		br.waitJS("the send failing", `document.getElementById('message-list').textContent.includes('refused: 403 Forbidden')`, 15*time.Second)
		if eval[bool](br, `document.getElementById('banner').textContent.includes('Something other')`) {
			t.Error("a refusal is called another server")
		}
		for _, r := range im.seen("") {
			if strings.Contains(r, "my secret plan") || strings.HasPrefix(r, "POST") {
				t.Errorf("the refusing server got %q", r)
			}
		}
		return
	}
	br.waitJS("the page stopping", `document.getElementById('banner').textContent.includes('Something other than the daemon that logged this tab in')`, 15*time.Second)
	// The page has stopped: a forged message would have come before.
	if eval[bool](br, hasMessage("forged by the impostor")) {
		t.Error("the impostor's message is shown")
	}
	for _, r := range im.seen("") {
		if strings.Contains(r, "my secret plan") || strings.HasPrefix(r, "POST") {
			t.Errorf("the impostor got %q", r)
		}
	}
	if !eval[bool](br, `document.getElementById('send').disabled`) {
		t.Error("the compose button still works")
	}
}
