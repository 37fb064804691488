package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
)

func rowWith(rows []localapi.OutboxRow, preview string) *localapi.OutboxRow {
	for i := range rows {
		if rows[i].Preview == preview {
			return &rows[i]
		}
	}
	return nil
}

func hasBody(rows []localapi.InboxRow, body string) bool {
	for _, r := range rows {
		if r.Body == body {
			return true
		}
	}
	return false
}

// TestEndedSessionsRowsAreSent is trial 13 #9: an agent session that sends
// and ends before the daemon got its message out (deregistered by launch,
// or its process gone and reaped; with the broker down, and across a
// daemon restart) leaves no row "accepted" for ever: the daemon keeps (or
// reopens) the session's connection until its rows are out, and then
// closes it. A pending row of a session key the daemon has no record of
// fails with session_ended.
func TestEndedSessionsRowsAreSent(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	bob := e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	home := e.homes["alice"]

	e.b.Close()
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool {
		return alice.d.meshBySlug("team").conn() == nil
	})
	// Deregistered (launch's way) right after its send.
	pa := standIn(t)
	sa, ia := register(t, alice, home, "sess-a", "alice-a", pa.Process.Pid)
	send(t, sa, "bob", "from a, deregistered")
	if _, err := alice.api.Do(ctx, "DELETE", "/v1/sessions/"+sa.SessionToken, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Reaped: its process is gone.
	pb := standIn(t)
	sb, _ := register(t, alice, home, "sess-b", "alice-b", pb.Process.Pid)
	send(t, sb, "bob", "from b, reaped")
	pb.Process.Kill()
	pb.Wait()
	waitFor(t, 10*time.Second, "the reaper dropped sess-b", func() bool {
		var ss []localapi.Session
		alice.api.Do(ctx, "GET", "/v1/sessions", nil, &ss)
		return len(ss) == 0
	})
	// The daemon restarts before the broker is back.
	alice.stop()
	alice = e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	e.b = startBroker(t, &e.bCfg)

	waitFor(t, 20*time.Second, "bob got both ended sessions' messages", func() bool {
		rows := bob.inbox(t)
		return hasBody(rows, "from a, deregistered") && hasBody(rows, "from b, reaped")
	})
	for _, r := range bob.inbox(t) {
		if r.Body == "from a, deregistered" && r.SenderPubkey != ia.Pubkey {
			t.Fatalf("sent as %s, not the session's key %s", r.SenderPubkey, ia.Pubkey)
		}
	}
	waitFor(t, 20*time.Second, "alice's rows are out, and the ended sessions' connections closed", func() bool {
		rows := alice.outbox(t)
		for _, p := range []string{"from a, deregistered", "from b, reaped"} {
			if r := rowWith(rows, p); r == nil || r.Status == localapi.StatusAccepted || r.Status == localapi.StatusFailed {
				return false
			}
		}
		n := 0
		alice.d.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bSessions).Stats().KeyN; return nil })
		return len(alice.d.departedList()) == 0 && n == 0
	})

	// A pending row sent as a session key the daemon has no record of:
	// failed at the next start, with the reason.
	m := alice.d.meshBySlug("team")
	e.b.Close()
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool { return m.conn() == nil })
	pc := standIn(t)
	sc, _ := register(t, alice, home, "sess-c", "alice-c", pc.Process.Pid)
	send(t, sc, "bob", "from c, record lost")
	alice.stop()
	db, err := bolt.Open(localapi.DBPath(home), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bSessions)
		var keys [][]byte
		b.ForEach(func(k, _ []byte) error { keys = append(keys, append([]byte(nil), k...)); return nil })
		for _, k := range keys {
			b.Delete(k)
		}
		return nil
	})
	db.Close()
	alice = e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	r := rowWith(alice.outbox(t), "from c, record lost")
	if r == nil || r.Status != localapi.StatusFailed || r.ErrorCode != localapi.CodeSessionEnded || !strings.Contains(r.Error, "session that sent it ended") {
		t.Fatalf("the orphaned row: %+v", r)
	}
	alice.stop()
}
