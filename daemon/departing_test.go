package daemon

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
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

// switchProxy forwards TCP connections to a target that can change; cut
// closes the connections it holds after the first n.
type switchProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	conns  []net.Conn
}

func newSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut(0) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			target := p.target
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			go func() {
				up, err := net.Dial("tcp", target)
				if err != nil {
					c.Close()
					return
				}
				go func() { io.Copy(up, c); up.Close() }()
				io.Copy(c, up)
				c.Close()
			}()
		}
	}()
	return p
}

func (p *switchProxy) to(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *switchProxy) cut(keep int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns[min(keep, len(p.conns)):] {
		c.Close()
	}
}

// TestDepartingSessionWaitsOutABrokerKeyMismatch: a departing session
// whose connection met a server that could not prove the broker's key is
// in broker_key_mismatch, which the daemon checks again until the real
// broker answers; its rows waited for that, not failed at once as if the
// broker refused it for good.
func TestDepartingSessionWaitsOutABrokerKeyMismatch(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	proxy := newSwitchProxy(t, e.b.Addr())
	m := e.owner
	m.BrokerURL = strings.Replace(m.BrokerURL, e.b.Addr(), proxy.ln.Addr().String(), 1)
	e.save("alice", m)
	alice := e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	bob := e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	pa := standIn(t)
	sa, ia := register(t, alice, e.homes["alice"], "sess-a", "alice-a", pa.Process.Pid)
	s := alice.d.sessionBySender(ia.Pubkey)
	waitFor(t, 5*time.Second, "the session's connection open", func() bool {
		st, _ := s.pres().State()
		return st == client.StateOpen
	})
	// Another broker (its own key) takes the address, for the session's
	// connection only: the mesh's stays open.
	impostorCfg := e.bCfg
	impostorCfg.Listen, impostorCfg.DataDir = "127.0.0.1:0", t.TempDir()
	impostor := startBroker(t, &impostorCfg)
	defer impostor.Close()
	proxy.to(impostor.Addr())
	proxy.cut(1)
	waitFor(t, 10*time.Second, "the session in broker_key_mismatch", func() bool {
		st, _ := s.pres().State()
		return st == client.StateBrokerKeyMismatch
	})
	if st, _ := alice.d.meshBySlug("team").stateOf(); st != localapi.MeshOpen {
		t.Fatalf("mesh %s; the test wants it open", st)
	}
	send(t, sa, "bob", "from a departing session")
	if _, err := alice.api.Do(context.Background(), "DELETE", "/v1/sessions/"+sa.SessionToken, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the session departing", func() bool { return alice.d.isDeparting(s.rec.Pubkey) })
	alice.d.settleDeparted()
	if r := rowWith(alice.outbox(t), "from a departing session"); r == nil || r.Status != localapi.StatusAccepted {
		t.Fatalf("the departing session's row while its connection is mismatched: %+v", r)
	}
	// The real broker answers again: the session's next check reaches it.
	proxy.to(e.b.Addr())
	waitFor(t, 20*time.Second, "bob got the departing session's message", func() bool {
		return hasBody(bob.inbox(t), "from a departing session")
	})
	waitFor(t, 10*time.Second, "the row out and the session closed", func() bool {
		r := rowWith(alice.outbox(t), "from a departing session")
		return r != nil && r.Status != localapi.StatusAccepted && r.Status != localapi.StatusFailed && !alice.d.isDeparting(s.rec.Pubkey)
	})
}

// TestAuditCheckedAgainAfterABrokerKeyMismatch: the audit-chain check of a
// mesh stopped for good when its connection met a server that could not
// prove the broker's key, although the daemon checks that again and
// reconnects: a broker restored from an older store was never reported on
// that or any later connection. The check runs on the new connection.
func TestAuditCheckedAgainAfterABrokerKeyMismatch(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	checkedAt := func() int64 { return alice.d.audit.snapshot()["team"].CheckedAt }
	waitFor(t, 10*time.Second, "the first audit check", func() bool { return checkedAt() != 0 })
	first := checkedAt()
	e.b.Close()
	impostorCfg := e.bCfg
	impostorCfg.DataDir = t.TempDir()
	impostor := startBroker(t, &impostorCfg)
	waitFor(t, 10*time.Second, "broker_key_mismatch", func() bool {
		s, _ := alice.mesh(t).stateOf()
		return s == localapi.MeshBrokerKeyMismatch
	})
	impostor.Close()
	e.b = startBroker(t, &e.bCfg)
	waitFor(t, 10*time.Second, "the mesh open again", func() bool {
		s, _ := alice.mesh(t).stateOf()
		return s == localapi.MeshOpen
	})
	waitFor(t, 10*time.Second, "an audit check on the new connection", func() bool {
		st := alice.d.audit.snapshot()["team"]
		return st.CheckedAt > first && st.OK
	})
}
