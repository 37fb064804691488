package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"

	"github.com/gorilla/websocket"
)

// fakeBroker is a test fixture, not a broker: a WebSocket server that speaks
// just enough of 01-protocol to exercise the client's side of it — a signed
// challenge, an independent check of the client's hello signatures, a
// hello_ack, and then whatever each test scripts in handle. Scenarios the
// real broker cannot be made to produce on demand (out-of-order acks, a
// relayed challenge, a close code at a chosen moment) are tested here.
type fakeBroker struct {
	t   testing.TB
	key *cmcrypto.Identity
	srv *httptest.Server
	url string

	// Set before the first dial; read by the server goroutines.
	mu sync.Mutex
	// presentKey overrides challenge.brokerPubkey; signer signs the
	// challenge (default key).
	presentKey string
	signer     *cmcrypto.Identity
	// refuse, when it returns a non-nil frame for the n-th hello (0-based),
	// is sent instead of hello_ack and the connection closed with code.
	refuse func(n int) (frame *wire.Error, code int, reason string)
	// noChallenge makes the server accept the upgrade and say nothing.
	noChallenge bool
	// ackURLs is hello_ack's brokerUrls (none when nil).
	ackURLs []string
	// handle sees every frame after hello_ack on the connection's reader
	// goroutine.
	handle func(fc *fakeConn, env wire.Envelope, raw []byte)

	hellos   int
	conns    chan *fakeConn
	upgraded chan struct{}
	// answers receives, per connection, the type of the client's first
	// frame after the challenge, or "closed" if it sent none.
	answers chan string
}

// fakeConn is one authenticated fixture connection.
type fakeConn struct {
	ws        *websocket.Conn
	wmu       sync.Mutex
	helloType string
	hello     wire.Hello
	session   wire.SessionHello
	n         int
	// closed receives the close frame the client sent (code, reason).
	closed chan [2]any
	// pongs receives one value per pong from the client.
	pongs chan struct{}
}

func (fc *fakeConn) send(t testing.TB, v any) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	if err := fc.ws.WriteMessage(websocket.TextMessage, wire.MustEncode(v)); err != nil {
		t.Logf("fixture write: %v", err)
	}
}

func (fc *fakeConn) sendRaw(data []byte) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.ws.WriteMessage(websocket.TextMessage, data)
}

func (fc *fakeConn) closeWith(code int, reason string) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	fc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

func newFakeBroker(t testing.TB) *fakeBroker {
	t.Helper()
	key, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBroker{t: t, key: key, conns: make(chan *fakeConn, 64), upgraded: make(chan struct{}, 64), answers: make(chan string, 64)}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		f.serve(ws)
	}))
	t.Cleanup(f.srv.Close)
	f.url = "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/ws"
	return f
}

func (f *fakeBroker) set(fn func(f *fakeBroker)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeBroker) serve(ws *websocket.Conn) {
	defer ws.Close()
	f.upgraded <- struct{}{}
	f.mu.Lock()
	presentKey, signer, noChallenge := f.presentKey, f.signer, f.noChallenge
	f.mu.Unlock()
	if noChallenge {
		ws.ReadMessage() // until the client gives up
		return
	}
	if presentKey == "" {
		presentKey = f.key.PublicHex()
	}
	if signer == nil {
		signer = f.key
	}
	nonce := cmcrypto.RandomHex32()
	now := time.Now().UnixMilli()
	cs, _ := cmcrypto.ChallengeString(nonce, now)
	fc := &fakeConn{ws: ws, closed: make(chan [2]any, 1), pongs: make(chan struct{}, 100)}
	fc.send(f.t, &wire.Challenge{Type: wire.TypeChallenge, Nonce: nonce, ServerTime: now, Protocol: 1,
		BrokerVersion: "fixture", BrokerPubkey: presentKey, Signature: signer.Sign(cs)})

	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, raw, err := ws.ReadMessage()
	if err != nil {
		f.answers <- "closed"
		return
	}
	ws.SetReadDeadline(time.Time{})
	env, err := wire.Peek(raw)
	if err != nil {
		f.t.Errorf("fixture: bad hello: %v", err)
		return
	}
	f.answers <- env.Type
	fc.helloType = env.Type
	memberID := ""
	switch env.Type {
	case wire.TypeHello:
		if err := wire.Decode(raw, &fc.hello); err != nil {
			f.t.Errorf("fixture: hello: %v", err)
			return
		}
		h := fc.hello
		pub, err := cmcrypto.ParsePublicKey(h.Pubkey)
		s, _ := cmcrypto.HelloString(h.MeshID, h.MemberID, h.Pubkey, f.key.PublicHex(), h.Timestamp, h.Challenge)
		if err != nil || h.Challenge != nonce || cmcrypto.Verify(pub, s, h.Signature) != nil {
			f.t.Errorf("fixture: hello signature or challenge wrong")
			return
		}
		memberID = h.MemberID
	case wire.TypeSessionHello:
		if err := wire.Decode(raw, &fc.session); err != nil {
			f.t.Errorf("fixture: session_hello: %v", err)
			return
		}
		h := fc.session
		if h.Attestation == nil || VerifyAttestation(h.MeshID, h.Attestation) != nil ||
			h.Attestation.SessionPubkey != h.SessionPubkey || h.Attestation.ParentPubkey != h.ParentPubkey {
			f.t.Errorf("fixture: bad attestation %+v", h.Attestation)
			return
		}
		pub, _ := cmcrypto.ParsePublicKey(h.SessionPubkey)
		s, _ := cmcrypto.SessionHelloString(h.MeshID, h.ParentPubkey, h.SessionPubkey, f.key.PublicHex(), h.Timestamp, h.Challenge)
		if h.Challenge != nonce || cmcrypto.Verify(pub, s, h.Signature) != nil {
			f.t.Errorf("fixture: session hello signature or challenge wrong")
			return
		}
		memberID = h.ParentMemberID
	default:
		f.t.Errorf("fixture: expected hello, got %s", env.Type)
		return
	}

	f.mu.Lock()
	fc.n = f.hellos
	f.hellos++
	refuse, handle, ackURLs := f.refuse, f.handle, f.ackURLs
	f.mu.Unlock()
	if refuse != nil {
		if frame, code, reason := refuse(fc.n); frame != nil || code != 0 {
			if frame != nil {
				frame.Type = wire.TypeError
				fc.send(f.t, frame)
			}
			fc.closeWith(code, reason)
			ws.SetReadDeadline(time.Now().Add(2 * time.Second))
			ws.ReadMessage()
			return
		}
	}
	fc.send(f.t, &wire.HelloAck{Type: wire.TypeHelloAck, PresenceID: "P1", MeshID: "mesh1", MeshName: "Mesh One",
		MemberID: memberID, MemberRole: wire.MemberOwner, DisplayName: "alice",
		BrokerPubkey: f.key.PublicHex(), ServerTime: time.Now().UnixMilli(), Features: []string{}, BrokerURLs: ackURLs})
	ws.SetCloseHandler(func(code int, text string) error {
		fc.closed <- [2]any{code, text}
		fc.wmu.Lock()
		defer fc.wmu.Unlock()
		ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	ws.SetPongHandler(func(string) error {
		select {
		case fc.pongs <- struct{}{}:
		default:
		}
		return nil
	})
	f.conns <- fc
	for {
		_, raw, err := ws.ReadMessage()
		if err != nil {
			return
		}
		env, err := wire.Peek(raw)
		if err != nil {
			f.t.Errorf("fixture: client sent an ill-shaped frame: %v", err)
			return
		}
		if handle != nil {
			handle(fc, env, raw)
		}
	}
}

// next waits for the next authenticated connection.
func (f *fakeBroker) next(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case fc := <-f.conns:
		return fc
	case <-time.After(10 * time.Second):
		t.Fatal("no connection reached the fixture")
		return nil
	}
}

// identity is a member identity pinned to the fixture's key.
func (f *fakeBroker) identity(t *testing.T) MeshIdentity {
	t.Helper()
	member, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return MeshIdentity{MeshID: "mesh1", MemberID: "M1", BrokerURL: f.url, BrokerPubkey: f.key.PublicHex(), Member: member}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustDial(t *testing.T, ctx context.Context, id MeshIdentity, o DialOptions) *Conn {
	t.Helper()
	c, err := Dial(ctx, id, o)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func wantCode(t *testing.T, err error, code string) *Error {
	t.Helper()
	if err == nil {
		t.Fatalf("want error %s, got nil", code)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *client.Error %s, got %T %v", code, err, err)
	}
	if e.Code != code {
		t.Fatalf("want code %s, got %s (%v)", code, e.Code, err)
	}
	return e
}

func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}
