package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
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

// TestRequeuedExpiredRowIsSentAgain: a row whose delivery expired was
// requeued under its clientMessageId, which the broker still held for the
// expired message: the send was answered as a duplicate of it, and the
// row failed again at once. A requeued row the broker had taken is sent
// as a new message (its own id at the broker), and reaches the recipient.
func TestRequeuedExpiredRowIsSentAgain(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // bob's daemon starts later: offline at first
	e.b.Close()
	e.bCfg.QueueTTL = 500 * time.Millisecond
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemonWith("alice", Options{StatusCheckEvery: 100 * time.Millisecond})
	alice.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "expires, then requeued", ClientMessageID: "again-1"}); err != nil {
		t.Fatal(err)
	}
	var old *localapi.OutboxRow
	waitFor(t, 20*time.Second, "the row ends failed", func() bool {
		old = rowWith(alice.outbox(t), "expires, then requeued")
		return old != nil && old.Status == localapi.StatusFailed
	})
	if old.ErrorCode != localapi.CodeDeliveryExpired {
		t.Fatalf("the expired row: %+v", old)
	}
	bob := e.daemon("bob")
	bob.waitOpen(t)
	var fresh localapi.OutboxRow
	if _, err := alice.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: "again-1"}, &fresh); err != nil {
		t.Fatal(err)
	}
	if fresh.ClientMessageID != "again-1" || fresh.ID == old.ID {
		t.Fatalf("requeued as %+v", fresh)
	}
	waitFor(t, 20*time.Second, "the requeued row delivered", func() bool {
		for _, r := range alice.outbox(t) {
			if r.ID == fresh.ID {
				if r.Status == localapi.StatusFailed {
					t.Fatalf("the requeued row failed: %+v", r)
				}
				return r.Status == localapi.StatusDelivered
			}
		}
		return false
	})
	if !hasBody(bob.inbox(t), "expires, then requeued") {
		t.Fatal("bob does not have the requeued message")
	}
	// Its id still names it: message status asks about the new message.
	var st map[string]any
	if _, err := alice.api.Do(ctx, "GET", "/v1/messages/again-1", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st["messageId"] == old.MessageID {
		t.Fatalf("message status of the requeued id: %v, the expired message", st)
	}
}

// TestRequeuedRowIgnoresTheOldMessagesReceipts: a requeued row keeps its
// clientMessageId, which receipts of the old message carry too: a late
// one was counted for the new row before it was even sent (which its
// ack then settled as delivered at once). Receipts count only for the id
// the row is sent with.
func TestRequeuedRowIgnoresTheOldMessagesReceipts(t *testing.T) {
	e := newEnv(t)
	bob := e.join("bob") // offline: the message expires
	e.b.Close()
	e.bCfg.QueueTTL = 500 * time.Millisecond
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemonWith("alice", Options{StatusCheckEvery: 100 * time.Millisecond})
	alice.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "expires", ClientMessageID: "late-1"}); err != nil {
		t.Fatal(err)
	}
	var old *localapi.OutboxRow
	waitFor(t, 20*time.Second, "the row ends failed", func() bool {
		old = rowWith(alice.outbox(t), "expires")
		return old != nil && old.Status == localapi.StatusFailed
	})
	m := alice.d.meshBySlug("team")
	e.b.Close() // the requeued row stays unsent
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool { return m.conn() == nil })
	var fresh localapi.OutboxRow
	if _, err := alice.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: "late-1"}, &fresh); err != nil {
		t.Fatal(err)
	}
	late := &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: client.NewID(), MessageID: old.MessageID, ClientMessageID: "late-1",
		RecipientPubkey: bob.Pubkey, DeliveredAt: time.Now().UnixMilli()}
	if err := alice.d.recordReceipts([]inboxItem{{m: m, receipt: late}}, false); err != nil {
		t.Fatal(err)
	}
	for _, r := range alice.outbox(t) {
		if r.ID == fresh.ID && (r.Status != localapi.StatusAccepted || r.Receipts != 0) {
			t.Fatalf("the requeued row after a receipt of the old message: %+v", r)
		}
	}
}

// TestEndedSessionsDeliveredRowSettles: an agent session's receipts come
// to its own key, on its connection; a message it sent that was delivered
// after the session ended (its connection closed once its rows were out)
// stayed queued in the outbox and in daemon status for good, while
// message status said delivered. The message_status check settles it.
func TestEndedSessionsDeliveredRowSettles(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // bob's daemon starts later: offline at first
	alice := e.daemonWith("alice", Options{ReapInterval: 50 * time.Millisecond, StatusCheckEvery: 100 * time.Millisecond})
	alice.waitOpen(t)
	ctx := context.Background()
	sa, _ := register(t, alice, e.homes["alice"], "sess-a", "alice-a", standIn(t).Process.Pid)
	send(t, sa, "bob", "delivered after its session ended")
	waitFor(t, 10*time.Second, "the row was queued", func() bool {
		r := rowWith(alice.outbox(t), "delivered after its session ended")
		return r != nil && r.Status == localapi.StatusQueued
	})
	if _, err := alice.api.Do(ctx, "DELETE", "/v1/sessions/"+sa.SessionToken, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the ended session's connection closed", func() bool { return len(alice.d.departedList()) == 0 })
	bob := e.daemon("bob")
	bob.waitOpen(t)
	waitFor(t, 20*time.Second, "bob has the message", func() bool { return hasBody(bob.inbox(t), "delivered after its session ended") })
	waitFor(t, 20*time.Second, "alice's row is delivered", func() bool {
		r := rowWith(alice.outbox(t), "delivered after its session ended")
		return r != nil && r.Status == localapi.StatusDelivered
	})
	if st := alice.status(t); st.Outbox == nil || st.Outbox.Queued != 0 || st.Outbox.Delivered != 1 {
		t.Fatalf("daemon status counts %+v", st.Outbox)
	}
}

// TestStatusChecksArePaced: the check of rows left queued sent its
// message_status requests back to back, up to 64 a round; they are
// spaced by StatusCheckEvery/128 now (statusPace).
func TestStatusChecksArePaced(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // bob runs no daemon: the rows stay queued
	var mu sync.Mutex
	var asked []time.Time
	alice := e.daemonWith("alice", Options{StatusCheckEvery: 1280 * time.Millisecond, testHookStatusCheck: func(uint64) {
		mu.Lock()
		asked = append(asked, time.Now())
		mu.Unlock()
	}})
	alice.waitOpen(t)
	const rows = 5
	for i := range rows {
		alice.send(t, "bob", fmt.Sprintf("queued %d", i), "")
	}
	waitFor(t, 10*time.Second, "the rows were queued", func() bool { return alice.outboxCount(t, localapi.StatusQueued) == rows })
	waitFor(t, 20*time.Second, "a round asked about every row", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(asked) >= rows
	})
	pace := alice.d.statusPace()
	mu.Lock()
	asked = slices.Clone(asked)
	mu.Unlock()
	for i := 1; i < len(asked); i++ {
		if gap := asked[i].Sub(asked[i-1]); gap < pace {
			t.Fatalf("requests %d and %d %s apart, want at least %s", i, i+1, gap, pace)
		}
	}
	alice.checkCounts(t)
}

// TestUnsettledIndexMigration: a daemon.db of schema 8 gets the index of
// its rows left queued or sent (a corrupt row stays out), which the
// message_status check then walks.
func TestUnsettledIndexMigration(t *testing.T) {
	states := []string{statePending, stateQueued, stateSent, stateDelivered, stateDead, stateQueued}
	s := migrated(t, 8, func(tx *bolt.Tx) error {
		for i, st := range states {
			if err := putOutbox(tx, &outboxRow{Seq: uint64(i + 1), MeshID: "m", State: st}); err != nil {
				return err
			}
		}
		return tx.Bucket(bOutbox).Put(seqKey(uint64(len(states)+1)), []byte("not a row"))
	})
	var got []uint64
	s.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bOutboxUnsettled).ForEach(func(k, _ []byte) error {
			got = append(got, seqOf(k))
			return nil
		})
	})
	if fmt.Sprint(got) != "[2 3 6]" {
		t.Fatalf("indexed %v, want the queued and sent rows [2 3 6]", got)
	}
	checkUnsettledIndex(t, s)
}

// TestBrokerRestoreFailsTheLostRow: a new user's trial restored the
// broker from a backup taken before a message it had queued: the row
// stayed queued for good (the status check ignored not_found) and
// message status said "you sent no message" of the id send printed. The
// row ends failed, lost_by_broker, with the requeue command; it is not
// sent again on its own, and the requeue delivers it.
func TestBrokerRestoreFailsTheLostRow(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // offline until after the restore
	e.b.Close()
	backup := t.TempDir()
	copyFiles(t, e.bCfg.DataDir, backup)
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemonWith("alice", Options{StatusCheckEvery: 100 * time.Millisecond})
	alice.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "before the restore", ClientMessageID: "lost-1"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the row was queued", func() bool {
		r := rowWith(alice.outbox(t), "before the restore")
		return r != nil && r.Status == localapi.StatusQueued
	})
	e.b.Close()
	copyFiles(t, backup, e.bCfg.DataDir)
	e.b = startBroker(t, &e.bCfg)
	var r *localapi.OutboxRow
	waitFor(t, 20*time.Second, "the lost row ends failed", func() bool {
		r = rowWith(alice.outbox(t), "before the restore")
		return r != nil && r.Status == localapi.StatusFailed
	})
	want := "daemon outbox requeue " + r.ID
	if r.ErrorCode != localapi.CodeLostByBroker || !strings.Contains(r.Error, "no record of it") || !strings.Contains(r.Error, want) {
		t.Fatalf("the lost row: %+v", r)
	}
	_, err := alice.api.Do(ctx, "GET", "/v1/messages/lost-1?mesh=team", nil, nil)
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.Body.Code != localapi.CodeLostByBroker || !strings.Contains(ae.Body.Message, "restored from a backup") || !strings.Contains(ae.Body.Hint, want) {
		t.Fatalf("message status of the lost row: %v", err)
	}
	// Not resent on its own: bob gets the next message, not that one.
	bob := e.daemon("bob")
	bob.waitOpen(t)
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "after the restore"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob has the later message", func() bool { return hasBody(bob.inbox(t), "after the restore") })
	if hasBody(bob.inbox(t), "before the restore") {
		t.Fatal("the lost row was sent again without a requeue")
	}
	if _, err := alice.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: r.ID}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob has the requeued message", func() bool { return hasBody(bob.inbox(t), "before the restore") })
}

// copyFiles copies the regular files of directory from into to (made if
// need be), mode 0600, as an operator's backup and restore would.
func copyFiles(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		if !ent.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, ent.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, ent.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRowOfAnEarlierMembershipIsNotLost: the broker answers message_status
// only for the member that sent the message. A member removed and invited
// again (a new key, the same mesh id) had its rows the broker still held
// asked about as the new member, answered not_found, and failed "lost by
// the broker (restored from a backup?)", with a requeue hint that would
// deliver them twice. They are untracked instead, and never called lost.
func TestRowOfAnEarlierMembershipIsNotLost(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // offline: the message stays queued
	e.join("carol")
	carol := e.daemonWith("carol", Options{StatusCheckEvery: 100 * time.Millisecond})
	carol.waitOpen(t)
	ctx := context.Background()
	if _, err := carol.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "sent before the removal"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the row was queued", func() bool {
		r := rowWith(carol.outbox(t), "sent before the removal")
		return r != nil && r.Status == localapi.StatusQueued
	})
	if _, err := client.RemoveMember(ctx, e.b.URL(), e.b.OperatorToken(), "team", "carol"); err != nil {
		t.Fatal(err)
	}
	e.join("carol") // invited again: a new key, the same mesh
	waitFor(t, 10*time.Second, "carol's mesh open with the new key", func() bool {
		m := carol.d.meshBySlug("team")
		return m != nil && m.key.PublicHex() == e.meshes["carol"].Pubkey && m.conn() != nil
	})
	var r *localapi.OutboxRow
	waitFor(t, 20*time.Second, "the earlier membership's row untracked", func() bool {
		r = rowWith(carol.outbox(t), "sent before the removal")
		if r != nil && r.Status == localapi.StatusFailed {
			t.Fatalf("the earlier membership's row failed: %+v", r)
		}
		return r != nil && r.Status == localapi.StatusUntracked
	})
	if !strings.Contains(r.Error, "joined team again") {
		t.Fatalf("the untracked row: %+v", r)
	}
}

// TestMessageStatusBeforeTheRowIsFailedLost: message status of a row the
// broker has no record of, before the status check has failed it, called
// it lost and named a requeue that refuses a row not failed yet. It says
// the daemon checks again, and what to do then.
func TestMessageStatusBeforeTheRowIsFailedLost(t *testing.T) {
	e := newEnv(t)
	e.join("bob") // offline
	e.b.Close()
	backup := t.TempDir()
	copyFiles(t, e.bCfg.DataDir, backup)
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemonWith("alice", Options{StatusCheckEvery: time.Hour}) // the check never runs here
	alice.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "before the restore", ClientMessageID: "lost-2"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the row was queued", func() bool {
		r := rowWith(alice.outbox(t), "before the restore")
		return r != nil && r.Status == localapi.StatusQueued
	})
	e.b.Close()
	copyFiles(t, backup, e.bCfg.DataDir)
	e.b = startBroker(t, &e.bCfg)
	alice.waitOpen(t)
	var ae *localapi.APIError
	waitFor(t, 10*time.Second, "message status answers", func() bool {
		_, err := alice.api.Do(ctx, "GET", "/v1/messages/lost-2?mesh=team", nil, nil)
		return errors.As(err, &ae) && ae.Body.Code == localapi.CodeLostByBroker
	})
	if !strings.Contains(ae.Body.Hint, "asks again") || !strings.Contains(ae.Body.Hint, "then resend it with") {
		t.Fatalf("message status of a row not failed yet: %+v", ae.Body)
	}
}

// TestMessageStatusOfAPostOrAnUnsentRow: message status called a topic
// post the broker has no record of (a restore, or a post purged by the
// topic's retention) "lost by the broker, requeue it", though no status
// check follows posts (no recipients, unsettled for good); and a message
// still in the outbox was an error ("still in the outbox", exit 1) instead
// of its status.
func TestMessageStatusOfAPostOrAnUnsentRow(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	ctx := context.Background()
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics", localapi.TopicCreateRequest{Name: "ops"}, nil); err != nil {
		t.Fatal(err)
	}
	e.b.Close()
	backup := t.TempDir()
	copyFiles(t, e.bCfg.DataDir, backup)
	e.b = startBroker(t, &e.bCfg)
	alice.waitOpen(t)
	waitFor(t, 20*time.Second, "the post is taken", func() bool {
		_, err := alice.api.Send(ctx, localapi.SendRequest{To: "#ops", Message: "a post", ClientMessageID: "post-1"})
		if err != nil {
			return false
		}
		r := rowWith(alice.outbox(t), "a post")
		return r != nil && r.MessageID != ""
	})
	e.b.Close()
	copyFiles(t, backup, e.bCfg.DataDir)
	e.b = startBroker(t, &e.bCfg)
	alice.waitOpen(t)
	_, err := alice.api.Do(ctx, "GET", "/v1/messages/post-1?mesh=team", nil, nil)
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.Body.Code != wire.CodeNotFound {
		t.Fatalf("message status of a post the broker has no record of: %v", err)
	}

	// A message still in the outbox: its status, not an error.
	e.b.Close()
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "#ops", Message: "while away", ClientMessageID: "away-1"}); err != nil {
		t.Fatal(err)
	}
	var st localapi.OutboxMessageStatus
	if _, err := alice.api.Do(ctx, "GET", "/v1/messages/away-1?mesh=team", nil, &st); err != nil || st.State != localapi.StatusAccepted || st.ClientMessageID != "away-1" {
		t.Fatalf("message status of an accepted row: %+v, %v", st, err)
	}
}
