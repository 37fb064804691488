package e2e

// Usage mistakes get the CLI's own words and the right exit code
// (a new user's trial): no Go flag package text, no silently ignored
// flag, no unbounded invite, and advice that fits who asks.

import (
	"context"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

func TestUsageMistakesSayWhatIsWrong(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()

	// A flag's bad value, as the user wrote the flag.
	for args, want := range map[string]string{
		"inbox --limit abc":                  `--limit takes a whole number, not "abc"`,
		"inbox --limit 99999999999999999999": "--limit 99999999999999999999 is out of range",
		"topic tail general --limit 1.5":     `--limit takes a whole number, not "1.5"`,
	} {
		r := alice.run(strings.Fields(args)...)
		if r.code != 2 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "flag -limit") ||
			strings.Contains(r.stderr, "parse error") || strings.Contains(r.stderr, "value out of range") {
			t.Errorf("%s: %s; want exit 2 and %q", args, r, want)
		}
	}

	// '#' alone is no topic: a usage error (it was "no topic  in acme",
	// exit 3), and the daemon's API refuses it too.
	if e := alice.fails(2, "usage", "send", "#", "hi"); !strings.Contains(e.Error.Message, "'#' needs a topic name") {
		t.Errorf("send '#': %+v", e)
	}
	api := localapi.New(localapi.SocketPath(alice.home))
	_, err := api.Send(context.Background(), localapi.SendRequest{To: "#", Message: "hi"})
	if ae, ok := err.(*localapi.APIError); !ok || ae.HTTPStatus != 400 || ae.Body.Code != "invalid_argument" {
		t.Errorf("POST /v1/send to '#': %v", err)
	}

	// --wait-timeout without --wait would be ignored: refused, nothing sent.
	if e := alice.fails(2, "usage", "send", "bob", "hi", "--wait-timeout", "-5s"); !strings.Contains(e.Error.Message, "applies only with --wait") || !strings.Contains(e.Error.Message, "must be positive") {
		t.Errorf("--wait-timeout without --wait: %+v", e)
	}
	var rows []map[string]any
	alice.json(&rows, "daemon", "outbox", "list")
	if len(rows) != 0 {
		t.Errorf("a refused send was queued: %v", rows)
	}

	// An invite is good for at most a year.
	if e := alice.fails(2, "usage", "invite", "--expires", "100000d"); !strings.Contains(e.Error.Message, "--expires is at most 365d") {
		t.Errorf("invite --expires 100000d: %+v", e)
	}
	alice.ok("invite", "--expires", "365d")

	// The owner changing her own role is told how (mesh transfer), not
	// to ask the owner.
	r := alice.run("role", "set", "alice", "member")
	if r.code != 4 || !strings.Contains(r.stderr, "claudemesh --home "+alice.home+" mesh transfer PEER") || strings.Contains(r.stderr, "ask the mesh owner") {
		t.Errorf("the owner's role set of herself: %s", r)
	}
	if r := bob.run("role", "set", "alice", "member"); r.code != 4 || !strings.Contains(r.stderr, "only the mesh owner can") {
		t.Errorf("a member's role set: %s", r)
	}
}

// TestObserverPostIsRefusedAtOnce (a new user's trial): an observer's post was
// "✔ accepted" by the daemon and failed a moment later (forbidden), and
// the direct path's hint said "ask the mesh owner or an admin". Both
// paths now refuse it at once (exit 4), nothing queued, with the way to
// post: a lead's topic add --role member. After that promotion the
// daemon, whose topic list still said observer, takes the post.
func TestObserverPostIsRefusedAtOnce(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	bob.startDaemon()
	bob.waitDaemonOpen()
	alice.ok("topic", "create", "incidents", "--private")
	alice.ok("topic", "add", "incidents", "bob", "--role", "observer")
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		r := bob.run(append([]string{"topic", "post", "incidents", "observer post"}, path...)...)
		if r.code != 4 || !strings.Contains(r.stderr, "you are an observer of #incidents") ||
			!strings.Contains(r.stderr, "claudemesh topic add incidents bob --role member") || strings.Contains(r.stderr, "accepted") {
			t.Fatalf("observer's post %v: %s; want exit 4 and the way to post", path, r)
		}
	}
	var rows []map[string]any
	bob.json(&rows, "daemon", "outbox", "list")
	if len(rows) != 0 {
		t.Fatalf("the observer's post was queued: %v", rows)
	}
	alice.ok("topic", "add", "incidents", "bob", "--role", "member")
	bob.ok("topic", "post", "incidents", "member post")
	eventually(t, 20*time.Second, "bob's post in the history", func() bool {
		return strings.Contains(alice.run("topic", "history", "incidents").stdout, "member post")
	})
}

// TestTextsNameTheirVerbAndId (a new user's trial): a send whose --id
// was used on the other path was refused as "a different message" with
// a hint naming a literal <id>; mesh remove-member without a token said
// that "mesh create" needs one.
func TestTextsNameTheirVerbAndId(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice := users[0]
	alice.startDaemon()
	alice.waitDaemonOpen()
	alice.ok("send", "bob", "idem", "--id", "idem-1")
	eventually(t, 20*time.Second, "the daemon's send at the broker", func() bool {
		var rows []struct {
			Status string `json:"status"`
		}
		alice.json(&rows, "daemon", "outbox", "list")
		return len(rows) == 1 && rows[0].Status == "queued"
	})
	r := alice.run("send", "bob", "idem", "--id", "idem-1", "--no-daemon")
	if r.code != 6 || !strings.Contains(r.stderr, "nothing was sent: --id idem-1 was already used") ||
		!strings.Contains(r.stderr, "claudemesh --home "+alice.home+" message status idem-1") || strings.Contains(r.stderr, "<id>") ||
		strings.Contains(r.stderr, "for a different message") {
		t.Errorf("the same --id on the other path: %s", r)
	}
	r = alice.run("mesh", "remove-member", "bob")
	if r.code != 2 || !strings.Contains(r.stderr, "claudemesh --home "+alice.home+" mesh remove-member needs the broker's operator token") {
		t.Errorf("remove-member without a token: %s", r)
	}
}

// TestDaemonUpSaysWhichFlagsItDidNotApply (a new user's trial): `daemon up`
// with start flags while a daemon runs said only "already running", and
// someone raising --inbox-max-bytes (as daemon status advises) believed
// it done.
func TestDaemonUpSaysWhichFlagsItDidNotApply(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	alice.startDaemon()
	alice.waitDaemonOpen()
	if r := alice.run("daemon", "up"); r.code != 0 || strings.Contains(r.stderr, "not applied") {
		t.Fatalf("daemon up with no flags: %s", r)
	}
	r := alice.run("daemon", "up", "--inbox-max-bytes", "1048576", "--tcp", "127.0.0.1:0")
	if r.code != 0 || !strings.Contains(r.stdout+r.stderr, "already running") ||
		!strings.Contains(r.stderr, "--inbox-max-bytes 1048576, --tcp not applied: the running daemon keeps the flags it was started with (--inbox-max-bytes 268435456)") ||
		!strings.Contains(r.stderr, "daemon down") {
		t.Fatalf("daemon up with start flags: %s", r)
	}
}
