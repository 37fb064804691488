package web

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"claudemesh/daemon/localapi"
)

// DefaultAddr is where the daemon serves the page unless told otherwise.
const DefaultAddr = "127.0.0.1:7901"

// cookieName holds the session id; with TLS the __Host- prefix makes the
// browser refuse it unless it is Secure, host-only and for the whole path.
const (
	cookieName    = "claudemesh_web"
	cookieNameTLS = "__Host-claudemesh_web"
)

// Options configure the page's server.
type Options struct {
	// Addr is host:port to listen on. A host that is not loopback is
	// refused unless AllowRemote is set.
	Addr        string
	AllowRemote bool
	// TLSCert and TLSKey, both or neither, serve the page over HTTPS.
	TLSCert, TLSKey string
	// AnyLocalUser turns off the check that a connection from this
	// machine is the daemon's own user's (guard.go, peerAllowed), for a
	// browser whose traffic reaches the page through a relay (WSL2's
	// localhost forwarding, a proxy run by root) or a system whose
	// /proc/net/tcp lists no sockets (WSL1, gVisor). Unsafe on a shared
	// machine: any local user who obtains a login link, or the session
	// cookie and the page key, then uses the page as the daemon's user.
	AnyLocalUser bool
	// API is the daemon's local API handler, guards included. The server
	// forwards the routes in `forwarded` to it after its own checks, as
	// a request from the daemon's own host with no Origin.
	API http.Handler
	// PageConnected is called when a page opens its event stream; the
	// returned func when the stream ends. The daemon keeps the human's
	// web presence while any page is connected.
	PageConnected func() (release func())
	Logger        *slog.Logger
	// Now is the clock of login and session expiry (tests).
	Now func() time.Time
}

// Server serves the page.
type Server struct {
	opts Options
	auth *auth
	h    http.Handler
	// instance names this server to the tabs it logged in: new for every
	// server (every daemon start), sent only to requests that passed every
	// check (instanceHeader, and the first event of every event stream),
	// never by a tab. A tab that finds another value, or none, is talking
	// to something else that took the port (another local user's server,
	// while the daemon restarted) and stops (web/assets/app.js).
	instance string

	mu   sync.Mutex
	ln   net.Listener
	srv  *http.Server
	base string // scheme://host:port the login links use

	refused *refusalLog // the peer check's refusals, logged once a minute each
}

// CheckAddr validates a --web address: host:port, loopback unless
// allowRemote.
func CheckAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("--web %q: want HOST:PORT (for example %s) or off", addr, DefaultAddr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || strconv.FormatUint(n, 10) != port {
		// A port name ("http") or a number out of range would only fail
		// later, in the daemon's log, with `daemon up` already done.
		return fmt.Errorf("--web %q: the port must be a number from 0 to 65535 (0 picks a free one), for example %s", addr, DefaultAddr)
	}
	if loopbackName(host) {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	if !allowRemote {
		return fmt.Errorf("--web %s is not a loopback address; the page gives whoever reaches it your mesh identity, so it is refused unless you also pass --web-allow-remote (unsafe)", addr)
	}
	return nil
}

// CheckFlags validates --web with --web-allow-remote and the TLS files:
// the address (CheckAddr), the certificate and key together, and TLS
// whenever --web-allow-remote is given, as --tcp-allow-remote needs it:
// the login link, the session cookie and the page key must not cross a
// network in the clear.
func CheckFlags(addr string, allowRemote bool, cert, key string) error {
	if err := CheckAddr(addr, allowRemote); err != nil {
		return err
	}
	if (cert == "") != (key == "") {
		return errors.New("--web-tls-cert and --web-tls-key go together")
	}
	if allowRemote && cert == "" {
		return fmt.Errorf("--web %s with --web-allow-remote needs TLS (--web-tls-cert and --web-tls-key): the login link, the session cookie and the page key must not cross the network in the clear", addr)
	}
	return nil
}

// New builds the server; Listen and Serve run it.
func New(opts Options) (*Server, error) {
	if err := CheckFlags(opts.Addr, opts.AllowRemote, opts.TLSCert, opts.TLSKey); err != nil {
		return nil, err
	}
	if opts.API == nil {
		return nil, errors.New("web: no API handler")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PageConnected == nil {
		opts.PageConnected = func() func() { return func() {} }
	}
	s := &Server{opts: opts, auth: newAuth(opts.Now), instance: randomToken(), refused: newRefusalLog()}
	s.h = s.routes()
	return s, nil
}

// Handler is the whole page server (tests serve it with httptest).
func (s *Server) Handler() http.Handler { return s.h }

// Listen binds the address. When another program holds it, the error
// says whose it is where the system tells (Linux): another user's server
// on the page's address is not the daemon's page, and a tab still open
// there would be talking to it (docs/security.md).
func (s *Server) Listen() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return s.whyInUse(err)
	}
	scheme := "http"
	if s.opts.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.opts.TLSCert, s.opts.TLSKey)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	host, _, _ := net.SplitHostPort(s.opts.Addr)
	bound, port, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	} else if ip == nil {
		// A name (localhost) names both loopback addresses, and the
		// listener holds one: a browser given the name may try the
		// other, which another local user can hold on the same port.
		// The link names the address held.
		host = bound
	}
	s.mu.Lock()
	s.ln = ln
	s.base = scheme + "://" + net.JoinHostPort(host, port)
	s.srv = &http.Server{Handler: s.h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ConnContext: withPeerVerdict,
		ErrorLog: slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelDebug)}
	s.mu.Unlock()
	return nil
}

// whyInUse adds to an "address already in use" who holds the address,
// when the system says.
func (s *Server) whyInUse(err error) error {
	if !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	host, port, _ := net.SplitHostPort(s.opts.Addr)
	p, _ := strconv.ParseUint(port, 10, 16)
	var addrs []netip.Addr
	if a, perr := netip.ParseAddr(strings.Trim(host, "[]")); perr == nil {
		addrs = []netip.Addr{a}
	} else if loopbackName(host) {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}
	}
	for _, a := range addrs {
		uid, found := portHolder(a, uint16(p))
		switch {
		case !found:
			continue
		case uid != os.Getuid():
			return fmt.Errorf("%w: held by another user of this machine (uid %d); whatever answers at %s is not your daemon's page, so close any tab of it", err, uid, s.opts.Addr)
		default:
			return fmt.Errorf("%w: held by another program of yours (another claudemesh daemon?)", err)
		}
	}
	return err
}

// Serve runs until Close.
func (s *Server) Serve() error {
	s.mu.Lock()
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server; open event streams end, and pages reconnect to
// the next daemon (where they must log in again).
func (s *Server) Close() {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
	}
}

// BaseURL is scheme://host:port of the listening server ("" before Listen).
func (s *Server) BaseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.base
}

// LoginURL mints a single-use login link valid for LoginTTL.
func (s *Server) LoginURL() (string, time.Time) {
	tok, exp := s.auth.newLogin()
	return s.BaseURL() + "/login?token=" + tok, exp
}

// forwarded are the local API routes the page may use, by method and path
// under /api. Everything else the API offers (sessions, reload, outbox
// requeue, deleting the inbox, minting login links) stays out of reach of
// the browser.
var forwarded = []string{
	"GET /v1/health",
	"GET /v1/peers",
	"GET /v1/members",
	"GET /v1/inbox",
	"GET /v1/outbox",
	"GET /v1/events",
	"POST /v1/send",
	"POST /v1/inbox/seen",
	"POST /v1/profile",
	"GET /v1/web/state",
	"GET /v1/web/threads",
	"GET /v1/web/thread",
	"GET /v1/web/search",
	"GET /v1/topics",
	"GET /v1/topics/{name}/messages",
	"GET /v1/topics/{name}/members",
	"POST /v1/topics/{name}/join",
	"POST /v1/topics/{name}/read",
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /login", s.handleLogin)
	mux.HandleFunc("GET /{$}", s.page(s.serveIndex))
	mux.HandleFunc("GET /assets/{name}", s.page(s.serveAsset))
	for _, route := range forwarded {
		method, path, _ := strings.Cut(route, " ")
		mux.HandleFunc(method+" /api"+path, s.api(s.forward))
	}
	mux.HandleFunc("POST /api/logout", s.api(s.handleLogout))
	mux.HandleFunc("/api/", s.api(func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "not_found", "the page has no route "+r.Method+" "+r.URL.Path)
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	return s.outer(mux)
}

// outer runs first on every request: security headers, then the check
// that the connection is the daemon's own user's, then the Host check, before any route (login included) sees the request.
func (s *Server) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		if !s.peerAllowed(r) {
			http.Error(w, "forbidden: this page serves only the user who runs the daemon, and could not tell that this connection is theirs ("+
				"the daemon's log says why; a browser whose traffic comes through a relay, such as WSL2's localhost forwarding, needs "+
				"claudemesh daemon up --web-any-local-user)", http.StatusForbidden)
			return
		}
		if !s.hostAllowed(r.Host) {
			http.Error(w, "forbidden: this page answers only to localhost, 127.0.0.1 or [::1] (Host "+r.Host+" refused)", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) cookieName(r *http.Request) string {
	if r.TLS != nil {
		return cookieNameTLS
	}
	return cookieName
}

// pageKeyHeader carries the tab's page key (auth.go) on API calls; the
// event stream, which EventSource opens without headers, passes it as the
// query parameter pageKeyParam instead (never forwarded).
const (
	pageKeyHeader = "X-Claudemesh-Page-Key"
	pageKeyParam  = "pageKey"
	// instanceHeader carries Server.instance on every answer of the API
	// to a request that passed its checks.
	instanceHeader = "X-Claudemesh-Instance"
)

// sessionID is the session cookie's value ("" without one).
func (s *Server) sessionID(r *http.Request) string {
	c, err := r.Cookie(s.cookieName(r))
	if err != nil {
		return ""
	}
	return c.Value
}

// loggedIn checks the session cookie.
func (s *Server) loggedIn(r *http.Request) bool {
	return s.auth.valid(s.sessionID(r))
}

// pageKey is the page key a request carries.
func pageKey(r *http.Request) string {
	if k := r.Header.Get(pageKeyHeader); k != "" {
		return k
	}
	if r.Method == http.MethodGet && r.URL.Path == "/api/v1/events" {
		return r.URL.Query().Get(pageKeyParam)
	}
	return ""
}

// page wraps the page's own files: a navigation without a session gets
// the page that explains how to log in.
func (s *Server) page(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !originAllowed(r) {
			http.Error(w, "forbidden: foreign Origin", http.StatusForbidden)
			return
		}
		if !s.loggedIn(r) {
			loggedOut(w, http.StatusUnauthorized, "You are not logged in to this page.")
			return
		}
		next(w, r)
	}
}

// api wraps the forwarded routes: same-origin requests with a live
// session and its page key only; writes must say they are JSON (an HTML form cannot).
func (s *Server) api(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !originAllowed(r) || !fetchSiteAllowed(r) {
			apiError(w, http.StatusForbidden, "forbidden", "cross-origin requests are refused")
			return
		}
		if !s.loggedIn(r) {
			apiError(w, http.StatusUnauthorized, "unauthorized", "not logged in; run claudemesh ui for a login link")
			return
		}
		if !s.auth.validKey(s.sessionID(r), pageKey(r)) {
			// The cookie reaches every port on the host; the page key
			// only the tab the login link opened.
			apiError(w, http.StatusUnauthorized, "unauthorized", "this tab has no page key (each login link opens one tab); run claudemesh ui for a login link")
			return
		}
		if k := localapi.SecretInQuery(r.URL.Query()); k != "" {
			// The daemon's API would refuse it too, naming the
			// Authorization header the page never uses.
			apiError(w, http.StatusBadRequest, "token_in_query", "credentials are never accepted in query strings (found "+strconv.Quote(k)+"); the page signs in with its session cookie")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				apiError(w, http.StatusUnsupportedMediaType, "invalid_argument", "writes are JSON (Content-Type: application/json)")
				return
			}
		}
		w.Header().Set(instanceHeader, s.instance)
		next(w, r)
	}
}

// apiError answers as the daemon's API does: {"error":{"code","message"}},
// encoded as JSON (a Go-quoted string is not always valid JSON: a path
// with a control character or invalid UTF-8 made the page's error
// unreadable).
func apiError(w http.ResponseWriter, status int, code, msg string) {
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	data, _ := json.Marshal(struct {
		Error body `json:"error"`
	}{body{code, msg}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

// handleLogin redeems a login token: a session cookie and a redirect to
// the page carrying the tab's page key, or a refusal that says what to do.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		loggedOut(w, http.StatusForbidden, "Login links work only when opened directly, not from another site.")
		return
	}
	sid, key, exp := s.auth.redeem(r.URL.Query().Get("token"))
	if sid == "" {
		loggedOut(w, http.StatusForbidden, "This login link has expired or was already used.")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r), Value: sid, Path: "/", Expires: exp,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	// The fragment is not sent to any server, logged or kept in a
	// Referer; the page moves it to sessionStorage and drops it from the
	// address bar.
	http.Redirect(w, r, "/#k="+key, http.StatusSeeOther)
}

// handleLogout ends the session (its cookie and page key stop working in
// every tab that shares them) and clears the cookie. It sits behind the
// API's checks (our Origin, JSON, the cookie and the page key), so no
// other page can log the human out.
func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	s.auth.revoke(s.sessionID(r))
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(r), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`)
}

// forward hands a checked request to the local API as the daemon's own
// host would send it: Host localhost, no Origin, no cookie, only the
// headers the API reads. An event stream opened by a page keeps the
// human's web presence up and asks browsers to reconnect within a second.
func (s *Server) forward(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.EscapedPath(), "/api")
	q := r.URL.Query()
	last := r.Header.Get("Last-Event-ID")
	if v := q.Get("lastEventId"); v != "" && last == "" {
		// EventSource cannot set headers on its first request; a page
		// that reloads passes what it has seen this way.
		last = v
	}
	q.Del("lastEventId")
	q.Del(pageKeyParam)
	// Side effects are never a GET's from the page: markSeen (the page
	// marks seen with POST /v1/inbox/seen) and sync are dropped, so a
	// link cannot mark every row seen, the agent sessions' included.
	q.Del("markSeen")
	q.Del("sync")
	target := "http://localhost" + path
	if len(q) > 0 {
		target += "?" + q.Encode()
	}
	var body io.Reader
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		body = r.Body
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, body)
	if err != nil {
		apiError(w, http.StatusBadRequest, "invalid_argument", err.Error())
		return
	}
	req.Host = "localhost"
	req.RemoteAddr = r.RemoteAddr
	for _, h := range []string{"Content-Type", "Idempotency-Key", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	if path == "/v1/events" {
		release := s.opts.PageConnected()
		defer release()
		w = &sseRetry{ResponseWriter: w, instance: s.instance}
	}
	s.opts.API.ServeHTTP(w, req)
}

// sseRetry adds `retry: 1000` to the start of an event stream (browsers
// otherwise wait about 3 s before reconnecting), and an `instance` event
// with Server.instance: the page takes no event from a stream before it
// (an EventSource cannot read headers).
type sseRetry struct {
	http.ResponseWriter
	instance string
	wrote    bool
}

func (s *sseRetry) WriteHeader(code int) {
	s.ResponseWriter.WriteHeader(code)
	if !s.wrote && code == http.StatusOK {
		s.wrote = true
		io.WriteString(s.ResponseWriter, "retry: 1000\n\nevent: instance\ndata: "+s.instance+"\n\n")
	}
}

func (s *sseRetry) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *sseRetry) Unwrap() http.ResponseWriter { return s.ResponseWriter }
