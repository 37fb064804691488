package daemon

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
)

// TestConcurrentRegistrationsOfOneSession: an MCP server's parallel first
// tool calls registered its session several times at once; each
// registration made its own key and connection, and one replaced another
// before it had started it, so ghost presences stayed online for everyone
// (and "delivered" DMs to no agent) until the daemon stopped. Concurrent
// registrations of one session id now give one key and one presence, and
// none once the session's process ends.
func TestConcurrentRegistrationsOfOneSession(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond})
	bob := e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	claude := standIn(t)
	tok := cmcrypto.RandomHex32()
	reg := localapi.SessionRegister{Token: tok, SessionID: "ambient-race", DisplayName: "racer", PID: claude.Process.Pid}
	const n = 8
	keys := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s localapi.Session
			if _, err := alice.api.Do(context.Background(), "POST", "/v1/sessions/register", reg, &s); err == nil {
				keys[i] = s.Pubkey
			} else {
				t.Logf("registration %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	key := ""
	for _, k := range keys {
		if k != "" && key != "" && k != key {
			t.Fatalf("registrations of one session got different keys: %q", keys)
		}
		if k != "" {
			key = k
		}
	}
	if key == "" {
		t.Fatal("no registration succeeded")
	}
	racers := func() (keys []string) {
		for _, p := range peersOf(t, bob.api) {
			if p.Online && strings.HasPrefix(p.DisplayName, "racer") {
				keys = append(keys, p.Pubkey)
			}
		}
		return keys
	}
	waitFor(t, 20*time.Second, "bob sees the session", func() bool { return len(racers()) > 0 })
	// Every presence a registration started has reached the broker by
	// the time the last one answered; let the broker settle on the one.
	waitFor(t, 20*time.Second, "bob sees the session once", func() bool {
		k := racers()
		return len(k) == 1 && k[0] == key
	})
	if got := alice.d.sessionList(); len(got) != 1 {
		t.Fatalf("alice's daemon holds %d sessions", len(got))
	}
	claude.Process.Kill()
	claude.Wait()
	waitFor(t, 20*time.Second, "the session gone for bob", func() bool { return len(racers()) == 0 })
}

// TestProfileWritesBesideSendsDoNotHang: a session's profile change
// (set_status) saved its record while holding the session registry's lock;
// a drain reads the outbox in a read transaction and looks sessions up
// under that lock; and a commit that grows daemon.db waits for every read
// transaction to end. The three waited for each other and the whole
// daemon hung (an MCP session calling set_status while it sent). Profile
// changes and sends from one session at once, over many file growths,
// all complete.
func TestProfileWritesBesideSendsDoNotHang(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	claude := standIn(t)
	s1, _ := register(t, alice, e.homes["alice"], "sess-busy", "alice-busy", claude.Process.Pid)
	body := strings.Repeat("x", 16<<10) // grows daemon.db quickly
	const n = 150
	errs := make(chan error, 2*n)
	// A hung daemon answers nothing: every call ends with this deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			_, err := s1.Send(ctx, localapi.SendRequest{To: "bob", Message: body[:len(body)-i]})
			errs <- err
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			st := []string{"working", "idle"}[i%2]
			_, err := s1.Do(ctx, "POST", "/v1/profile", localapi.ProfileRequest{Status: st}, nil)
			errs <- err
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a call failed (the daemon hung?): %v", err)
		}
	}
	waitFor(t, 60*time.Second, "bob got every message", func() bool { return len(bob.inbox(t)) == n })
}
