package client

// Integration tests against the real broker (claudemesh/broker), in-process
// on 127.0.0.1:0 with a temp data dir and sub-second timers: the library's
// handshake, requests, sends, receipts and reconnect policy as the daemon
// and the CLI will meet them.

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"claudemesh/broker"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

type testBroker struct {
	*broker.Broker
}

func startTestBroker(t *testing.T, mutate func(*broker.Config)) *testBroker {
	t.Helper()
	cfg := broker.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PingInterval = 200 * time.Millisecond
	cfg.PongTimeout = 2 * time.Second
	cfg.Grace = 300 * time.Millisecond
	cfg.RedeliverAfter = 400 * time.Millisecond
	cfg.HelloTimeout = 2 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &testBroker{b}
}

// createMesh makes a mesh through the REST API, as `mesh create` does, and
// returns the owner's identity with the pinned key from the response.
func (b *testBroker) createMesh(t *testing.T, name string) (MeshIdentity, *CreateMeshResponse) {
	t.Helper()
	owner := newID(t)
	res, err := CreateMesh(testCtx(t), b.URL(), b.OperatorToken(), CreateMeshRequest{
		Name: name, OwnerPubkey: owner.PublicHex(), OwnerDisplayName: "alice",
	})
	if err != nil {
		t.Fatalf("CreateMesh: %v", err)
	}
	if res.BrokerPubkey != b.PublicKey() || res.BrokerURL != b.URL() {
		t.Fatalf("create response does not name this broker: %+v", res)
	}
	return MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID, BrokerURL: res.BrokerURL,
		BrokerPubkey: res.BrokerPubkey, Member: owner}, res
}

// invite registers an invite from owner and enrolls a new member with it,
// as `invite` and `join` do.
func (b *testBroker) invite(t *testing.T, owner MeshIdentity, mesh *CreateMeshResponse, name string) MeshIdentity {
	t.Helper()
	ctx := testCtx(t)
	oc := mustDial(t, ctx, owner, DialOptions{})
	defer oc.Close()
	inv := &cmcrypto.Invite{V: 1, MeshID: mesh.MeshID, MeshSlug: mesh.Slug, MeshName: mesh.Name,
		BrokerURL: mesh.BrokerURL, BrokerPubkey: mesh.BrokerPubkey, InviteID: NewID(), Role: wire.MemberMember,
		ExpiresAt: time.Now().Add(time.Hour).UnixMilli(), MaxUses: 1}
	if err := inv.Sign(owner.Member); err != nil {
		t.Fatal(err)
	}
	tok, err := inv.Token()
	if err != nil {
		t.Fatal(err)
	}
	info, err := oc.InviteCreate(ctx, tok)
	if err != nil || info.InviteID != inv.InviteID {
		t.Fatalf("InviteCreate: %v %+v", err, info)
	}
	key := newID(t)
	req, err := NewJoinRequest(tok, mesh.MeshID, inv.InviteID, name, key, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	res, err := Join(ctx, inv.BrokerURL, inv.BrokerPubkey, req)
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if res.BrokerPubkey != inv.BrokerPubkey || res.MeshID != mesh.MeshID || res.MemberRole != wire.MemberMember {
		t.Fatalf("join response: %+v", res)
	}
	return MeshIdentity{MeshID: res.MeshID, MemberID: res.MemberID, BrokerURL: inv.BrokerURL, BrokerPubkey: inv.BrokerPubkey, Member: key}
}

func TestBrokerHandshakeAndRequests(t *testing.T) {
	b := startTestBroker(t, nil)
	owner, mesh := b.createMesh(t, "Team")
	ctx := testCtx(t)

	c := mustDial(t, ctx, owner, DialOptions{})
	ack := c.HelloAck()
	if ack.MeshName != "Team" || ack.MemberRole != wire.MemberOwner || ack.DisplayName != "alice" ||
		ack.PresenceID != "" || ack.BrokerPubkey != b.PublicKey() {
		t.Fatalf("transient hello_ack: %+v", ack)
	}
	members, err := c.MembersList(ctx)
	if err != nil || len(members) != 1 || members[0].Pubkey != owner.Member.PublicHex() {
		t.Fatalf("MembersList: %v %+v", err, members)
	}
	peers, err := c.ListPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.SessionID == c.SessionID() {
			t.Fatalf("a transient connection must not be listed: %+v", p)
		}
	}

	pc := mustDial(t, ctx, owner, DialOptions{Presence: true, DisplayName: "alice", Groups: []wire.Group{{Name: "ops"}}})
	if pc.HelloAck().PresenceID == "" {
		t.Fatal("a presence must get a presenceId")
	}
	for _, step := range []func() error{
		func() error { return pc.SetStatus(ctx, wire.StatusWorking) },
		func() error { return pc.SetSummary(ctx, "reviewing the client") },
		func() error { return pc.JoinGroup(ctx, "ops/oncall", "lead") },
		func() error { return pc.LeaveGroup(ctx, "ops/oncall") },
		func() error { return pc.SetVisible(ctx, true) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	peers, err = c.ListPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var me *wire.Peer
	for i := range peers {
		if peers[i].SessionID == pc.SessionID() {
			me = &peers[i]
		}
	}
	if me == nil || me.Status != wire.StatusWorking || me.Summary != "reviewing the client" {
		t.Fatalf("presence not listed with its profile: %+v", peers)
	}
	// The broker's own error codes come through as *Error.
	wantCode(t, pc.SetStatus(ctx, "sleepy"), wire.CodeInvalidArgument)
	wantCode(t, pc.JoinGroup(ctx, "Not A Group", ""), wire.CodeInvalidArgument)

	invites, err := c.InviteList(ctx)
	if err != nil || len(invites) != 0 {
		t.Fatalf("InviteList: %v %+v", err, invites)
	}
	_ = mesh
}

func TestBrokerRefusals(t *testing.T) {
	b := startTestBroker(t, nil)
	owner, _ := b.createMesh(t, "Team")
	ctx := testCtx(t)

	t.Run("pinned key mismatch", func(t *testing.T) {
		id := owner
		id.BrokerPubkey = newID(t).PublicHex()
		_, err := Dial(ctx, id, DialOptions{})
		wantCode(t, err, CodeBrokerKeyMismatch)
	})
	t.Run("unknown member", func(t *testing.T) {
		id := owner
		id.Member = newID(t)
		_, err := Dial(ctx, id, DialOptions{})
		wantCode(t, err, wire.CodeUnauthorized)
	})
	t.Run("member id mismatch", func(t *testing.T) {
		id := owner
		id.MemberID = NewID()
		_, err := Dial(ctx, id, DialOptions{})
		wantCode(t, err, wire.CodeMemberIDMismatch)
	})
	t.Run("unreachable", func(t *testing.T) {
		b2 := startTestBroker(t, nil)
		id := owner
		id.BrokerURL = b2.URL()
		b2.Close()
		_, err := Dial(ctx, id, DialOptions{})
		wantCode(t, err, CodeUnreachable)
	})
	t.Run("session attestation too long", func(t *testing.T) {
		id := owner
		id.Session = &SessionCreds{Key: newID(t), SessionID: "s1", DisplayName: "agent", AttestationTTL: 25 * time.Hour}
		_, err := Dial(ctx, id, DialOptions{})
		wantCode(t, err, wire.CodeTTLTooLong)
	})
	t.Run("REST errors", func(t *testing.T) {
		_, err := CreateMesh(ctx, b.URL(), "not-the-token", CreateMeshRequest{Name: "X", OwnerPubkey: newID(t).PublicHex(), OwnerDisplayName: "x"})
		if e := wantCode(t, err, wire.CodeUnauthorized); e.Status != 401 {
			t.Fatalf("status %d", e.Status)
		}
		_, err = Join(ctx, b.URL(), b.PublicKey(), JoinRequest{Token: "nope"})
		wantCode(t, err, wire.CodeMalformed)
	})
}

// TestBrokerDMSessionReceipt: a member sends a DM to one of its own agent
// sessions over a transient connection, the session opens it with its
// session key, acks, and the sender's `send --wait` sees the receipt.
func TestBrokerDMSessionReceipt(t *testing.T) {
	b := startTestBroker(t, nil)
	owner, _ := b.createMesh(t, "Team")
	ctx := testCtx(t)

	skey := newID(t)
	sid := owner
	sid.Session = &SessionCreds{Key: skey, SessionID: "agent-1", DisplayName: "alice-agent"}
	pushes := make(chan *wire.Push, 10)
	sc := mustDial(t, ctx, sid, DialOptions{OnPush: func(_ []byte, p *wire.Push) { pushes <- p }})
	if sc.HelloAck().PresenceID == "" {
		t.Fatal("session without presence id")
	}

	tc := mustDial(t, ctx, owner, DialOptions{})
	s, err := SealDM(skey.PublicHex(), []byte("hello agent"), owner.Member, SendOptions{Priority: wire.PriorityNow})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := tc.Send(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if ack.MessageID == "" || ack.Online == nil || *ack.Online != 1 || ack.Pending == nil || *ack.Pending != 1 {
		t.Fatalf("ack: %+v", ack)
	}
	p := recvWithin(t, pushes, "the DM at the session")
	body, verified, err := sc.Open(p)
	if err != nil || !verified || body != "hello agent" || p.MessageID != ack.MessageID || p.ClientMessageID != s.ID {
		t.Fatalf("open: %q %v %v push %+v", body, verified, err, p)
	}
	if err := sc.ClientAck(ctx, []string{p.MessageID}); err != nil {
		t.Fatal(err)
	}
	r, err := tc.WaitReceipt(ctx, ack.MessageID)
	if err != nil || r.RecipientPubkey != skey.PublicHex() || r.ClientMessageID != s.ID {
		t.Fatalf("receipt: %v %+v", err, r)
	}
	if err := tc.ClientAck(ctx, []string{r.ReceiptID}); err != nil {
		t.Fatal(err)
	}
	st, err := tc.MessageStatus(ctx, ack.MessageID, "")
	if err != nil || len(st.Recipients) != 1 || st.Recipients[0].State != wire.StateDelivered {
		t.Fatalf("message status: %v %+v", err, st)
	}
	// The same id again is idempotent: the original messageId, no redelivery.
	again, err := tc.Send(ctx, s)
	if err != nil || !again.Duplicate || again.MessageID != ack.MessageID {
		t.Fatalf("idempotent resend: %v %+v", err, again)
	}
}

// TestBrokerConcurrentSendsAndColdInbox: bob is offline while alice keeps a
// window of 64 sends in flight on one connection (200 DMs); bob then reads
// them as the cold inbox does (fetch_queued until more:false, decrypt,
// client_ack with reqId), and a second fetch finds nothing.
func TestBrokerConcurrentSendsAndColdInbox(t *testing.T) {
	const n = 200
	b := startTestBroker(t, nil)
	alice, mesh := b.createMesh(t, "Team")
	bob := b.invite(t, alice, mesh, "bob")
	ctx := testCtx(t)

	ac := mustDial(t, ctx, alice, DialOptions{})
	window := make(chan struct{}, 64)
	var mu sync.Mutex
	var sent []string
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		s, err := SealDM(bob.Member.PublicHex(), fmt.Appendf(nil, "msg %d", i), alice.Member, SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		window <- struct{}{}
		ch, err := ac.SendAsync(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-window }()
			select {
			case r := <-ch:
				if r.Err != nil || r.Ack.ID != s.ID || r.Ack.MessageID == "" {
					errs <- fmt.Errorf("send %s: %+v %v", s.ID, r.Ack, r.Err)
					return
				}
				mu.Lock()
				sent = append(sent, r.Ack.MessageID)
				mu.Unlock()
			case <-ctx.Done():
				errs <- ctx.Err()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	bc := mustDial(t, ctx, bob, DialOptions{})
	got := map[string]bool{}
	for {
		res, err := bc.FetchQueued(ctx, 50)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, m := range res.Messages {
			if m.Err != nil {
				t.Fatalf("queued push: %v", m.Err)
			}
			body, ok, err := bc.Open(m.Push)
			if err != nil || !ok {
				t.Fatalf("open queued: %v", err)
			}
			got[body] = true
			ids = append(ids, m.Push.MessageID)
		}
		if err := bc.ClientAck(ctx, ids); err != nil {
			t.Fatal(err)
		}
		if !res.More {
			break
		}
	}
	if len(got) != n {
		t.Fatalf("bob read %d distinct messages, want %d", len(got), n)
	}
	res, err := bc.FetchQueued(ctx, 50)
	if err != nil || len(res.Messages) != 0 {
		t.Fatalf("acked messages still queued: %v %d", err, len(res.Messages))
	}
	// Alice's transient connection is told of each delivery; receipts that
	// came before the wait are remembered.
	mu.Lock()
	defer mu.Unlock()
	for _, mid := range sent {
		if _, err := ac.WaitReceipt(ctx, mid); err != nil {
			t.Fatalf("receipt of %s: %v", mid, err)
		}
	}
}

// TestBrokerMultiLive: a broadcast to two live presences, each opening only
// its own key entry; the sender collects one receipt per recipient.
func TestBrokerMultiLive(t *testing.T) {
	b := startTestBroker(t, nil)
	alice, mesh := b.createMesh(t, "Team")
	bob := b.invite(t, alice, mesh, "bob")
	ctx := testCtx(t)

	type got struct {
		body string
		err  error
	}
	bobGot := make(chan got, 4)
	var bc *Conn
	bcReady := make(chan struct{})
	bc = mustDial(t, ctx, bob, DialOptions{Presence: true, Groups: []wire.Group{{Name: "ops"}}, OnPush: func(_ []byte, p *wire.Push) {
		<-bcReady
		body, _, err := bc.Open(p)
		bobGot <- got{body, err}
		bc.ClientAckAsync([]string{p.MessageID})
	}})
	close(bcReady)

	skey := newID(t)
	sid := alice
	sid.Session = &SessionCreds{Key: skey, SessionID: "agent-1", DisplayName: "alice-agent"}
	sessGot := make(chan got, 4)
	var sc *Conn
	scReady := make(chan struct{})
	sc = mustDial(t, ctx, sid, DialOptions{Groups: []wire.Group{{Name: "ops"}}, OnPush: func(_ []byte, p *wire.Push) {
		<-scReady
		body, _, err := sc.Open(p)
		sessGot <- got{body, err}
		sc.ClientAckAsync([]string{p.MessageID})
	}})
	close(scReady)

	ac := mustDial(t, ctx, alice, DialOptions{})
	peers, err := ac.ListPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recipients []string
	for _, p := range peers {
		if p.Pubkey != alice.Member.PublicHex() {
			recipients = append(recipients, p.Pubkey)
		}
	}
	if len(recipients) != 2 {
		t.Fatalf("peers: %+v", peers)
	}
	s, err := SealMulti(alice.MeshID, "@ops", []byte("standup in 5"), recipients, alice.Member, SendOptions{Priority: wire.PriorityNow})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := ac.Send(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan got{bobGot, sessGot} {
		if g := recvWithin(t, ch, "the broadcast"); g.err != nil || g.body != "standup in 5" {
			t.Fatalf("recipient got %+v", g)
		}
	}
	if ack.Pending == nil || *ack.Pending != 2 {
		t.Fatalf("ack pending %v", ack.Pending)
	}
	// A transient connection receives the receipts of its own sends
	// (01-protocol §3), and a multi message is fully delivered when its
	// receipts equal the ack's pending (§4): `send --wait` to a group
	// waits for all of them on the connection that sent.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rs, err := ac.WaitReceipts(wctx, ack.MessageID, *ack.Pending)
	if err != nil || len(rs) != 2 {
		// They must at least not be lost: they stay queued for alice.
		queued := -1
		if res, ferr := ac.FetchQueued(ctx, 10); ferr == nil {
			queued = len(res.Receipts)
		}
		t.Fatalf("live receipts on the sending connection: %d of %d (%v); fetch_queued then holds %d receipts",
			len(rs), *ack.Pending, err, queued)
	}
}

// TestBrokerPresencePolicy: a clean Close ends the presence at once
// (peer_left well before grace), a second presence with the same sessionId
// replaces the first (which stops: session_replaced), and mesh_leave ends
// every presence of the member (left).
func TestBrokerPresencePolicy(t *testing.T) {
	t.Setenv(BackoffEnv, "50ms")
	b := startTestBroker(t, func(c *broker.Config) { c.Grace = time.Minute })
	alice, mesh := b.createMesh(t, "Team")
	bob := b.invite(t, alice, mesh, "bob")
	ctx := testCtx(t)

	events := make(chan *wire.Push, 32)
	watcher := StartPresence(ctx, alice, DialOptions{Presence: true, Role: wire.RoleControlPlane, SessionID: "daemon",
		OnSystem: func(p *wire.Push) { events <- p }}, PresenceOptions{})
	defer watcher.Close()
	waitState(t, watcher, StateOpen)

	waitEvent := func(event, pubkeyWant string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case p := <-events:
				if p.Event != event {
					continue
				}
				data := wire.MustEncode(p.EventData)
				var pe wire.PeerEvent
				if wire.Decode(data, &pe) == nil && pe.MemberPubkey == pubkeyWant {
					return
				}
			case <-deadline:
				t.Fatalf("no %s for %s", event, pubkeyWant)
			}
		}
	}

	// Clean close: peer_left long before the one-minute grace.
	bp := StartPresence(ctx, bob, DialOptions{Presence: true, SessionID: "cli-bob"}, PresenceOptions{})
	waitState(t, bp, StateOpen)
	waitEvent(wire.EventPeerJoined, bob.Member.PublicHex())
	bp.Close()
	waitEvent(wire.EventPeerLeft, bob.Member.PublicHex())

	// Replacement: the first presence stops and does not fight back.
	first := StartPresence(ctx, bob, DialOptions{Presence: true, SessionID: "cli-bob"}, PresenceOptions{})
	defer first.Close()
	waitState(t, first, StateOpen)
	second := StartPresence(ctx, bob, DialOptions{Presence: true, SessionID: "cli-bob"}, PresenceOptions{})
	defer second.Close()
	err := waitState(t, first, StateClosed)
	wantCode(t, err, wire.ReasonReplaced)
	waitState(t, second, StateOpen)

	// mesh_leave: bob's remaining presence is closed with `left` and stops.
	lc := mustDial(t, ctx, bob, DialOptions{})
	if err := lc.MeshLeave(ctx); err != nil {
		t.Fatal(err)
	}
	err = waitState(t, second, StateClosed)
	wantCode(t, err, wire.ReasonLeft)
	recvWithin(t, second.Done(), "the presence to stop")
	// And bob can no longer connect.
	_, err = Dial(ctx, bob, DialOptions{})
	if CodeOf(err) != wire.CodeUnauthorized && CodeOf(err) != wire.CodeRevoked {
		t.Fatalf("dial after leaving: %v", err)
	}
}

// TestBrokerPresenceReconnects: the broker goes away (1001 shutting_down)
// and comes back on the same port and data dir; the presence reconnects on
// its own and is listed again.
func TestBrokerPresenceReconnects(t *testing.T) {
	t.Setenv(BackoffEnv, "50ms")
	dir := t.TempDir()
	b := startTestBroker(t, func(c *broker.Config) { c.DataDir = dir })
	alice, _ := b.createMesh(t, "Team")
	ctx := testCtx(t)

	var log stateLog
	p := StartPresence(ctx, alice, DialOptions{Presence: true, SessionID: "cli-a"}, PresenceOptions{OnState: log.add})
	defer p.Close()
	waitState(t, p, StateOpen)
	addr := b.Addr()
	b.Close()
	waitState(t, p, StateReconnecting)

	b2 := startTestBroker(t, func(c *broker.Config) { c.DataDir = dir; c.Listen = addr })
	if b2.PublicKey() != b.PublicKey() {
		t.Fatal("restarted broker has a new key")
	}
	waitState(t, p, StateOpen)
	peers, err := p.Conn().ListPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, pe := range peers {
		found = found || pe.SessionID == "cli-a"
	}
	if !found {
		t.Fatalf("reconnected presence not listed: %+v", peers)
	}
	states, _ := log.snapshot()
	t.Logf("states: %v", states)
}

// TestBrokerAdminCloses drives 01-protocol §6 and §9 end to end: a
// disconnected presence comes back by itself, a kicked one stays away, a
// banned one stops and carries the broker's human message, and the banned
// member can no longer connect.
func TestBrokerAdminCloses(t *testing.T) {
	t.Setenv(BackoffEnv, "50ms")
	b := startTestBroker(t, nil)
	alice, mesh := b.createMesh(t, "Team")
	bob := b.invite(t, alice, mesh, "bob")
	ctx := testCtx(t)
	admin := mustDial(t, ctx, alice, DialOptions{})

	_, err := admin.Admin(ctx, &wire.AdminRequest{Type: wire.TypeKick, Target: "nobody-by-that-name"})
	wantCode(t, err, wire.CodeUnknownTarget)

	// disconnect: the presence reconnects on its own.
	p := StartPresence(ctx, bob, DialOptions{Presence: true, SessionID: "cli-bob"}, PresenceOptions{})
	defer p.Close()
	waitState(t, p, StateOpen)
	first := p.Conn()
	res, err := admin.Admin(ctx, &wire.AdminRequest{Type: wire.TypeDisconnect, Target: "bob"})
	if err != nil || len(res.Affected) == 0 {
		t.Fatalf("disconnect: %v %+v", err, res)
	}
	recvWithin(t, first.Done(), "the disconnected connection to end")
	if code, reason := first.CloseCode(); code != 1000 || reason != wire.ReasonDisconnected {
		t.Fatalf("disconnect closed with %d %q", code, reason)
	}
	deadline, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		ch := p.Changed()
		if s, _ := p.State(); s == StateOpen && p.Conn() != first {
			break
		}
		select {
		case <-ch:
		case <-deadline.Done():
			t.Fatal("presence did not come back after disconnect")
		}
	}

	// kick --all: the presence stops; a control-plane connection is
	// skipped and reported.
	daemon := mustDial(t, ctx, bob, DialOptions{Presence: true, Role: wire.RoleControlPlane, SessionID: "daemon"})
	res, err = admin.Admin(ctx, &wire.AdminRequest{Type: wire.TypeKick, All: true})
	if err != nil || len(res.Skipped) != 1 || res.Skipped[0].Reason != wire.SkipControlPlane || len(res.Affected) != 1 {
		t.Fatalf("kick --all: %v %+v", err, res)
	}
	err = waitState(t, p, StateKicked)
	wantCode(t, err, wire.ReasonKicked)
	select {
	case <-daemon.Done():
		t.Fatal("kick --all closed a control-plane connection")
	default:
	}
	// A kick naming the member ends its daemon's connection too (issue 9:
	// a kicked daemon stops reconnecting).
	res, err = admin.Admin(ctx, &wire.AdminRequest{Type: wire.TypeKick, Target: "bob"})
	if err != nil || len(res.Affected) != 1 {
		t.Fatalf("kick bob: %v %+v", err, res)
	}
	recvWithin(t, daemon.Done(), "the daemon connection to be kicked")
	if code, _ := daemon.CloseCode(); code != wire.CloseKicked {
		t.Fatalf("daemon connection closed %d", code)
	}
	daemon = mustDial(t, ctx, bob, DialOptions{Presence: true, Role: wire.RoleControlPlane, SessionID: "daemon"})

	// ban: every connection closes 4002 with the human message first.
	p2 := StartPresence(ctx, bob, DialOptions{Presence: true, SessionID: "cli-bob2"}, PresenceOptions{})
	defer p2.Close()
	waitState(t, p2, StateOpen)
	if _, err := admin.Admin(ctx, &wire.AdminRequest{Type: wire.TypeBan, Target: "bob", Reason: "spam"}); err != nil {
		t.Fatal(err)
	}
	err = waitState(t, p2, StateBanned)
	if e := wantCode(t, err, wire.ReasonBanned); e.Message == "" || e.Message == "broker closed the connection (4002 banned)" {
		t.Fatalf("the banned user must see the broker's message, got %q", e.Message)
	}
	recvWithin(t, daemon.Done(), "the daemon connection to be banned too")
	if code, _ := daemon.CloseCode(); code != wire.CloseBanned {
		t.Fatalf("daemon connection closed %d", code)
	}
	_, err = Dial(ctx, bob, DialOptions{})
	wantCode(t, err, wire.CodeRevoked)
	bans, err := admin.ListBans(ctx)
	if err != nil || len(bans) != 1 || bans[0].Pubkey != bob.Member.PublicHex() || bans[0].Reason != "spam" {
		t.Fatalf("ListBans: %v %+v", err, bans)
	}
}

// TestBrokerSendErrors: refused sends come back as *Error with the ack's
// code, and the connection stays usable (01-protocol §1, §4).
func TestBrokerSendErrors(t *testing.T) {
	b := startTestBroker(t, nil)
	alice, mesh := b.createMesh(t, "Team")
	bob := b.invite(t, alice, mesh, "bob")
	ctx := testCtx(t)
	c := mustDial(t, ctx, alice, DialOptions{})

	stranger := newID(t)
	s, _ := SealDM(stranger.PublicHex(), []byte("hi"), alice.Member, SendOptions{})
	ack, err := c.Send(ctx, s)
	wantCode(t, err, wire.CodeUnknownRecipient)
	if ack == nil || ack.Error == nil || ack.ID != s.ID {
		t.Fatalf("a refused send still returns its ack: %+v", ack)
	}
	if !IsPermanent(err) {
		t.Fatal("unknown_recipient is permanent")
	}

	big := make([]byte, 70000)
	s = &wire.Send{TargetSpec: bob.Member.PublicHex(), Kind: wire.KindBox, Nonce: cmcrypto.EncodeB64(make([]byte, 24)), Ciphertext: cmcrypto.EncodeB64(big)}
	_, err = c.Send(ctx, s)
	wantCode(t, err, wire.CodePayloadTooLarge)

	first, _ := SealDM(bob.Member.PublicHex(), []byte("one"), alice.Member, SendOptions{ClientMessageID: "same-key"})
	if _, err := c.Send(ctx, first); err != nil {
		t.Fatal(err)
	}
	other, _ := SealDM(bob.Member.PublicHex(), []byte("two"), alice.Member, SendOptions{ClientMessageID: "same-key"})
	_, err = c.Send(ctx, other)
	wantCode(t, err, wire.CodeIdempotencyKeyReused)

	if _, err := c.ListPeers(ctx); err != nil {
		t.Fatalf("connection unusable after refused sends: %v", err)
	}
}

// TestDialWaitsOutABusyBroker: with every handshake slot taken, the broker
// answers the upgrade 503 with Retry-After; Dial waits and tries again, and
// gets in once a slot is free.
func TestDialWaitsOutABusyBroker(t *testing.T) {
	b := startTestBroker(t, func(c *broker.Config) { c.MaxHandshakes = 1 })
	owner, _ := b.createMesh(t, "Team")
	holder, _, err := websocket.DefaultDialer.Dial(b.URL(), nil) // upgraded, never says hello
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	done := make(chan error, 1)
	go func() {
		c, err := Dial(testCtx(t), owner, DialOptions{})
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	// Free the slot only once the broker has refused the dial at least once.
	deadline := time.Now().Add(10 * time.Second)
	for refusedHandshakes(t, b) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the broker never refused a handshake")
		}
		select {
		case err := <-done:
			t.Fatalf("Dial returned before a slot was free: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	holder.Close()
	if err := recvWithin(t, done, "dial"); err != nil {
		t.Fatalf("Dial after Retry-After: %v", err)
	}
}

func refusedHandshakes(t *testing.T, b *testBroker) float64 {
	t.Helper()
	return b.Registry().Value("claudemesh_limits_tripped_total", "handshakes")
}

// TestBrokerClientAckAsyncQueued: acks queued with ClientAckAsync while the
// writer is busy never wait for it, however many (each was a frame of the
// write queue, which filled at 256 and then made the caller wait), and the
// broker settles every one once the writer goes on: the sender gets a
// receipt for each message.
func TestBrokerClientAckAsyncQueued(t *testing.T) {
	const n = writeQueueLen + 44
	b := startTestBroker(t, func(c *broker.Config) { c.Rate = 0; c.AckRate = 0 })
	alice, mesh := b.createMesh(t, "Team")
	bob := b.invite(t, alice, mesh, "bob")
	ctx := testCtx(t)

	ac := mustDial(t, ctx, alice, DialOptions{})
	var sent []string
	for i := range n {
		s, err := SealDM(bob.Member.PublicHex(), fmt.Appendf(nil, "msg %d", i), alice.Member, SendOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a, err := ac.Send(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, a.MessageID)
	}
	bc := mustDial(t, ctx, bob, DialOptions{CoalesceWrites: true})
	res, err := bc.FetchQueued(ctx, 500)
	if err != nil || res.More || len(res.Messages) != n {
		t.Fatalf("fetch: %v, %d messages, more %v", err, len(res.Messages), res.More)
	}
	// The writer blocks in its first write until every ack is queued.
	bc.batch.mu.Lock()
	queued := make(chan error, 1)
	go func() {
		for _, m := range res.Messages {
			if err := bc.ClientAckAsync([]string{m.Push.MessageID}); err != nil {
				queued <- err
				return
			}
		}
		queued <- nil
	}()
	err = recvWithin(t, queued, "the acks queued behind a busy writer")
	bc.batch.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	for _, mid := range sent {
		if _, err := ac.WaitReceipt(ctx, mid); err != nil {
			t.Fatalf("receipt of %s: %v", mid, err)
		}
	}
}
