package daemon

import (
	"os"
	"sync"
	"sync/atomic"
	"time"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/web"
	"claudemesh/wire"
)

// The local chat page (03-daemon "Local web chat"): the daemon runs the
// page's server (package web) next to its socket, and keeps the human's
// web presence in every mesh while a page is connected.

// webLinger keeps the web presence up a while after the last page's
// event stream ended, so a reload or a short network drop does not show
// the human leaving and coming back.
var webLinger = 15 * time.Second

// webState is the page server and the page count behind the web presence.
type webState struct {
	srv *web.Server
	err error // why the page is not served (bad address, port taken)

	mu     sync.Mutex
	pages  int
	active bool
	linger *time.Timer
}

// startWeb serves the page when Options.Web names an address. Failing to
// listen is logged and reported to `claudemesh ui`, never fatal: the
// socket API is what the CLI and agents need.
func (d *Daemon) startWeb() {
	if d.opts.Web == "" || d.opts.Web == "off" {
		return
	}
	srv, err := web.New(web.Options{
		Addr: d.opts.Web, AllowRemote: d.opts.WebAllowRemote, TLSCert: d.opts.WebTLSCert, TLSKey: d.opts.WebTLSKey, AnyLocalUser: d.opts.WebAnyLocalUser,
		API: d.routes(), PageConnected: d.pageConnected, Logger: d.log,
	})
	if err == nil {
		err = srv.Listen()
	}
	if err != nil {
		d.web.err = err
		d.log.Warn("the chat page is not served", "addr", d.opts.Web, "err", err)
		return
	}
	d.web.srv = srv
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(); err != nil {
			d.log.Error("web serve", "err", err)
		}
	}()
	d.log.Info("chat page listening", "url", srv.BaseURL(), "pid", os.Getpid(), "peerCheck", srv.PeerCheck())
	if srv.PeerCheck() == "off" {
		d.log.Warn(web.AnyLocalUserWarning)
	}
	if w := web.RemoteWarning(d.opts.Web, srv.BaseURL()); w != "" {
		d.log.Warn(w)
	}
}

// webStatus is the page's state for `daemon status`.
func (d *Daemon) webStatus() *localapi.WebStatus {
	switch {
	case d.web.srv != nil:
		return &localapi.WebStatus{State: "serving", Addr: d.opts.Web, URL: d.web.srv.BaseURL(), PeerCheck: d.web.srv.PeerCheck()}
	case d.web.err != nil:
		return &localapi.WebStatus{State: "unavailable", Addr: d.opts.Web, Error: d.web.err.Error()}
	default:
		return &localapi.WebStatus{State: "off"}
	}
}

func (d *Daemon) stopWeb() {
	if d.web.srv != nil {
		d.web.srv.Close()
	}
	d.web.mu.Lock()
	if d.web.linger != nil {
		d.web.linger.Stop()
	}
	d.web.mu.Unlock()
}

// pageConnected counts a page's event stream; the first one brings the
// web presences up, and webLinger after the last one ends they go.
func (d *Daemon) pageConnected() func() {
	w := &d.web
	w.mu.Lock()
	w.pages++
	if w.linger != nil {
		w.linger.Stop()
		w.linger = nil
	}
	start := !w.active
	w.active = true
	w.mu.Unlock()
	if start {
		for _, m := range d.meshList() {
			m.setWebPresence(true)
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.pages--
			if w.pages > 0 {
				return
			}
			w.linger = time.AfterFunc(webLinger, func() {
				w.mu.Lock()
				if w.pages > 0 || !w.active {
					w.mu.Unlock()
					return
				}
				w.active = false
				w.linger = nil
				w.mu.Unlock()
				for _, m := range d.meshList() {
					m.setWebPresence(false)
				}
			})
		})
	}
}

// webActive reports whether a page is (or was a moment ago) connected; a
// mesh attached meanwhile starts its web presence too.
func (d *Daemon) webActive() bool {
	d.web.mu.Lock()
	defer d.web.mu.Unlock()
	return d.web.active
}

// setWebPresence opens or closes the human's web presence in this mesh: a
// member presence (role cli, sessionId "web", peerType human, channel web)
// that agents see in peer list while the page is open. Messages the page
// sends still go through the outbox on the control-plane connection, like
// every send of this member; a push that reaches the web presence (while
// the control-plane connection is away) is stored and acked like any
// other. Closing is clean (1000), so the broker ends the presence at once.
func (m *meshRT) setWebPresence(on bool) {
	m.webMu.Lock()
	defer m.webMu.Unlock()
	if on == (m.web.Load() != nil) {
		return
	}
	if !on {
		m.web.Swap(nil).Close()
		return
	}
	if m.d.ctx == nil || m.d.ctx.Err() != nil {
		return
	}
	host, _ := os.Hostname()
	// The connection a push came on, known before its first push (the
	// presence's Conn is set only once OnConnected is done).
	var latest atomic.Pointer[client.Conn]
	m.web.Store(client.StartPresence(m.d.ctx, m.ident, client.DialOptions{
		Role: wire.RoleCLI, Presence: true, SessionID: webSessionID, PeerType: wire.PeerHuman, Channel: webChannel,
		Hostname: host, Logger: m.d.log,
		OnReady:   func(c *client.Conn) { latest.Store(c) },
		OnPush:    func(raw []byte, push *wire.Push) { m.d.enqueueInboxFrom(m, push, latest.Load()) },
		OnReceipt: func(r *wire.Receipt) { m.d.enqueueReceipt(m, r, nil) },
	}, client.PresenceOptions{}))
}

// webConn is the web presence's current connection, or nil.
func (m *meshRT) webConn() *client.Conn {
	if p := m.web.Load(); p != nil {
		return p.Conn()
	}
	return nil
}

// webConnected reports whether the web presence is open.
func (m *meshRT) webConnected() bool {
	p := m.web.Load()
	if p == nil {
		return false
	}
	s, _ := p.State()
	return s == client.StateOpen
}

// The web presence's identity on the broker (01-protocol "Connection
// kinds": a member presence with its own sessionId).
const (
	webSessionID = "web"
	webChannel   = "web"
)
