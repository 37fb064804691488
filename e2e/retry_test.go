package e2e

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// TestDirectSendRetryWithTheSameIDIsADuplicate: on the direct path
// (--no-daemon), the same message sent again with the same --id — what
// send's own hint says to do when the broker's answer was lost — is
// answered with the first messageId as a duplicate (exit 0; "already
// sent", and duplicate:true under --json), and the broker pushes it to the
// recipient once; another text under the id is refused with exit 6
// idempotency_key_reused. For a DM, an @group, a * broadcast and a #topic
// post. It used to be refused as idempotency_key_reused every time: each
// send sealed the message afresh (new nonce, new content key), so the
// broker saw different bytes under the id.
func TestDirectSendRetryWithTheSameIDIsADuplicate(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	bob.json(new(any), "status", "group", "join", "ops")
	alice.ok("topic", "create", "news")
	// Bob's pushes are counted as the broker sends them, on a raw
	// connection of his member key that acks each one: `inbox --follow`
	// drops a repeat of a sender's nonce (seen.go), so it would print a
	// retry the broker delivered twice, under a second messageId, once.
	pushes := bobPushes(t, bob)
	waitPresence(t, alice, bob.pubkey, "cli")

	cases := []struct{ to, id, body, human string }{
		{"bob", "dm-1", "dm retried", "already sent to bob"},
		{"@ops", "group-1", "group retried", "already sent to @ops"},
		{"*", "all-1", "broadcast retried", "already sent to everyone"},
		{"#news", "post-1", "post retried", "already posted to #news"},
	}
	for _, c := range cases {
		var first, again sendOut
		alice.json(&first, "send", c.to, c.body, "--id", c.id, "--no-daemon")
		if !first.OK || first.Duplicate || first.MessageID == "" || first.ClientMessageID != c.id || first.Via != "direct" {
			t.Fatalf("send %s: %+v", c.to, first)
		}
		r := alice.ok("send", c.to, c.body, "--id", c.id, "--no-daemon")
		// "delivered" once bob's raw connection has acked it.
		human := strings.Contains(r.stdout, c.human) || strings.Contains(r.stdout, strings.Replace(c.human, "sent", "delivered", 1))
		if !human || !strings.Contains(r.stdout, "message "+first.MessageID) {
			t.Fatalf("retry of send %s: %s\nwant %q and the first messageId %s", c.to, r, c.human, first.MessageID)
		}
		alice.json(&again, "send", c.to, c.body, "--id", c.id, "--no-daemon")
		if !again.OK || !again.Duplicate || again.MessageID != first.MessageID || again.ClientMessageID != c.id {
			t.Fatalf("retry of send %s: %+v, want a duplicate of %s", c.to, again, first.MessageID)
		}
		alice.fails(6, "idempotency_key_reused", "send", c.to, c.body+" (edited)", "--id", c.id, "--no-daemon")
	}

	// Pushes reach bob in order: once the sentinel is in, anything sent
	// to him before is too.
	alice.ok("send", "bob", "sentinel", "--no-daemon")
	count, ids := map[string]int{}, map[string][]string{}
	var all []string
	for body := ""; body != "sentinel"; {
		select {
		case p := <-pushes:
			body = p.body
			count[body]++
			ids[body] = append(ids[body], p.messageID)
			all = append(all, body)
		case <-time.After(20 * time.Second):
			t.Fatalf("no sentinel pushed to bob within 20 s; pushed: %q", all)
		}
	}
	for _, c := range cases[:3] {
		if count[c.body] != 1 || count[c.body+" (edited)"] != 0 {
			t.Fatalf("the broker pushed %q to bob %d times (messageIds %v) and the edit %d times, want once and never; all: %q",
				c.body, count[c.body], ids[c.body], count[c.body+" (edited)"], all)
		}
	}
	// Bob has acked the DM: a retry now says delivered, not queued (it
	// said queued, the daemon's path delivered). The ack's commit may
	// trail its push by a moment.
	eventually(t, 20*time.Second, "a retry of the acked DM to report delivered", func() bool {
		var again sendOut
		alice.json(&again, "send", "bob", "dm retried", "--id", "dm-1", "--no-daemon")
		return again.Duplicate && again.Status == "delivered"
	})
	if r := alice.ok("send", "bob", "dm retried", "--id", "dm-1", "--no-daemon"); !strings.Contains(r.stdout, "already delivered to bob") {
		t.Fatalf("retry of a delivered DM: %s", r)
	}

	posts := 0
	var page []struct {
		Body *string `json:"body"`
	}
	alice.json(&page, "topic", "history", "news")
	for _, p := range page {
		if p.Body != nil && strings.HasPrefix(*p.Body, "post retried") {
			if *p.Body != "post retried" {
				t.Fatalf("the edited post is in the history: %q", *p.Body)
			}
			posts++
		}
	}
	if posts != 1 {
		t.Fatalf("#news holds the post %d times, want once", posts)
	}
}

type rawPush struct{ body, messageID string }

// bobPushes opens a connection of u's member key (role cli, as `inbox
// --follow`) that opens and acks every message push and hands it on
// with its messageId, before any de-duplication a client does.
func bobPushes(t *testing.T, u *user) <-chan rawPush {
	t.Helper()
	cfg, err := config.Load(u.home)
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Meshes[0]
	key, err := cmcrypto.ParseSecretKey(m.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan rawPush, 256)
	var conn atomic.Pointer[client.Conn]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.MeshIdentity{MeshID: m.MeshID, MemberID: m.MemberID, BrokerURL: m.BrokerURL,
		BrokerPubkey: m.BrokerPubkey, Member: key}, client.DialOptions{
		Role: wire.RoleCLI, Presence: true, SessionID: "cli-raw-" + u.name, PeerType: wire.PeerHuman,
		OnReady: func(c *client.Conn) { conn.Store(c) },
		OnPush: func(_ []byte, p *wire.Push) {
			body, _, err := client.Open(p, m.MeshID, key, nil)
			if err != nil {
				body = "unopenable: " + err.Error()
			}
			conn.Load().ClientAckAsync([]string{p.MessageID})
			select {
			case out <- rawPush{body, p.MessageID}:
			default:
				t.Errorf("more than %d pushes to %s", cap(out), u.name)
			}
		},
	})
	if err != nil {
		t.Fatalf("raw connection for %s: %v", u.name, err)
	}
	t.Cleanup(func() { c.Close() })
	return out
}

// TestWaitForNobodyIsNotDelivered: with --wait, exit 0 means delivered. A
// broadcast that no recipient could be listed for (bob, the only other
// member, blocks alice: the broker skips him) will never be, and used to
// exit 0 all the same.
func TestWaitForNobodyIsNotDelivered(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	bob.ok("block", "alice", "--no-daemon")
	e := alice.fails(7, "wait_timeout", "send", "*", "anyone?", "--wait", "--no-daemon")
	if !strings.Contains(e.Error.Message, "no recipient of it could be reached") {
		t.Fatalf("send '*' --wait to nobody: %+v", e)
	}
}
