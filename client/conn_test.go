package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"

	"github.com/gorilla/websocket"
)

func TestDialMemberHandshake(t *testing.T) {
	f := newFakeBroker(t)
	ctx := testCtx(t)
	id := f.identity(t)
	c := mustDial(t, ctx, id, DialOptions{DisplayName: "alice", PID: 42, Groups: []wire.Group{{Name: "ops"}}})
	fc := f.next(t)

	ack := c.HelloAck()
	if ack.MeshName != "Mesh One" || ack.MemberRole != wire.MemberOwner || ack.MemberID != "M1" {
		t.Fatalf("hello_ack not exposed: %+v", ack)
	}
	h := fc.hello
	if fc.helloType != wire.TypeHello || h.Protocol != 1 || h.MeshID != "mesh1" || h.MemberID != "M1" || h.Pubkey != id.Member.PublicHex() {
		t.Fatalf("hello fields: %+v", h)
	}
	if h.Presence == nil || *h.Presence {
		t.Fatalf("default connection must be transient with presence:false explicit, got %v", h.Presence)
	}
	if h.Role != wire.RoleCLI || !strings.HasPrefix(h.SessionID, "oneshot-") || c.SessionID() != h.SessionID {
		t.Fatalf("role %q sessionId %q", h.Role, h.SessionID)
	}
	if h.PID == nil || *h.PID != 42 || h.DisplayName != "alice" || len(h.Groups) != 1 {
		t.Fatalf("presence description lost: %+v", h)
	}
	if d := time.Since(time.UnixMilli(h.Timestamp)); d < 0 || d > 10*time.Second {
		t.Fatalf("hello timestamp %d is not now", h.Timestamp)
	}
}

func TestDialPresenceDefaults(t *testing.T) {
	f := newFakeBroker(t)
	ctx := testCtx(t)
	mustDial(t, ctx, f.identity(t), DialOptions{Presence: true})
	h := f.next(t).hello
	if h.Presence == nil || !*h.Presence || !strings.HasPrefix(h.SessionID, "cli-") {
		t.Fatalf("presence hello: presence=%v sessionId=%q", h.Presence, h.SessionID)
	}
}

func TestDialSessionHandshake(t *testing.T) {
	f := newFakeBroker(t)
	ctx := testCtx(t)
	id := f.identity(t)
	skey, _ := cmcrypto.GenerateIdentity()
	id.Session = &SessionCreds{Key: skey, SessionID: "sess-1", DisplayName: "alice-agent"}
	c := mustDial(t, ctx, id, DialOptions{Cwd: "proj"})
	fc := f.next(t) // the fixture verified both signatures and the attestation
	h := fc.session
	if fc.helloType != wire.TypeSessionHello || h.ParentPubkey != id.Member.PublicHex() || h.SessionPubkey != skey.PublicHex() ||
		h.ParentMemberID != "M1" || h.SessionID != "sess-1" || h.PeerType != wire.PeerAI || h.Cwd != "proj" {
		t.Fatalf("session_hello fields: %+v", h)
	}
	ttl := time.Until(time.UnixMilli(h.Attestation.ExpiresAt))
	if ttl < 11*time.Hour || ttl > 12*time.Hour {
		t.Fatalf("attestation expires in %v, want a fresh 12h", ttl)
	}
	if c.Self() != skey {
		t.Fatal("a session connection must speak as the session key")
	}
}

func TestDialBrokerKeyMismatch(t *testing.T) {
	other, _ := cmcrypto.GenerateIdentity()
	t.Run("different key announced", func(t *testing.T) {
		f := newFakeBroker(t)
		id := f.identity(t)
		id.BrokerPubkey = other.PublicHex() // we pinned another broker
		_, err := Dial(testCtx(t), id, DialOptions{})
		wantCode(t, err, CodeBrokerKeyMismatch)
	})
	t.Run("relayed challenge", func(t *testing.T) {
		// A server in the middle announces the pinned key but cannot sign
		// with it.
		f := newFakeBroker(t)
		f.set(func(f *fakeBroker) { f.signer = other })
		_, err := Dial(testCtx(t), f.identity(t), DialOptions{})
		wantCode(t, err, CodeBrokerKeyMismatch)
	})
	t.Run("no hello was sent", func(t *testing.T) {
		f := newFakeBroker(t)
		f.set(func(f *fakeBroker) { f.signer = other })
		Dial(testCtx(t), f.identity(t), DialOptions{})
		if a := recvWithin(t, f.answers, "the client's answer"); a != "closed" {
			t.Fatalf("the client answered %q to a server that failed the key check", a)
		}
	})
}

func TestDialRefused(t *testing.T) {
	cases := []struct {
		code, msg string
		close     int
	}{
		{wire.CodeTimestampSkew, "clock off by 5 min", websocket.ClosePolicyViolation},
		{wire.CodeRevoked, `You've been removed from "Mesh One". Contact the mesh owner to rejoin.`, wire.CloseBanned},
		{wire.CodeCapacity, "mesh is full", websocket.ClosePolicyViolation},
	}
	for _, tc := range cases {
		t.Run(tc.code, func(t *testing.T) {
			f := newFakeBroker(t)
			f.set(func(f *fakeBroker) {
				f.refuse = func(int) (*wire.Error, int, string) {
					reason := tc.code
					if tc.close == wire.CloseBanned {
						reason = wire.ReasonBanned
					}
					return &wire.Error{Code: tc.code, Message: tc.msg}, tc.close, reason
				}
			})
			_, err := Dial(testCtx(t), f.identity(t), DialOptions{})
			e := wantCode(t, err, tc.code)
			if e.Message != tc.msg {
				t.Fatalf("message %q, want the broker's %q", e.Message, tc.msg)
			}
		})
	}
	t.Run("close without error frame", func(t *testing.T) {
		f := newFakeBroker(t)
		f.set(func(f *fakeBroker) {
			f.refuse = func(int) (*wire.Error, int, string) {
				return nil, websocket.ClosePolicyViolation, wire.CodeHelloTimeout
			}
		})
		_, err := Dial(testCtx(t), f.identity(t), DialOptions{})
		wantCode(t, err, wire.CodeHelloTimeout)
	})
}

func TestDialUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	key, _ := cmcrypto.GenerateIdentity()
	id := MeshIdentity{MeshID: "m", MemberID: "M", BrokerURL: "ws://" + addr + "/ws", BrokerPubkey: key.PublicHex(), Member: key}
	_, err = Dial(testCtx(t), id, DialOptions{})
	wantCode(t, err, CodeUnreachable)
}

func TestDialHandshakeTimeout(t *testing.T) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) { f.noChallenge = true })
	start := time.Now()
	_, err := Dial(testCtx(t), f.identity(t), DialOptions{HandshakeTimeout: 300 * time.Millisecond})
	wantCode(t, err, CodeTimeout)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout should wrap context.DeadlineExceeded: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("handshake timeout not honoured")
	}
}

func TestDialCancelled(t *testing.T) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) { f.noChallenge = true })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Dial(ctx, f.identity(t), DialOptions{})
		errc <- err
	}()
	recvWithin(t, f.upgraded, "the upgrade") // Dial now waits for a challenge
	cancel()
	err := recvWithin(t, errc, "Dial to return after cancel")
	wantCode(t, err, CodeCanceled)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled in the chain: %v", err)
	}
}

func TestDialValidatesOptions(t *testing.T) {
	f := newFakeBroker(t)
	id := f.identity(t)
	_, err := Dial(testCtx(t), id, DialOptions{SessionID: "bad id with spaces"})
	wantCode(t, err, wire.CodeInvalidArgument)
	id.BrokerURL = "http://example.invalid/ws"
	_, err = Dial(testCtx(t), id, DialOptions{})
	wantCode(t, err, wire.CodeInvalidArgument)
}

// TestConcurrentSends runs 300 sends from 30 goroutines, 30 in flight at a
// time, while the fixture answers each round in reverse order of arrival,
// so any mix-up of acks shows.
func TestConcurrentSends(t *testing.T) {
	const n = 300
	f := newFakeBroker(t)
	var mu sync.Mutex
	var held []wire.Send
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			if env.Type != wire.TypeSend {
				return
			}
			var s wire.Send
			if err := wire.Decode(raw, &s); err != nil {
				t.Errorf("send frame: %v", err)
				return
			}
			mu.Lock()
			held = append(held, s)
			var batch []wire.Send
			if len(held) == 30 { // every goroutine has one send in flight
				batch, held = held, nil
			}
			mu.Unlock()
			for i := len(batch) - 1; i >= 0; i-- {
				s := batch[i]
				one := 1
				if strings.HasSuffix(s.Ciphertext, "7") {
					fc.send(t, &wire.Ack{Type: wire.TypeAck, ID: s.ID, Error: &wire.AckError{Code: wire.CodeRateLimited, Message: "slow down", RetryAfterMs: 250}})
					continue
				}
				fc.send(t, &wire.Ack{Type: wire.TypeAck, ID: s.ID, MessageID: "msg-" + s.ID, Queued: true, Online: &one, Pending: &one})
			}
		}
	})
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{})
	f.next(t)

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for g := 0; g < 30; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n/30; i++ {
				idx := g*(n/30) + i
				s := &wire.Send{TargetSpec: strings.Repeat("a", 64), Kind: wire.KindBox, Nonce: "bm9uY2U=", Ciphertext: fmt.Sprintf("ct%d", idx)}
				ack, err := c.Send(ctx, s)
				if idx%10 == 7 {
					var e *Error
					if !errors.As(err, &e) || e.Code != wire.CodeRateLimited || e.RetryAfterMs != 250 || RetryAfter(err) != 250*time.Millisecond {
						errs <- fmt.Errorf("send %d: want rate_limited with retryAfterMs, got %v", idx, err)
					}
					continue
				}
				if err != nil {
					errs <- fmt.Errorf("send %d: %v", idx, err)
					continue
				}
				if s.ID == "" || !wire.ValidULID(s.ID) || ack.ID != s.ID || ack.MessageID != "msg-"+s.ID {
					errs <- fmt.Errorf("send %d (id %s) got ack %+v", idx, s.ID, ack)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSendAsyncWindow is the bench's pattern: a window of sends queued
// without waiting, results collected from their channels. With
// CoalesceWrites (the daemon's connections) the frames queued while the
// writer was busy go out in one write, and every one is still answered.
func TestSendAsyncWindow(t *testing.T) {
	for _, coalesce := range []bool{false, true} {
		t.Run(fmt.Sprint("coalesce=", coalesce), func(t *testing.T) { testSendAsyncWindow(t, coalesce) })
	}
}

func testSendAsyncWindow(t *testing.T, coalesce bool) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			var s wire.Send
			wire.Decode(raw, &s)
			fc.send(t, &wire.Ack{Type: wire.TypeAck, ID: s.ID, MessageID: "m" + s.ID, Queued: true})
		}
	})
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{CoalesceWrites: coalesce})
	f.next(t)
	if coalesce {
		// The writer blocks in its first write until the window is
		// queued behind it.
		c.batch.mu.Lock()
	}
	var chans []<-chan SendResult
	var ids []string
	for i := 0; i < 64; i++ {
		s := &wire.Send{TargetSpec: "*", Kind: wire.KindMulti, Nonce: "x", Ciphertext: "y"}
		ch, err := c.SendAsync(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		chans, ids = append(chans, ch), append(ids, s.ID)
	}
	if coalesce {
		c.batch.mu.Unlock()
	}
	for i, ch := range chans {
		r := recvWithin(t, ch, "ack")
		if r.Err != nil || r.Ack.MessageID != "m"+ids[i] {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if coalesce {
		c.batch.mu.Lock()
		batched := c.batch.batched
		c.batch.mu.Unlock()
		if batched < 2 {
			t.Errorf("%d frames went out with others; want the queued window in few writes", batched)
		}
	}
}

func TestDuplicateSendIDRefused(t *testing.T) {
	f := newFakeBroker(t) // never acks
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{})
	f.next(t)
	s := &wire.Send{ID: NewID(), TargetSpec: "*", Kind: wire.KindMulti}
	if _, err := c.SendAsync(ctx, s); err != nil {
		t.Fatal(err)
	}
	_, err := c.SendAsync(ctx, &wire.Send{ID: s.ID, TargetSpec: "*", Kind: wire.KindMulti})
	wantCode(t, err, wire.CodeInvalidArgument)
	// A send whose ack never comes ends with the caller's deadline.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	_, err = c.Send(short, &wire.Send{TargetSpec: "*", Kind: wire.KindMulti})
	wantCode(t, err, CodeTimeout)
}

// TestRequestCorrelation answers concurrent requests out of order, with
// pushes, receipts and system events interleaved, and checks each answer
// reaches its caller and every push reaches OnPush in arrival order.
func TestRequestCorrelation(t *testing.T) {
	f := newFakeBroker(t)
	var mu sync.Mutex
	var pending []wire.Envelope
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			mu.Lock()
			pending = append(pending, env)
			var batch []wire.Envelope
			if len(pending) == 3 {
				batch, pending = pending, nil
			}
			mu.Unlock()
			for i := len(batch) - 1; i >= 0; i-- {
				e := batch[i]
				fc.send(t, &wire.Push{Type: wire.TypePush, MessageID: fmt.Sprintf("p-%s", e.ReqID), Kind: wire.KindBox, CreatedAt: 1})
				fc.send(t, &wire.Push{Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: wire.EventPeerJoined, MessageID: "s-" + e.ReqID, CreatedAt: 1})
				switch e.Type {
				case wire.TypeListPeers:
					fc.send(t, &wire.Peers{Type: wire.TypePeers, ReqID: e.ReqID, Peers: []wire.Peer{{DisplayName: "bob", Groups: []wire.Group{}}}})
				case wire.TypeMembersList:
					fc.send(t, &wire.Members{Type: wire.TypeMembers, ReqID: e.ReqID, Members: []wire.Member{{DisplayName: "carol"}}})
				case wire.TypeSetStatus:
					fc.send(t, &wire.Error{Type: wire.TypeError, ReqID: e.ReqID, Code: wire.CodeInvalidArgument, Message: "bad status"})
				}
			}
		}
	})
	ctx := testCtx(t)
	var pmu sync.Mutex
	var pushes, systems []string
	c := mustDial(t, ctx, f.identity(t), DialOptions{
		OnPush: func(raw []byte, p *wire.Push) {
			if !strings.Contains(string(raw), p.MessageID) {
				t.Errorf("raw bytes do not belong to push %s", p.MessageID)
			}
			pmu.Lock()
			pushes = append(pushes, p.MessageID)
			pmu.Unlock()
		},
		OnSystem: func(p *wire.Push) {
			pmu.Lock()
			systems = append(systems, p.MessageID)
			pmu.Unlock()
		},
	})
	f.next(t)

	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		peers, err := c.ListPeers(ctx)
		if err != nil || len(peers) != 1 || peers[0].DisplayName != "bob" {
			t.Errorf("ListPeers: %v %+v", err, peers)
		}
	}()
	go func() {
		defer wg.Done()
		members, err := c.MembersList(ctx)
		if err != nil || len(members) != 1 || members[0].DisplayName != "carol" {
			t.Errorf("MembersList: %v %+v", err, members)
		}
	}()
	go func() {
		defer wg.Done()
		err := c.SetStatus(ctx, "sleepy")
		var e *Error
		if !errors.As(err, &e) || e.Code != wire.CodeInvalidArgument || e.Message != "bad status" {
			t.Errorf("SetStatus: want the broker's invalid_argument, got %v", err)
		}
	}()
	wg.Wait()

	pmu.Lock()
	defer pmu.Unlock()
	if len(pushes) != 3 || len(systems) != 3 {
		t.Fatalf("pushes %v systems %v", pushes, systems)
	}
	for i := range pushes {
		if "p-"+strings.TrimPrefix(systems[i], "s-") != pushes[i] {
			t.Fatalf("callbacks out of arrival order: pushes %v systems %v", pushes, systems)
		}
	}
}

func TestRequestGeneric(t *testing.T) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			fc.send(t, &wire.OK{Type: wire.TypeOK, ReqID: env.ReqID})
		}
	})
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{})
	f.next(t)

	// A pointer gets its reqId filled in place.
	req := &wire.Request{Type: "skill_list"}
	_, env, err := c.Request(ctx, req)
	if err != nil || env.Type != wire.TypeOK || req.ReqID == "" || env.ReqID != req.ReqID {
		t.Fatalf("pointer request: %v %+v %q", err, env, req.ReqID)
	}
	// A value is copied; a caller-chosen reqId is kept.
	_, env, err = c.Request(ctx, wire.Request{Type: "skill_list", ReqID: "mine.1"})
	if err != nil || env.ReqID != "mine.1" {
		t.Fatalf("value request: %v %+v", err, env)
	}
	if _, _, err := c.Request(ctx, wire.Request{Type: "x", ReqID: "bad id"}); CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("invalid reqId accepted: %v", err)
	}
	if _, _, err := c.Request(ctx, 42); CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("non-struct accepted: %v", err)
	}
	if _, _, err := c.Request(ctx, &wire.Request{}); CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("frame without type accepted: %v", err)
	}
	// A helper refuses an answer of the wrong type.
	if _, err := c.ListPeers(ctx); CodeOf(err) != CodeProtocol {
		t.Fatalf("ok accepted as peers: %v", err)
	}
}

func TestFetchQueuedAndClientAck(t *testing.T) {
	f := newFakeBroker(t)
	acked := make(chan wire.ClientAck, 10)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			switch env.Type {
			case wire.TypeFetchQueued:
				var q wire.FetchQueued
				wire.Decode(raw, &q)
				if q.Limit != 100 {
					t.Errorf("limit %d", q.Limit)
				}
				p1 := wire.MustEncode(&wire.Push{Type: wire.TypePush, MessageID: "01A", Kind: wire.KindBox, Ciphertext: "c1", CreatedAt: 5})
				fc.send(t, &wire.Queued{Type: wire.TypeQueued, ReqID: env.ReqID,
					Messages: []wire.RawJSON{p1, wire.RawJSON(`{"type":"push","messageId":7}`)},
					Receipts: []wire.Receipt{{Type: wire.TypeReceipt, ReceiptID: "R1", MessageID: "sent1"}}, More: true})
			case wire.TypeClientAck:
				var a wire.ClientAck
				wire.Decode(raw, &a)
				acked <- a
				if a.ReqID != "" {
					fc.send(t, &wire.Acked{Type: wire.TypeAcked, ReqID: a.ReqID, MessageIDs: a.MessageIDs})
				}
			}
		}
	})
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{})
	f.next(t)

	res, err := c.FetchQueued(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !res.More || len(res.Messages) != 2 || len(res.Receipts) != 1 {
		t.Fatalf("fetch result: %+v", res)
	}
	if m := res.Messages[0]; m.Err != nil || m.Push.MessageID != "01A" || !strings.Contains(string(m.Raw), `"c1"`) {
		t.Fatalf("first message: %+v", m)
	}
	if m := res.Messages[1]; m.Err == nil || m.Push != nil || len(m.Raw) == 0 {
		t.Fatalf("an undecodable queued push must be reported, not dropped: %+v", m)
	}
	// Fetched receipts are remembered for WaitReceipt.
	if r, err := c.WaitReceipt(ctx, "sent1"); err != nil || r.ReceiptID != "R1" {
		t.Fatalf("fetched receipt not remembered: %v %+v", err, r)
	}

	ids := make([]string, 1200)
	for i := range ids {
		ids[i] = fmt.Sprintf("id%d", i)
	}
	if err := c.ClientAck(ctx, ids); err != nil {
		t.Fatal(err)
	}
	total := 0
	for range 3 {
		a := recvWithin(t, acked, "client_ack")
		if a.ReqID == "" || len(a.MessageIDs) > MaxAckBatch {
			t.Fatalf("client_ack frame: reqId %q, %d ids", a.ReqID, len(a.MessageIDs))
		}
		total += len(a.MessageIDs)
	}
	if total != 1200 {
		t.Fatalf("acked %d ids, want 1200", total)
	}
	if err := c.ClientAckAsync([]string{"x"}); err != nil {
		t.Fatal(err)
	}
	if a := recvWithin(t, acked, "async client_ack"); a.ReqID != "" || len(a.MessageIDs) != 1 {
		t.Fatalf("async client_ack must carry no reqId: %+v", a)
	}
}

func TestWaitReceipt(t *testing.T) {
	f := newFakeBroker(t)
	release := make(chan string, 1)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			var s wire.Send
			wire.Decode(raw, &s)
			mid := "M-" + s.ID
			if s.ClientMessageID == "early" {
				// The receipt overtakes the caller: it arrives right
				// after the ack, before WaitReceipt is called.
				fc.send(t, &wire.Ack{Type: wire.TypeAck, ID: s.ID, MessageID: mid, Queued: true})
				fc.send(t, &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: "R-" + s.ID, MessageID: mid, ClientMessageID: "early"})
				return
			}
			fc.send(t, &wire.Ack{Type: wire.TypeAck, ID: s.ID, MessageID: mid, Queued: true})
			go func() {
				<-release
				for i := range 2 {
					r := &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: fmt.Sprintf("R%d", i), MessageID: mid}
					fc.send(t, r)
					fc.send(t, r) // a redelivered receipt counts once
				}
			}()
		}
	})
	ctx := testCtx(t)
	seen := make(chan string, 10)
	c := mustDial(t, ctx, f.identity(t), DialOptions{OnReceipt: func(r *wire.Receipt) { seen <- r.ReceiptID }})
	f.next(t)

	ack, err := c.Send(ctx, &wire.Send{ClientMessageID: "early", TargetSpec: "*", Kind: wire.KindMulti})
	if err != nil {
		t.Fatal(err)
	}
	recvWithin(t, seen, "OnReceipt") // the receipt has certainly arrived
	r, err := c.WaitReceipt(ctx, ack.MessageID)
	if err != nil || r.ClientMessageID != "early" {
		t.Fatalf("early receipt lost: %v %+v", err, r)
	}

	ack, err = c.Send(ctx, &wire.Send{TargetSpec: "*", Kind: wire.KindMulti})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []wire.Receipt, 1)
	go func() {
		rs, err := c.WaitReceipts(ctx, ack.MessageID, 2)
		if err != nil {
			t.Error(err)
		}
		got <- rs
	}()
	release <- ack.MessageID
	rs := recvWithin(t, got, "two receipts")
	if len(rs) != 2 || rs[0].ReceiptID == rs[1].ReceiptID {
		t.Fatalf("receipts: %+v", rs)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := c.WaitReceipt(short, "never"); CodeOf(err) != CodeTimeout {
		t.Fatalf("want timeout, got %v", err)
	}
}

// A connection dialled with NoReceiptWaits hands receipts to OnReceipt
// and keeps none (a load generator's connections kept ~4,096 each, a heap
// that grew with its run), and WaitReceipt on it says why it cannot wait.
func TestNoReceiptWaitsKeepsNoReceipts(t *testing.T) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			var s wire.Send
			wire.Decode(raw, &s)
			fc.send(t, &wire.Ack{Type: wire.TypeAck, ID: s.ID, MessageID: "M-" + s.ID, Queued: true})
			fc.send(t, &wire.Receipt{Type: wire.TypeReceipt, ReceiptID: "R-" + s.ID, MessageID: "M-" + s.ID})
		}
	})
	ctx := testCtx(t)
	seen := make(chan string, 10)
	c := mustDial(t, ctx, f.identity(t), DialOptions{NoReceiptWaits: true, OnReceipt: func(r *wire.Receipt) { seen <- r.ReceiptID }})
	f.next(t)
	ack, err := c.Send(ctx, &wire.Send{TargetSpec: "*", Kind: wire.KindMulti})
	if err != nil {
		t.Fatal(err)
	}
	recvWithin(t, seen, "OnReceipt")
	c.mu.Lock()
	kept := len(c.receipts) + len(c.receiptOrder)
	c.mu.Unlock()
	if kept != 0 {
		t.Fatalf("the connection kept %d receipts for waits nobody makes", kept)
	}
	if _, err := c.WaitReceipt(ctx, ack.MessageID); err == nil || !strings.Contains(err.Error(), "NoReceiptWaits") {
		t.Fatalf("WaitReceipt on a NoReceiptWaits connection: %v", err)
	}
}

func TestCloseIsClean(t *testing.T) {
	f := newFakeBroker(t)
	frames := make(chan string, 10)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) { frames <- env.Type }
	})
	ctx := testCtx(t)
	closed := make(chan int, 1)
	c := mustDial(t, ctx, f.identity(t), DialOptions{OnClose: func(code int, _ string) { closed <- code }})
	fc := f.next(t)
	// A frame queued just before Close still goes out before the close.
	if err := c.ClientAckAsync([]string{"last"}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	cl := recvWithin(t, fc.closed, "close frame at the broker")
	if cl[0].(int) != websocket.CloseNormalClosure {
		t.Fatalf("close code %v, want 1000", cl[0])
	}
	select {
	case typ := <-frames: // handled before the close, on the same goroutine
		if typ != wire.TypeClientAck {
			t.Fatalf("unexpected frame %s", typ)
		}
	default:
		t.Fatal("the frame queued before Close was dropped")
	}
	if code := recvWithin(t, closed, "OnClose"); code != websocket.CloseNormalClosure {
		t.Fatalf("OnClose code %d", code)
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if _, err := c.ListPeers(ctx); CodeOf(err) != CodeConnectionClosed {
		t.Fatalf("request after close: %v", err)
	}
	if _, err := c.Send(ctx, &wire.Send{TargetSpec: "*"}); CodeOf(err) != CodeConnectionClosed {
		t.Fatalf("send after close: %v", err)
	}
	c.Close() // idempotent
}

func TestBrokerCloseFailsPending(t *testing.T) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			fc.send(t, &wire.Error{Type: wire.TypeError, Code: wire.CodeRevoked, Message: "You've been removed."})
			fc.closeWith(wire.CloseBanned, wire.ReasonBanned)
		}
	})
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{})
	f.next(t)
	_, err := c.ListPeers(ctx)
	wantCode(t, err, CodeConnectionClosed)
	recvWithin(t, c.Done(), "Done")
	if code, reason := c.CloseCode(); code != wire.CloseBanned || reason != wire.ReasonBanned {
		t.Fatalf("close %d %q", code, reason)
	}
	e := wantCode(t, c.Err(), wire.ReasonBanned)
	if e.Message != "You've been removed." {
		t.Fatalf("the banned message must be kept for the user, got %q", e.Message)
	}
}

func TestIdleTimeout(t *testing.T) {
	f := newFakeBroker(t)
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{IdleTimeout: 200 * time.Millisecond})
	f.next(t) // the fixture never pings: the client must notice
	recvWithin(t, c.Done(), "idle connection to be dropped")
	if code, _ := c.CloseCode(); code != websocket.CloseAbnormalClosure {
		t.Fatalf("close code %d", code)
	}
}

func TestPingsKeepAlive(t *testing.T) {
	f := newFakeBroker(t)
	ctx := testCtx(t)
	// An idle timeout with room for a loaded machine's pauses (300 ms
	// dropped the connection under CI-like load between two pings).
	c := mustDial(t, ctx, f.identity(t), DialOptions{IdleTimeout: 750 * time.Millisecond})
	fc := f.next(t)
	// 25 pings 100 ms apart span 2.5 s, more than three idle timeouts: the
	// connection survives only if the client answers pings and counts
	// them as signs of life. (The ticker paces the pings; it is not used
	// to wait for anything.)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 25 {
		<-tick.C
		fc.wmu.Lock()
		fc.ws.WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second))
		fc.wmu.Unlock()
		recvWithin(t, fc.pongs, "pong")
	}
	select {
	case <-c.Done():
		t.Fatal("connection dropped although the broker pinged")
	default:
	}
}

// BenchmarkSendAck measures the client's share of a send round trip (encode,
// queue, write, read, correlate) against the fixture's immediate acks.
func BenchmarkSendAck(b *testing.B) {
	f := newFakeBroker(b)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			var s wire.Send
			wire.Decode(raw, &s)
			fc.sendRaw(wire.MustEncode(&wire.Ack{Type: wire.TypeAck, ID: s.ID, MessageID: s.ID, Queued: true}))
		}
	})
	member, _ := cmcrypto.GenerateIdentity()
	id := MeshIdentity{MeshID: "mesh1", MemberID: "M1", BrokerURL: f.url, BrokerPubkey: f.key.PublicHex(), Member: member}
	c, err := Dial(context.Background(), id, DialOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Send(ctx, &wire.Send{TargetSpec: "*", Kind: wire.KindMulti, Nonce: "n", Ciphertext: "c"}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAmbiguousTargetCandidates(t *testing.T) {
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) {
		f.handle = func(fc *fakeConn, env wire.Envelope, raw []byte) {
			fc.send(t, &wire.Error{Type: wire.TypeError, ReqID: env.ReqID, Code: wire.CodeAmbiguousTarget, Message: "2 matches",
				Candidates: []wire.Candidate{{DisplayName: "bob", Kind: "member"}, {DisplayName: "Bob", Kind: "session"}}})
		}
	})
	ctx := testCtx(t)
	c := mustDial(t, ctx, f.identity(t), DialOptions{})
	f.next(t)
	_, err := c.Admin(ctx, &wire.AdminRequest{Type: wire.TypeKick, Target: "bob"})
	if e := wantCode(t, err, wire.CodeAmbiguousTarget); len(e.Candidates) != 2 || e.Candidates[1].Kind != "session" {
		t.Fatalf("candidates lost: %+v", e)
	}
}
