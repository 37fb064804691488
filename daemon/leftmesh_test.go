package daemon

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
)

// `mesh leave --force` fails the rows the broker had not confirmed
// (left_mesh). One of them may in fact have reached the broker (its ack
// lost): can a requeue, after joining again, deliver it a second time?
// Here bob's message reaches the broker and carol without his daemon
// learning so; bob leaves; his row fails left_mesh; he joins again, with a
// new key as every join has. The row was sealed and signed with the old
// key: sent as the new member, the broker's idempotency (per mesh and
// sender key) would not know it and carol would get it twice. So it is
// never sent again: the requeue is refused, saying why (it was accepted,
// and then waited for ever for a connection of a key nobody has), and
// carol has the message once.
func TestRequeueAfterLeaveCannotDeliverTwice(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	bob, carol := e.daemon("bob"), e.daemon("carol")
	bob.waitOpen(t)
	carol.waitOpen(t)
	ctx := context.Background()

	// Accepted while the broker is down, then sent by hand, as bob's
	// daemon would, with the daemon stopped: the broker has it, the row
	// is still pending.
	e.b.Close()
	waitFor(t, 5*time.Second, "bob sees the broker gone", func() bool { return bob.d.meshBySlug("team").conn() == nil })
	resp, err := bob.api.Send(ctx, localapi.SendRequest{To: "carol", Message: "only once", ClientMessageID: "once-1"})
	if err != nil {
		t.Fatal(err)
	}
	var row *outboxRow
	waitFor(t, 5*time.Second, "the row in daemon.db", func() bool {
		bob.d.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bOutboxCMID).Get([]byte(resp.ClientMessageID)); v != nil {
				row, _ = getOutbox(tx, seqOf(v))
			}
			return nil
		})
		return row != nil
	})
	bob.stop()
	e.b = startBroker(t, &e.bCfg)
	old := e.meshes["bob"]
	oldKey, _ := cmcrypto.ParseSecretKey(old.SecretKey)
	ident := client.MeshIdentity{MeshID: old.MeshID, MemberID: old.MemberID, BrokerURL: old.BrokerURL, BrokerPubkey: old.BrokerPubkey, Member: oldKey}
	c, err := client.Dial(ctx, ident, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ack, err := c.Send(ctx, row.send()); err != nil || ack.Duplicate {
		t.Fatalf("the send by hand: %+v %v", ack, err)
	}
	waitFor(t, 20*time.Second, "carol has bob's message", func() bool { return len(carol.inbox(t)) == 1 })

	// bob leaves (mesh leave --force: the broker, then config.json).
	if err := c.MeshLeave(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := config.Update(e.homes["bob"], func(cfg *config.Config) error { cfg.Remove("team"); return nil }); err != nil {
		t.Fatal(err)
	}
	bob = e.daemon("bob")
	failed := func() localapi.OutboxRow {
		for _, r := range bob.outbox(t) {
			if r.ClientMessageID == "once-1" {
				return r
			}
		}
		return localapi.OutboxRow{}
	}
	waitFor(t, 10*time.Second, "the row failed left_mesh", func() bool { return failed().ErrorCode == localapi.CodeLeftMesh })
	if r := failed(); strings.Contains(r.Error, "requeue") || !strings.Contains(r.Error, "send it anew") {
		t.Fatalf("the failed row says %q", r.Error)
	}

	// bob joins again: a new key.
	again := e.join("bob")
	if again.Pubkey == old.Pubkey {
		t.Fatal("a new join kept the old key")
	}
	bob.waitOpen(t)
	var fresh localapi.OutboxRow
	_, err = bob.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: "once-1"}, &fresh)
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 409 || ae.Body.Code != localapi.CodeLeftMesh || !strings.Contains(ae.Body.Message, "cannot be sent again") {
		t.Fatalf("requeue after joining again: %+v %v", fresh, err)
	}
	for _, r := range bob.outbox(t) {
		if r.State == statePending {
			t.Fatalf("a row waits that nothing can send: %+v", r)
		}
	}

	// Why it must not be sent: as the new member, the broker takes the
	// same frame as a new message (its idempotency is per sender key).
	newKey, _ := cmcrypto.ParseSecretKey(again.SecretKey)
	c2, err := client.Dial(ctx, client.MeshIdentity{MeshID: again.MeshID, MemberID: again.MemberID, BrokerURL: again.BrokerURL, BrokerPubkey: again.BrokerPubkey, Member: newKey}, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if ack, err := c2.Send(ctx, row.send()); err != nil || ack.Duplicate {
		t.Fatalf("the broker knew the new key's send as the old one's: %+v %v", ack, err)
	}
	waitFor(t, 20*time.Second, "a second copy at carol", func() bool { return len(carol.inbox(t)) == 2 })
	verified := 0
	for _, r := range carol.inbox(t) {
		if r.Body == "only once" && r.Verified {
			verified++
		}
	}
	if verified != 1 {
		t.Fatalf("carol has bob's message %d times", verified)
	}
}

// A mesh left while the daemon was down (`mesh leave --force --no-daemon`)
// and joined again before it started: the mesh is back in config.json
// under the same id, so the start's failLeftMeshes does not see it; the
// row of the old membership is sealed with a key nothing has any more.
// It failed session_ended ("an agent session that ended"), which is not
// what happened: it is left_mesh, as with a running daemon, and a requeue
// says so too.
func TestLeftWhileDownThenJoinedAgainFailsLeftMesh(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	bob := e.daemon("bob")
	bob.waitOpen(t)
	ctx := context.Background()

	e.b.Close()
	waitFor(t, 5*time.Second, "bob sees the broker gone", func() bool { return bob.d.meshBySlug("team").conn() == nil })
	resp, err := bob.api.Send(ctx, localapi.SendRequest{To: "carol", Message: "never sent", ClientMessageID: "left-1"})
	if err != nil {
		t.Fatal(err)
	}
	bob.stop()
	e.b = startBroker(t, &e.bCfg)

	// bob leaves with the daemon down, then joins again (a new key).
	old := e.meshes["bob"]
	oldKey, _ := cmcrypto.ParseSecretKey(old.SecretKey)
	c, err := client.Dial(ctx, client.MeshIdentity{MeshID: old.MeshID, MemberID: old.MemberID, BrokerURL: old.BrokerURL, BrokerPubkey: old.BrokerPubkey, Member: oldKey}, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MeshLeave(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := config.Update(e.homes["bob"], func(cfg *config.Config) error { cfg.Remove("team"); return nil }); err != nil {
		t.Fatal(err)
	}
	if again := e.join("bob"); again.Pubkey == old.Pubkey {
		t.Fatal("a new join kept the old key")
	}

	bob = e.daemon("bob")
	bob.waitOpen(t)
	row := func() localapi.OutboxRow {
		for _, r := range bob.outbox(t) {
			if r.ClientMessageID == resp.ClientMessageID {
				return r
			}
		}
		return localapi.OutboxRow{}
	}
	waitFor(t, 10*time.Second, "the row failed", func() bool { return row().State == stateDead })
	if r := row(); r.ErrorCode != localapi.CodeLeftMesh || !strings.Contains(r.Error, "you left team") || strings.Contains(r.Error, "session") {
		t.Fatalf("the old membership's row: %s %q", r.ErrorCode, r.Error)
	}
	var fresh localapi.OutboxRow
	_, err = bob.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: resp.ClientMessageID}, &fresh)
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 409 || ae.Body.Code != localapi.CodeLeftMesh {
		t.Fatalf("requeue: %+v %v", fresh, err)
	}
}
