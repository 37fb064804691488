package e2e

// Measurements of the chat page for BENCHMARKS.md (not run by go test
// ./...): CLAUDEMESH_UI_BENCH=1 go test ./e2e -run TestWebBench -v
//
//   - send → painted: bob (an in-process connection of this test) sends
//     100 DMs one after another; the page records, in the browser, when
//     each message node was painted (the animation frame after it was
//     inserted); the delay is from the moment just before bob's send.
//   - the daemon's RSS with the page open over 10,000 inbox rows.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/web"
)

func benchEnabled(t *testing.T) {
	if os.Getenv("CLAUDEMESH_UI_BENCH") != "1" {
		t.Skip("a measurement for BENCHMARKS.md; run with CLAUDEMESH_UI_BENCH=1")
	}
}

// dialAs opens a transient connection with u's member key.
func dialAs(t *testing.T, u *user) (*client.Conn, config.Mesh) {
	t.Helper()
	cfg, err := config.Load(u.home)
	if err != nil || len(cfg.Meshes) != 1 {
		t.Fatalf("config of %s: %v", u.name, err)
	}
	m := cfg.Meshes[0]
	key, err := cmcrypto.ParseSecretKey(m.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(context.Background(), client.MeshIdentity{MeshID: m.MeshID, MemberID: m.MemberID,
		BrokerURL: m.BrokerURL, BrokerPubkey: m.BrokerPubkey, Member: key}, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, m
}

func sendDM(t *testing.T, c *client.Conn, m config.Mesh, to, body string) {
	key, _ := cmcrypto.ParseSecretKey(m.SecretKey)
	s, err := client.SealDM(to, []byte(body), key, client.SendOptions{})
	if err != nil {
		t.Error(err)
		return
	}
	if _, err := c.Send(context.Background(), s); err != nil {
		t.Error(err)
	}
}

func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

func percentile(sorted []float64, p float64) float64 {
	i := int(float64(len(sorted)-1) * p)
	return sorted[i]
}

func TestWebBenchSendToPaint(t *testing.T) {
	benchEnabled(t)
	w := setupWebMesh(t)
	br := newBrowser(t, 1280, 800)
	login := w.login(t)
	br.do("login", chromedpNavigate(login.URL))
	br.waitJS("the page", `document.querySelector('#people-list') !== null`, 15*time.Second)
	c, m := dialAs(t, w.bob)
	sendDM(t, c, m, w.alice.pubkey, "warm-up")
	br.openThread(w.bob.pubkey, "bob")
	br.waitJS("warm-up", hasMessage("warm-up"), 10*time.Second)
	eval[bool](br, `(() => {
		window.__paint = {};
		new MutationObserver((recs) => {
			for (const r of recs) for (const n of r.addedNodes) {
				const b = n.querySelector && n.querySelector('.body');
				if (!b || !b.textContent.startsWith('bench-')) continue;
				const key = b.textContent;
				requestAnimationFrame(() => { window.__paint[key] = performance.timeOrigin + performance.now(); });
			}
		}).observe(document.getElementById('message-list'), {childList: true});
		return true;
	})()`)
	const n = 100
	sent := make([]float64, n)
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("bench-%03d", i)
		sent[i] = float64(time.Now().UnixMicro()) / 1000
		sendDM(t, c, m, w.alice.pubkey, body)
		br.waitJS(body, `window.__paint[`+jsString(body)+`] !== undefined`, 10*time.Second)
	}
	painted := eval[map[string]float64](br, `window.__paint`)
	var d []float64
	for i := 0; i < n; i++ {
		d = append(d, painted[fmt.Sprintf("bench-%03d", i)]-sent[i])
	}
	slices.Sort(d)
	load, _ := os.ReadFile("/proc/loadavg")
	total, files := web.PageWeight()
	t.Logf("send → painted over %d DMs: p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (load %s)",
		n, percentile(d, 0.5), percentile(d, 0.9), percentile(d, 0.99), d[len(d)-1], strings.TrimSpace(string(load)))
	t.Logf("page weight: %d bytes %v", total, files)
}

func TestWebBenchRSS(t *testing.T) {
	benchEnabled(t)
	const rows = 10000
	w := setupWebMesh(t, "--rate", "100000", "--burst", "100000")
	st := w.alice.daemonStatus()
	before := rssKiB(t, st.PID)
	c, m := dialAs(t, w.bob)
	var wg sync.WaitGroup
	work := make(chan int)
	for g := 0; g < 16; g++ {
		wg.Go(func() {
			for i := range work {
				sendDM(t, c, m, w.alice.pubkey, fmt.Sprintf("row %05d: a message of a realistic length, about a hundred bytes, like most of them", i))
			}
		})
	}
	start := time.Now()
	for i := 0; i < rows; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	eventually(t, 120*time.Second, "10,000 rows in alice's inbox", func() bool {
		var rs []struct{ ID string }
		w.alice.json(&rs, "inbox", "--limit", "0")
		return len(rs) >= rows
	})
	filled := rssKiB(t, st.PID)
	t.Logf("filled %d rows in %s", rows, time.Since(start).Round(time.Millisecond))
	br := newBrowser(t, 1280, 800)
	login := w.login(t)
	loadStart := time.Now()
	br.do("login", chromedpNavigate(login.URL))
	br.waitJS("the page with bob's unread count", `(() => { const b = `+peerButton(w.bob.pubkey)+`; return b && b.querySelector('.badge') })()`, 60*time.Second)
	loaded := time.Since(loadStart)
	br.openThread(w.bob.pubkey, "bob")
	opened := time.Since(loadStart)
	br.do("search", chromedpSendKeys("#search", "row 04200:"))
	br.waitJS("a search result", `document.querySelectorAll('#result-list .result').length === 1`, 30*time.Second)
	searched := time.Since(loadStart)
	withPage := rssKiB(t, st.PID)
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("daemon RSS: %d KiB idle and empty, %d KiB with %d rows, %d KiB with the page open (threads listed, a thread open, a search) (load %s)",
		before, filled, rows, withPage, strings.TrimSpace(string(load)))
	t.Logf("page over %d rows: sidebar with unread counts %s, thread open %s, search done %s (cumulative)",
		rows, loaded.Round(time.Millisecond), opened.Round(time.Millisecond), searched.Round(time.Millisecond))
}
