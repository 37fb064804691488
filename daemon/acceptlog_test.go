package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

func (rd *runningDaemon) outbox(t *testing.T) []localapi.OutboxRow {
	t.Helper()
	var rows []localapi.OutboxRow
	if _, err := rd.api.Do(context.Background(), "GET", "/v1/outbox", nil, &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// status is the daemon's GET /v1/status.
func (rd *runningDaemon) status(t *testing.T) localapi.Status {
	t.Helper()
	var st localapi.Status
	if _, err := rd.api.Do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// outboxCount is how many of the daemon's outbox rows have status st.
func (rd *runningDaemon) outboxCount(t *testing.T, st string) int {
	t.Helper()
	k := 0
	for _, r := range rd.outbox(t) {
		if r.Status == st {
			k++
		}
	}
	return k
}

func (rd *runningDaemon) send(t *testing.T, to, msg, cmid string) {
	t.Helper()
	if _, err := rd.api.Send(context.Background(), localapi.SendRequest{To: to, Message: msg, ClientMessageID: cmid}); err != nil {
		t.Fatal(err)
	}
}

// inboxBodies counts bob's copies of each message.
func inboxBodies(t *testing.T, rd *runningDaemon) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, r := range rd.inbox(t) {
		got[r.Body]++
	}
	return got
}

// sentOnceEach checks that bob got each message exactly once, after a
// marker message sent last has arrived (the outbox drains in order, so a
// row wrongly put back before it would have been sent first).
func sentOnceEach(t *testing.T, alice, bob *runningDaemon, marker string, want ...string) {
	t.Helper()
	alice.send(t, "bob", marker, "marker-"+strings.ReplaceAll(marker, " ", "-"))
	waitFor(t, 5*time.Second, "the marker in bob's inbox", func() bool { return inboxBodies(t, bob)[marker] == 1 })
	got := inboxBodies(t, bob)
	for _, m := range append(want, marker) {
		if got[m] != 1 {
			t.Errorf("bob got %q %d times, want once (inbox %v)", m, got[m], got)
		}
	}
	if len(got) != len(want)+1 {
		t.Errorf("bob's inbox %v, want %v and %q", got, want, marker)
	}
}

// openPairWith is openPair with alice's options.
func (e *env) openPairWith(t testing.TB, aliceOpts Options) (alice, bob *runningDaemon) {
	t.Helper()
	e.join("bob")
	alice, bob = e.daemonWith("alice", aliceOpts), e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	return alice, bob
}

// keepJournal keeps released records in the journal (no idle scrub).
var keepJournal = Options{journalScrubAfter: time.Hour}

// killed stops rd the way a kill -9 would leave the accept journal: as it
// is now, released records and all (a clean stop zeroes them).
func killed(t *testing.T, rd *runningDaemon, home string) {
	t.Helper()
	data, err := os.ReadFile(journalPath(home))
	if err != nil {
		t.Fatal(err)
	}
	rd.stop()
	if err := os.WriteFile(journalPath(home), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func setAside(t *testing.T, home string) []string {
	t.Helper()
	m, err := filepath.Glob(journalPath(home) + ".set-aside-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPrunedRowNotSentAgainAfterRestart: a delivered row whose outbox
// entry (and clientMessageId) was pruned is not replayed from the accept
// journal at the next start: the applied watermark in daemon.db says it
// was copied.
func TestPrunedRowNotSentAgainAfterRestart(t *testing.T) {
	e := newEnv(t)
	opts := keepJournal
	opts.PruneAfter = time.Millisecond
	alice, bob := e.openPairWith(t, opts)
	alice.send(t, "bob", "once only", "c1")
	waitFor(t, 5*time.Second, "delivered", func() bool {
		rows := alice.outbox(t)
		return len(rows) == 1 && rows[0].Status == localapi.StatusDelivered
	})
	waitFor(t, 5*time.Second, "the prune", func() bool {
		alice.d.pruneOutbox()
		return len(alice.outbox(t)) == 0
	})
	killed(t, alice, e.homes["alice"])
	alice = e.daemonWith("alice", keepJournal)
	alice.waitOpen(t)
	if rows := alice.outbox(t); len(rows) != 0 {
		t.Fatalf("after the restart the outbox has %+v, want it empty", rows)
	}
	sentOnceEach(t, alice, bob, "after restart", "once only")
	if rows := alice.outbox(t); len(rows) != 1 {
		t.Errorf("outbox %+v, want only the marker", rows)
	}
	// And once more: a second restart (a new epoch) replays nothing either.
	killed(t, alice, e.homes["alice"])
	alice = e.daemonWith("alice", keepJournal)
	alice.waitOpen(t)
	sentOnceEach(t, alice, bob, "after the second restart", "once only", "after restart")
}

// TestInitSetsTheJournalAside: the documented recovery (daemon.db moved
// aside, daemon up --init) starts with an empty outbox; the old accept
// journal is set aside, not replayed, so nothing already delivered is sent
// again.
func TestInitSetsTheJournalAside(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPairWith(t, keepJournal)
	for _, id := range []string{"a", "b", "c"} {
		alice.send(t, "bob", "msg "+id, id)
	}
	waitFor(t, 5*time.Second, "bob's inbox", func() bool { return len(bob.inbox(t)) == 3 })
	killed(t, alice, e.homes["alice"])
	db := localapi.DBPath(e.homes["alice"])
	if err := os.Rename(db, db+".damaged"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, nil, 0o600); err != nil { // as a crash leaves it
		t.Fatal(err)
	}
	alice = e.daemonWith("alice", Options{Init: true})
	alice.waitOpen(t)
	if rows := alice.outbox(t); len(rows) != 0 {
		t.Fatalf("a new daemon.db starts with %+v in its outbox", rows)
	}
	if n := len(setAside(t, e.homes["alice"])); n != 1 {
		t.Errorf("%d journals set aside, want 1", n)
	}
	sentOnceEach(t, alice, bob, "after init", "msg a", "msg b", "msg c")
}

// TestRestoredDBSetsForeignJournalAside: a daemon.db restored from a
// backup does not know the journal's epoch, so it cannot tell which of
// its records were sent since the backup: the journal is set aside.
func TestRestoredDBSetsForeignJournalAside(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPairWith(t, Options{})
	alice.send(t, "bob", "before the backup", "b1")
	waitFor(t, 5*time.Second, "bob's inbox", func() bool { return len(bob.inbox(t)) == 1 })
	alice.stop()
	db := localapi.DBPath(e.homes["alice"])
	backup, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	alice = e.daemonWith("alice", keepJournal)
	alice.waitOpen(t)
	for i := range 3 {
		alice.send(t, "bob", fmt.Sprint("after the backup ", i), fmt.Sprint("a", i))
	}
	waitFor(t, 5*time.Second, "bob's inbox", func() bool { return len(bob.inbox(t)) == 4 })
	killed(t, alice, e.homes["alice"])
	if err := os.WriteFile(db, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	alice = e.daemon("alice")
	alice.waitOpen(t)
	if n := len(setAside(t, e.homes["alice"])); n != 1 {
		t.Errorf("%d journals set aside, want 1", n)
	}
	sentOnceEach(t, alice, bob, "after the restore", "before the backup", "after the backup 0", "after the backup 1", "after the backup 2")
}

// TestJournalKeepsNoSentPreview: the accept journal does not keep a
// message's preview (plaintext) once its row is in daemon.db: the idle
// journal zeroes released records, and a clean stop does too.
func TestJournalKeepsNoSentPreview(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPairWith(t, Options{})
	path := journalPath(e.homes["alice"])
	holds := func(s string) bool {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(data, []byte(s))
	}
	alice.send(t, "bob", "first secret words", "s1")
	if !holds("first secret words") {
		t.Fatal("the accepted row is not in the journal") // the test would prove nothing
	}
	waitFor(t, 5*time.Second, "the idle journal zeroes the copied row", func() bool { return !holds("first secret words") })
	alice.send(t, "bob", "second secret words", "s2")
	alice.stop()
	if holds("second secret words") {
		t.Fatal("a clean stop left the copied row's preview in the journal")
	}
	alice = e.daemon("alice")
	alice.waitOpen(t)
	sentOnceEach(t, alice, bob, "after the stop", "first secret words", "second secret words")
}

// TestFullJournalRefusesSends: when accepted rows cannot be copied into
// daemon.db for good, the accept journal fills; a send then gets a 503
// that says so within the journal's space wait (it used to block with no
// end), `daemon status` shows the copy's error, and once daemon.db can be
// written again every accepted row is sent, once.
func TestFullJournalRefusesSends(t *testing.T) {
	e := newEnv(t)
	var failing atomic.Bool
	opts := Options{journalSize: 16 << 10, journalSpaceWait: 50 * time.Millisecond,
		testHookApply: func() error {
			if failing.Load() {
				return errors.New("disk says no")
			}
			return nil
		}}
	alice, bob := e.openPairWith(t, opts)
	failing.Store(true)
	ctx := context.Background()
	var accepted []string
	var refusal error
	for i := range 1000 {
		msg := fmt.Sprint("message ", i)
		if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: msg, ClientMessageID: fmt.Sprint("m", i)}); err != nil {
			refusal = err
			break
		}
		accepted = append(accepted, msg)
	}
	var ae *localapi.APIError
	if !errors.As(refusal, &ae) || ae.HTTPStatus != 503 || ae.Body.Code != "unavailable" ||
		!strings.Contains(ae.Body.Message, "accept journal is full") || !strings.Contains(ae.Body.Message, "disk says no") {
		t.Fatalf("after %d accepted sends: %v, want a 503 saying the accept journal is full", len(accepted), refusal)
	}
	if len(accepted) == 0 {
		t.Fatal("no send was accepted before the journal filled")
	}
	var st localapi.Status
	if _, err := alice.api.Do(ctx, "GET", "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(st.Warnings, "\n"), "cannot be copied into daemon.db") {
		t.Errorf("status warnings %q do not say the copy fails", st.Warnings)
	}
	failing.Store(false)
	waitFor(t, 10*time.Second, "a send accepted again", func() bool {
		_, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "after", ClientMessageID: "after"})
		return err == nil
	})
	sentOnceEach(t, alice, bob, "marker", append(accepted, "after")...)

	// A stop while copies fail does not wait for them: the row stays in
	// the journal and the next start copies it.
	failing.Store(true)
	alice.send(t, "bob", "while failing", "while-failing")
	alice.stop()
	alice = e.daemonWith("alice", Options{})
	alice.waitOpen(t)
	sentOnceEach(t, alice, bob, "after the restart", append(accepted, "after", "marker", "while failing")...)
}

// TestAcceptAnswersOnlyOnceSynced: a 202 means the message is on disk in
// the accept journal, fdatasynced. While the journal's sync is held, the
// send gets no answer; once the sync returns it gets its 202 and the
// message is sent. When the sync fails, the send is refused (never a
// 202), and so is every later one: after a failed fdatasync the page
// cache cannot be trusted. A change that answered before the sync, or
// despite its failure, breaks what a kill -9 or a power cut must keep.
func TestAcceptAnswersOnlyOnceSynced(t *testing.T) {
	e := newEnv(t)
	var fail atomic.Bool
	syncing := make(chan struct{}, 16)
	release := make(chan struct{})
	var hold atomic.Bool
	opts := Options{testJournalSync: func(f *os.File) error {
		if hold.Load() {
			syncing <- struct{}{}
			<-release
		}
		if fail.Load() {
			return errors.New("injected: fdatasync failed")
		}
		return f.Sync()
	}}
	alice, bob := e.openPairWith(t, opts)
	ctx := context.Background()

	hold.Store(true)
	type result struct {
		resp *localapi.SendResponse
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "held", ClientMessageID: "held"})
		res <- result{resp, err}
	}()
	<-syncing // the send's group is written, its sync has begun
	select {
	case r := <-res:
		t.Fatalf("the send was answered (%+v, %v) while its journal write was not yet synced", r.resp, r.err)
	default:
	}
	hold.Store(false)
	close(release)
	if r := <-res; r.err != nil || r.resp.Status != localapi.StatusAccepted {
		t.Fatalf("after the sync: %+v, %v; want 202 accepted", r.resp, r.err)
	}
	waitFor(t, 5*time.Second, "the held message at bob", func() bool { return inboxBodies(t, bob)["held"] == 1 })

	fail.Store(true)
	for _, id := range []string{"failed-1", "failed-2"} {
		_, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: id, ClientMessageID: id})
		var ae *localapi.APIError
		if !errors.As(err, &ae) || ae.HTTPStatus < 500 {
			t.Fatalf("send %s with a failing fdatasync: %v; want a 5xx refusal, never a 202", id, err)
		}
	}
}

// TestIdempotencyAfterRestartWithFilter: the clientMessageId filter
// (cmidfilter.go) lets new ids skip daemon.db; an id stored before a
// restart is still recognised once the filter is built from daemon.db —
// the same request is a 200 duplicate, a different one a 409 — and an id
// accepted a moment ago is recognised whether or not it is in daemon.db
// yet.
func TestIdempotencyAfterRestartWithFilter(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPairWith(t, Options{})
	ctx := context.Background()
	alice.send(t, "bob", "before the restart", "kept-id")
	alice.stop()
	alice = e.daemon("alice")
	alice.waitOpen(t)
	waitFor(t, 5*time.Second, "the filter built", func() bool { return alice.d.cmids.ready.Load() })
	if alice.d.cmids.mayHave("never-used-id") && alice.d.cmids.mayHave("never-used-id-2") {
		t.Error("the filter answers maybe for ids never used")
	}
	resp, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "before the restart", ClientMessageID: "kept-id"})
	if err != nil || !resp.Duplicate {
		t.Fatalf("the same request after a restart: %+v, %v; want a duplicate", resp, err)
	}
	_, err = alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "something else", ClientMessageID: "kept-id"})
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 409 {
		t.Fatalf("a different request with a stored id: %v; want 409", err)
	}
	for i := range 50 {
		id := fmt.Sprint("fresh-", i)
		alice.send(t, "bob", "fresh", id)
		resp, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "fresh", ClientMessageID: id})
		if err != nil || !resp.Duplicate {
			t.Fatalf("repeat of %s right after its 202: %+v, %v; want a duplicate", id, resp, err)
		}
	}
}
