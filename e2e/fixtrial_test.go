package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"claudemesh/internal/lockedbuf"
)

// bystander is another program of the user's: a `sleep` whose pid a
// stale daemon.pid names. notSignalled kills it and reports whether the
// first signal it got was ours (SIGKILL): a fatal signal sent earlier
// (a SIGTERM from `daemon down`) decides the exit status when it is
// sent, so this tells without waiting whether anything signalled it.
type bystander struct {
	t   *testing.T
	cmd *exec.Cmd
}

func startBystander(t *testing.T) *bystander {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &bystander{t: t, cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return b
}

func (b *bystander) pid() int { return b.cmd.Process.Pid }

func (b *bystander) notSignalled() bool {
	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
	ws, ok := b.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		b.t.Logf("bystander: %v", b.cmd.ProcessState)
		return false
	}
	if ws.Signal() != syscall.SIGKILL {
		b.t.Logf("bystander got %v", ws.Signal())
		return false
	}
	return true
}

// TestDaemonDownLeavesAStalePIDAlone: a daemon.pid left by a daemon that
// was killed -9 names whatever program has that pid now; `daemon down`
// sent it SIGTERM and said "daemon stopped". It now signals only a
// process proven to be this home's daemon, removes the stale file, and
// says so; a daemon that cannot be reached on its socket, or is stopped
// (SIGSTOP), is still stopped, whatever the pid file says.
func TestDaemonDownLeavesAStalePIDAlone(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	pidFile := filepath.Join(alice.home, "daemon", "daemon.pid")

	// No daemon; the pid file names another program.
	alice.startDaemon()
	alice.ok("daemon", "down")
	other := startBystander(t)
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.pid())+"\n"), 0o600)
	var down struct {
		WasRunning bool `json:"wasRunning"`
		StalePID   int  `json:"stalePid"`
		PID        int  `json:"pid"`
	}
	alice.json(&down, "daemon", "down")
	if down.WasRunning || down.PID != 0 || down.StalePID != other.pid() {
		t.Errorf("daemon down over a stale pid file: %+v", down)
	}
	if _, err := os.Stat(pidFile); err == nil {
		t.Errorf("the stale pid file is still there")
	}
	if r := alice.ok("daemon", "down"); !strings.Contains(r.stdout, "daemon not running") || strings.Contains(r.stdout, "stopped") {
		t.Errorf("second daemon down: %s", r)
	}
	if !other.notSignalled() {
		t.Fatalf("daemon down signalled pid %d, which is not a daemon", other.pid())
	}
	// Once more, with the text a user sees.
	other = startBystander(t)
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.pid())+"\n"), 0o600)
	r := alice.ok("daemon", "down")
	if want := "daemon not running (removed a stale daemon.pid naming pid " + strconv.Itoa(other.pid()) + ": pid " + strconv.Itoa(other.pid()) + " is another program now, left alone)"; !strings.Contains(r.stdout, want) {
		t.Errorf("daemon down says %q, want %q", r.stdout, want)
	}
	if !other.notSignalled() {
		t.Fatalf("daemon down signalled pid %d, which is not a daemon", other.pid())
	}

	// A daemon whose socket was removed, and whose pid file names
	// another program: the daemon (daemon.db's lock holder) is stopped,
	// the program is left alone.
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	other = startBystander(t)
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.pid())+"\n"), 0o600)
	os.Remove(filepath.Join(alice.home, "daemon", "daemon.sock"))
	alice.json(&down, "daemon", "down")
	if !down.WasRunning || down.PID != pid {
		t.Errorf("daemon down of an unreachable daemon: %+v (daemon pid %d)", down, pid)
	}
	waitExit(t, pid)
	if !other.notSignalled() {
		t.Fatalf("daemon down signalled pid %d, which is not a daemon", other.pid())
	}

	// A stopped daemon (SIGSTOP) ends too: it gets the TERM once
	// continued.
	pid = alice.startDaemon()
	alice.waitDaemonOpen()
	syscall.Kill(pid, syscall.SIGSTOP)
	alice.json(&down, "daemon", "down")
	if !down.WasRunning || down.PID != pid {
		t.Errorf("daemon down of a stopped daemon: %+v (daemon pid %d)", down, pid)
	}
	waitExit(t, pid)
}

// TestMCPParallelFirstToolCallsRegisterOnce: a client that issues its
// first tool calls in parallel (as Claude Code may) made `claudemesh mcp
// --tools` register its ambient session once per call, at once: ghost
// sessions stayed online for everyone. The server now registers once.
func TestMCPParallelFirstToolCallsRegisterOnce(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	us := setupMesh(t, b, "alice", "bob")
	alice, bob := us[0], us[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("alice's outbox: %s", alice.run("daemon", "outbox", "list"))
			t.Logf("alice's status: %s", alice.run("daemon", "status"))
			log, _ := os.ReadFile(filepath.Join(alice.home, "daemon", "daemon.log"))
			t.Logf("alice's daemon.log:\n%s", log)
		}
	})
	cmd := exec.Command(bin, "--home", alice.home, "mcp", "--tools")
	cmd.Env = append(alice.env(), "CLAUDEMESH_NAME=alice-par")
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
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	// Everything at once, without waiting for an answer.
	msgs := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}` + "\n" +
		`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n"
	const calls = 6
	for i := range calls {
		tool := `{"name":"set_status","arguments":{"status":"working"}}`
		if i%2 == 0 {
			tool = fmt.Sprintf(`{"name":"send_message","arguments":{"to":"bob","message":"par-%d"}}`, i)
		}
		msgs += fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":%s}`, 10+i, tool) + "\n"
	}
	if _, err := stdin.Write([]byte(msgs)); err != nil {
		t.Fatal(err)
	}
	answered := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for len(answered) < calls+1 && sc.Scan() {
		var a struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Result struct {
				IsError bool `json:"isError"`
			} `json:"result"`
		}
		if json.Unmarshal(sc.Bytes(), &a) != nil || a.Method != "" {
			continue
		}
		if a.Result.IsError {
			t.Errorf("tool call %s failed: %s", a.ID, sc.Text())
		}
		answered[string(a.ID)] = true
	}
	if len(answered) < calls+1 {
		t.Fatalf("%d answers; stderr:\n%s", len(answered), stderr.String())
	}
	log, _ := os.ReadFile(filepath.Join(alice.home, "daemon", "daemon.log"))
	if n := strings.Count(string(log), "session registered"); n != 1 {
		t.Fatalf("the session was registered %d times:\n%s", n, log)
	}
	// bob reads on the direct path: each inbox shows what the broker
	// held at that moment, so the three may come over several calls.
	got := map[string]bool{}
	eventually(t, 20*time.Second, "bob got the three messages", func() bool {
		for _, r := range bob.inbox() {
			if strings.HasPrefix(r.body(), "par-") {
				got[r.body()] = true
			}
		}
		return len(got) == 3
	})
}

// TestDaemonStartingIsNotUnanswering: between opening daemon.db and
// answering on its socket (it attaches its meshes first) a daemon was
// taken for one that runs and does not answer: `daemon up` right after a
// verb or an MCP server had started the daemon failed with exit 5 "a
// daemon (pid N) is running for this home, but it does not answer". The
// daemon now holds the start lock until it serves, which the check takes
// for a daemon starting.
func TestDaemonStartingIsNotUnanswering(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.useDaemon = true
	hold := filepath.Join(alice.home, "daemon", "serve-hold")
	os.MkdirAll(filepath.Dir(hold), 0o700)
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--home", alice.home, "daemon", "up", "--foreground")
	cmd.Env = append(alice.env(), "CLAUDEMESH_FAILPOINT=serve-hold")
	stderr := &lockedbuf.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	eventually(t, 20*time.Second, "the daemon held before serving", func() bool {
		return strings.Contains(stderr.String(), "holding before serving")
	})
	r := alice.run("daemon", "status", "--json")
	if r.code != 0 || strings.Contains(r.stdout, "does not answer") {
		t.Fatalf("a starting daemon is said not to answer: %s", r)
	}
	os.Remove(hold)
	eventually(t, 20*time.Second, "the daemon answers", func() bool { return alice.daemonStatus().Running })
	alice.ok("daemon", "down")
	cmd.Wait()
}

// TestMeshLeaveWithUnsentMessages: `mesh leave` with messages still in
// the outbox said "✔ left" and stranded them: accepted rows were never
// sent and stayed "accepted" for ever. It now refuses (exit 6, saying how
// many) unless --force, and then the daemon marks them failed
// (left_mesh), which outbox list shows.
func TestMeshLeaveWithUnsentMessages(t *testing.T) {
	t.Parallel()
	// One undelivered message per sender and recipient: the rest wait
	// in bob's outbox (recipient_queue_full, retried).
	b := startBroker(t, t.TempDir(), "127.0.0.1:0", "--max-pending-per-sender", "1")
	us := setupMesh(t, b, "alice", "bob")
	bob := us[1]
	bob.startDaemon()
	bob.waitDaemonOpen()
	for i := 1; i <= 3; i++ {
		bob.ok("send", "alice", fmt.Sprintf("LV-%d", i)) // alice is offline
	}
	type row struct {
		Mesh, Status, Preview, Error, ErrorCode string
	}
	outbox := func() (rows []row) {
		bob.json(&rows, "daemon", "outbox", "list")
		return rows
	}
	eventually(t, 20*time.Second, "one queued at the broker, two waiting", func() bool {
		n := map[string]int{}
		for _, r := range outbox() {
			n[r.Status]++
		}
		return n["queued"] == 1 && n["accepted"] == 2
	})
	e := bob.fails(6, "unsent_messages", "mesh", "leave", "test")
	if !strings.Contains(e.Error.Message, "2 messages to test are not sent yet") {
		t.Errorf("refusal: %q", e.Error.Message)
	}
	if r := bob.run("mesh", "leave", "test"); !strings.Contains(r.stderr, "--force") {
		t.Errorf("no way forward: %s", r)
	}
	bob.ok("whoami") // still a member
	r := bob.ok("mesh", "leave", "test", "--force")
	for _, w := range []string{"2 messages to test not confirmed by the broker: marked failed (left_mesh)", "1 message you sent is still queued at the broker", "left"} {
		if !strings.Contains(r.stdout+r.stderr, w) {
			t.Errorf("leave --force does not say %q: %s", w, r)
		}
	}
	eventually(t, 20*time.Second, "the unsent rows failed", func() bool {
		failed := 0
		for _, r := range outbox() {
			if r.Status == "accepted" {
				return false
			}
			if r.Status == "failed" && r.ErrorCode == "left_mesh" && strings.Contains(r.Error, "you left test") {
				failed++
			}
		}
		return failed == 2
	})
	// Requeued, before joining again or after (a new key), a row would
	// wait for ever: it is sealed with the key that left.
	var rows []struct{ ID, Status string }
	bob.json(&rows, "daemon", "outbox", "list", "--status", "failed")
	if len(rows) == 0 {
		t.Fatal("no failed row")
	}
	if r := bob.run("daemon", "outbox", "requeue", rows[0].ID); r.code != 4 || !strings.Contains(r.stderr, "cannot be sent again: it was sealed and signed with the key you had in test") {
		t.Errorf("requeue of a left mesh's row: %s", r)
	}
}

// TestInboxOfAHungDaemonSaysItsWait: with the daemon stopped (SIGSTOP, a
// stuck disk) `inbox` waited 60 s — the listing's 30 s, then as long
// again for the mesh check — and said "no answer in 30 s". It now ends
// after the one wait it names.
func TestInboxOfAHungDaemonSaysItsWait(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	syscall.Kill(pid, syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	start := time.Now()
	r := alice.run("inbox")
	took := time.Since(start)
	syscall.Kill(pid, syscall.SIGCONT)
	t.Logf("inbox took %s: %s", took.Round(time.Second), r)
	if r.code != 5 || !strings.Contains(r.stderr, "no answer in 30 s") {
		t.Fatalf("inbox of a hung daemon: %s", r)
	}
	if took > 45*time.Second {
		t.Fatalf("inbox said it waited 30 s, and took %s", took.Round(time.Second))
	}
}

// TestMeshLeaveAccounting: messages the broker held (queued) when their
// mesh was left stayed counted "queued" by daemon status for good, and
// mesh leave checked the outbox only when a daemon answered: with the
// daemon stopped it said "✔ left" over messages it had not sent. A
// stopped daemon is now started to answer, and the held rows become
// untracked, which daemon status and outbox list say.
func TestMeshLeaveAccounting(t *testing.T) {
	t.Parallel()
	// One undelivered message per sender and recipient: the second
	// waits in bob's outbox (recipient_queue_full, retried).
	b := startBroker(t, t.TempDir(), "127.0.0.1:0", "--max-pending-per-sender", "1")
	us := setupMesh(t, b, "alice", "bob")
	bob := us[1]
	bob.startDaemon()
	bob.waitDaemonOpen()
	bob.ok("send", "alice", "LA-1") // alice is offline
	bob.ok("send", "alice", "LA-2")
	type row struct {
		Mesh, Status, Preview, Error, ErrorCode string
	}
	statusOf := func() map[string]row {
		var rows []row
		bob.json(&rows, "daemon", "outbox", "list")
		out := map[string]row{}
		for _, r := range rows {
			out[r.Preview] = r
		}
		return out
	}
	eventually(t, 20*time.Second, "one queued at the broker, one waiting", func() bool {
		n := statusOf()
		return n["LA-1"].Status == "queued" && n["LA-2"].Status == "accepted"
	})
	bob.ok("daemon", "down")
	e := bob.fails(6, "unsent_messages", "mesh", "leave", "test")
	if !strings.Contains(e.Error.Message, "1 message to test is not sent yet") {
		t.Errorf("refusal without a running daemon: %q", e.Error.Message)
	}
	st := bob.daemonStatus()
	t.Cleanup(func() { killAndWait(st.PID) })
	r := bob.ok("mesh", "leave", "test", "--force")
	if !strings.Contains(r.stderr, "1 message you sent is still queued at the broker") {
		t.Errorf("leave --force: %s", r)
	}
	eventually(t, 20*time.Second, "the held row untracked, the unsent one failed", func() bool {
		n := statusOf()
		return n["LA-1"].Status == "untracked" && n["LA-2"].Status == "failed"
	})
	if r := statusOf()["LA-1"]; r.ErrorCode != "left_mesh" || !strings.Contains(r.Error, "no longer learns whether it was delivered") {
		t.Errorf("the held row: %+v", r)
	}
	var js struct {
		Outbox struct{ Queued, Sent, Untracked int } `json:"outbox"`
	}
	bob.json(&js, "daemon", "status")
	if js.Outbox.Queued != 0 || js.Outbox.Sent != 0 || js.Outbox.Untracked != 1 {
		t.Errorf("daemon status counts %+v", js.Outbox)
	}
	if out := bob.ok("daemon", "status").stdout; !strings.Contains(out, "1 untracked (held by the broker when their mesh was left)") {
		t.Errorf("daemon status: %s", out)
	}
}
