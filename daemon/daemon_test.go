package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/broker"
	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/store"
	"claudemesh/wire"
)

// env is a broker with a mesh and member homes, for in-process daemon tests.
type env struct {
	t      testing.TB
	b      *broker.Broker
	owner  config.Mesh
	bCfg   broker.Config
	homes  map[string]string
	meshes map[string]config.Mesh
}

func startBroker(t testing.TB, cfg *broker.Config) *broker.Broker {
	t.Helper()
	b, err := broker.New(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg.Listen = b.Addr() // a restart reuses the port
	return b
}

func newEnv(t testing.TB) *env { t.Helper(); return newEnvWith(t, nil) }

// newEnvWith is newEnv with the broker's configuration changed by mutate.
func newEnvWith(t testing.TB, mutate func(*broker.Config)) *env {
	t.Helper()
	t.Setenv(client.BackoffEnv, "100ms")
	cfg := broker.DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.DataDir = "127.0.0.1:0", "off", t.TempDir()
	cfg.Grace, cfg.RedeliverAfter, cfg.PingInterval = 300*time.Millisecond, 500*time.Millisecond, time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	b := startBroker(t, &cfg)
	e := &env{t: t, b: b, bCfg: cfg, homes: map[string]string{}, meshes: map[string]config.Mesh{}}
	t.Cleanup(func() { e.b.Close() })
	ctx := context.Background()
	key, _ := cmcrypto.GenerateIdentity()
	res, err := client.CreateMesh(ctx, b.URL(), b.OperatorToken(), client.CreateMeshRequest{Name: "Team", Slug: "team", OwnerPubkey: key.PublicHex(), OwnerDisplayName: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	e.owner = config.Mesh{MeshID: res.MeshID, MemberID: res.MemberID, Slug: "team", Name: "Team", Pubkey: key.PublicHex(),
		SecretKey: key.SecretKeyHex(), BrokerURL: res.BrokerURL, BrokerPubkey: res.BrokerPubkey, Role: "owner", DisplayName: "alice",
		JoinedAt: time.Now().UTC().Format(time.RFC3339)}
	e.save("alice", e.owner)
	return e
}

func (e *env) save(name string, m config.Mesh) {
	home, ok := e.homes[name]
	if !ok {
		home = e.t.TempDir()
		e.homes[name] = home
	}
	e.meshes[name] = m
	if err := config.Update(home, func(c *config.Config) error { c.Upsert(m); return nil }); err != nil {
		e.t.Fatal(err)
	}
}

// join enrolls a new member with a real invite and saves its home.
func (e *env) join(name string) config.Mesh {
	e.t.Helper()
	ctx := context.Background()
	ownerKey, _ := cmcrypto.ParseSecretKey(e.owner.SecretKey)
	inv := &cmcrypto.Invite{V: 1, MeshID: e.owner.MeshID, MeshSlug: "team", MeshName: "Team", BrokerURL: e.owner.BrokerURL,
		BrokerPubkey: e.owner.BrokerPubkey, InviteID: client.NewID(), Role: "member", ExpiresAt: time.Now().Add(time.Hour).UnixMilli(), MaxUses: 1}
	if err := inv.Sign(ownerKey); err != nil {
		e.t.Fatal(err)
	}
	tok, _ := inv.Token()
	c, err := client.Dial(ctx, client.MeshIdentity{MeshID: e.owner.MeshID, MemberID: e.owner.MemberID, BrokerURL: e.owner.BrokerURL, BrokerPubkey: e.owner.BrokerPubkey, Member: ownerKey}, client.DialOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := c.InviteCreate(ctx, tok); err != nil {
		e.t.Fatal(err)
	}
	c.Close()
	key, _ := cmcrypto.GenerateIdentity()
	req, _ := client.NewJoinRequest(tok, inv.MeshID, inv.InviteID, name, key, time.Now())
	res, err := client.Join(ctx, inv.BrokerURL, inv.BrokerPubkey, req)
	if err != nil {
		e.t.Fatal(err)
	}
	m := config.Mesh{MeshID: res.MeshID, MemberID: res.MemberID, Slug: "team", Name: "Team", Pubkey: key.PublicHex(), SecretKey: key.SecretKeyHex(),
		BrokerURL: inv.BrokerURL, BrokerPubkey: inv.BrokerPubkey, Role: "member", DisplayName: name, JoinedAt: config.JoinedNow()}
	e.save(name, m)
	return m
}

// runningDaemon is an in-process daemon with an API client.
type runningDaemon struct {
	d    *Daemon
	api  *localapi.Client
	done chan error
}

// openPair joins bob and runs alice's and bob's daemons until both have
// their mesh open.
func (e *env) openPair(t testing.TB) (alice, bob *runningDaemon) {
	t.Helper()
	e.join("bob")
	alice, bob = e.daemon("alice"), e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	return alice, bob
}

func (e *env) daemon(name string) *runningDaemon {
	return e.daemonWith(name, Options{})
}

func (e *env) daemonWith(name string, opts Options) *runningDaemon {
	e.t.Helper()
	opts.Home, opts.ConfigPoll, opts.AckTimeout = e.homes[name], 100*time.Millisecond, 2*time.Second
	home := opts.Home
	d, err := Open(opts)
	if err != nil {
		e.t.Fatal(err)
	}
	rd := &runningDaemon{d: d, api: localapi.New(localapi.SocketPath(home)), done: make(chan error, 1)}
	go func() { rd.done <- d.Serve(context.Background()) }()
	e.t.Cleanup(rd.stop)
	waitFor(e.t, 5*time.Second, "daemon socket", func() bool {
		_, err := rd.api.Version(context.Background())
		return err == nil
	})
	return rd
}

func (rd *runningDaemon) stop() {
	if rd.d == nil {
		return
	}
	rd.d.Shutdown()
	<-rd.done
	rd.d = nil
}

func (rd *runningDaemon) waitOpen(t testing.TB) {
	t.Helper()
	waitFor(t, 5*time.Second, "mesh open", func() bool {
		var h localapi.Health
		rd.api.Do(context.Background(), "GET", "/v1/health", nil, &h)
		return h.Meshes["team"] == localapi.MeshOpen
	})
}

// idleOutbox runs alice's daemon until its mesh is open, then stops the
// broker, so the drain idles and outbox rows stay where a test puts them.
func idleOutbox(t testing.TB) (*runningDaemon, *meshRT) {
	t.Helper()
	e := newEnv(t)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	e.b.Close()
	m := alice.d.meshBySlug("team")
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool { return m.conn() == nil })
	return alice, m
}

// storePending writes pending rows of m (seq → nextAttemptAt) with their
// index entries, as the accept and the drain would, and then runs more in
// the same transaction (nil: nothing). Each row is a message to a target of
// its own, so no row waits behind another's line (outboxorder.go): rows
// backing off hold their lines when the drain's first round reads them,
// and whether the daemon's own first round ran before the rows were
// stored was a race in these tests (TestDueSendsTheEarliestAcceptedFirst
// failed once in CI on a row behind a line held that way).
func storePending(t testing.TB, d *Daemon, m *meshRT, rows map[uint64]int64, more func(tx *bolt.Tx) error) {
	t.Helper()
	err := d.db.Update(func(tx *bolt.Tx) error {
		for seq, at := range rows {
			r := &outboxRow{Seq: seq, MeshID: m.cfg.MeshID, State: statePending, NextAttemptAt: at,
				TargetSpec: fmt.Sprintf("peer-%d", seq)}
			if err := putOutbox(tx, r); err != nil {
				return err
			}
			if err := setPendingIndex(tx, r, true); err != nil {
				return err
			}
		}
		if more != nil {
			return more(tx)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// migrated writes a daemon.db of schema from, with what arrange puts in
// it, and opens it again with every migration.
func migrated(t *testing.T, from int, arrange func(tx *bolt.Tx) error) *store.Store {
	t.Helper()
	path := t.TempDir() + "/daemon.db"
	old, err := store.Open(path, store.Options{Migrations: daemonMigrations[:from]})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Update(arrange); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := store.Open(path, store.Options{Migrations: daemonMigrations})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (rd *runningDaemon) inbox(t *testing.T) []localapi.InboxRow {
	t.Helper()
	var rows []localapi.InboxRow
	if _, err := rd.api.Do(context.Background(), "GET", "/v1/inbox", nil, &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkCounts compares the kept outbox counts with a count of the rows
// themselves, which they must always equal, and checks the rows' pending
// and retry index entries.
func (rd *runningDaemon) checkCounts(t *testing.T) {
	t.Helper()
	checkPendingIndex(t, rd.d.db)
	rd.d.db.View(func(tx *bolt.Tx) error {
		want := map[string]int{}
		tx.Bucket(bOutbox).ForEach(func(_, v []byte) error {
			var r outboxRow
			if err := decodeOutbox(v, &r); err != nil {
				t.Fatal(err)
			}
			want[r.State]++
			return nil
		})
		got := outboxCounts(tx)
		for state, n := range got {
			if n == 0 {
				delete(got, state)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("outbox counts %v, rows %v", got, want)
		}
		return nil
	})
	checkUnsettledIndex(t, rd.d.db)
	var st localapi.Status
	if _, err := rd.api.Do(context.Background(), "GET", "/v1/status", nil, &st); err != nil {
		t.Fatal(err)
	}
	rd.d.db.View(func(tx *bolt.Tx) error {
		n := outboxCounts(tx)
		if st.Outbox.Delivered != n[stateDelivered] || st.Outbox.Dead != n[stateDead] || st.Outbox.Aborted != n[stateAborted] {
			t.Errorf("status %+v, counts %v", st.Outbox, n)
		}
		return nil
	})
}

// waitFor polls ok until it holds. d is how long the wait should take at
// most on a quiet machine; the deadline is never shorter than
// minWaitDeadline, because on a loaded 2-core machine (CI, or four
// developers' builds) a daemon, a broker and the race detector can stall
// for seconds, and a deadline is only the point of giving up on a
// condition, not a measure of speed.
func waitFor(t testing.TB, d time.Duration, what string, ok func() bool) {
	t.Helper()
	d = max(d, minWaitDeadline)
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const minWaitDeadline = 30 * time.Second

func TestSendThroughDaemonsIsDeliveredOnce(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	ctx := context.Background()
	resp, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "hello via daemons", ClientMessageID: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != localapi.StatusAccepted || resp.Target.Kind != wire.KindBox || resp.Target.DisplayName != "bob" {
		t.Fatalf("accept: %+v", resp)
	}
	waitFor(t, 5*time.Second, "bob's inbox", func() bool { return len(bob.inbox(t)) == 1 })
	row := bob.inbox(t)[0]
	if row.Body != "hello via daemons" || !row.Verified || row.SenderName != "alice" || row.Mesh != "team" {
		t.Fatalf("row %+v", row)
	}
	waitFor(t, 5*time.Second, "delivered", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &rows)
		return len(rows) == 1 && rows[0].Status == localapi.StatusDelivered
	})
	// Idempotency: same id and body → same row; different body → 409.
	again, err := alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "hello via daemons", ClientMessageID: "c1"})
	if err != nil || !again.Duplicate || again.Status != localapi.StatusDelivered {
		t.Fatalf("duplicate: %+v %v", again, err)
	}
	_, err = alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "other", ClientMessageID: "c1"})
	if ae, ok := err.(*localapi.APIError); !ok || ae.HTTPStatus != 409 || ae.Body.Code != wire.CodeIdempotencyKeyReused {
		t.Fatalf("reuse: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(bob.inbox(t)); n != 1 {
		t.Fatalf("bob has %d rows", n)
	}
	alice.checkCounts(t)
}

func TestLocalAPIRefusesBrowsersAndQueryTokens(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	sock := localapi.SocketPath(e.homes["alice"])
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (conn netConn, err error) {
		return dialUnix(ctx, sock)
	}}}
	_ = alice
	do := func(mutate func(*http.Request)) int {
		req, _ := http.NewRequest("GET", "http://localhost/v1/version", nil)
		mutate(req)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := do(func(r *http.Request) {}); st != 200 {
		t.Fatalf("plain: %d", st)
	}
	if st := do(func(r *http.Request) { r.Header.Set("Origin", "http://evil.example") }); st != 403 {
		t.Fatalf("origin: %d", st)
	}
	if st := do(func(r *http.Request) { r.Host = "evil.example" }); st != 403 {
		t.Fatalf("host: %d", st)
	}
	if st := do(func(r *http.Request) { r.URL.RawQuery = "token=abc" }); st != 400 {
		t.Fatalf("query token: %d", st)
	}
}

func TestBrokerDownSendsAreAcceptedThenDelivered(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	e.b.Close()
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool {
		var h localapi.Health
		alice.api.Do(context.Background(), "GET", "/v1/health", nil, &h)
		return h.Meshes["team"] != localapi.MeshOpen
	})
	for i := 0; i < 20; i++ {
		resp, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: fmt.Sprintf("during outage %d", i)})
		if err != nil || resp.Status != localapi.StatusAccepted {
			t.Fatalf("accept during outage: %+v %v", resp, err)
		}
	}
	e.b = startBroker(t, &e.bCfg)
	waitFor(t, 15*time.Second, "all 20 delivered", func() bool { return len(bob.inbox(t)) == 20 })
	seen := map[string]bool{}
	for _, r := range bob.inbox(t) {
		if !strings.HasPrefix(r.Body, "during outage") || seen[r.Body] {
			t.Fatalf("bad or duplicate row %+v", r)
		}
		seen[r.Body] = true
	}
}

type netConn = net.Conn

func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "unix", path)
}

func TestUnreachableMeshDoesNotDelayAnother(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	// A second mesh on a second broker, which then goes away for good.
	cfg2 := broker.DefaultConfig()
	cfg2.Listen, cfg2.MetricsListen, cfg2.DataDir = "127.0.0.1:0", "off", t.TempDir()
	b2 := startBroker(t, &cfg2)
	key, _ := cmcrypto.GenerateIdentity()
	res, err := client.CreateMesh(context.Background(), b2.URL(), b2.OperatorToken(), client.CreateMeshRequest{Name: "Ops", Slug: "ops", OwnerPubkey: key.PublicHex(), OwnerDisplayName: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	e.save("alice", config.Mesh{MeshID: res.MeshID, MemberID: res.MemberID, Slug: "ops", Name: "Ops", Pubkey: key.PublicHex(),
		SecretKey: key.SecretKeyHex(), BrokerURL: res.BrokerURL, BrokerPubkey: res.BrokerPubkey, Role: "owner", DisplayName: "alice",
		JoinedAt: time.Now().UTC().Format(time.RFC3339)})
	b2.Close()
	alice := e.daemon("alice")
	bob := e.daemon("bob")
	alice.waitOpen(t)
	bob.waitOpen(t)
	// Queue work on the dead mesh first: it must not hold up the live one.
	for i := 0; i < 5; i++ {
		if _, err := alice.api.Send(context.Background(), localapi.SendRequest{Mesh: "ops", To: key.PublicHex(), Message: "stuck"}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if _, err := alice.api.Send(context.Background(), localapi.SendRequest{Mesh: "team", To: "bob", Message: "fast lane"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "team delivery", func() bool { return len(bob.inbox(t)) == 1 })
	t.Logf("delivered on the live mesh in %s while the other mesh is down", time.Since(start))
	var h localapi.Health
	alice.api.Do(context.Background(), "GET", "/v1/health", nil, &h)
	if h.Meshes["ops"] == localapi.MeshOpen || h.Meshes["team"] != localapi.MeshOpen {
		t.Fatalf("states %v", h.Meshes)
	}
	// Writes with two meshes joined need --mesh.
	_, err = alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: "which mesh?"})
	if ae, ok := err.(*localapi.APIError); !ok || ae.Body.Code != "mesh_required" {
		t.Fatalf("mesh_required: %v", err)
	}
}

func TestJoinWhileRunningIsAttachedWithoutRestart(t *testing.T) {
	e := newEnv(t)
	bobHome := t.TempDir()
	e.homes["bob"] = bobHome
	bob := e.daemon("bob") // no mesh yet
	var h localapi.Health
	bob.api.Do(context.Background(), "GET", "/v1/health", nil, &h)
	if len(h.Meshes) != 0 {
		t.Fatalf("meshes %v", h.Meshes)
	}
	e.join("bob") // writes config.json; the daemon notices on its own
	bob.waitOpen(t)
}

// TestQueuedMessageDeliveredPromptlyOnConnect: a message queued while the
// recipient's daemon was down is acked as soon as it arrives on the next
// connection (not at the broker's redelivery timer), so the sender's row
// turns delivered quickly.
func TestQueuedMessageDeliveredPromptlyOnConnect(t *testing.T) {
	e := newEnv(t)
	e.bCfg.RedeliverAfter = time.Minute // a missed ack would show
	e.b.Close()
	e.b = startBroker(t, &e.bCfg)
	e.join("bob")
	alice := e.daemon("alice")
	alice.waitOpen(t)
	if _, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: "while you were out"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "queued at the broker", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(context.Background(), "GET", "/v1/outbox", nil, &rows)
		return len(rows) == 1 && rows[0].Status == localapi.StatusQueued
	})
	// Hold bob's connection in its hello_ack phase (before "open") while
	// the queued push arrives and is stored.
	bob := e.daemonWith("bob", Options{testHookConnected: func() { time.Sleep(500 * time.Millisecond) }})
	waitFor(t, 5*time.Second, "bob's row", func() bool { return len(bob.inbox(t)) == 1 })
	waitFor(t, 5*time.Second, "delivered at alice", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(context.Background(), "GET", "/v1/outbox", nil, &rows)
		return rows[0].Status == localapi.StatusDelivered
	})
}

func TestPermanentErrorIsDeadAndRequeueCopiesTheRow(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	stranger, _ := cmcrypto.GenerateIdentity()
	ctx := context.Background()
	resp, err := alice.api.Send(ctx, localapi.SendRequest{To: stranger.PublicHex(), Message: "to nobody", Priority: "now", ReplyToID: "01J0000000000000000000000R"})
	if err != nil {
		t.Fatal(err)
	}
	var rows []localapi.OutboxRow
	waitFor(t, 5*time.Second, "dead row", func() bool {
		alice.api.Do(ctx, "GET", "/v1/outbox?status=failed", nil, &rows)
		return len(rows) == 1
	})
	if rows[0].State != "dead" || !strings.Contains(rows[0].Error, wire.CodeUnknownRecipient) || rows[0].Attempts != 0 {
		t.Fatalf("row %+v", rows[0])
	}
	// A status no row can have is refused, not an empty list.
	var ae *localapi.APIError
	if _, err := alice.api.Do(ctx, "GET", "/v1/outbox?status=bogus", nil, &rows); !errors.As(err, &ae) || ae.HTTPStatus != 400 {
		t.Fatalf("status=bogus: %v", err)
	}
	var fresh localapi.OutboxRow
	if _, err := alice.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: rows[0].ID}, &fresh); err != nil {
		t.Fatal(err)
	}
	if fresh.ID == rows[0].ID || fresh.ClientMessageID != resp.ClientMessageID || fresh.TargetSpec != stranger.PublicHex() {
		t.Fatalf("requeued %+v", fresh)
	}
	var all []localapi.OutboxRow
	waitFor(t, 5*time.Second, "old aborted, new dead again", func() bool {
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &all)
		return len(all) == 2 && all[0].State == "dead" && all[1].State == "aborted"
	})
	// The copy kept every routing field (checked in the store).
	alice.d.db.View(func(tx *bolt.Tx) error {
		a, _ := getOutbox(tx, 1)
		b, _ := getOutbox(tx, 2)
		if a.Priority != b.Priority || a.ReplyToID != b.ReplyToID || a.Ciphertext != b.Ciphertext || a.Nonce != b.Nonce || a.Kind != b.Kind || a.MeshID != b.MeshID {
			t.Errorf("requeue lost a field: %+v vs %+v", a, b)
		}
		return nil
	})
	// Only failed rows can be requeued.
	_, err = alice.api.Do(ctx, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: "999"}, nil)
	if ae, ok := err.(*localapi.APIError); !ok || ae.HTTPStatus != 404 {
		t.Fatalf("unknown row: %v", err)
	}
	alice.checkCounts(t)
}

func TestEventsReplayFromLastEventID(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: fmt.Sprintf("m%d", i)})
	}
	waitFor(t, 5*time.Second, "3 rows", func() bool { return len(bob.inbox(t)) == 3 })
	// A subscriber that saw the first message resumes after it.
	rows := bob.inbox(t) // newest first
	first := rows[2].ID
	stream, err := bob.api.Events(ctx, first, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	var got []string
	for len(got) < 2 {
		ev, err := stream.Next()
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type != localapi.EventMessage {
			continue
		}
		var r localapi.InboxRow
		json.Unmarshal(ev.Data, &r)
		if ev.ID != r.ID {
			t.Fatalf("event id %s != row id %s", ev.ID, r.ID)
		}
		got = append(got, r.Body)
	}
	if got[0] != "m1" || got[1] != "m2" {
		t.Fatalf("replayed %v", got)
	}
	// Then live events continue on the same stream.
	alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "live"})
	for {
		ev, err := stream.Next()
		if err != nil {
			t.Fatal(err)
		}
		var r localapi.InboxRow
		if ev.Type == localapi.EventMessage && json.Unmarshal(ev.Data, &r) == nil {
			if r.Body != "live" {
				t.Fatalf("live event %q", r.Body)
			}
			break
		}
	}
}

func TestTCPListenerNeedsTheBearerToken(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	alice := e.daemonWith("alice", Options{TCP: addr})
	_ = alice
	tok, err := os.ReadFile(localapi.TokenPath(e.homes["alice"]))
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(localapi.TokenPath(e.homes["alice"])); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token mode %v", fi.Mode())
	}
	good := localapi.NewTCP(addr, strings.TrimSpace(string(tok)))
	if _, err := good.Version(context.Background()); err != nil {
		t.Fatalf("with token: %v", err)
	}
	bad := localapi.NewTCP(addr, "wrong")
	_, err = bad.Version(context.Background())
	if ae, ok := err.(*localapi.APIError); !ok || ae.HTTPStatus != 401 {
		t.Fatalf("without the right token: %v", err)
	}
}

func TestInboxPruneAndSeen(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	bob := e.daemonWith("bob", Options{PruneAfter: time.Hour})
	alice.waitOpen(t)
	bob.waitOpen(t)
	ctx := context.Background()
	alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "old news"})
	waitFor(t, 5*time.Second, "row", func() bool { return len(bob.inbox(t)) == 1 })
	// Reading never marks seen; markSeen=true does.
	var rows []localapi.InboxRow
	bob.api.Do(ctx, "GET", "/v1/inbox?unreadOnly=true", nil, &rows)
	if len(rows) != 1 {
		t.Fatal("unread row missing")
	}
	bob.api.Do(ctx, "GET", "/v1/inbox?unreadOnly=true&markSeen=true", nil, &rows)
	bob.api.Do(ctx, "GET", "/v1/inbox?unreadOnly=true", nil, &rows)
	if len(rows) != 0 {
		t.Fatal("markSeen did not mark")
	}
	// Age the row past the retention and prune.
	seq, _ := strconv.ParseUint(bob.inbox(t)[0].ID, 10, 64)
	bob.d.db.Update(func(tx *bolt.Tx) error {
		var r inboxRow
		if err := getJSON(tx.Bucket(bInbox), seqKey(seq), &r); err != nil {
			return err
		}
		r.ReceivedAt = time.Now().Add(-2 * time.Hour).UnixMilli()
		return putJSON(tx.Bucket(bInbox), seqKey(seq), &r)
	})
	bob.d.pruneInbox()
	if n := len(bob.inbox(t)); n != 0 {
		t.Fatalf("%d rows after prune", n)
	}
}

// TestInboxSyncShowsQueuedMessagesOfAFreshDaemon: `inbox` right after the
// daemon started lists what the broker held, not an empty inbox.
func TestInboxSyncShowsQueuedMessagesOfAFreshDaemon(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemon("alice")
	alice.waitOpen(t)
	ctx := context.Background()
	alice.api.Send(ctx, localapi.SendRequest{To: "bob", Message: "waiting for you"})
	waitFor(t, 5*time.Second, "queued", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &rows)
		return len(rows) == 1 && rows[0].Status == localapi.StatusQueued
	})
	bob := e.daemonWith("bob", Options{testHookConnected: func() { time.Sleep(300 * time.Millisecond) }})
	var rows []localapi.InboxRow
	if _, err := bob.api.Do(ctx, "GET", "/v1/inbox?sync=true", nil, &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Body != "waiting for you" {
		t.Fatalf("first listing of a fresh daemon: %+v", rows)
	}
}

// TestOutboxCountsMigration: a daemon.db of schema 1 (no counts) gets its
// counts computed from the rows when a newer daemon opens it.
func TestOutboxCountsMigration(t *testing.T) {
	states := []string{stateDelivered, stateDelivered, stateDead, statePending}
	s := migrated(t, 1, func(tx *bolt.Tx) error {
		for i, st := range states {
			if err := putJSON(tx.Bucket(bOutbox), seqKey(uint64(i+1)), &outboxRow{Seq: uint64(i + 1), State: st}); err != nil {
				return err
			}
		}
		return nil
	})
	s.View(func(tx *bolt.Tx) error {
		got := outboxCounts(tx)
		if got[stateDelivered] != 2 || got[stateDead] != 1 || got[statePending] != 1 || len(got) != 3 {
			t.Errorf("migrated counts %v", got)
		}
		return nil
	})
}

// TestDueSkipsBackingOffRowsByIndex: a drain round finds due rows and the
// wait until the next one from the indexes alone; a row backing off is not
// read (here its record is unreadable, so reading it would drop it from
// the round and lose the wait). A row whose retry time has come (103) and
// a row not tried yet (102) go, in enqueue order.
func TestDueSkipsBackingOffRowsByIndex(t *testing.T) {
	alice, m := idleOutbox(t)
	now := time.Now().UnixMilli()
	storePending(t, alice.d, m, map[uint64]int64{101: now + 60_000, 102: 0, 103: now - 1}, func(tx *bolt.Tx) error {
		// Row 101 backs off; its record is garbage, so only the index
		// can say when it is due.
		return tx.Bucket(bOutbox).Put(seqKey(101), []byte("not json"))
	})
	rows, wait := m.due(10)
	var seqs []uint64
	for _, r := range rows {
		seqs = append(seqs, r.Seq)
	}
	if fmt.Sprint(seqs) != "[102 103]" {
		t.Errorf("due rows %v, want [102 103]", seqs)
	}
	if wait < 50*time.Second || wait > 60*time.Second {
		t.Errorf("wait %v, want about a minute (row 101's nextAttemptAt)", wait)
	}
}

// TestOutboxPrune: finished rows past the retention go, with their
// clientMessageId entries and counts; rows still on their way and recent
// rows stay, and a requeued message keeps the id pointing at its new row.
func TestOutboxPrune(t *testing.T) {
	alice, m := idleOutbox(t)
	old := time.Now().Add(-31 * 24 * time.Hour).UnixMilli()
	recent := time.Now().UnixMilli()
	rows := []struct {
		seq   uint64
		cmid  string
		state string
		at    int64
	}{
		{1, "c1", stateDelivered, old},
		{2, "c2", stateDead, old},
		{3, "c3", stateQueued, old}, // still on its way: kept
		{4, "c4", stateAborted, old},
		{5, "c5", stateDelivered, old},
		{6, "c4", statePending, recent}, // the requeued copy of 4
		{7, "c7", stateDelivered, recent},
	}
	err := alice.d.db.Update(func(tx *bolt.Tx) error {
		for _, r := range rows {
			row := &outboxRow{Seq: 1000 + r.seq, ClientMessageID: r.cmid, MeshID: m.cfg.MeshID, State: r.state, EnqueuedAt: r.at}
			if err := putOutbox(tx, row); err != nil {
				return err
			}
			if err := setPendingIndex(tx, row, row.State == statePending); err != nil {
				return err
			}
			if err := tx.Bucket(bOutboxCMID).Put([]byte(r.cmid), seqKey(row.Seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func(n int) { pruneBatch = n }(pruneBatch)
	pruneBatch = 2 // several rounds
	alice.d.pruneOutbox()

	var kept []uint64
	alice.d.db.View(func(tx *bolt.Tx) error {
		tx.Bucket(bOutbox).ForEach(func(k, _ []byte) error {
			if s := seqOf(k); s > 1000 {
				kept = append(kept, s-1000)
			}
			return nil
		})
		for cmid, want := range map[string]uint64{"c1": 0, "c2": 0, "c3": 1003, "c4": 1006, "c5": 0, "c7": 1007} {
			var got uint64
			if v := tx.Bucket(bOutboxCMID).Get([]byte(cmid)); len(v) == 8 {
				got = seqOf(v)
			}
			if got != want {
				t.Errorf("clientMessageId %s → %d, want %d", cmid, got, want)
			}
		}
		return nil
	})
	if fmt.Sprint(kept) != "[3 6 7]" {
		t.Errorf("kept rows %v, want [3 6 7]", kept)
	}
	alice.checkCounts(t)
}

// checkUnsettledIndex checks that the index of rows left queued or sent
// lists exactly those rows.
func checkUnsettledIndex(t testing.TB, db *store.Store) {
	t.Helper()
	db.View(func(tx *bolt.Tx) error {
		var want, got []uint64
		tx.Bucket(bOutbox).ForEach(func(k, v []byte) error {
			if st, err := outboxRowState(v); err == nil && unsettled(st) {
				want = append(want, seqOf(k))
			}
			return nil
		})
		tx.Bucket(bOutboxUnsettled).ForEach(func(k, _ []byte) error {
			got = append(got, seqOf(k))
			return nil
		})
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("rows left queued or sent %v, indexed %v", want, got)
		}
		return nil
	})
}
