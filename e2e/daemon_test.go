package e2e

// Daemon tests (issue 3): the same binary, with the one-shot verbs going
// through each user's daemon (useDaemon), which the first verb starts.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// daemonStatus is `daemon status --json`.
type daemonStatus struct {
	Running bool              `json:"running"`
	PID     int               `json:"pid"`
	Meshes  map[string]string `json:"meshes"`
	Outbox  struct {
		Pending, Inflight, Queued, Sent, Delivered, Dead, Aborted int
	} `json:"outbox"`
	InboxUnread int `json:"inboxUnread"`
}

func (u *user) daemonStatus() daemonStatus {
	u.t.Helper()
	var st daemonStatus
	u.json(&st, "daemon", "status")
	return st
}

// startDaemon runs `daemon up` (detached) and makes sure the test kills it.
// A daemon another process (a running `claudemesh mcp`, a verb) started at
// the same moment serves as well: that `daemon up` then names it (exit 0).
func (u *user) startDaemon() int {
	u.t.Helper()
	u.useDaemon = true
	var up struct {
		PID int `json:"pid"`
	}
	if r := u.run("daemon", "up", "--json"); r.code != 0 || json.Unmarshal([]byte(r.stdout), &up) != nil {
		u.t.Fatalf("%s", r)
	}
	if up.PID <= 0 {
		u.t.Fatalf("daemon up gave no pid")
	}
	u.t.Cleanup(func() { killAndWait(up.PID) })
	return up.PID
}

// waitDaemonOpen waits until every mesh of the daemon reports open.
func (u *user) waitDaemonOpen() {
	u.t.Helper()
	eventually(u.t, 15*time.Second, "daemon meshes open", func() bool {
		st := u.daemonStatus()
		if !st.Running || len(st.Meshes) == 0 {
			return false
		}
		for _, s := range st.Meshes {
			if s != "open" {
				return false
			}
		}
		return true
	})
}

// eventually waits until ok holds, up to d and never less than minWait.
func eventually(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	d = max(d, minWait)
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// exited reports whether pid has ended: gone, or a zombie nobody reaped
// yet (an orphaned daemon's parent is init, which may reap late).
func exited(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false // not Linux: wait for the reaping
	}
	// The state follows the command name in parentheses: "pid (comm) Z …".
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// waitExit waits for a killed process to disappear.
func waitExit(t *testing.T, pid int) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("pid %d to exit", pid), func() bool {
		return exited(pid)
	})
}

type sendOut struct {
	OK              bool   `json:"ok"`
	MessageID       string `json:"messageId"`
	ClientMessageID string `json:"clientMessageId"`
	Status          string `json:"status"`
	Via             string `json:"via"`
	// Duplicate: a retry answered with the first send's messageId.
	Duplicate bool `json:"duplicate"`
}

// sendMany sends n messages "<prefix> i" to `to` with a few CLI processes
// at once, checking each was accepted by the daemon.
func sendMany(t *testing.T, u *user, to, prefix string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan string, n)
	sem := make(chan struct{}, 4)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r := u.run("send", to, fmt.Sprintf("%s %d", prefix, i), "--json")
			var out sendOut
			if r.code != 0 || json.Unmarshal([]byte(r.stdout), &out) != nil || out.Via != "daemon" || out.Status != "accepted" {
				errs <- r.String()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatalf("send through the daemon: %s", e)
	}
}

// expectExactlyOnce checks rows hold each "<prefix> i" exactly once.
func expectExactlyOnce(t *testing.T, rows []inboxRow, prefix string, n int) {
	t.Helper()
	count := map[string]int{}
	for _, r := range rows {
		count[r.body()]++
	}
	for i := 0; i < n; i++ {
		b := fmt.Sprintf("%s %d", prefix, i)
		if count[b] != 1 {
			t.Fatalf("%q arrived %d times (of %d rows)", b, count[b], len(rows))
		}
	}
	if len(rows) != n {
		t.Fatalf("%d rows, want %d", len(rows), n)
	}
}

// TestDaemonKill9MidDrain: 120 sends accepted while the broker is away;
// the daemon is killed (kill -9, by failpoint) after 60 of them were acked
// by the broker but before it recorded that; after a restart every message
// reaches the recipient exactly once.
func TestDaemonKill9MidDrain(t *testing.T) {
	t.Parallel()
	// Twice the failpoint's 60: the kill lands mid-drain with rows on both
	// sides of it (each send is a CLI process, so more only costs time).
	const n = 120
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.extraEnv = []string{"CLAUDEMESH_FAILPOINT=drain-kill-after:60"}
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	addr, data := b.addr, b.data
	b.stop()
	sendMany(t, alice, "bob", "crash", n)
	if st := alice.daemonStatus(); st.Outbox.Pending+st.Outbox.Inflight != n {
		t.Fatalf("outbox before the broker returns: %+v", st.Outbox)
	}
	b = startBroker(t, data, addr)
	waitExit(t, pid) // the failpoint fires mid-drain
	alice.extraEnv = nil
	pid = alice.startDaemon()
	eventually(t, 30*time.Second, "outbox drained", func() bool {
		st := alice.daemonStatus()
		return st.Outbox.Pending+st.Outbox.Inflight == 0 && st.Outbox.Dead == 0
	})
	// Bob comes online (cold inbox) and sees each message once.
	var rows []inboxRow
	eventually(t, 30*time.Second, "every message for bob", func() bool {
		rows = append(rows, bob.inbox()...)
		return len(rows) >= n
	})
	expectExactlyOnce(t, rows, "crash", n)
	if more := bob.inbox(); len(more) != 0 {
		t.Fatalf("%d more rows after all %d", len(more), n)
	}
	_ = pid
}

// TestDaemonBrokerOutage: 50 sends while the broker is down are accepted
// (status accepted, exit 0) and all arrive once it is back.
func TestDaemonBrokerOutage(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	addr, data := b.addr, b.data
	b.stop()
	sendMany(t, alice, "bob", "outage", 50)
	b = startBroker(t, data, addr)
	var rows []inboxRow
	eventually(t, 30*time.Second, "50 messages for bob", func() bool {
		rows = append(rows, bob.inbox()...)
		return len(rows) >= 50
	})
	expectExactlyOnce(t, rows, "outage", 50)
	eventually(t, 10*time.Second, "outbox settled", func() bool {
		st := alice.daemonStatus()
		return st.Outbox.Pending+st.Outbox.Inflight == 0
	})
}

// TestDaemonIdempotentSend: the same --id twice is the same row, delivered
// once; the same id with another body is refused with exit 6.
func TestDaemonIdempotentSend(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	var first, second sendOut
	alice.json(&first, "send", "bob", "exactly once", "--id", "order-42")
	alice.json(&second, "send", "bob", "exactly once", "--id", "order-42")
	if first.ClientMessageID != "order-42" || second.ClientMessageID != "order-42" || first.Via != "daemon" || first.Duplicate || !second.Duplicate {
		t.Fatalf("sends: %+v %+v", first, second)
	}
	alice.fails(6, "idempotency_key_reused", "send", "bob", "something else", "--id", "order-42")
	var outbox []struct {
		ClientMessageID string `json:"clientMessageId"`
	}
	alice.json(&outbox, "daemon", "outbox", "list")
	if len(outbox) != 1 {
		t.Fatalf("outbox has %d rows", len(outbox))
	}
	var rows []inboxRow
	eventually(t, 10*time.Second, "bob's message", func() bool {
		rows = append(rows, bob.inbox()...)
		return len(rows) >= 1
	})
	time.Sleep(700 * time.Millisecond) // past --redeliver-after: nothing else may come
	rows = append(rows, bob.inbox()...)
	if len(rows) != 1 || rows[0].body() != "exactly once" {
		t.Fatalf("bob got %v", bodies(rows))
	}
}

// TestDaemonKill9AfterStoreBeforeAck: bob's daemon is killed (failpoint)
// right after storing a push and before acking it; the broker redelivers
// after the restart and the inbox holds the message once.
func TestDaemonKill9AfterStoreBeforeAck(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	bob.extraEnv = []string{"CLAUDEMESH_FAILPOINT=inbox-after-store"}
	pid := bob.startDaemon()
	bob.waitDaemonOpen()
	alice.ok("send", "bob", "stored then killed")
	waitExit(t, pid)
	bob.extraEnv = nil
	bob.startDaemon()
	bob.waitDaemonOpen()
	var rows []inboxRow
	eventually(t, 10*time.Second, "the message in bob's daemon inbox", func() bool {
		rows = bob.inbox()
		return len(rows) >= 1
	})
	// The broker redelivers what was never acked; give it time, then the
	// inbox must still hold exactly one row.
	time.Sleep(1500 * time.Millisecond)
	rows = bob.inbox()
	if len(rows) != 1 || rows[0].body() != "stored then killed" {
		t.Fatalf("bob's inbox: %v", bodies(rows))
	}
	// And the broker no longer holds it: a cold inbox finds nothing.
	cold := *bob
	cold.useDaemon = false
	if extra := cold.inbox(); len(extra) != 0 {
		t.Fatalf("still queued at the broker: %v", bodies(extra))
	}
}

// TestDaemonThinVerbs: with a daemon, the verbs go through it (and start
// it), peers and inbox work, --strict fails when it cannot be reached, and
// a stale pid file and socket never block a start.
func TestDaemonThinVerbs(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.useDaemon = true
	bob.useDaemon = true
	// bob's first verb starts his daemon (which then receives pushes).
	if rows := bob.inbox(); len(rows) != 0 {
		t.Fatalf("bob's inbox: %v", bodies(rows))
	}
	bob.waitDaemonOpen()
	// alice's first verb starts hers; --wait follows the receipt.
	var out sendOut
	alice.json(&out, "send", "bob", "hello daemon", "--wait", "--wait-timeout", "20s")
	if out.Via != "daemon" || out.Status != "delivered" || out.MessageID == "" {
		t.Fatalf("send --wait: %+v", out)
	}
	st := alice.daemonStatus()
	t.Cleanup(func() { killAndWait(st.PID) })
	if !st.Running || st.Meshes["test"] != "open" {
		t.Fatalf("status %+v", st)
	}
	rows := bob.inbox()
	if len(rows) != 1 {
		t.Fatalf("bob's inbox: %v", bodies(rows))
	}
	bst := bob.daemonStatus()
	t.Cleanup(func() { killAndWait(bst.PID) })
	if rows[0].body() != "hello daemon" || rows[0].SenderName != "alice" || rows[0].SentAt == 0 || rows[0].SentAt > rows[0].ReceivedAt {
		t.Fatalf("row %+v (sentAt: when the broker took it, before it was received)", rows[0])
	}
	// Reading twice lists the row again (stored rows); --unread --mark-seen
	// shows it once.
	if again := bob.inbox(); len(again) != 1 {
		t.Fatalf("second read: %d rows", len(again))
	}
	if first := bob.inbox("--unread", "--mark-seen"); len(first) != 1 {
		t.Fatalf("unread: %d rows", len(first))
	}
	if none := bob.inbox("--unread", "--mark-seen"); len(none) != 0 {
		t.Fatalf("unread after mark-seen: %d rows", len(none))
	}
	// daemon down, then a stale socket and pid file: status says not
	// running, and up starts cleanly.
	alice.ok("daemon", "down")
	if s := alice.daemonStatus(); s.Running {
		t.Fatalf("still running after down")
	}
	os.WriteFile(filepath.Join(alice.home, "daemon", "daemon.pid"), []byte("999999\n"), 0o600)
	// A daemon that cannot start (its socket path is under a file):
	// --strict fails with exit 5, without it the verb falls back to a
	// direct broker connection.
	broken := *alice
	broken.extraEnv = []string{"CLAUDEMESH_DAEMON_SOCK=/etc/passwd/claudemesh.sock"}
	broken.fails(5, "unreachable", "send", "bob", "strict", "--strict")
	var direct sendOut
	broken.json(&direct, "send", "bob", "fallback")
	if direct.Via != "direct" {
		t.Fatalf("fallback: %+v", direct)
	}
	pid := alice.startDaemon()
	if pid <= 0 {
		t.Fatal("no pid")
	}
	alice.ok("daemon", "down")
	if !strings.Contains(alice.run("daemon", "status").stdout, "not running") {
		t.Fatal("status after down")
	}
}

// TestDaemonUpAtTheSameMoment: two `daemon up` for one home at once start
// one daemon (daemon.db's lock decides); the other says which daemon runs
// and exits 6, or, when it came late enough to find it answering, says it
// was already running (exit 0). Both said "daemon started" with the
// winner's pid. Two verbs that start the daemon at once both succeed.
func TestDaemonUpAtTheSameMoment(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	for round := range 3 {
		u := newUser(t, fmt.Sprintf("racer%d", round))
		u.createMesh(b, "Race", fmt.Sprintf("race%d", round)) // a home that joined no mesh gets no daemon
		var wg sync.WaitGroup
		res := make([]result, 2)
		for i := range res {
			wg.Add(1)
			go func() { defer wg.Done(); res[i] = u.run("daemon", "up", "--json") }()
		}
		wg.Wait()
		var st daemonStatus
		u.json(&st, "daemon", "status")
		if !st.Running || st.PID <= 0 {
			t.Fatalf("round %d: no daemon after %s\n%s", round, res[0], res[1])
		}
		started := 0
		for _, r := range res {
			var up struct {
				PID            int  `json:"pid"`
				AlreadyRunning bool `json:"alreadyRunning"`
			}
			switch {
			case r.code == 0 && json.Unmarshal([]byte(r.stdout), &up) == nil && up.PID == st.PID:
				if !up.AlreadyRunning {
					started++
				}
			default:
				t.Fatalf("round %d: daemon %d runs; %s", round, st.PID, r)
			}
		}
		if started != 1 {
			t.Fatalf("round %d: %d of them say they started daemon %d:\n%s\n%s", round, started, st.PID, res[0], res[1])
		}
		// The one that started none left no daemon of its own waiting
		// for the lock (it took over once the winner was stopped).
		if pids := processesOfHome(u.home); !slices.Equal(pids, []int{st.PID}) {
			t.Fatalf("round %d: daemon %d runs, and processes %v name the home", round, st.PID, pids)
		}
		killAndWait(st.PID)
	}

	// The thin verbs start the daemon when they find none: two at once
	// both get the one that runs.
	alice := setupMesh(t, b, "alice")[0]
	alice.useDaemon = true
	var wg sync.WaitGroup
	res := make([]result, 2)
	for i := range res {
		wg.Add(1)
		go func() { defer wg.Done(); res[i] = alice.run("inbox", "--json") }()
	}
	wg.Wait()
	for _, r := range res {
		if r.code != 0 {
			t.Fatalf("a verb starting the daemon beside another: %s", r)
		}
	}
}
