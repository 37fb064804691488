package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

func webGet[T any](t *testing.T, rd *runningDaemon, path string, q url.Values) T {
	t.Helper()
	var v T
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if _, err := rd.api.Do(context.Background(), "GET", path, nil, &v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return v
}

// TestWebThreadPagesSeeEveryMessageOnce: a conversation with messages both
// ways, read page by page the way the page's infinite scroll does, shows
// every message exactly once, newest first, and nothing of other threads.
func TestWebThreadPagesSeeEveryMessageOnce(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	ctx := context.Background()
	const fromAlice, fromBob, broadcasts = 23, 31, 4
	for i := 0; i < max(fromAlice, fromBob); i++ {
		if i < fromAlice {
			if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: fmt.Sprintf("a%d", i)}); err != nil {
				t.Fatal(err)
			}
		}
		if i < fromBob {
			body := fmt.Sprintf("b%d", i)
			if i%10 == 3 {
				body += " has the Needle"
			}
			if _, err := bob.api.Send(ctx, localapi.SendRequest{To: "alice", Message: body}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := 0; i < broadcasts; i++ {
		if _, err := bob.api.Send(ctx, localapi.SendRequest{To: "*", Message: fmt.Sprintf("all%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "alice's inbox", func() bool { return len(alice.inbox(t)) == fromBob+broadcasts })
	bobKey := e.meshes["bob"].Pubkey

	threads := webGet[[]localapi.WebThread](t, alice, "/v1/web/threads", nil)
	byKey := map[string]localapi.WebThread{}
	for _, th := range threads {
		byKey[th.Thread] = th
	}
	if th := byKey[bobKey]; th.Kind != "dm" || th.Name != "bob" || th.Unread != fromBob {
		t.Fatalf("bob's thread %+v", th)
	}
	if th := byKey["*"]; th.Kind != "broadcast" || th.Unread != broadcasts || th.LastPreview != "all3" {
		t.Fatalf("the broadcast thread %+v", th)
	}

	seen := map[string]bool{}
	var last int64 = 1 << 62
	before := ""
	pages := 0
	for {
		q := url.Values{"thread": {bobKey}, "limit": {"7"}}
		if before != "" {
			q.Set("before", before)
		}
		p := webGet[localapi.WebThreadPage](t, alice, "/v1/web/thread", q)
		pages++
		for _, it := range p.Items {
			var key, body string
			switch {
			case it.In != nil:
				key, body = "i"+it.In.ID, it.In.Body
			case it.Out != nil:
				key, body = "o"+it.Out.ClientMessageID, it.Out.Preview
			}
			if seen[key] {
				t.Fatalf("page %d repeats %s (%q)", pages, key, body)
			}
			seen[key] = true
			if it.Thread != bobKey || strings.HasPrefix(body, "all") {
				t.Fatalf("a message of another thread: %+v", it)
			}
			if it.At > last {
				t.Fatalf("page %d is not newest first", pages)
			}
			last = it.At
		}
		if p.Before == "" {
			break
		}
		if len(p.Items) == 0 || pages > 50 {
			t.Fatalf("paging does not end (page %d, %d items, before %q)", pages, len(p.Items), p.Before)
		}
		before = p.Before
	}
	if len(seen) != fromAlice+fromBob {
		t.Fatalf("%d messages over %d pages, want %d", len(seen), pages, fromAlice+fromBob)
	}

	found := webGet[localapi.WebThreadPage](t, alice, "/v1/web/search", url.Values{"q": {"needle"}})
	if len(found.Items) != 3 {
		t.Fatalf("search found %d, want 3", len(found.Items))
	}
	for _, it := range found.Items {
		if it.In == nil || !strings.Contains(it.In.Body, "Needle") || it.Thread != bobKey {
			t.Fatalf("search result %+v", it)
		}
	}
	var aerr *localapi.APIError
	if _, err := alice.api.Do(ctx, "GET", "/v1/web/thread?thread="+bobKey+"&before=nonsense", nil, nil); !asAPIError(err, &aerr) || aerr.HTTPStatus != 400 {
		t.Fatalf("a bad cursor: %v", err)
	}
}

func asAPIError(err error, out **localapi.APIError) bool {
	ae, ok := err.(*localapi.APIError)
	*out = ae
	return ok
}

// TestWebPresenceWhileAPageIsConnected: the login route answers only when
// the daemon serves the page, and a connected page puts the human's web
// presence (peerType human, channel web) in the peer list until it leaves.
func TestWebPresenceWhileAPageIsConnected(t *testing.T) {
	old := webLinger
	webLinger = 50 * time.Millisecond
	t.Cleanup(func() { webLinger = old })
	e := newEnv(t)
	e.join("bob")
	alice := e.daemonWith("alice", Options{Web: "127.0.0.1:0"})
	bob := e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()

	var aerr *localapi.APIError
	if _, err := bob.api.Do(ctx, "POST", "/v1/web/login", nil, nil); !asAPIError(err, &aerr) || aerr.HTTPStatus != 503 || aerr.Body.Code != "web_off" {
		t.Fatalf("login without a page: %v", err)
	}
	var login localapi.WebLogin
	if _, err := alice.api.Do(ctx, "POST", "/v1/web/login", nil, &login); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(login.URL, "http://127.0.0.1:") || !strings.Contains(login.URL, "/login?token=") {
		t.Fatalf("login %+v", login)
	}

	webPeer := func() *localapi.Peer {
		for _, p := range webGet[[]localapi.Peer](t, bob, "/v1/peers", nil) {
			if p.MemberPubkey == e.meshes["alice"].Pubkey && p.SessionID == "web" && p.Online {
				return &p
			}
		}
		return nil
	}
	if webPeer() != nil {
		t.Fatal("a web presence without a page")
	}
	release := alice.d.pageConnected()
	// Bob may see the presence (the broker announces it once the hello is
	// accepted) a moment before alice's daemon has read its hello_ack and
	// counts it open: wait for both.
	var st localapi.WebState
	waitFor(t, 10*time.Second, "alice's web presence, seen by bob and by her own daemon", func() bool {
		st = webGet[localapi.WebState](t, alice, "/v1/web/state", nil)
		return webPeer() != nil && len(st.Meshes) == 1 && st.Meshes[0].WebPresence
	})
	p := webPeer()
	if p.PeerType != wire.PeerHuman || p.Channel != "web" || p.Role != wire.RoleCLI || p.DisplayName != "alice" {
		t.Fatalf("web presence %+v", p)
	}
	if st.Meshes[0].DisplayName != "alice" || st.LastEventID == "" {
		t.Fatalf("state %+v", st)
	}
	// A DM to alice still reaches her inbox (the control-plane presence
	// is her target; the web presence only shows she is on the page).
	if _, err := bob.api.Send(ctx, localapi.SendRequest{To: "alice", Message: "seen on the web"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "alice's inbox", func() bool { return len(alice.inbox(t)) == 1 })
	release()
	release() // idempotent
	waitFor(t, 10*time.Second, "the web presence gone", func() bool { return webPeer() == nil })
}

// TestDaemonStatusShowsThePage: `daemon status` says where the page is
// served, that it is off, or that it could not be served and why — the
// second identity's daemon on one machine finds the first one's port
// taken (QA R4).
func TestDaemonStatusShowsThePage(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	alice := e.daemonWith("alice", Options{Web: "127.0.0.1:0"})
	status := func(rd *runningDaemon) *localapi.WebStatus {
		st := webGet[localapi.Status](t, rd, "/v1/status", nil)
		if st.Web == nil {
			t.Fatalf("status without the page's state: %+v", st)
		}
		return st.Web
	}
	w := status(alice)
	if w.State != "serving" || !strings.HasPrefix(w.URL, "http://127.0.0.1:") || w.Error != "" {
		t.Fatalf("alice's page %+v", w)
	}
	taken := strings.TrimPrefix(w.URL, "http://")
	bob := e.daemonWith("bob", Options{Web: taken})
	if w := status(bob); w.State != "unavailable" || w.Addr != taken || w.URL != "" || !strings.Contains(w.Error, "address already in use") {
		t.Fatalf("bob's page on alice's port %+v", w)
	}
	var aerr *localapi.APIError
	if _, err := bob.api.Do(context.Background(), "POST", "/v1/web/login", nil, nil); !asAPIError(err, &aerr) || aerr.Body.Code != "web_unavailable" {
		t.Fatalf("login on bob's daemon: %v", err)
	}
	carol := e.daemonWith("carol", Options{Web: "off"})
	if w := status(carol); w.State != "off" || w.URL != "" {
		t.Fatalf("carol's page %+v", w)
	}
}

// A malformed --web is a usage error at `daemon up` (exit 2), before
// anything detaches, not a warning in the log of a daemon that started.
func TestUpRefusesAMalformedWebAddress(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:notaport", "127.0.0.1:99999", "127.0.0.1", "0.0.0.0:7901"} {
		err := upFlags{web: addr}.check()
		var ce *cliui.Error
		if !errors.As(err, &ce) || cliui.ExitCode(ce.Code) != 2 || !strings.Contains(ce.Message, addr) {
			t.Errorf("--web %s: %v, want a usage error naming it", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:7901", "localhost:0", "off", ""} {
		if err := (upFlags{web: addr}).check(); err != nil {
			t.Errorf("--web %q: %v", addr, err)
		}
	}
}

// --web-allow-remote needs TLS, as --tcp-allow-remote does: the login
// link, the cookie and the page key must not cross a network in clear.
func TestUpWebAllowRemoteNeedsTLS(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:7901", "127.0.0.1:7901"} {
		err := upFlags{web: addr, webAllowRemote: true}.check()
		var ce *cliui.Error
		if !errors.As(err, &ce) || cliui.ExitCode(ce.Code) != 2 || !strings.Contains(ce.Message, "needs TLS") {
			t.Errorf("--web %s --web-allow-remote without TLS: %v, want a usage error", addr, err)
		}
		if err := (upFlags{web: addr, webAllowRemote: true, webTLSCert: "c.pem", webTLSKey: "k.pem"}).check(); err != nil {
			t.Errorf("--web %s --web-allow-remote with TLS: %v", addr, err)
		}
	}
}
