package daemon

import (
	"context"
	"fmt"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// A message held for a daemon that never ran is stored with its sender's
// member name (and the marks made from the names), like one that comes
// while it runs: the pushes arrive right after the hello, before the
// directory of the hello_ack, and the first start stored them without
// the name (a new user's trial; an agent session's message then read "via
// an unknown member" for good).
func TestMessagesHeldForANewDaemonHaveTheSendersName(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	alice.waitOpen(t)
	ctx := context.Background()
	for i := range 3 {
		if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: fmt.Sprintf("held %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "the broker to hold them", func() bool { return alice.outboxCount(t, localapi.StatusQueued) == 3 })
	bob := e.daemon("bob")
	var rows []localapi.InboxRow
	waitFor(t, 20*time.Second, "bob's three messages", func() bool {
		rows = nil
		bob.api.Do(ctx, "GET", "/v1/inbox", nil, &rows)
		return len(rows) == 3
	})
	for _, r := range rows {
		if r.SenderMemberName != "alice" || !r.Verified {
			t.Errorf("%q stored with senderMemberName %q (verified %v)", r.Body, r.SenderMemberName, r.Verified)
		}
	}
}
