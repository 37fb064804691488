package daemon

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
)

// TestInflightIsNotStored: a row the drain is sending stays pending in
// daemon.db (inflight lives in memory: a crash leaves it pending, to be
// resent, as recoverOutbox once made of a stored inflight row), while the
// status counts and the outbox list show it as inflight.
func TestInflightIsNotStored(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	e.b.Close() // the drain idles: the rows stay pending
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool {
		var h localapi.Health
		alice.api.Do(context.Background(), "GET", "/v1/health", nil, &h)
		return h.Meshes["team"] != localapi.MeshOpen
	})
	for i := 0; i < 3; i++ {
		if _, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: fmt.Sprintf("m%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	var rows []localapi.OutboxRow
	if _, err := alice.api.Do(context.Background(), "GET", "/v1/outbox", nil, &rows); err != nil || len(rows) != 3 {
		t.Fatalf("outbox: %d rows, %v", len(rows), err)
	}
	seq, _ := strconv.ParseUint(rows[0].ID, 10, 64)
	d := alice.d
	if !d.claimForSend(seq) { // as a drain round claims a row it sends
		t.Fatal("the row was claimed already")
	}
	var st localapi.Status
	if _, err := alice.api.Do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Outbox.Pending != 2 || st.Outbox.Inflight != 1 {
		t.Fatalf("status while one row is sent: %+v", st.Outbox)
	}
	var inflight []localapi.OutboxRow
	if _, err := alice.api.Do(context.Background(), "GET", "/v1/outbox?status=inflight", nil, &inflight); err != nil {
		t.Fatal(err)
	}
	if len(inflight) != 1 || inflight[0].ID != rows[0].ID || inflight[0].State != stateInflight || inflight[0].Status != localapi.StatusAccepted {
		t.Fatalf("outbox list while one row is sent: %+v", inflight)
	}
	d.db.View(func(tx *bolt.Tx) error {
		r, err := getOutbox(tx, seq)
		if err != nil || r.State != statePending {
			t.Fatalf("stored row %+v %v, want pending", r, err)
		}
		if tx.Bucket(bOutboxPending).Get(pendingKey(r.MeshID, seq)) == nil {
			t.Fatal("the row being sent left the pending index")
		}
		return nil
	})
	d.unclaim(seq)
	alice.checkCounts(t)
}
