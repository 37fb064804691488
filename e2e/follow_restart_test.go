package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFollowersOutliveADaemonRestart (a new user's trial): `inbox --follow` and a
// following `topic tail` through the daemon keep going when the daemon is
// killed (-9) and comes back, started again by the follower itself or by
// `daemon up`: every message is shown once, in order, also those that
// arrived while the daemon was gone, and the followers never exit. Under
// --json inbox --follow says each restart on a notice line, as a human
// follower says it on stderr (it said nothing).
func TestFollowersOutliveADaemonRestart(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "dave")
	alice, dave := u[0], u[1]
	alice.startDaemon()
	dave.startDaemon()
	alice.waitDaemonOpen()
	dave.waitDaemonOpen()
	alice.ok("topic", "create", "ops")
	dave.ok("topic", "join", "ops")
	eventually(t, 20*time.Second, "dave's daemon gets the key", func() bool { return dave.topics()["ops"].HasKey })

	f := dave.followDaemon()
	tl := dave.tail("ops")
	alice.ok("send", "dave", "follow-1")
	f.waitFor("follow-1")
	alice.ok("topic", "post", "ops", "post-1")
	tl.waitBody("post-1")

	// Twice: once the follower starts the daemon again itself, once
	// `daemon up` does (as a service manager would) while it waits.
	n := 1
	for round, up := range []bool{false, true} {
		pid := daemonPID(t, dave)
		syscall.Kill(pid, syscall.SIGKILL)
		eventually(t, 10*time.Second, "the daemon's death", func() bool { return exited(pid) })
		n++
		alice.ok("send", "dave", "follow-"+strconv.Itoa(n)) // while dave's daemon is (maybe) gone
		alice.ok("topic", "post", "ops", "gone-"+strconv.Itoa(round+1))
		if up {
			dave.ok("daemon", "up")
		}
		eventually(t, 20*time.Second, "a daemon again", func() bool {
			p, err := os.ReadFile(filepath.Join(dave.home, "daemon", "daemon.pid"))
			if err != nil {
				return false
			}
			np, _ := strconv.Atoi(strings.TrimSpace(string(p)))
			return np != pid && np > 0 && !exited(np)
		})
		n++
		alice.ok("send", "dave", "follow-"+strconv.Itoa(n))
		f.waitFor("follow-" + strconv.Itoa(n))
		alice.ok("topic", "post", "ops", "post-"+strconv.Itoa(round+2))
		tl.waitBody("post-" + strconv.Itoa(round+2))
	}
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, "follow-"+strconv.Itoa(i))
	}
	var got []string
	for _, r := range f.all() {
		if r.Kind != "topic" { // inbox --follow shows the topic's posts too
			got = append(got, r.body())
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("the follower showed %q, want %q (each once, in order)", got, want)
	}
	var posts []string
	for _, l := range tl.all() {
		if l.ID != "" {
			posts = append(posts, l.Body)
		}
	}
	if want := []string{"post-1", "gone-1", "post-2", "gone-2", "post-3"}; !slices.Equal(posts, want) {
		t.Fatalf("the tail showed %q, want %q", posts, want)
	}
	// Under --json the follower said so too, as a line of its own (a
	// human gets it on stderr): once per restart.
	f.mu.Lock()
	notices := slices.Clone(f.notices)
	f.mu.Unlock()
	restarted := 0
	for _, n := range notices {
		switch n.Notice {
		case "daemon_restarted":
			restarted++
		case "daemon_unavailable": // a start that raced the other one
		default:
			t.Fatalf("the follower's notices: %+v", notices)
		}
	}
	if restarted != 2 {
		t.Fatalf("the follower's notices: %+v; want one daemon_restarted per restart", notices)
	}
	select {
	case <-f.done:
		t.Fatalf("the follower exited; stderr: %s", f.stderr.String())
	case <-tl.done:
		t.Fatalf("the tail exited; stderr: %s", tl.stderr.String())
	default:
	}
}

// TestTailShowsEveryPostMadeWhileTheDaemonWasAway: a following `topic
// tail` whose daemon went away read the topic's last --limit posts again
// once it was back, and missed the posts beyond them made meanwhile. Here
// the daemon cannot start again (its start lock is held) while five posts
// are made; the tail, with --limit 2, shows all five once it is back.
func TestTailShowsEveryPostMadeWhileTheDaemonWasAway(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "dave")
	alice, dave := u[0], u[1]
	alice.startDaemon()
	dave.startDaemon()
	alice.waitDaemonOpen()
	dave.waitDaemonOpen()
	alice.ok("topic", "create", "ops")
	dave.ok("topic", "join", "ops")
	eventually(t, 20*time.Second, "dave's daemon gets the key", func() bool { return dave.topics()["ops"].HasKey })
	tl := dave.tail("ops", "--limit", "2")
	alice.ok("topic", "post", "ops", "before")
	tl.waitBody("before")

	lock, err := os.OpenFile(filepath.Join(dave.home, "daemon", "start.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	pid := daemonPID(t, dave)
	syscall.Kill(pid, syscall.SIGKILL)
	eventually(t, 10*time.Second, "the daemon's death", func() bool { return exited(pid) })
	var want []string
	for i := 1; i <= 5; i++ {
		want = append(want, "away-"+strconv.Itoa(i))
		alice.ok("topic", "post", "ops", want[len(want)-1])
	}
	lock.Close() // the tail starts the daemon again
	alice.ok("topic", "post", "ops", "after")
	tl.waitBody("after")
	var posts []string
	for _, l := range tl.all() {
		if l.ID != "" {
			posts = append(posts, l.Body)
		}
	}
	if want := append(append([]string{"before"}, want...), "after"); !slices.Equal(posts, want) {
		t.Fatalf("the tail showed %q, want %q", posts, want)
	}
}
