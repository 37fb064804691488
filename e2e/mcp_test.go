package e2e

// `claudemesh mcp` driven by an MCP client that is not ours: the official
// Go SDK's client over stdio, as Claude Code would run it.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"claudemesh/internal/lockedbuf"
)

// channelNote is one notifications/claude/channel as received.
type channelNote struct {
	Content string
	Meta    map[string]string
	At      time.Time
}

// captureTransport wraps the client's transport and takes the channel
// notifications out of the stream (the SDK client has no handler for a
// method outside the MCP specification), checking that meta holds strings
// only.
type captureTransport struct {
	inner sdk.Transport
	t     *testing.T

	mu      sync.Mutex
	notes   []channelNote
	changed chan struct{}
}

func newCapture(t *testing.T, cmd *exec.Cmd) *captureTransport {
	return &captureTransport{inner: &sdk.CommandTransport{Command: cmd}, t: t, changed: make(chan struct{})}
}

func (c *captureTransport) Connect(ctx context.Context) (sdk.Connection, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &captureConn{Connection: conn, c: c}, nil
}

type captureConn struct {
	sdk.Connection
	c *captureTransport
}

func (cc *captureConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	for {
		m, err := cc.Connection.Read(ctx)
		if err != nil {
			return m, err
		}
		r, ok := m.(*jsonrpc.Request)
		if !ok || r.Method != "notifications/claude/channel" {
			return m, nil
		}
		var raw struct {
			Content string         `json:"content"`
			Meta    map[string]any `json:"meta"`
		}
		if err := json.Unmarshal(r.Params, &raw); err != nil {
			cc.c.t.Errorf("channel params: %v: %s", err, r.Params)
			continue
		}
		n := channelNote{Content: raw.Content, Meta: map[string]string{}, At: time.Now()}
		for k, v := range raw.Meta {
			s, ok := v.(string)
			if !ok {
				cc.c.t.Errorf("meta %q is %T, not a string: %s", k, v, r.Params)
			}
			n.Meta[k] = s
		}
		cc.c.mu.Lock()
		cc.c.notes = append(cc.c.notes, n)
		close(cc.c.changed)
		cc.c.changed = make(chan struct{})
		cc.c.mu.Unlock()
	}
}

// waitNote waits for a notification that match accepts.
func (c *captureTransport) waitNote(what string, match func(channelNote) bool) channelNote {
	c.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		for _, n := range c.notes {
			if match(n) {
				c.mu.Unlock()
				return n
			}
		}
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			c.mu.Lock()
			defer c.mu.Unlock()
			c.t.Fatalf("no notification %s; got %+v", what, c.notes)
		}
	}
}

func (c *captureTransport) all() []channelNote {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.notes)
}

// startMCP runs `claudemesh mcp` for u under the SDK's client.
func startMCP(t *testing.T, u *user, args ...string) (*sdk.ClientSession, *captureTransport, *lockedbuf.Buffer) {
	t.Helper()
	return startMCPIn(t, u, "", args...)
}

// startMCPIn is startMCP with dir as the server's working directory (as
// claude's is where it was started); "" is the test's.
func startMCPIn(t *testing.T, u *user, dir string, args ...string) (*sdk.ClientSession, *captureTransport, *lockedbuf.Buffer) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--home", u.home, "mcp"}, args...)...)
	cmd.Dir = dir
	cmd.Env = u.env()
	if dir == "" {
		// With a directory of its own, the name comes from it, as an
		// ambient session's does; otherwise one the tests can match.
		cmd.Env = append(cmd.Env, "CLAUDEMESH_NAME="+u.name+"-mcp")
	}
	stderr := &lockedbuf.Buffer{}
	cmd.Stderr = stderr
	capture := newCapture(t, cmd)
	client := sdk.NewClient(&sdk.Implementation{Name: "e2e-client", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := client.Connect(ctx, capture, nil)
	if err != nil {
		t.Fatalf("initialize: %v; stderr: %s", err, stderr.String())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mcp stderr:\n%s", stderr.String())
		}
		// Closes its stdin and waits for the process to exit. A daemon it
		// started (it does whenever its event stream ends, also when a
		// test's cleanup killed the daemon a moment before) is stopped by
		// newUser's cleanup, which runs after this one.
		cs.Close()
	})
	return cs, capture, stderr
}

func daemonPID(t *testing.T, u *user) int {
	data, err := os.ReadFile(filepath.Join(u.home, "daemon", "daemon.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

func TestMCPServerPushesMessagesAcrossADaemonRestart(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	bob.startDaemon()
	alice.waitDaemonOpen()

	cs, capture, stderr := startMCP(t, alice)
	caps := cs.InitializeResult().Capabilities
	if caps.Experimental == nil || caps.Experimental["claude/channel"] == nil {
		t.Fatalf("no claude/channel capability: %+v", caps)
	}
	if caps.Tools != nil {
		t.Fatalf("tools advertised without --tools: %+v", caps.Tools)
	}
	welcome := capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	sessionKey := welcome.Meta["pubkey"]
	if len(sessionKey) != 64 || !strings.Contains(welcome.Content, "untrusted") {
		t.Fatalf("welcome: %+v", welcome)
	}
	// The session is a peer bob can see.
	eventually(t, 20*time.Second, "bob sees the ambient session", func() bool {
		var rows []peerRow
		bob.json(&rows, "peer", "list")
		for _, r := range rows {
			if r.Pubkey == sessionKey && r.Online && r.DisplayName == "alice-mcp" {
				return true
			}
		}
		return false
	})

	body := func(text string) func(channelNote) bool {
		return func(n channelNote) bool { return strings.HasSuffix(n.Content, ": "+text) }
	}
	sent := time.Now()
	bob.ok("send", sessionKey, "one")
	n := capture.waitNote("one", body("one"))
	t.Logf("send → notification (CLI process included): %s", n.At.Sub(sent).Round(time.Millisecond))
	if n.Content != "bob: one" || n.Meta["from_name"] != "bob" || n.Meta["from_pubkey"] != bob.pubkey || n.Meta["from_member_pubkey"] != bob.pubkey ||
		n.Meta["mesh"] != "test" || n.Meta["priority"] != "next" || n.Meta["kind"] != "box" || n.Meta["message_id"] == "" || n.Meta["client_message_id"] == "" {
		t.Fatalf("notification: %+v", n)
	}
	bob.ok("send", sessionKey, "urgent one", "--priority", "now")
	if u := capture.waitNote("urgent", body("urgent one")); !strings.HasPrefix(u.Content, "[URGENT] bob: ") || u.Meta["priority"] != "now" {
		t.Fatalf("urgent: %+v", u)
	}

	// Kill the daemon under the running MCP server; a message sent
	// meanwhile arrives once it is back, and nothing is shown twice.
	pid := daemonPID(t, alice)
	syscall.Kill(pid, syscall.SIGKILL)
	waitExit(t, pid)
	bob.ok("send", sessionKey, "two")
	alice.startDaemon()
	capture.waitNote("two", body("two"))
	bob.ok("send", sessionKey, "three")
	capture.waitNote("three", body("three"))
	count := map[string]int{}
	for _, n := range capture.all() {
		count[n.Content]++
	}
	for c, k := range count {
		if k != 1 {
			t.Fatalf("%q shown %d times: %+v", c, k, capture.all())
		}
	}
	if !strings.Contains(stderr.String(), "daemon") {
		t.Logf("mcp stderr: %s", stderr.String())
	}
}

func TestMCPToolsSendMessage(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	cs, capture, _ := startMCP(t, alice, "--tools")
	capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
		if tool.InputSchema == nil {
			t.Fatalf("tool %s has no input schema", tool.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"check_messages", "list_peers", "send_message", "set_status", "set_summary"}) {
		t.Fatalf("tools: %v", names)
	}
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "send_message", Arguments: map[string]any{"to": "bob", "message": "via the tool"}})
	if err != nil || res.IsError {
		t.Fatalf("send_message: %+v %v", res, err)
	}
	res, err = cs.CallTool(ctx, &sdk.CallToolParams{Name: "send_message", Arguments: map[string]any{"to": "nobody-here", "message": "x"}})
	if err != nil || !res.IsError {
		t.Fatalf("an unknown target must be a tool error: %+v %v", res, err)
	}
	eventually(t, 20*time.Second, "bob got the tool's message", func() bool {
		for _, r := range bob.inbox() {
			if r.body() == "via the tool" && r.SenderName == "alice-mcp" && r.SenderMemberName == "alice" {
				return true
			}
		}
		return false
	})
}

// TestMCPPushBudgetHoldsAFlood: what one sender pushes into an agent
// session's context is bounded (mcp/budget.go): messages that fit its
// budget arrive whole, the next is cut to what is left (the whole text
// stays in the inbox), and once less than a cut's worth is left its
// messages are not pushed: the session is told, instead of a message,
// that the sender is held back. Before the budget every message went into
// the context whole, at the sender's send rate. The budget refills at
// ~533 characters a second, so the assertions hold however slowly a
// loaded machine sends (eight messages of 20,000 would need three
// minutes of refill to all fit).
func TestMCPPushBudgetHoldsAFlood(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	_, capture, _ := startMCP(t, alice)
	session := capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" }).Meta["pubkey"]

	// 20,000 characters each, and a few hundred for each notification's
	// attributes and block: the first three fit the 64,000 of the burst
	// whatever the timing; the fourth has ~2,900 left (more if the
	// sending was slow) and is cut; before the eighth, one is held.
	const n = 8
	flood := func(i int) string { return fmt.Sprintf("flood-%d %s", i, strings.Repeat("z", 20000)) }
	start := time.Now()
	for i := 1; i <= n; i++ {
		bob.ok("send", session, flood(i))
	}
	for i := 1; i <= 3; i++ {
		m := capture.waitNote(fmt.Sprintf("message %d", i), func(m channelNote) bool { return strings.Contains(m.Content, fmt.Sprintf("flood-%d ", i)) })
		if !strings.HasSuffix(m.Content, strings.Repeat("z", 20000)) || m.Meta["cut_chars"] != "" {
			t.Fatalf("message %d was not pushed whole: %d characters, meta %v", i, len(m.Content), m.Meta)
		}
	}
	held := capture.waitNote("the held notice", func(m channelNote) bool { return m.Meta["kind"] == "held" })
	if held.Meta["from_member_pubkey"] != bob.pubkey || !strings.HasPrefix(held.Content, "[claudemesh] bob is sending more than this session is shown") ||
		!strings.Contains(held.Content, "claudemesh inbox --unread --mark-seen --limit 5 --json") {
		t.Fatalf("held notice: %+v", held)
	}
	// Pushes are written in order: what came before the notice is all
	// that was pushed before the held message. Not all eight.
	pushed, cut := 0, 0
	for _, m := range capture.all() {
		if m.Meta["kind"] == "held" {
			break
		}
		if !strings.Contains(m.Content, "flood-") {
			continue
		}
		pushed++
		if m.Meta["cut_chars"] != "" {
			cut++
			if len(m.Content) >= 20000 || !strings.Contains(m.Content, "more characters: the whole message is in claudemesh inbox --json]") {
				t.Fatalf("a cut message of %d characters: %q…", len(m.Content), m.Content[:80])
			}
		}
	}
	if pushed >= n {
		t.Fatalf("all %d messages were pushed before the held notice", n)
	}
	// The fourth is cut unless the sends took so long (over ~30 s) that
	// the budget refilled a whole message's worth.
	if cut == 0 && time.Since(start) < 30*time.Second {
		t.Fatalf("no message was cut before the held notice (%d pushed in %s)", pushed, time.Since(start).Round(time.Millisecond))
	}
}

// TestMCPCheckMessagesReadsABacklogInOrder: check_messages returns at most
// 20 unread messages a call, the oldest first, so calling it again, as its
// description says, reads a backlog in the order it was sent. The backlog
// is what the push budget held back from a sender who sent too much.
func TestMCPCheckMessagesReadsABacklogInOrder(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	cs, capture, _ := startMCP(t, alice, "--tools")
	welcome := capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	session := welcome.Meta["pubkey"]
	const n = 50 // of 3,000 characters: well over the 64,000 pushed at once
	for i := range n {
		bob.ok("send", session, fmt.Sprintf("m%02d %s", i, strings.Repeat("x", 3000)))
	}
	capture.waitNote("the held notice", func(n channelNote) bool { return n.Meta["kind"] == "held" })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	read := func() []string {
		t.Helper()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "check_messages", Arguments: map[string]any{}})
		if err != nil || res.IsError || len(res.Content) != 1 {
			t.Fatalf("check_messages: %+v %v", res, err)
		}
		var rows []struct {
			Body string `json:"body"`
		}
		if err := json.Unmarshal([]byte(res.Content[0].(*sdk.TextContent).Text), &rows); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rows {
			out = append(out, r.Body[:3])
		}
		return out
	}
	var got []string
	eventually(t, 30*time.Second, "every message read or pushed", func() bool {
		got = append(got, read()...)
		pushed := 0
		for _, note := range capture.all() {
			if strings.Contains(note.Content, ": m") {
				pushed++
			}
		}
		return len(got) > 20 && len(got)+pushed >= n
	})
	if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
		t.Fatalf("check_messages read the backlog as %v, want it in the order sent", got)
	}
}

// TestMCPAnswersABadLineAndGoesOn: the SDK's stdio transport ended the
// session on the first line that was not JSON (a wrapper logging a line to
// the pipe cut the push channel); JSON-RPC 2.0 answers it with a parse
// error (-32700), JSON that is no request with -32600, and the server
// goes on with the next line.
func TestMCPAnswersABadLineAndGoesOn(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.startDaemon()
	cmd := exec.Command(bin, "--home", alice.home, "mcp")
	cmd.Env = append(alice.env(), "CLAUDEMESH_NAME=alice-raw")
	stderr := &lockedbuf.Buffer{}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	type answer struct {
		ID    json.RawMessage `json:"id"`
		Error *struct {
			Code int `json:"code"`
		} `json:"error"`
		Result json.RawMessage `json:"result"`
		Method string          `json:"method"`
	}
	next := func(what string) answer {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("%s: stdout closed; stderr:\n%s", what, stderr.String())
				}
				var a answer
				if err := json.Unmarshal([]byte(l), &a); err != nil {
					t.Fatalf("%s: not JSON on stdout: %q", what, l)
				}
				if a.Method != "" { // a notification (the welcome): not an answer
					continue
				}
				return a
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no answer; stderr:\n%s", what, stderr.String())
			}
		}
	}
	for _, c := range []struct {
		line, id string
		code     int
	}{
		{"garbage", "null", -32700},
		{`{"jsonrpc":"2.0","id":3,"method":"ping"} trailing`, "null", -32700},
		{`{"foo":1}`, "null", -32600},
		{`{"jsonrpc":"2.0","id":7,"method":5}`, "7", -32600},
		{`{"jsonrpc":"1.0","id":"a","method":"ping"}`, `"a"`, -32600},
	} {
		fmt.Fprintln(stdin, c.line)
		a := next(c.line)
		if a.Error == nil || a.Error.Code != c.code || string(a.ID) != c.id {
			t.Fatalf("%q: got id %s error %+v, want id %s code %d", c.line, a.ID, a.Error, c.id, c.code)
		}
	}
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if a := next("initialize"); string(a.ID) != "1" || a.Error != nil || !strings.Contains(string(a.Result), "claude/channel") {
		t.Fatalf("initialize: %+v %s", a, a.Result)
	}
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
	fmt.Fprintln(stdin, "another stray line")
	if a := next("stray after initialize"); a.Error == nil || a.Error.Code != -32700 {
		t.Fatalf("stray line: %+v", a)
	}
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","id":2,"method":"ping"}`)
	if a := next("ping"); string(a.ID) != "2" || a.Error != nil {
		t.Fatalf("ping: %+v", a)
	}
	// An error the SDK makes from a plain Go error had code 0, which
	// JSON-RPC does not define: a second initialize is an invalid
	// request.
	fmt.Fprintln(stdin, `{"jsonrpc":"2.0","id":9,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`)
	if a := next("a second initialize"); string(a.ID) != "9" || a.Error == nil || a.Error.Code != -32600 {
		t.Fatalf("a second initialize: %+v", a)
	}
	stdin.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mcp exited with %v after stdin closed; stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("mcp did not exit after stdin closed")
	}
}

// TestMCPKickedSessionIsTold: an admin's kick of an agent session ended
// its connection, and the session heard nothing of it (its MCP stream
// stayed silent) while its sends were "accepted" and then failed when it
// ended. It is now told, as a member's user is, and its sends are
// refused (kicked); a restart of the daemon connects it again, as the
// notice says.
func TestMCPKickedSessionIsTold(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	bob.startDaemon()
	bob.waitDaemonOpen()
	cs, capture, _ := startMCP(t, bob, "--tools")
	welcome := capture.waitNote("welcome", func(n channelNote) bool { return n.Meta["kind"] == "welcome" })
	sessionKey := welcome.Meta["pubkey"]
	online := func() bool {
		var rows []peerRow
		alice.json(&rows, "peer", "list")
		for _, r := range rows {
			if r.Pubkey == sessionKey && r.Online {
				return true
			}
		}
		return false
	}
	eventually(t, 20*time.Second, "alice sees bob's session", online)
	if r := alice.ok("kick", "bob-mcp"); !strings.Contains(r.stdout, "kicked") {
		t.Fatalf("kick: %s %s", r.stdout, r.stderr)
	}
	n := capture.waitNote("session_ended", func(n channelNote) bool { return n.Meta["kind"] == "session_ended" })
	if n.Meta["state"] != "kicked" || !strings.Contains(n.Content, "kicked") || !strings.Contains(n.Content, "daemon down") {
		t.Fatalf("notice: %+v", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "send_message", Arguments: map[string]any{"to": "alice", "message": "after the kick"}})
	if err != nil || !res.IsError || !strings.Contains(fmt.Sprint(res.Content[0]), "kicked") {
		t.Fatalf("a kicked session's send: %+v %v", res, err)
	}
	// The daemon restarted: the session is connected again.
	bob.ok("daemon", "down")
	bob.startDaemon()
	eventually(t, 20*time.Second, "alice sees bob's session again", online)
}
