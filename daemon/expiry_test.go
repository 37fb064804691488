package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// TestExpiredDeliveryEndsTheRowFailed is trial 13 #31: a message queued
// for an offline recipient whose queue entry expires (--queue-ttl) stayed
// "queued" in the sender's outbox for good, while message status said
// expired: the broker sends no receipt for it, nor anything else. The
// daemon asks message_status about rows left queued and ends this one
// failed, delivery_expired, as after a duplicate ack.
func TestExpiredDeliveryEndsTheRowFailed(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // bob runs no daemon: offline
	e.b.Close()
	e.bCfg.QueueTTL = 500 * time.Millisecond
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemonWith("alice", Options{StatusCheckEvery: 100 * time.Millisecond})
	alice.waitOpen(t)
	if _, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: "will expire"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the row was queued", func() bool {
		r := rowWith(alice.outbox(t), "will expire")
		return r != nil && r.Status != localapi.StatusAccepted
	})
	var r *localapi.OutboxRow
	waitFor(t, 20*time.Second, "the row ends failed", func() bool {
		r = rowWith(alice.outbox(t), "will expire")
		return r != nil && r.Status == localapi.StatusFailed
	})
	if r.ErrorCode != localapi.CodeDeliveryExpired || r.Expired != 1 || r.Recipients == nil || *r.Recipients != 1 || !strings.Contains(r.Error, "expired") {
		t.Fatalf("the expired row: %+v", r)
	}
}
