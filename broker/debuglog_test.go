package broker

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/lockedbuf"
	"claudemesh/wire"
)

// debugLines parses the JSON log lines written so far.
func debugLines(t *testing.T, logs *lockedbuf.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// findLine returns the first line whose msg is msg and whose fields
// include every one of want (compared as printed).
func findLine(lines []map[string]any, msg string, want map[string]any) map[string]any {
next:
	for _, l := range lines {
		if l["msg"] != msg {
			continue
		}
		for k, v := range want {
			if fmt.Sprint(l[k]) != fmt.Sprint(v) {
				continue next
			}
		}
		return l
	}
	return nil
}

func startLogged(t *testing.T, level slog.Level) (*Broker, *lockedbuf.Buffer) {
	var logs lockedbuf.Buffer
	b := startBroker(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: level}))
	})
	return b, &logs
}

// A new user's trial: --log-level debug wrote nothing more than info, so an
// operator asked "I can't connect" had only counters. At debug, joins,
// connections, refused handshakes and failed requests each leave a line.
func TestDebugLogSaysWhoConnectedJoinedAndWasRefused(t *testing.T) {
	b, logs := startLogged(t, slog.LevelDebug)
	owner := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, owner, "team", "bob")
	prefix := bob.pub()[:8]

	r := connect(t, b, bob, true, nil)
	r.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))

	// A stranger's hello (a key the mesh does not have).
	stranger, _ := cmcrypto.GenerateIdentity()
	s := dial(t, b)
	s.write(s.helloFrame(ident{key: stranger, meshID: owner.meshID, memberID: "nobody"}, nil))

	// A request to /ws that is not a WebSocket, a bad operator token, a
	// join that is not one.
	resp, err := http.Get(b.HTTPURL() + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st, _ := postJSON(t, b.HTTPURL()+"/v1/admin/meshes", "wrong-token", map[string]string{"slug": "x"}); st != 401 {
		t.Fatalf("bad operator token: %d", st)
	}
	if st, _ := postJSON(t, b.HTTPURL()+"/v1/join", "", map[string]string{"token": "junk"}); st != 400 {
		t.Fatalf("junk join: %d", st)
	}

	want := []struct {
		msg    string
		fields map[string]any
	}{
		{"member joined", map[string]any{"mesh": owner.meshID, "member": prefix, "name": "bob", "ip": "127.0.0.1"}},
		{"connection opened", map[string]any{"mesh": owner.meshID, "member": prefix, "presence": true, "ip": "127.0.0.1"}},
		{"connection closed", map[string]any{"mesh": owner.meshID, "member": prefix, "by": "client", "code": 1000, "reason": "bye"}},
		{"handshake failed", map[string]any{"code": wire.CodeUnauthorized, "ip": "127.0.0.1"}},
		{"websocket refused", map[string]any{"ip": "127.0.0.1"}},
		{"http request", map[string]any{"method": "POST", "path": "/v1/admin/meshes", "status": 401, "code": wire.CodeUnauthorized}},
		{"join refused", map[string]any{"code": wire.CodeMalformed, "ip": "127.0.0.1"}},
		{"http request", map[string]any{"method": "POST", "path": "/v1/join", "status": 400, "code": wire.CodeMalformed}},
	}
	missing := func() (out []string) {
		lines := debugLines(t, logs)
		for _, w := range want {
			if findLine(lines, w.msg, w.fields) == nil {
				out = append(out, fmt.Sprintf("%q with %v", w.msg, w.fields))
			}
		}
		return out
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(missing()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no line %s in:\n%s", strings.Join(missing(), ", no line "), logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Nothing secret: no operator token, no whole key.
	if strings.Contains(logs.String(), b.OperatorToken()) || strings.Contains(logs.String(), bob.pub()) {
		t.Fatalf("a secret or a whole key in the log:\n%s", logs.String())
	}
}

// At info (the default) none of those lines is written.
func TestInfoLogHasNoConnectionLines(t *testing.T) {
	b, logs := startLogged(t, slog.LevelInfo)
	owner := createMesh(t, b, "team", "alice")
	bob := addMember(t, b, owner, "team", "bob")
	r := connect(t, b, bob, true, nil)
	r.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	resp, err := http.Get(b.HTTPURL() + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, "bob's connection to end", func() bool { return !online(b, owner.meshID, bob.pub()) })
	for _, l := range debugLines(t, logs) {
		if l["level"] == "DEBUG" {
			t.Fatalf("a debug line at info: %v", l)
		}
	}
}

// A client that repeats what logs a line cannot grow the log without
// bound: a burst of lines a second per kind and address, the next saying
// how many were left out.
func TestDebugLinesAreRateLimitedPerAddress(t *testing.T) {
	b, logs := startLogged(t, slog.LevelDebug)
	start := time.Now()
	const n = 30
	for range n {
		resp, err := http.Get(b.HTTPURL() + "/ws")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	elapsed := time.Since(start)
	count := func() (lines int, skipped float64) {
		for _, l := range debugLines(t, logs) {
			if l["msg"] == "websocket refused" {
				lines++
				if s, ok := l["skipped"].(float64); ok {
					skipped += s
				}
			}
		}
		return
	}
	got, _ := count()
	if limit := debugBurst * (1 + int(elapsed/debugEvery)); got < debugBurst || got > limit {
		t.Fatalf("%d lines for %d refusals in %v, want %d to %d", got, n, elapsed, debugBurst, limit)
	}
	// The next line once the second has passed says what was left out.
	b.dbg.lines.Age("websocket refused|127.0.0.1", time.Hour)
	resp, err := http.Get(b.HTTPURL() + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	lines, skipped := count()
	if lines != got+1 || int(skipped)+lines != n+1 {
		t.Fatalf("after the pause: %d lines (had %d), %v skipped, want %d refusals in all", lines, got, skipped, n+1)
	}
}

func online(b *Broker, meshID, pubkey string) bool {
	ms := b.hub.mesh(meshID)
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.online(pubkey)
}

// The `http request` line was keyed by its path, which the client
// chooses: one address requesting a new path each time had a line each
// (~260 a second), and 256 such paths filled the limiter's memory so every
// other debug line of the broker shared one key. It is keyed by host and
// status: one address's junk requests get debugBurst lines a second, and
// a member's connection is still logged after them.
func TestDebugLinesKeyByHostNotPath(t *testing.T) {
	b, logs := startLogged(t, slog.LevelDebug)
	start := time.Now()
	const n = 300
	for i := range n {
		resp, err := http.Get(fmt.Sprintf("%s/junk-%d", b.HTTPURL(), i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	elapsed := time.Since(start)
	lines := 0
	for _, l := range debugLines(t, logs) {
		if l["msg"] == "http request" {
			lines++
		}
	}
	if limit := debugBurst * (1 + int(elapsed/debugEvery)); lines < 1 || lines > limit {
		t.Fatalf("%d \"http request\" lines for %d requests of new paths from one address in %v, want 1 to %d", lines, n, elapsed, limit)
	}
	if kept := b.dbg.lines.Keys(); kept > 4 {
		t.Fatalf("the limiter remembers %d keys after one address's requests, want a few", kept)
	}
}
