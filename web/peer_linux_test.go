package web

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestPeerUIDFindsOurOwnConnections: over IPv4 and IPv6 loopback, and an
// IPv4 connection accepted by a dual-stack socket, the page finds the
// connecting socket and sees our uid.
func TestPeerUIDFindsOurOwnConnections(t *testing.T) {
	for _, c := range []struct{ listen, dial string }{
		{"tcp4", "127.0.0.1"}, {"tcp6", "::1"}, {"tcp", "127.0.0.1"},
	} {
		ln, err := net.Listen(c.listen, net.JoinHostPort(map[string]string{"tcp4": "127.0.0.1", "tcp6": "::1", "tcp": "::"}[c.listen], "0"))
		if err != nil {
			t.Logf("%s: %v (skipped)", c.listen, err)
			continue
		}
		defer ln.Close()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		cl, err := net.Dial("tcp", net.JoinHostPort(c.dial, port))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		local := netip.MustParseAddrPort(sc.LocalAddr().String())
		remote := netip.MustParseAddrPort(sc.RemoteAddr().String())
		uid, found, err := peerUID(local, remote)
		if err != nil || !found || uid != os.Getuid() {
			t.Fatalf("%s → %s: peerUID = %d, %v, %v; want our uid %d", c.listen, c.dial, uid, found, err, os.Getuid())
		}
		// The server's own end is not the peer.
		if _, found, _ := peerUID(remote, local); !found {
			t.Fatalf("%s: the reverse lookup finds the server's socket too", c.listen)
		}
	}
	if _, found, err := peerUID(netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")); found || err != nil {
		t.Fatalf("a connection that does not exist: found %v, %v", found, err)
	}
}

// dialAs opens a TCP connection whose socket belongs to uid, from a
// thread whose filesystem uid is set to it (the socket's owner is the
// creator's fsuid); the thread is thrown away afterwards.
func dialAs(t *testing.T, uid int, addr string) net.Conn {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(uid), 0, 0)
		c, err := net.Dial("tcp", addr)
		ch <- res{c, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// TestAnotherUsersConnectionIsRefused: a login link (or cookie) read from
// the process list is useless to another account on the machine: its
// connection is refused before the token is looked at, and the token still
// works for the daemon's own user.
func TestAnotherUsersConnectionIsRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to open a connection as another uid")
	}
	f := newFixture(t, false)
	tok := f.token()
	addr := strings.TrimPrefix(f.ts.URL, "http://")
	c := dialAs(t, 65534, addr)
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.RemoteAddr().String())
	if uid, found, _ := peerUID(remote, local); !found || uid != 65534 {
		t.Skipf("could not open a socket as uid 65534 here (found %v, uid %d)", found, uid)
	}
	req, _ := http.NewRequest("GET", f.ts.URL+"/login?token="+tok, nil)
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden || len(res.Cookies()) != 0 {
		t.Fatalf("another user's login: %d %v, want 403 and no cookie", res.StatusCode, res.Cookies())
	}
	// The token was not consumed: its owner still logs in with it.
	if res := f.do("GET", "/login?token="+tok, "", nil, ""); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("the owner's login after the refusal: %d", res.StatusCode)
	}
}

// TestUnownedSocketsPassForNobody: a row whose socket no process owns
// (inode 0: a client that closed at once, FIN_WAIT2, or TIME_WAIT) is
// listed with uid 0 and must not pass for root's connection; an owned row
// is found with its uid.
func TestUnownedSocketsPassForNobody(t *testing.T) {
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	dst := netip.MustParseAddrPort("127.0.0.1:7901")
	row := func(state, uid, inode string) string {
		// local 127.0.0.1:40000 (0x9C40), remote 127.0.0.1:7901 (0x1EDD), little-endian words.
		return "   0: 0100007F:9C40 0100007F:1EDD " + state + " 00000000:00000000 00:00000000 00000000 " + uid + " 0 " + inode + " 1 0000000000000000 20 4 30 10 -1\n"
	}
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	for _, c := range []struct {
		name  string
		table string
		found bool
		uid   int
	}{
		{"Unowned", header + row("05", "0", "0"), false, 0},
		{"TimeWait", header + row("06", "0", "0"), false, 0},
		{"Owned", header + row("01", "1000", "12345"), true, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tcp")
			if err := os.WriteFile(path, []byte(c.table), 0o600); err != nil {
				t.Fatal(err)
			}
			uid, found, err := scanTCPTable(path, src, dst)
			if err != nil || found != c.found || uid != c.uid {
				t.Fatalf("uid %d found %v err %v; want uid %d found %v", uid, found, err, c.uid, c.found)
			}
		})
	}
}

// TestARelayedBrowserNeedsTheOptOut: where /proc/net/tcp lists no sockets
// (WSL1, gVisor), or the browser's traffic comes through a relay (WSL2's
// localhost forwarding, a proxy run by root), the page refused its own
// user with nothing but a log line. The refusal and the log name
// --web-any-local-user, and with it (Options.AnyLocalUser) the same
// connection logs in.
func TestARelayedBrowserNeedsTheOptOut(t *testing.T) {
	dir := t.TempDir()
	header := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	empty := []string{filepath.Join(dir, "tcp"), filepath.Join(dir, "tcp6")}
	for _, p := range empty {
		if err := os.WriteFile(p, []byte(header), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := tcpTables
	tcpTables = empty
	t.Cleanup(func() { tcpTables = old })

	logs := &syncWriter{}
	f := newFixture(t, false)
	f.srv.opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if f.srv.PeerCheck() != "on" {
		t.Fatalf("peer check %q by default", f.srv.PeerCheck())
	}
	tok := f.token()
	res := f.do("GET", "/login?token="+tok, "", nil, "")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "--web-any-local-user") {
		t.Fatalf("a loopback connection with no socket in the tables: %d %s", res.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "no socket found") || !strings.Contains(logs.String(), "--web-any-local-user") {
		t.Fatalf("the log says: %s", logs.String())
	}

	g := newFixture(t, false)
	g.srv.opts.AnyLocalUser = true
	if g.srv.PeerCheck() != "off" {
		t.Fatalf("peer check %q with AnyLocalUser", g.srv.PeerCheck())
	}
	g.login()
}

// syncWriter is a log the server writes from its connections'
// goroutines while the test reads it.
type syncWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// listenAs listens on addr with a socket owned by uid (as dialAs dials).
func listenAs(t *testing.T, uid int, addr string) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		syscall.RawSyscall(syscall.SYS_SETFSUID, uintptr(uid), 0, 0)
		ln, err := net.Listen("tcp", addr)
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	return r.ln
}

// TestATakenPortSaysWhoseItIs: another local user can take the page's
// address while the daemon restarts (it binds the same address again).
// The daemon then served no page and said only "address already in use",
// which `claudemesh ui` explained as another daemon of this machine. It
// says whose the port is: another user's (whatever answers there is not
// the daemon's page) or another program of this user's.
func TestATakenPortSaysWhoseItIs(t *testing.T) {
	mine, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	for addr, want := range map[string]string{
		mine.Addr().String(): "held by another program of yours",
		"localhost:" + strings.Split(mine.Addr().String(), ":")[1]: "held by another program of yours",
	} {
		srv, err := New(Options{Addr: addr, API: &recorder{}})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("Listen on %s, taken by us: %v", addr, err)
		}
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to listen as another uid")
	}
	theirs := listenAs(t, 65534, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(theirs.Addr().String())
	if uid, found := portHolder(netip.MustParseAddr("127.0.0.1"), uint16(mustAtoi(t, port))); !found || uid != 65534 {
		t.Skipf("could not listen as uid 65534 here (found %v, uid %d)", found, uid)
	}
	srv, err := New(Options{Addr: theirs.Addr().String(), API: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err == nil || !strings.Contains(err.Error(), "held by another user of this machine (uid 65534)") {
		t.Fatalf("Listen on a port of uid 65534: %v", err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestALocalhostLinkNamesTheAddressHeld: with --web localhost:PORT the
// listener holds one loopback address (127.0.0.1), but the link said
// localhost, which a browser may resolve to ::1 first: another local user
// listening on [::1]:PORT got the login token. The link names the address
// held.
func TestALocalhostLinkNamesTheAddressHeld(t *testing.T) {
	srv, err := New(Options{Addr: "localhost:0", API: &recorder{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go srv.Serve()
	u, err := url.Parse(srv.BaseURL())
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(u.Hostname())
	held := netip.MustParseAddrPort(srv.ln.Addr().String())
	if err != nil || ip != held.Addr() || u.Port() != strconv.Itoa(int(held.Port())) {
		t.Fatalf("base URL %s for a listener on %s", srv.BaseURL(), srv.ln.Addr())
	}
}
