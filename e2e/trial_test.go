package e2e

// A new user's trial of the daemon and direct paths side by side: the same
// outcome gives the same answer, code and exit code on both, and every
// line printed is true.

import (
	"strings"
	"testing"
	"time"
)

// TestTrialInvalidUTF8SameOnBothPaths: a message (from stdin or an
// argument) or a topic post that is not valid UTF-8 is the same usage
// error on both paths, checked before anything is sent, not an internal
// error of the daemon's API.
func TestTrialInvalidUTF8SameOnBothPaths(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice := users[0]
	alice.startDaemon()
	alice.waitDaemonOpen()
	alice.ok("topic", "create", "ops")
	bad := "\xff\xfe x"
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		e := alice.failsIn(bad, 2, "invalid_argument", append([]string{"send", "bob", "-"}, path...)...)
		if e.Error.Message != "message is not valid UTF-8" {
			t.Fatalf("stdin %v: %+v", path, e)
		}
		alice.fails(2, "invalid_argument", append([]string{"send", "bob", bad}, path...)...)
		alice.fails(2, "invalid_argument", append([]string{"topic", "post", "ops", bad}, path...)...)
		if r := alice.runIn(bad, append([]string{"send", "bob", "-"}, path...)...); r.code != 2 ||
			!strings.Contains(r.stderr+r.stdout, "message is not valid UTF-8") || strings.Contains(r.stderr+r.stdout, "jsontext") {
			t.Fatalf("human %v: %s", path, r)
		}
	}
	var rows []map[string]any
	alice.json(&rows, "daemon", "outbox", "list")
	if len(rows) != 0 {
		t.Fatalf("something was queued: %v", rows)
	}
}

// TestTrialRevokeAllSaysBlocked: revoke … all is a block, and says so in a
// sentence.
func TestTrialRevokeAllSaysBlocked(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "mallory")
	alice := users[0]
	for _, args := range [][]string{{"revoke", "mallory", "all"}, {"block", "mallory"}, {"revoke", "mallory", "dm", "broadcast"}} {
		r := alice.ok(args...)
		if !strings.Contains(r.stdout, "mallory (") || !strings.Contains(r.stdout, ") is blocked: they cannot message you, nor can their agent sessions") ||
			strings.Contains(r.stdout, "may send you") {
			t.Fatalf("%v: %s", args, r)
		}
		alice.ok("unblock", "mallory")
	}
}

// TestTrialWaitBroadcastCountsRecipients: `send '*' --wait` through the
// daemon knows how many recipients the broker holds the message for, as
// the direct path does: with a member offline it is not delivered to 1 of
// 3 (exit 7) and never "no recipient could be reached"; an @group whose
// members are all connected is delivered (exit 0) on both paths.
func TestTrialWaitBroadcastCountsRecipients(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob", "carol", "dave")
	alice, bob, carol := users[0], users[1], users[2]
	for _, u := range users[:3] {
		u.startDaemon()
	}
	for _, u := range users[:3] {
		u.waitDaemonOpen()
	}
	for _, u := range []*user{bob, carol} {
		u.ok("status", "group", "join", "dev")
	}
	waitPresence(t, alice, bob.pubkey, "control-plane")
	waitPresence(t, alice, carol.pubkey, "control-plane")
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		// dave never connected: 3 recipients, 2 of them online.
		args := append([]string{"send", "*", "to all", "--wait", "--wait-timeout", "3s"}, path...)
		e := alice.fails(7, "wait_timeout", args...)
		if !strings.Contains(e.Error.Message, "not delivered to 1 of 3 recipients within 3s") {
			t.Fatalf("%v: %+v", path, e)
		}
		r := alice.run(args...)
		if r.code != 7 || strings.Contains(r.stdout, "no recipient") || !strings.Contains(r.stdout, "3 recipients") ||
			!strings.Contains(r.stderr+r.stdout, "not delivered to 1 of 3 recipients") {
			t.Fatalf("%v: %s", path, r)
		}
		var out sendOut
		alice.json(&out, append([]string{"send", "@dev", "to dev", "--wait", "--wait-timeout", "20s"}, path...)...)
		if out.Status != "delivered" {
			t.Fatalf("%v: @dev: %+v", path, out)
		}
		if r := alice.ok(append([]string{"send", "@dev", "to dev, human", "--wait", "--wait-timeout", "20s"}, path...)...); !strings.Contains(r.stdout, "delivered to @dev") {
			t.Fatalf("%v: @dev: %s", path, r)
		}
	}
}

// TestTrialBlockedSameCodeOnBothPaths: a DM to a member who blocked the
// sender fails with the broker's code, blocked_by_recipient, and exit 4 on
// both paths, also when a repeat of the failed row is answered from the
// daemon's outbox.
func TestTrialBlockedSameCodeOnBothPaths(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "mallory")
	alice, mallory := users[0], users[1]
	alice.startDaemon()
	mallory.startDaemon()
	alice.waitDaemonOpen()
	mallory.waitDaemonOpen()
	alice.ok("block", "mallory")
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		e := mallory.fails(4, "blocked_by_recipient", append([]string{"send", "alice", "hi", "--wait"}, path...)...)
		if strings.Contains(e.Error.Message, "blocked_by_recipient:") {
			t.Fatalf("%v: the code twice: %+v", path, e)
		}
	}
	// Without --wait the daemon accepts it; the repeat finds it failed.
	mallory.ok("send", "alice", "again", "--id", "blk-1")
	eventually(t, 15*time.Second, "the row failed", func() bool {
		var rows []struct {
			ClientMessageID, Status, ErrorCode string
		}
		mallory.json(&rows, "daemon", "outbox", "list", "--status", "failed")
		for _, r := range rows {
			if r.ClientMessageID == "blk-1" {
				return r.ErrorCode == "blocked_by_recipient" || t.Failed()
			}
		}
		return false
	})
	mallory.fails(4, "blocked_by_recipient", "send", "alice", "again", "--id", "blk-1")
}

// TestTrialDuplicateSaysSo: a repeat of an --id through the daemon says it
// is a duplicate of an earlier send and where that send is, never that a
// new message was accepted for someone "offline".
func TestTrialDuplicateSaysSo(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "carol")
	alice, carol := users[0], users[1]
	alice.startDaemon()
	carol.startDaemon()
	alice.waitDaemonOpen()
	carol.waitDaemonOpen()
	waitPresence(t, alice, carol.pubkey, "control-plane")
	alice.ok("send", "carol", "idem", "--id", "job-1", "--wait")
	r := alice.ok("send", "carol", "idem", "--id", "job-1")
	if !strings.Contains(r.stdout, "already delivered to carol") || !strings.Contains(r.stdout, "nothing sent again") {
		t.Fatalf("a delivered duplicate: %s", r)
	}
	// With the broker gone the first send stays in the outbox.
	b.stop()
	eventually(t, 15*time.Second, "alice's daemon to see the broker gone", func() bool {
		return alice.daemonStatus().Meshes["test"] != "open"
	})
	alice.ok("send", "carol", "idem 2", "--id", "job-2")
	r = alice.ok("send", "carol", "idem 2", "--id", "job-2")
	if !strings.Contains(r.stdout, "already accepted for carol") || !strings.Contains(r.stdout, "a duplicate: nothing sent again") ||
		!strings.Contains(r.stdout, "still in the daemon's outbox") || strings.Contains(r.stdout, "offline") {
		t.Fatalf("a duplicate still in the outbox: %s", r)
	}
	var out sendOut
	alice.json(&out, "send", "carol", "idem 2", "--id", "job-2")
	if !out.Duplicate || out.Status != "accepted" {
		t.Fatalf("--json: %+v", out)
	}
}

// TestTrialPeerListOfflineRowsHaveEveryField: the skill tells agents that
// role, status, sessionId and peerType are in every peer list row; an
// offline member's row has them too, the same on both paths.
func TestTrialPeerListOfflineRowsHaveEveryField(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "erin")
	alice, erin := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		var rows []map[string]any
		alice.json(&rows, append([]string{"peer", "list", "--all"}, path...)...)
		found := false
		for _, r := range rows {
			if r["memberPubkey"] != erin.pubkey {
				continue
			}
			found = true
			for _, k := range []string{"role", "status", "sessionId", "peerType", "online", "groups"} {
				if _, ok := r[k]; !ok {
					t.Fatalf("%v: erin's row lacks %s: %v", path, k, r)
				}
			}
			if r["status"] != "offline" || r["online"] != false || r["role"] != "" {
				t.Fatalf("%v: erin's row: %v", path, r)
			}
		}
		if !found {
			t.Fatalf("%v: no row for erin: %v", path, rows)
		}
	}
}
