package e2e

// The daemon path as a new user meets it (issue 11): three identities on
// daemons, then a broker that goes away and an impostor on its address.

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDaemonPathThreeIdentities: names of new members resolve at once,
// peer list shows each member once, and every message says what really
// happened (issue 11 items 1, 5, 6, 7, 8, 9, 10).
func TestDaemonPathThreeIdentities(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := users[0], users[1], users[2]
	for _, u := range users {
		u.startDaemon()
	}
	for _, u := range users {
		u.waitDaemonOpen()
	}

	// Item 5: every member once, online through its daemon.
	var rows []peerRow
	eventually(t, 15*time.Second, "three members in alice's peer list", func() bool {
		rows = nil
		alice.json(&rows, "peer", "list")
		return len(rows) == 3
	})
	seen := map[string]bool{}
	for _, r := range rows {
		if seen[r.MemberPubkey] || !r.Online || r.Pubkey != r.MemberPubkey {
			t.Fatalf("peer list: %+v", rows)
		}
		seen[r.MemberPubkey] = true
	}
	if r := alice.ok("peer", "list"); strings.Contains(r.stdout, "nobody is connected") || !strings.Contains(r.stdout, "carol") {
		t.Fatalf("peer list (human): %s", r)
	}

	// Item 1: a member who joins now is reachable by name at once.
	tina := newUser(t, "tina")
	tina.join(alice.invite().Link)
	var out sendOut
	alice.json(&out, "send", "tina", "welcome")
	if out.Via != "daemon" || out.Status != "accepted" {
		t.Fatalf("send to tina: %+v", out)
	}

	// Item 10: a send while connected does not claim the broker is away.
	r := alice.ok("send", "bob", "hi bob")
	if !strings.Contains(r.stdout, "the daemon is sending it now") || strings.Contains(r.stdout, "as soon as") {
		t.Fatalf("connected send: %s", r)
	}
	// … and an online peer in dnd is not "offline".
	carol.ok("status", "set", "dnd")
	eventually(t, 10*time.Second, "carol dnd in alice's peer list", func() bool {
		var rows []peerRow
		alice.json(&rows, "peer", "list")
		for _, p := range rows {
			if p.MemberPubkey == carol.pubkey && p.Status == "dnd" {
				return true
			}
		}
		return false
	})
	r = alice.ok("send", "carol", "are you there")
	if !strings.Contains(r.stdout, "dnd") || strings.Contains(r.stdout, "offline") {
		t.Fatalf("send to a dnd peer: %s", r)
	}

	// Item 8: a --wait that times out names the message in --json.
	var ids struct {
		Error struct {
			MessageID       string `json:"messageId"`
			ClientMessageID string `json:"clientMessageId"`
		} `json:"error"`
	}
	r = alice.run("send", "carol", "held again", "--wait", "--wait-timeout", "3s", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &ids); err != nil || r.code != 7 || ids.Error.ClientMessageID == "" || ids.Error.MessageID == "" {
		t.Fatalf("wait_timeout without ids: %s", r)
	}

	// Item 6: delivered is "delivered", never "read".
	r = alice.ok("send", "bob", "read this", "--wait", "--wait-timeout", "20s")
	if !strings.Contains(r.stdout, "delivered to bob") || strings.Contains(r.stdout, "read)") {
		t.Fatalf("send --wait: %s", r)
	}
	if help := alice.ok("message", "status", "--help"); strings.Contains(help.stdout, "has read") {
		t.Fatalf("message status --help claims reading: %s", help.stdout)
	}
	// Item 10: message status names a DM's recipient.
	alice.json(&out, "send", "bob", "status me", "--wait", "--wait-timeout", "20s")
	r = alice.ok("message", "status", out.MessageID)
	if !strings.Contains(r.stdout, "to bob (") || strings.Contains(r.stdout, bob.pubkey) {
		t.Fatalf("message status: %s", r)
	}
	// … and daemon status uses the outbox's words.
	if r := alice.ok("daemon", "status"); strings.Contains(r.stdout, "waiting") || !strings.Contains(r.stdout, "accepted") {
		t.Fatalf("daemon status: %s", r)
	}

	// Item 9: not found is 3 everywhere.
	alice.fails(3, "not_found", "daemon", "outbox", "requeue", "9999")
	alice.fails(3, "not_found", "message", "status", "01NOPE")

	// Item 7: inbox --follow through the daemon shows the unseen backlog
	// first (bob has three messages he never looked at).
	var follow []inboxRow
	r = bob.ok("inbox", "--follow", "--json", "--limit", "3")
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var row inboxRow
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("follow line %q: %v", line, err)
		}
		follow = append(follow, row)
	}
	if got := strings.Join(bodies(follow), "|"); got != "hi bob|read this|status me" {
		t.Fatalf("follow backlog: %q", got)
	}
}

// TestDaemonBrokerTrouble: with the broker away the daemon path says so
// (exit 5) instead of "nobody" or "not found", and with an impostor on the
// broker's address it refuses (exit 4) and says why (issue 11 items 2, 3,
// 5).
func TestDaemonBrokerTrouble(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	addr, realKey := b.addr, b.pubkey
	b.stop()

	// Item 5: the only mesh's broker is down: exit 5, not "nobody".
	if e := alice.fails(5, "unreachable", "peer", "list"); !strings.Contains(e.Error.Message, b.url) {
		t.Fatalf("peer list: %+v", e)
	}
	// A group is not a member: the words say whose list could not be
	// checked.
	if r := alice.run("send", "@dev", "hi"); r.code != 5 || !strings.Contains(r.stderr, `in group "dev"`) ||
		strings.Contains(r.stderr, "member list") || !strings.Contains(r.stderr, "retry once it is reachable") {
		t.Fatalf("send @dev: %s", r)
	}
	// Item 2: bob's daemon starts now and never reaches the broker.
	bob.useDaemon = true
	if e := bob.fails(5, "unreachable", "send", "alice", "hi"); !strings.Contains(e.Error.Message, b.url) {
		t.Fatalf("first send by name: %+v", e)
	}
	var out sendOut
	bob.json(&out, "send", alice.pubkey, "queued by key")
	if out.Via != "daemon" || out.Status != "accepted" {
		t.Fatalf("send by full key: %+v", out)
	}
	if r := bob.ok("send", alice.pubkey, "again"); !strings.Contains(r.stdout, "not reachable right now") {
		t.Fatalf("accepted while away: %s", r)
	}

	// Item 3: another broker takes the address.
	imp := startBroker(t, t.TempDir(), addr)
	eventually(t, 15*time.Second, "alice's mesh in broker_key_mismatch", func() bool {
		return alice.daemonStatus().Meshes["test"] == "broker_key_mismatch"
	})
	st := alice.ok("daemon", "status")
	if !strings.Contains(st.stdout, imp.pubkey) || !strings.Contains(st.stdout, realKey) || !strings.Contains(st.stdout, "join again") {
		t.Fatalf("daemon status: %s", st)
	}
	for _, args := range [][]string{
		{"send", "bob", "hi", "--strict"},
		{"send", bob.pubkey, "hi"},
		{"peer", "list"},
		{"status", "set", "idle"},
		{"send", "bob", "hi", "--no-daemon"},
	} {
		if e := alice.fails(4, "broker_key_mismatch", args...); !strings.Contains(e.Error.Message, imp.pubkey) {
			t.Fatalf("%q: %+v", args, e)
		}
	}
	if r := alice.ok("inbox"); !strings.Contains(r.stderr, "broker_key_mismatch") && !strings.Contains(r.stderr, imp.pubkey) {
		t.Fatalf("inbox does not say so: %s", r)
	}
	// doctor reports the daemon's mismatch (its own probe
	// of the impostor fails too)...
	doctorMesh := func() (code int, check doctorCheck) {
		r := alice.run("doctor", "--json")
		var rep struct {
			Checks []doctorCheck `json:"checks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("doctor: %s", r)
		}
		for _, c := range rep.Checks {
			if c.Name == "daemon mesh test" {
				check = c
			}
		}
		return r.code, check
	}
	if code, c := doctorMesh(); code != 1 || c.Status != "fail" || !strings.Contains(c.Message, "broker_key_mismatch") || !strings.Contains(c.Message, imp.pubkey) {
		t.Fatalf("doctor on the daemon's mismatch: exit %d, %+v", code, c)
	}
	// ... and once the real broker is back on its address, the daemon
	// reconnects by itself (it checks again, slowly; the test's backoff
	// cap shortens the wait), without a restart.
	imp.stop()
	startBroker(t, b.data, addr)
	eventually(t, 20*time.Second, "alice's mesh open again", func() bool {
		return alice.daemonStatus().Meshes["test"] == "open"
	})
	var sent sendOut
	alice.json(&sent, "send", "bob", "after the impostor", "--wait", "--wait-timeout", "20s")
	if code, c := doctorMesh(); c.Name != "" {
		t.Fatalf("doctor after the heal: exit %d, %+v", code, c)
	}
}

// TestDemoCleansUpWhenItsOutputCloses (issue 11 item 15): `claudemesh demo
// | head -1` leaves no temporary broker directory behind.
func TestDemoCleansUpWhenItsOutputCloses(t *testing.T) {
	t.Parallel()
	noteSources()
	tmp := t.TempDir()
	cmd := exec.Command(bin, "demo")
	cmd.Env = append(baseEnv(), "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "claudemesh demo") {
		t.Fatalf("first line %q: %v", line, err)
	}
	stdout.Close() // as head does after one line
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("demo did not stop after its output closed")
	}
	left, _ := filepath.Glob(filepath.Join(tmp, "claudemesh-demo-*"))
	if len(left) != 0 {
		entries, _ := os.ReadDir(tmp)
		t.Fatalf("demo left %v behind (%d entries)", left, len(entries))
	}
}
