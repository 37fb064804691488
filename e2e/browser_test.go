package e2e

// Helpers for driving the local chat page in a real headless Chromium
// (Debian's chromium package) with chromedp: one browser per test, a TCP
// proxy in front of the page so a test can cut the page's connections the
// way a network drop or a laptop's sleep would, and DOM conditions waited
// for with deadlines.

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"claudemesh/internal/lockedbuf"
)

// chromiumPath finds the browser. A missing browser fails the test: CI
// installs Debian's chromium (.ci/run), so a skip would hide a broken set-up.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CLAUDEMESH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatalf("no Chromium found on PATH: the browser test needs Debian's chromium package " +
		"(apt-get install chromium; .ci/run installs it when missing), or CLAUDEMESH_CHROMIUM=/path/to/chrome")
	return ""
}

// browser is one headless Chromium with one tab.
type browser struct {
	t      *testing.T
	ctx    context.Context
	cancel context.CancelFunc
	logs   *lockedbuf.Buffer
}

// newBrowser starts Chromium with the flags this machine needs as root
// (no sandbox) and with everything that would reach out to the network
// switched off.
func newBrowser(t *testing.T, width, height int) *browser {
	t.Helper()
	logs := &lockedbuf.Buffer{Max: 1 << 20}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints"),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
		chromedp.CombinedOutput(logs),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &browser{t: t, ctx: ctx, logs: logs, cancel: func() { cancel(); acancel() }}
	t.Cleanup(b.cancel)
	// The first Run starts the browser; it must not carry a timeout (that
	// would end the browser with it), so a watchdog bounds it instead.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx, chromedp.Navigate("about:blank")) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("Chromium did not start: %v\n%s", err, logs.String())
		}
	case <-time.After(90 * time.Second):
		b.cancel()
		t.Fatalf("Chromium did not start within 90s\n%s", logs.String())
	}
	return b
}

// do runs actions with a deadline.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// click clicks the element sel matches with the mouse. The page may
// re-render a list between finding the node and clicking it (a live
// update); the click is then tried again on the new node, up to a deadline.
func (b *browser) click(what, sel string) {
	b.t.Helper()
	deadline := time.Now().Add(minWait)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel)))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "node") {
			b.t.Fatalf("%s: %v", what, err)
		}
	}
}

// eval evaluates a script in the page. It goes through the DevTools
// protocol, which the page's CSP does not restrict, so the page runs under
// its own policy (no eval, Trusted Types) while the test inspects it.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// waitJS waits until the expression is true in the page, polling every
// 10 ms up to d, and never less than minWait (a bound on a hang, not a
// promise of speed). It returns how long that took.
func (b *browser) waitJS(what, js string, d time.Duration) time.Duration {
	b.t.Helper()
	d = max(d, minWait)
	start := time.Now()
	deadline := start.Add(d)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+js+")"))
		cancel()
		if err == nil && ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %s waiting for %s (%s); last error %v; page text:\n%s", d, what, js, err, b.text())
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

// holdsWithin reports whether the expression becomes true within d
// (polling as waitJS does), without failing the test.
func (b *browser) holdsWithin(js string, d time.Duration) bool {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+js+")"))
		cancel()
		if err == nil && ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}

// failRequests makes the page's next n requests whose URL matches pattern
// (DevTools wildcards: * and ?) fail as a dropped connection does, and lets
// every other request through; stop ends the interception. failed counts
// the requests failed so far.
func (b *browser) failRequests(pattern string, n int) (failed func() int, stop func()) {
	b.t.Helper()
	var mu sync.Mutex
	count := 0
	// The listener must not run commands itself (it would wait for its own
	// loop): the answers go from a goroutine.
	chromedp.Listen(b.ctx, func(ev any) {
		e, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		mu.Lock()
		fail := count < n
		if fail {
			count++
		}
		mu.Unlock()
		go func() {
			ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
			defer cancel()
			if fail {
				chromedp.Call(ctx, fetch.FailRequest, fetch.FailRequestParams{RequestID: e.RequestID, ErrorReason: network.ErrorReasonConnectionFailed})
			} else {
				chromedp.Call(ctx, fetch.ContinueRequest, fetch.ContinueRequestParams{RequestID: e.RequestID})
			}
		}()
	})
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: pattern}}}); err != nil {
		b.t.Fatalf("intercepting %s: %v", pattern, err)
	}
	failed = func() int { mu.Lock(); defer mu.Unlock(); return count }
	stop = func() {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		if _, err := chromedp.Call(ctx, fetch.Disable, cdp.Empty{}); err != nil {
			b.t.Fatalf("ending the interception of %s: %v", pattern, err)
		}
	}
	return failed, stop
}

// text is the page's visible text, for failure messages.
func (b *browser) text() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string]("document.body ? document.body.innerText : ''"))
	if len(s) > 4000 {
		s = s[:4000] + "…"
	}
	return s
}

// screenshot saves a PNG into $CLAUDEMESH_UI_SCREENSHOTS, when set.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv("CLAUDEMESH_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// viewport resizes the page (the narrow layout is 360 px wide).
func (b *browser) viewport(w, h int64, mobile bool) {
	b.t.Helper()
	opts := []chromedp.EmulateViewportOption{}
	if mobile {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateScale(2))
	}
	b.do("viewport", chromedp.EmulateViewport(w, h, opts...))
}

// colorScheme emulates prefers-color-scheme ("" resets).
func (b *browser) colorScheme(scheme string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	p := emulation.SetEmulatedMediaParams{}
	if scheme != "" {
		p.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}
	}
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p); err != nil {
		b.t.Fatalf("emulating %s: %v", scheme, err)
	}
}

// key presses a key the way a keyboard does (keyDown with its text, then
// keyUp), so a page that prevents the keydown's default also prevents the
// text (chromedp's SendKeys sends the text as a separate char event, which
// a textarea inserts whatever its keydown handler did).
func (b *browser) key(key, code, text string, vk int64, modifiers int64) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	down := input.DispatchKeyEventParams{Type: input.DispatchKeyEventTypeKeyDown, Key: key, Code: code, Text: text,
		UnmodifiedText: text, WindowsVirtualKeyCode: vk, NativeVirtualKeyCode: vk, Modifiers: modifiers}
	up := down
	up.Type, up.Text, up.UnmodifiedText = input.DispatchKeyEventTypeKeyUp, "", ""
	for _, p := range []input.DispatchKeyEventParams{down, up} {
		if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, p); err != nil {
			b.t.Fatalf("key %s: %v", key, err)
		}
	}
}

// enter presses Enter (with Shift when shift is set).
func (b *browser) enter(shift bool) {
	b.t.Helper()
	var mod int64
	if shift {
		mod = 8
	}
	b.key("Enter", "Enter", "\r", 13, mod)
}

// jsString quotes s for a script.
func jsString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x2028 || r == 0x2029 || (r >= 0x7f && r <= 0x9f):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// ---- a proxy in front of the page ----

// cutProxy forwards TCP connections to target until cut: then it closes
// every open connection and refuses new ones (accepts and closes at once)
// until resumed, as a dropped network would.
type cutProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	paused bool
	// hold: the event stream's next response passes its headers (the
	// page sees the stream open) and holds its events until released
	// (holdEvents).
	hold chan struct{}
}

func startProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		paused := p.paused
		if !paused {
			p.conns[c] = struct{}{}
		}
		p.mu.Unlock()
		if paused {
			c.Close()
			continue
		}
		go p.pipe(c)
	}
}

func (p *cutProxy) pipe(c net.Conn) {
	defer p.drop(c)
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	p.mu.Lock()
	if p.paused {
		p.mu.Unlock()
		up.Close()
		return
	}
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer p.drop(up)
	done := make(chan struct{}, 2)
	var events atomic.Bool // this connection asked for the event stream
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if bytes.Contains(buf[:n], []byte("GET /api/v1/events")) {
					events.Store(true)
				}
				if _, werr := up.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	go func() {
		var head []byte // the event stream's response until its headers end
		buf := make([]byte, 32<<10)
		for {
			n, err := up.Read(buf)
			out := buf[:n]
			if n > 0 && events.Load() {
				p.mu.Lock()
				hold := p.hold
				p.mu.Unlock()
				if hold != nil {
					head = append(head, out...)
					i := bytes.Index(head, []byte("\r\n\r\n"))
					if i < 0 {
						if err != nil {
							break
						}
						continue
					}
					if _, werr := c.Write(head[:i+4]); werr != nil {
						break
					}
					<-hold
					out, head = head[i+4:], nil
					p.mu.Lock()
					if p.hold == hold {
						p.hold = nil
					}
					p.mu.Unlock()
				}
			}
			if len(out) > 0 {
				if _, werr := c.Write(out); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}()
	<-done
}

// holdEvents makes the next event stream opened through the proxy pass
// its response headers and hold its events until release is called.
func (p *cutProxy) holdEvents() (release func()) {
	hold := make(chan struct{})
	p.mu.Lock()
	p.hold = hold
	p.mu.Unlock()
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	p.t.Cleanup(release)
	return release
}

func (p *cutProxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// cut closes every connection and refuses new ones.
func (p *cutProxy) cut() {
	p.mu.Lock()
	p.paused = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
}

func (p *cutProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

func chromedpNavigate(u string) chromedp.Action[chromedp.Void] { return chromedp.Navigate(u) }

func chromedpSendKeys(sel, text string) chromedp.Action[chromedp.Void] {
	return chromedp.SendKeys(chromedp.CSS(sel), text)
}
