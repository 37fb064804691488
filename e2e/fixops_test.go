package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestABooleanFlagTakesNoDuration: `send PEER "text" --wait 10s` sent
// "text 10s": --wait takes no value (the time is --wait-timeout), so the
// duration became a word of the message, silently. It is now a usage
// error naming --wait-timeout, and nothing is sent; a duration after "--"
// is still a word of the message.
func TestABooleanFlagTakesNoDuration(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.fails(2, "usage", "send", "bob", "before kill", "--wait", "10s")
	r := alice.run("send", "bob", "before kill", "--wait", "10s")
	if r.code != 2 || !strings.Contains(r.stderr, "--wait takes no value") || !strings.Contains(r.stderr, "--wait --wait-timeout 10s") {
		t.Errorf("--wait 10s: %s", r)
	}
	// A flag with no -timeout of its own: the hint is where the word goes.
	r = alice.run("send", "bob", "hi", "--no-daemon", "5m")
	if r.code != 2 || !strings.Contains(r.stderr, "--no-daemon takes no value") || !strings.Contains(r.stderr, "-- 5m") {
		t.Errorf("--no-daemon 5m: %s", r)
	}
	if out := bob.ok("inbox").stdout; out != "  no new messages\n" {
		t.Fatalf("a refused send reached bob: %q", out)
	}
	alice.ok("send", "bob", "back in", "--no-daemon", "--", "10m")
	if out := bob.ok("inbox").stdout; !strings.Contains(out, "back in 10m") {
		t.Fatalf("bob's inbox: %q", out)
	}
}

// TestABooleanFlagBeforeADurationWhereNoMessageIs: the refusal of a
// duration after a flag that takes no value said the duration would become
// "a word of a message" and hinted to put it before the flag or after --,
// also for commands that take no message: `daemon status --json 10s`, whose
// advice then failed with another usage error. There it says the duration
// is not the flag's value and points to the command's help; send keeps its
// message and hint.
func TestABooleanFlagBeforeADurationWhereNoMessageIs(t *testing.T) {
	t.Parallel()
	u := newUser(t, "ula")
	for _, args := range [][]string{
		{"daemon", "status", "--json", "10s"},
		{"inbox", "--json", "2h"},
		{"help", "exit-codes", "--json", "1h"},
	} {
		r := u.run(args...)
		var e cliError
		if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || r.code != 2 || e.Error.Code != "usage" {
			t.Fatalf("%q: %v %s", args, err, r)
		}
		if m := e.Error.Message; !strings.Contains(m, "--json takes no value") || strings.Contains(m, "a word of a message") {
			t.Errorf("%q: %q", args, m)
		}
	}
	r := u.run("inbox", "--no-color", "2h")
	if r.code != 2 || !strings.Contains(r.stderr, "--no-color takes no value") || strings.Contains(r.stderr, "a word of a message") ||
		strings.Contains(r.stderr, "put it before") || !strings.Contains(r.stderr, "inbox --help") {
		t.Errorf("inbox --no-color 2h: %s", r)
	}
	r = u.run("summary", "waiting", "--no-color", "2h")
	if r.code != 2 || !strings.Contains(r.stderr, "(a word of a message)") || !strings.Contains(r.stderr, "-- 2h") {
		t.Errorf("summary waiting --no-color 2h: %s", r)
	}
}

// TestDoctorDaemonFixNamesHomeAndService: doctor's fix for a daemon that
// is not running named --home in its first half only under --json ("or
// claudemesh install for a service", which is the Claude Code set-up,
// not the service: daemon install-service is).
func TestDoctorDaemonFixNamesHomeAndService(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	r := alice.run("doctor", "--json")
	var rep struct {
		Checks []struct{ Name, Status, Fix string } `json:"checks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("doctor --json: %v: %s", err, r)
	}
	inv := "claudemesh --home " + alice.home
	want := inv + " daemon up (or " + inv + " daemon install-service to run it as a service)"
	for _, c := range rep.Checks {
		if c.Name == "daemon" {
			if c.Status != "warn" || c.Fix != want {
				t.Fatalf("daemon check %+v, want fix %q", c, want)
			}
			if r := alice.run("doctor"); !strings.Contains(r.stdout+r.stderr, want) {
				t.Fatalf("doctor, want %q: %s", want, r)
			}
			return
		}
	}
	t.Fatalf("no daemon check: %s", r)
}

// TestClusterRestoreHelpNamesTheCopy: cluster-restore's help said the
// --from file can be "a copy made with claudemesh broker compact", which
// compacts in place and makes no copy; the copy is bbolt compact -o's.
func TestClusterRestoreHelpNamesTheCopy(t *testing.T) {
	t.Parallel()
	r := newUser(t, "op").ok("broker", "cluster-restore", "--help")
	if !strings.Contains(r.stdout, "`bbolt compact -o`") || strings.Contains(r.stdout, "claudemesh broker compact`") {
		t.Fatalf("cluster-restore --help: %s", r.stdout)
	}
}

// TestABareNumberAfterWaitIsRefused: `send PEER "hi" --wait 30` sent "hi
// 30": a number of seconds meant for --wait, which takes no value (the
// time is --wait-timeout), became a word of the message. A whole number
// right after a flag that has a -timeout flag beside it is a usage error;
// numbers elsewhere in a message, or after another flag, are words.
func TestABareNumberAfterWaitIsRefused(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.fails(2, "usage", "send", "bob", "hi", "--wait", "30")
	r := alice.run("send", "bob", "hi", "--wait", "30")
	if r.code != 2 || !strings.Contains(r.stderr, "--wait takes no value") || !strings.Contains(r.stderr, "--wait --wait-timeout 30s") {
		t.Errorf("--wait 30: %s", r)
	}
	if out := bob.ok("inbox").stdout; out != "  no new messages\n" {
		t.Fatalf("a refused send reached bob: %q", out)
	}
	alice.ok("send", "bob", "call me at 5")
	alice.ok("send", "bob", "room", "30")
	alice.ok("send", "bob", "floor", "--no-daemon", "7")
	out := bob.ok("inbox").stdout
	for _, w := range []string{"call me at 5", "room 30", "floor 7"} {
		if !strings.Contains(out, w) {
			t.Fatalf("%q missing from bob's inbox: %q", w, out)
		}
	}
}
