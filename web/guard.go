package web

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
)

// contentSecurityPolicy allows the page's own script, style and requests
// and nothing else: no inline script or style, no other origin, no frames,
// no plugins, no forms posting elsewhere. Trusted Types with no policy make
// every HTML-parsing sink (innerHTML and friends) throw, so even a future
// slip in the script cannot turn a peer's text into markup.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// securityHeaders go on every answer, errors included.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()")
	h.Set("Cache-Control", "no-store")
}

// loopbackName reports whether host (no port) names this machine's
// loopback interface.
func loopbackName(host string) bool {
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// hostAllowed is the DNS-rebinding defence: a page on evil.example whose
// name an attacker re-points at 127.0.0.1 still sends Host: evil.example,
// so only loopback names pass. With --web-allow-remote, IP literals pass
// too (a rebinding attack needs a name; an address cannot be re-pointed).
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if loopbackName(host) {
		return true
	}
	return s.opts.AllowRemote && net.ParseIP(host) != nil
}

// sameOrigin reports whether an Origin header names this very server as
// the request reached it (scheme, and host:port equal to Host).
func sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Path != "" && u.Path != "/" {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && strings.EqualFold(u.Host, r.Host)
}

// originAllowed: a write must carry our own Origin (browsers always send
// one on POST); any request that carries a foreign one is refused, and so
// is one the browser itself marks cross-site (Sec-Fetch-Site).
func originAllowed(r *http.Request) bool {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return r.Method == http.MethodGet || r.Method == http.MethodHead
	}
	return sameOrigin(r, origin)
}

// fetchSiteAllowed is the API's rule on the browser's fetch metadata: the
// page's own script (same-origin) or the human typing an address (none),
// never another page, not even one on 127.0.0.1 at another port
// (same-site), whose <img> or link would otherwise reach a GET. A client
// that sends no Sec-Fetch-Site is no browser, or an old one: the page key
// stands in its way.
func fetchSiteAllowed(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return false
}

// peerAllowed is the defence against the machine's other users, who reach
// 127.0.0.1 as easily as the user running the daemon: on Linux, a
// connection from a socket on this machine must belong to the daemon's own
// uid (looked up by the connection's addresses in /proc/net/tcp{,6}), so a
// login link, session cookie or page key read elsewhere (the process list,
// a leaked header) is useless to another account. A connection from no
// local socket comes from another host, which only --web-allow-remote
// admits; anything that cannot be checked is refused. Elsewhere the check
// is not available and every local connection passes (docs/security.md).
//
// Options.AnyLocalUser (daemon up --web-any-local-user) turns the check
// off, for a browser behind a relay that this check refuses.
func (s *Server) peerAllowed(r *http.Request) bool {
	if !peerCheckSupported || s.opts.AnyLocalUser {
		return true
	}
	// The peer of a connection does not change: it is looked up once per
	// connection, not per request (each lookup reads both tables, which
	// grow with every socket on the machine).
	if v, _ := r.Context().Value(peerVerdictKey{}).(*peerVerdict); v != nil {
		v.once.Do(func() { v.ok = s.checkPeer(r) })
		return v.ok
	}
	return s.checkPeer(r)
}

// peerVerdictKey holds a connection's *peerVerdict in its context
// (http.Server.ConnContext).
type peerVerdictKey struct{}

type peerVerdict struct {
	once sync.Once
	ok   bool
}

// withPeerVerdict is the server's ConnContext: a place for the verdict.
func withPeerVerdict(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, peerVerdictKey{}, &peerVerdict{})
}

// AnyLocalUserHint is what the refusals say to a user who is refused
// their own page.
const AnyLocalUserHint = "if this is your own browser, reaching the page through a relay (WSL2's localhost forwarding, a proxy run by root) " +
	"or on a system whose /proc/net/tcp lists no sockets (WSL1, gVisor), restart the daemon with --web-any-local-user: " +
	"it turns this check off, so any local user with a login link, or the session cookie and page key, can use the page"

// RemoteWarning is what the daemon, `daemon up` and `daemon status` say
// while the page listens on addr (daemon up --web) beyond loopback
// (--web-allow-remote); "" on loopback. url is the page's URL, for the
// port a listen address of port 0 was given.
func RemoteWarning(addr, url string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || isLoopbackName(host) {
		return ""
	}
	if i := strings.LastIndexByte(url, ':'); i >= 0 && port == "0" {
		port = strings.TrimRight(url[i+1:], "/")
	}
	where := "every interface"
	if host != "" && host != "0.0.0.0" && host != "::" {
		where = host
	}
	return "--web-allow-remote: the chat page listens on " + where + ", port " + port + ", reachable from the network: " +
		"anyone who reaches it and gets a login link, or the session cookie and page key, acts as you in every mesh"
}

// isLoopbackName is true for localhost and loopback IP literals.
func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// AnyLocalUserWarning is what the daemon, `daemon up`, `daemon status` and
// `claudemesh ui` say while the check is off.
const AnyLocalUserWarning = "--web-any-local-user: the chat page does not check which local user connects; " +
	"anyone on this machine who gets a login link, or the session cookie and page key, acts as you in every mesh"

// PeerCheck says how the page tells its user's connections from other
// local users': "on" (Linux, by /proc/net/tcp), "off"
// (Options.AnyLocalUser) or "unsupported" (other systems).
func (s *Server) PeerCheck() string {
	switch {
	case !peerCheckSupported:
		return "unsupported"
	case s.opts.AnyLocalUser:
		return "off"
	}
	return "on"
}

func (s *Server) checkPeer(r *http.Request) bool {
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if la == nil {
		return false
	}
	local, err1 := netip.ParseAddrPort(la.String())
	remote, err2 := netip.ParseAddrPort(r.RemoteAddr)
	if err1 != nil || err2 != nil {
		return false
	}
	uid, found, err := peerUID(local, remote)
	if err != nil {
		s.refused.warn(s.opts.Logger, "unknown", "web: cannot tell which user connected; refused", "remote", r.RemoteAddr, "err", err, "hint", AnyLocalUserHint)
		return false
	}
	if found {
		if uid != os.Getuid() {
			s.refused.warn(s.opts.Logger, "uid "+strconv.Itoa(uid), "web: a connection of another user refused", "remote", r.RemoteAddr, "uid", uid, "hint", AnyLocalUserHint)
			return false
		}
		return true
	}
	if remote.Addr().Unmap().IsLoopback() {
		// Logged: a relay the browser's traffic passes through (WSL's
		// localhost forwarding, a proxy) leaves no socket of this user.
		s.refused.warn(s.opts.Logger, "no socket", "web: a loopback connection with no socket found in /proc/net/tcp{,6} refused", "remote", r.RemoteAddr, "hint", AnyLocalUserHint)
	}
	return s.opts.AllowRemote && !remote.Addr().Unmap().IsLoopback()
}
