package daemon

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestShutdownDoesNotWaitForEventStreams (issue 11 item 15): an attached
// event stream (inbox --follow, an MCP server) ends at once at shutdown,
// instead of holding the HTTP server's shutdown until its timeout.
func TestShutdownDoesNotWaitForEventStreams(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	streams := make(chan error, 2)
	for range 2 {
		s, err := alice.api.Events(context.Background(), "", "")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				if _, err := s.Next(); err != nil {
					streams <- err
					return
				}
			}
		}()
	}
	d := alice.d
	start := time.Now()
	alice.stop()
	t.Logf("shutdown with two event streams attached took %s", time.Since(start))
	if d.shutdownErr != nil {
		t.Fatalf("shutdown waited for requests: %v", d.shutdownErr)
	}
	for range 2 {
		select {
		case <-streams:
		case <-time.After(5 * time.Second):
			t.Fatal("an event stream outlived the daemon")
		}
	}
}

// TestStoppedWhenTheStoreIsReleased: `daemon down` counts a daemon as
// stopped once it let go of daemon.db, even if its pid still answers (an
// exited process nobody reaped yet).
func TestStoppedWhenTheStoreIsReleased(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	home := e.homes["alice"]
	if stopped(home, os.Getpid()) {
		t.Fatal("stopped while the daemon holds its store")
	}
	alice.stop()
	if !stopped(home, os.Getpid()) { // this pid lives on; the store is free
		t.Fatal("not stopped after the store was closed")
	}
}
