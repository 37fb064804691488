package daemon

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

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
