package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// TestOutboxKeepsOrder: messages accepted one after another reach the
// recipient in that order, although the drain has many in flight (the
// frames are written in order; only the waits for acks run side by side).
func TestOutboxKeepsOrder(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	const n = 60
	for i := 0; i < n; i++ {
		if _, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: fmt.Sprintf("m%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "every message at bob", func() bool { return len(bob.inbox(t)) == n })
	rows := bob.inbox(t) // newest first
	for i, r := range rows {
		if want := fmt.Sprintf("m%02d", n-1-i); r.Body != want {
			t.Fatalf("row %d is %q, want %q: out of order", i, r.Body, want)
		}
	}
}
