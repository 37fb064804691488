package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
)

// sentRow sends a DM from rd to carol and returns its outbox row's id.
func sentRow(t *testing.T, rd *runningDaemon) uint64 {
	t.Helper()
	resp, err := rd.api.Send(context.Background(), localapi.SendRequest{To: "carol", Message: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	waitFor(t, 10*time.Second, "the row", func() bool {
		rd.d.db.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bOutboxCMID).Get([]byte(resp.ClientMessageID)); v != nil {
				seq = seqOf(v)
			}
			return nil
		})
		return seq != 0
	})
	return seq
}

// failRow rewrites row seq as failed with code, sent as sender when not "".
func failRow(t *testing.T, rd *runningDaemon, seq uint64, code, sender string) {
	t.Helper()
	err := rd.d.db.Update(func(tx *bolt.Tx) error {
		r, err := getOutbox(tx, seq)
		if err != nil {
			return err
		}
		r.State, r.ErrorCode = stateDead, code
		if sender != "" {
			r.SenderPubkey = sender
		}
		return putOutbox(tx, r)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A row an agent session sent that failed for another reason than its
// session's end (here delivery_expired), the session ended since: its
// requeue is refused, as the key it is sealed with is gone, but it was
// told "the key you had in team before you left" (left_mesh), a leave the
// user never made. It is the session's key: session_ended.
func TestRequeueOfAnEndedSessionsRowSaysTheSessionEnded(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	bob := e.daemon("bob")
	bob.waitOpen(t)
	seq := sentRow(t, bob)
	ended, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	failRow(t, bob, seq, localapi.CodeDeliveryExpired, ended.PublicHex())
	_, aerr := bob.d.requeue(seq)
	if aerr == nil {
		t.Fatal("requeued a row sealed with an ended session's key")
	}
	if aerr.code != localapi.CodeSessionEnded || strings.Contains(aerr.msg, "left") || !strings.Contains(aerr.msg, "agent session that ended") {
		t.Fatalf("requeue of an ended session's expired row: %d %s: %s", aerr.status, aerr.code, aerr.msg)
	}
}

// A row that failed before its mesh was left (delivery_expired): requeue
// after the leave said "join it again, then requeue the row", and once
// joined again the requeue was refused for good (the key that left). It
// is refused left_mesh, with the same words, before the join and after.
func TestRequeueOfARowOfAMeshLeftIsRefusedBeforeAndAfterJoiningAgain(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	e.join("carol")
	bob := e.daemon("bob")
	bob.waitOpen(t)
	seq := sentRow(t, bob)
	failRow(t, bob, seq, localapi.CodeDeliveryExpired, "")
	bob.stop()
	old := e.meshes["bob"]
	oldKey, err := cmcrypto.ParseSecretKey(old.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(context.Background(), client.MeshIdentity{MeshID: old.MeshID, MemberID: old.MemberID, BrokerURL: old.BrokerURL, BrokerPubkey: old.BrokerPubkey, Member: oldKey}, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MeshLeave(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := config.Update(e.homes["bob"], func(cfg *config.Config) error { cfg.Remove("team"); return nil }); err != nil {
		t.Fatal(err)
	}
	bob = e.daemon("bob")
	_, before := bob.d.requeue(seq)
	e.join("bob")
	bob.waitOpen(t)
	_, after := bob.d.requeue(seq)
	for _, a := range []*apiError{before, after} {
		if a == nil {
			t.Fatal("requeued a row sealed with the key that left")
		}
		if a.status != 409 || a.code != localapi.CodeLeftMesh || strings.Contains(a.msg, "join it again") || !strings.Contains(a.msg, "before you left") {
			t.Fatalf("requeue of a row of a mesh left: %d %s: %s", a.status, a.code, a.msg)
		}
	}
}
