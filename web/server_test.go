package web

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// forwardedReq is what reached the API handler behind the page server.
type forwardedReq struct {
	method, path, query, host, origin, cookie, lastEventID, contentType string
}

// recorder stands where the daemon's local API stands: it records what
// the page server forwarded, so the tests can check the page server never
// passes a browser's Origin, cookie or Host on.
type recorder struct {
	mu   sync.Mutex
	reqs []forwardedReq
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, forwardedReq{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Get("Origin"),
		r.Header.Get("Cookie"), r.Header.Get("Last-Event-ID"), r.Header.Get("Content-Type")})
	rec.mu.Unlock()
	if r.URL.Path == "/v1/events" {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		io.WriteString(w, ": hi\n\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
}

func (rec *recorder) last(t *testing.T) forwardedReq {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) == 0 {
		t.Fatal("nothing was forwarded")
	}
	return rec.reqs[len(rec.reqs)-1]
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return len(rec.reqs)
}

// clock is a settable clock for expiry.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type fixture struct {
	t     *testing.T
	srv   *Server
	ts    *httptest.Server
	rec   *recorder
	clk   *clock
	pages atomic.Int64
}

func newFixture(t *testing.T, tlsOn bool) *fixture {
	f := &fixture{t: t, rec: &recorder{}, clk: &clock{}}
	f.clk.ns.Store(time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixNano())
	srv, err := New(Options{Addr: "127.0.0.1:0", API: f.rec, Now: f.clk.now, PageConnected: func() func() {
		f.pages.Add(1)
		return func() { f.pages.Add(-1) }
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	if tlsOn {
		f.ts = httptest.NewTLSServer(srv.Handler())
	} else {
		f.ts = httptest.NewServer(srv.Handler())
	}
	t.Cleanup(f.ts.Close)
	return f
}

// token mints a login token the way LoginURL does, without a listener.
func (f *fixture) token() string {
	tok, _ := f.srv.auth.newLogin()
	return tok
}

// do sends a request to the test server with Host set to host (the
// listener's address when "").
func (f *fixture) do(method, path, host string, hdr map[string]string, body string) *http.Response {
	f.t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.ts.URL+path, rb)
	if err != nil {
		f.t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	cl := f.ts.Client()
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := cl.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { res.Body.Close() })
	return res
}

// sess is what a login gives a tab: the cookie, and the page key from
// the redirect's fragment.
type sess struct {
	*http.Cookie
	key string
}

func (f *fixture) login() sess {
	f.t.Helper()
	res := f.do("GET", "/login?token="+f.token(), "", nil, "")
	loc := res.Header.Get("Location")
	key, ok := strings.CutPrefix(loc, "/#k=")
	if res.StatusCode != http.StatusSeeOther || !ok || len(key) != 64 {
		f.t.Fatalf("login: %d %v", res.StatusCode, res.Header)
	}
	cs := res.Cookies()
	if len(cs) != 1 {
		f.t.Fatalf("login set %d cookies", len(cs))
	}
	return sess{cs[0], key}
}

func (f *fixture) origin() string { return f.ts.URL }

// cookieHdr is the headers of a request from the tab: the cookie and, when
// known, the page key.
func cookieHdr(c sess, more map[string]string) map[string]string {
	h := map[string]string{"Cookie": c.Name + "=" + c.Value}
	if c.key != "" {
		h[pageKeyHeader] = c.key
	}
	for k, v := range more {
		h[k] = v
	}
	return h
}

func TestLoginTokenWorksOnceAndSetsAStrictCookie(t *testing.T) {
	f := newFixture(t, false)
	tok := f.token()
	res := f.do("GET", "/login?token="+tok, "", nil, "")
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("first use: %d", res.StatusCode)
	}
	c := res.Cookies()[0]
	if c.Name != cookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Secure || c.Path != "/" {
		t.Fatalf("cookie %+v", c)
	}
	set := res.Header.Get("Set-Cookie")
	if !strings.Contains(set, "HttpOnly") || !strings.Contains(set, "SameSite=Strict") {
		t.Fatalf("Set-Cookie %q", set)
	}
	if res := f.do("GET", "/login?token="+tok, "", nil, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("second use: %d, want 403", res.StatusCode)
	}
	if res := f.do("GET", "/", "", cookieHdr(sess{Cookie: c}, nil), ""); res.StatusCode != 200 {
		t.Fatalf("page with the cookie: %d", res.StatusCode)
	}
}

func TestLoginTokenExpiresAfterSixtySeconds(t *testing.T) {
	f := newFixture(t, false)
	fresh, stale := f.token(), f.token()
	f.clk.advance(LoginTTL - time.Millisecond)
	if res := f.do("GET", "/login?token="+fresh, "", nil, ""); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("a token used just before expiry: %d", res.StatusCode)
	}
	f.clk.advance(time.Millisecond)
	if res := f.do("GET", "/login?token="+stale, "", nil, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("expired token: %d, want 403", res.StatusCode)
	}
	for _, bad := range []string{"", "0000", strings.Repeat("ab", 32)} {
		if res := f.do("GET", "/login?token="+bad, "", nil, ""); res.StatusCode != http.StatusForbidden {
			t.Fatalf("token %q: %d, want 403", bad, res.StatusCode)
		}
	}
}

func TestSessionExpires(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	f.clk.advance(SessionTTL)
	if res := f.do("GET", "/api/v1/peers", "", cookieHdr(c, nil), ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired session: %d", res.StatusCode)
	}
}

func TestEverythingNeedsTheCookie(t *testing.T) {
	f := newFixture(t, false)
	for _, p := range []string{"/", "/assets/app.js", "/assets/app.css", "/api/v1/peers", "/api/v1/events", "/api/v1/web/state"} {
		res := f.do("GET", p, "", nil, "")
		if res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a cookie: %d, want 401", p, res.StatusCode)
		}
	}
	res := f.do("GET", "/api/v1/peers", "", map[string]string{"Cookie": cookieName + "=" + strings.Repeat("ab", 32)}, "")
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("a made-up cookie: %d, want 401", res.StatusCode)
	}
	if f.rec.count() != 0 {
		t.Fatalf("%d requests reached the API without a session", f.rec.count())
	}
}

func TestHostMustBeLoopback(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	for _, host := range []string{"evil.example", "evil.example:7901", "127.0.0.1.evil.example", "10.0.0.1:7901"} {
		for _, p := range []string{"/", "/api/v1/peers", "/login?token=" + f.token()} {
			if res := f.do("GET", p, host, cookieHdr(c, nil), ""); res.StatusCode != http.StatusForbidden {
				t.Errorf("Host %s GET %s: %d, want 403", host, p, res.StatusCode)
			}
		}
	}
	for _, host := range []string{"localhost:7901", "127.0.0.1:7901", "[::1]:7901", "LOCALHOST"} {
		if res := f.do("GET", "/api/v1/peers", host, cookieHdr(c, nil), ""); res.StatusCode != 200 {
			t.Errorf("Host %s: %d, want 200", host, res.StatusCode)
		}
	}
	if f.rec.count() != 4 {
		t.Fatalf("%d forwarded, want 4", f.rec.count())
	}
}

func TestWritesNeedOurOrigin(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	body := `{"to":"bob","message":"hi"}`
	json := map[string]string{"Content-Type": "application/json"}
	cases := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"foreign Origin", map[string]string{"Origin": "https://evil.example"}, 403},
		{"same host, other port", map[string]string{"Origin": "http://127.0.0.1:1"}, 403},
		{"https for an http page", map[string]string{"Origin": strings.Replace(f.origin(), "http:", "https:", 1)}, 403},
		{"null Origin", map[string]string{"Origin": "null"}, 403},
		{"no Origin", map[string]string{}, 403},
		{"cross-site fetch metadata", map[string]string{"Origin": f.origin(), "Sec-Fetch-Site": "cross-site"}, 403},
		{"a form post", map[string]string{"Origin": f.origin(), "Content-Type": "application/x-www-form-urlencoded"}, 415},
	}
	for _, tc := range cases {
		hdr := cookieHdr(c, json)
		for k, v := range tc.hdr {
			hdr[k] = v
		}
		if res := f.do("POST", "/api/v1/send", "", hdr, body); res.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, res.StatusCode, tc.want)
		}
	}
	if f.rec.count() != 0 {
		t.Fatalf("a refused write reached the API")
	}
	// A foreign Origin on a read is refused too.
	if res := f.do("GET", "/api/v1/inbox", "", cookieHdr(c, map[string]string{"Origin": "https://evil.example"}), ""); res.StatusCode != 403 {
		t.Fatalf("GET with a foreign Origin: %d", res.StatusCode)
	}
	res := f.do("POST", "/api/v1/send", "", cookieHdr(c, map[string]string{"Origin": f.origin(), "Content-Type": "application/json", "Idempotency-Key": "k1"}), body)
	if res.StatusCode != 200 {
		t.Fatalf("same-origin write: %d", res.StatusCode)
	}
	got := f.rec.last(t)
	if got.method != "POST" || got.path != "/v1/send" || got.host != "localhost" || got.origin != "" || got.cookie != "" || got.contentType != "application/json" {
		t.Fatalf("forwarded as %+v", got)
	}
}

func TestOnlyTheAllowlistIsForwarded(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	for _, r := range []struct{ method, path string }{
		{"POST", "/api/v1/web/login"}, {"POST", "/api/v1/reload"}, {"DELETE", "/api/v1/inbox"},
		{"POST", "/api/v1/outbox/requeue"}, {"GET", "/api/v1/sessions"}, {"POST", "/api/v1/sessions/register"},
		{"GET", "/api/v1/status"}, {"GET", "/api/../v1/peers"},
		{"POST", "/api/v1/topics"}, {"POST", "/api/v1/topics/x/rotate"}, {"POST", "/api/v1/topics/x/leave"},
	} {
		hdr := cookieHdr(c, map[string]string{"Origin": f.origin(), "Content-Type": "application/json"})
		res := f.do(r.method, r.path, "", hdr, "{}")
		if res.StatusCode == 200 {
			t.Errorf("%s %s: %d, want a refusal", r.method, r.path, res.StatusCode)
		}
	}
	if f.rec.count() != 0 {
		t.Fatalf("%d requests outside the allowlist reached the API: %+v", f.rec.count(), f.rec.reqs)
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	for _, p := range []string{"/", "/assets/app.js", "/api/v1/peers", "/nope", "/login?token=x"} {
		for _, hdr := range []map[string]string{nil, cookieHdr(c, nil)} {
			res := f.do("GET", p, "", hdr, "")
			h := res.Header
			csp := h.Get("Content-Security-Policy")
			if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "default-src 'none'") ||
				strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("%s: CSP %q", p, csp)
			}
			if h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("%s: headers %v", p, h)
			}
		}
	}
}

func TestEventStreamForwarding(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	res := f.do("GET", "/api/v1/events?lastEventId=42&mesh=team", "", cookieHdr(c, nil), "")
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(string(data), "retry: 1000\n\n") {
		t.Fatalf("stream: %d %q", res.StatusCode, data)
	}
	got := f.rec.last(t)
	if got.lastEventID != "42" || got.query != "mesh=team" {
		t.Fatalf("forwarded as %+v", got)
	}
	if n := f.pages.Load(); n != 0 {
		t.Fatalf("page count %d after the stream ended", n)
	}
}

func TestTLSCookieIsSecureAndHostPrefixed(t *testing.T) {
	f := newFixture(t, true)
	c := f.login()
	if c.Name != cookieNameTLS || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Fatalf("cookie over TLS: %+v", c)
	}
	if res := f.do("GET", "/api/v1/peers", "", cookieHdr(c, nil), ""); res.StatusCode != 200 {
		t.Fatalf("with the TLS cookie: %d", res.StatusCode)
	}
	// The plain-HTTP cookie name means nothing over TLS.
	if res := f.do("GET", "/api/v1/peers", "", map[string]string{"Cookie": cookieName + "=" + c.Value}, ""); res.StatusCode != 401 {
		t.Fatalf("the http cookie name over TLS: %d", res.StatusCode)
	}
}

func TestCheckAddr(t *testing.T) {
	for _, a := range []string{"127.0.0.1:7901", "localhost:0", "[::1]:7901", "127.0.0.2:80"} {
		if err := CheckAddr(a, false); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
	for _, a := range []string{"0.0.0.0:7901", ":7901", "192.168.1.2:7901", "example.com:80", "7901", "127.0.0.1",
		"127.0.0.1:notaport", "127.0.0.1:http", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+80", "localhost:7901x"} {
		if err := CheckAddr(a, false); err == nil {
			t.Errorf("%s accepted without --web-allow-remote", a)
		}
	}
	if err := CheckAddr("0.0.0.0:7901", true); err != nil {
		t.Errorf("allow-remote: %v", err)
	}
}

func TestLoginURL(t *testing.T) {
	srv, err := New(Options{Addr: "127.0.0.1:0", API: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	defer srv.Close()
	link, exp := srv.LoginURL()
	u, err := url.Parse(link)
	if err != nil || u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") || u.Path != "/login" || len(u.Query().Get("token")) != 64 {
		t.Fatalf("login URL %q", link)
	}
	if d := time.Until(exp); d <= 0 || d > LoginTTL {
		t.Fatalf("expires in %s", d)
	}
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(link)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("GET %s: %d", link, res.StatusCode)
	}
}

func TestBoundedLoginsAndSessions(t *testing.T) {
	f := newFixture(t, false)
	first := f.token()
	for i := 0; i < maxLogins; i++ {
		f.clk.advance(time.Millisecond)
		f.token()
	}
	if res := f.do("GET", "/login?token="+first, "", nil, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("the oldest of %d outstanding tokens still works", maxLogins+1)
	}
	f.srv.auth.mu.Lock()
	n := len(f.srv.auth.logins)
	f.srv.auth.mu.Unlock()
	if n > maxLogins {
		t.Fatalf("%d logins kept", n)
	}
}

// A login link opened from another site is refused without using it up
// (docs/security.md): a foreign page cannot burn the link, and the human
// who then opens it directly is logged in. A refused Host is the same.
func TestRefusedLoginLeavesTheTokenUsable(t *testing.T) {
	f := newFixture(t, false)
	tok := f.token()
	if res := f.do("GET", "/login?token="+tok, "", map[string]string{"Sec-Fetch-Site": "cross-site"}, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a cross-site login: %d, want 403", res.StatusCode)
	}
	if res := f.do("GET", "/login?token="+tok, "evil.example", nil, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a login with Host evil.example: %d, want 403", res.StatusCode)
	}
	if res := f.do("GET", "/login?token="+tok, "", nil, ""); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("the link opened directly after the refusals: %d, want 303", res.StatusCode)
	}
	if res := f.do("GET", "/login?token="+tok, "", nil, ""); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a second direct use: %d, want 403", res.StatusCode)
	}
}

// A credential in the query string of an API route is refused by the page
// server itself, with a message about the page's own credential (the
// cookie), not the daemon API's Authorization header; nothing is forwarded.
func TestAPITokenInQueryNamesTheCookie(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	for _, q := range []string{"token=x", "access_token=x", "apiKey=x", "key=x"} {
		res := f.do("GET", "/api/v1/peers?"+q, "", cookieHdr(c, nil), "")
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `"token_in_query"`) {
			t.Fatalf("?%s: %d %s", q, res.StatusCode, body)
		}
		if strings.Contains(string(body), "Authorization") || !strings.Contains(string(body), "session cookie") {
			t.Fatalf("?%s: the message names the wrong credential: %s", q, body)
		}
	}
	if n := f.rec.count(); n != 0 {
		t.Fatalf("%d requests with a credential in the query were forwarded", n)
	}
	if res := f.do("GET", "/api/v1/peers?mesh=acme&limit=5", "", cookieHdr(c, nil), ""); res.StatusCode != 200 {
		t.Fatalf("an ordinary query: %d", res.StatusCode)
	}
}

// TestAPINeedsThePageKey: the cookie reaches every server on 127.0.0.1 (a
// cookie is scoped by host, not port), so the API also needs the page key
// that only the tab holds; the key of another session does not do, and
// the event stream's key in the query is not forwarded.
func TestAPINeedsThePageKey(t *testing.T) {
	f := newFixture(t, false)
	c, other := f.login(), f.login()
	for _, hdr := range []map[string]string{
		cookieHdr(sess{Cookie: c.Cookie}, nil),
		cookieHdr(sess{c.Cookie, other.key}, nil),
		cookieHdr(sess{c.Cookie, strings.Repeat("ab", 32)}, nil),
		{pageKeyHeader: c.key},
	} {
		for _, p := range []string{"/api/v1/peers", "/api/v1/inbox?unreadOnly=true&markSeen=true", "/api/v1/events"} {
			if res := f.do("GET", p, "", hdr, ""); res.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s with %v: %d, want 401", p, hdr, res.StatusCode)
			}
		}
		h := map[string]string{"Origin": f.origin(), "Content-Type": "application/json"}
		for k, v := range hdr {
			h[k] = v
		}
		if res := f.do("POST", "/api/v1/send", "", h, `{"to":"bob","message":"hi"}`); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("POST with %v: %d, want 401", hdr, res.StatusCode)
		}
	}
	if n := f.rec.count(); n != 0 {
		t.Fatalf("%d requests without the page key were forwarded", n)
	}
	// The page itself needs only the cookie (it holds no secret).
	if res := f.do("GET", "/", "", cookieHdr(sess{Cookie: c.Cookie}, nil), ""); res.StatusCode != 200 {
		t.Fatalf("the page with the cookie alone: %d", res.StatusCode)
	}
	if res := f.do("GET", "/api/v1/peers", "", cookieHdr(c, nil), ""); res.StatusCode != 200 {
		t.Fatalf("with the page key: %d", res.StatusCode)
	}
	// Only the event stream takes the key from the query.
	if res := f.do("GET", "/api/v1/peers?pageKey="+c.key, "", cookieHdr(sess{Cookie: c.Cookie}, nil), ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the page key in a query other than the stream's: %d", res.StatusCode)
	}
	res := f.do("GET", "/api/v1/events?mesh=team&pageKey="+c.key, "", cookieHdr(sess{Cookie: c.Cookie}, nil), "")
	io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		t.Fatalf("the event stream with its key in the query: %d", res.StatusCode)
	}
	if got := f.rec.last(t); got.query != "mesh=team" {
		t.Fatalf("the stream was forwarded with query %q", got.query)
	}
}

// TestAPIRefusesOtherPagesAndDropsGETSideEffects: another page on
// 127.0.0.1 (same-site: another port) cannot reach the API even with a
// GET, and the side-effect parameters of GETs (markSeen, sync) are never
// forwarded.
func TestAPIRefusesOtherPagesAndDropsGETSideEffects(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	for _, site := range []string{"same-site", "cross-site"} {
		for _, p := range []string{"/api/v1/inbox?unreadOnly=true&markSeen=true", "/api/v1/events", "/api/v1/peers"} {
			if res := f.do("GET", p, "", cookieHdr(c, map[string]string{"Sec-Fetch-Site": site}), ""); res.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s from a %s page: %d, want 403", p, site, res.StatusCode)
			}
		}
	}
	if n := f.rec.count(); n != 0 {
		t.Fatalf("%d requests from other pages were forwarded", n)
	}
	for _, site := range []string{"same-origin", "none", ""} {
		hdr := cookieHdr(c, nil)
		if site != "" {
			hdr["Sec-Fetch-Site"] = site
		}
		if res := f.do("GET", "/api/v1/inbox?mesh=team&unreadOnly=true&markSeen=true&sync=true", "", hdr, ""); res.StatusCode != 200 {
			t.Fatalf("Sec-Fetch-Site %q: %d", site, res.StatusCode)
		}
		if got := f.rec.last(t); got.query != "mesh=team&unreadOnly=true" {
			t.Fatalf("forwarded query %q, want markSeen and sync dropped", got.query)
		}
	}
}

// TestAllowRemoteNeedsTLS: New refuses --web-allow-remote without TLS
// whatever the caller checked before.
func TestAllowRemoteNeedsTLS(t *testing.T) {
	if _, err := New(Options{Addr: "0.0.0.0:0", AllowRemote: true, API: &recorder{}}); err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Fatalf("--web-allow-remote without TLS: %v", err)
	}
	if _, err := New(Options{Addr: "0.0.0.0:0", AllowRemote: true, TLSCert: "c.pem", TLSKey: "k.pem", API: &recorder{}}); err != nil {
		t.Fatalf("--web-allow-remote with TLS: %v", err)
	}
}

// TestAPIErrorsAreJSON: an error naming a path with a control character
// or invalid UTF-8 is still valid JSON.
func TestAPIErrorsAreJSON(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	for _, p := range []string{"/api/v1/nope%00x", "/api/v1/nope%ffx", "/api/v1/nope%7fx%22"} {
		res := f.do("GET", p, "", cookieHdr(c, nil), "")
		data, _ := io.ReadAll(res.Body)
		var v struct {
			Error struct{ Code, Message string }
		}
		if err := json.Unmarshal(data, &v); err != nil || res.StatusCode != 404 || v.Error.Code != "not_found" || !strings.Contains(v.Error.Message, "nope") {
			t.Errorf("GET %s: %d %q: %v", p, res.StatusCode, data, err)
		}
	}
}

// TestLogoutRevokesTheSession: logging out ends the session in the daemon
// (the cookie and page key stop working, whoever holds them) and clears
// the cookie; only the page itself can do it.
func TestLogoutRevokesTheSession(t *testing.T) {
	f := newFixture(t, false)
	c, other := f.login(), f.login()
	write := func(s sess, more map[string]string) map[string]string {
		h := cookieHdr(s, map[string]string{"Origin": f.origin(), "Content-Type": "application/json"})
		for k, v := range more {
			h[k] = v
		}
		return h
	}
	// Another page cannot log the human out.
	for _, hdr := range []map[string]string{
		write(c, map[string]string{"Origin": "http://127.0.0.1:1"}),
		write(sess{Cookie: c.Cookie}, nil),
		write(c, map[string]string{"Sec-Fetch-Site": "same-site"}),
	} {
		if res := f.do("POST", "/api/logout", "", hdr, "{}"); res.StatusCode == 200 {
			t.Fatalf("a logout with %v was accepted", hdr)
		}
	}
	if res := f.do("GET", "/api/v1/peers", "", cookieHdr(c, nil), ""); res.StatusCode != 200 {
		t.Fatalf("the session after refused logouts: %d", res.StatusCode)
	}
	res := f.do("POST", "/api/logout", "", write(c, nil), "{}")
	if res.StatusCode != 200 {
		t.Fatalf("logout: %d", res.StatusCode)
	}
	if cs := res.Cookies(); len(cs) != 1 || cs[0].Name != cookieName || cs[0].Value != "" || cs[0].MaxAge >= 0 {
		t.Fatalf("logout's Set-Cookie: %v", res.Header["Set-Cookie"])
	}
	if res := f.do("GET", "/api/v1/peers", "", cookieHdr(c, nil), ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the API after logout: %d, want 401", res.StatusCode)
	}
	if res := f.do("GET", "/", "", cookieHdr(c, nil), ""); res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the page after logout: %d, want 401", res.StatusCode)
	}
	// Another session is not touched.
	if res := f.do("GET", "/api/v1/peers", "", cookieHdr(other, nil), ""); res.StatusCode != 200 {
		t.Fatalf("another session after a logout: %d", res.StatusCode)
	}
}

// TestInstanceOnlyToItsOwnTabs: the value a tab checks its server by
// (X-Claudemesh-Instance, and the first event of every stream) is in
// every answer to a request that passed the API's checks, new for every
// server, and in no answer to one that did not: another local user who
// could read it from a refusal could pass for the daemon after taking
// its port.
func TestInstanceOnlyToItsOwnTabs(t *testing.T) {
	f := newFixture(t, false)
	c := f.login()
	inst := f.srv.instance
	if len(inst) != 64 || newFixture(t, false).srv.instance == inst {
		t.Fatalf("instance %q is not a fresh random value", inst)
	}
	for _, r := range []*http.Response{
		f.do("GET", "/api/v1/peers", "", cookieHdr(c, nil), ""),
		f.do("GET", "/api/v1/nothing", "", cookieHdr(c, nil), ""),
		f.do("POST", "/api/v1/send", "", cookieHdr(c, map[string]string{"Origin": f.origin(), "Content-Type": "application/json"}), `{}`),
	} {
		if r.Header.Get(instanceHeader) != inst {
			t.Errorf("%s %s: instance %q", r.Request.Method, r.Request.URL.Path, r.Header.Get(instanceHeader))
		}
	}
	res := f.do("GET", "/api/v1/events?pageKey="+c.key, "", cookieHdr(sess{Cookie: c.Cookie}, nil), "")
	data, _ := io.ReadAll(res.Body)
	if !strings.HasPrefix(string(data), "retry: 1000\n\nevent: instance\ndata: "+inst+"\n\n") {
		t.Fatalf("stream: %q", data)
	}
	for _, r := range []*http.Response{
		f.do("GET", "/api/v1/peers", "", nil, ""),
		f.do("GET", "/api/v1/peers", "", cookieHdr(sess{Cookie: c.Cookie}, nil), ""),
		f.do("GET", "/api/v1/peers", "", cookieHdr(c, map[string]string{"Sec-Fetch-Site": "same-site"}), ""),
		f.do("GET", "/api/v1/peers", "evil.example", cookieHdr(c, nil), ""),
		f.do("GET", "/api/v1/peers?token=x", "", cookieHdr(c, nil), ""),
		f.do("POST", "/api/v1/send", "", cookieHdr(c, map[string]string{"Origin": f.origin()}), `{}`),
		f.do("GET", "/", "", cookieHdr(c, nil), ""),
		f.do("GET", "/login?token=x", "", nil, ""),
	} {
		if v := r.Header.Get(instanceHeader); v != "" {
			t.Errorf("%s %s (%d): instance %q", r.Request.Method, r.Request.URL, r.StatusCode, v)
		}
	}
	events := f.do("GET", "/api/v1/events", "", cookieHdr(sess{Cookie: c.Cookie}, nil), "")
	if data, _ := io.ReadAll(events.Body); strings.Contains(string(data), inst) {
		t.Fatalf("a stream without the page key: %q", data)
	}
}
