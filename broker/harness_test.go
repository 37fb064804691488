package broker

// A raw protocol harness: these tests speak 01-protocol's frames directly
// over gorilla/websocket, as an independent client would, so they check the
// wire contract rather than our own client library's view of it.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/gorilla/websocket"
	"github.com/oklog/ulid/v2"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.MetricsListen = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PingInterval = 200 * time.Millisecond
	// Generous against a loaded machine (-race, other builds): no test
	// here waits for it to expire unless it sets its own.
	cfg.PongTimeout = 5 * time.Second
	cfg.Grace = 300 * time.Millisecond
	cfg.RedeliverAfter = 400 * time.Millisecond
	// Generous: a loaded machine may take a while between the upgrade and
	// the hello. TestHelloTimeout sets its own.
	cfg.HelloTimeout = 10 * time.Second
	return cfg
}

func startBroker(t testing.TB, mutate func(*Config)) *Broker {
	t.Helper()
	cfg := testConfig(t)
	if mutate != nil {
		mutate(&cfg)
	}
	return startWith(t, cfg)
}

func startWith(t testing.TB, cfg Config) *Broker {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// ident is a member (or session) key with its mesh coordinates.
type ident struct {
	key      *cmcrypto.Identity
	meshID   string
	memberID string
	name     string
}

func (i ident) pub() string { return i.key.PublicHex() }

func postJSON(t testing.TB, url, bearer string, body any) (int, map[string]any) {
	t.Helper()
	data, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s: %d %s", url, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func errCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

func createMesh(t testing.TB, b *Broker, slug, owner string) ident {
	t.Helper()
	key, _ := cmcrypto.GenerateIdentity()
	st, body := postJSON(t, b.HTTPURL()+"/v1/admin/meshes", b.OperatorToken(), map[string]string{
		"name": strings.ToUpper(slug[:1]) + slug[1:], "slug": slug, "ownerPubkey": key.PublicHex(), "ownerDisplayName": owner,
	})
	if st != 201 {
		t.Fatalf("create mesh: %d %v", st, body)
	}
	return ident{key: key, meshID: body["meshId"].(string), memberID: body["memberId"].(string), name: owner}
}

// rawConn is one protocol-level client connection.
//
// It remembers the messages it was pushed, the ones it acked and the ones
// whose ack the broker confirmed (acked), because a loaded machine makes
// redeliveries ordinary: a push that was not acked within
// --redeliver-after, or whose ack was still on its way, comes again, which
// the protocol allows and clients de-duplicate. Waits skip such
// redeliveries; a push of a message whose ack was confirmed is still a
// failure.
type rawConn struct {
	t         testing.TB
	ws        *websocket.Conn
	b         *Broker
	challenge wire.Challenge
	frames    chan []byte
	readErrCh chan error

	// wantRedelivery: nextPushAgain is waiting for a push of a message
	// pushed here before.
	wantRedelivery bool

	pushed    map[string]bool // message ids pushed to this connection
	acked     map[string]bool // ids this connection sent a client_ack for
	confirmed map[string]bool // ids an `acked` answer confirmed
}

// note records what a frame tells about pushes, receipts and acks. It
// reports whether the frame is a push of a message (or a receipt) pushed
// here before (seen), and whether it was acked already (noise for every
// wait).
func (r *rawConn) note(data []byte, env wire.Envelope) (ackedAgain, seen bool) {
	switch env.Type {
	case wire.TypePush:
		var p struct {
			MessageID string `json:"messageId"`
			Subtype   string `json:"subtype"`
		}
		if wire.Decode(data, &p) != nil || p.Subtype == wire.SubtypeSystem {
			return false, false
		}
		return r.pushedBefore(p.MessageID, data)
	case wire.TypeReceipt:
		// Receipts are redelivered like pushes until acked (by
		// receiptId), and a wait must not take an old one for news.
		var rc struct {
			ReceiptID string `json:"receiptId"`
		}
		if wire.Decode(data, &rc) != nil || rc.ReceiptID == "" {
			return false, false
		}
		return r.pushedBefore(rc.ReceiptID, data)
	case wire.TypeAcked:
		var a wire.Acked
		if wire.Decode(data, &a) == nil {
			for _, id := range a.MessageIDs {
				r.confirmed[id] = true
			}
		}
	}
	return false, false
}

// pushedBefore records that id (a message's or a receipt's) was pushed
// here; a push of one whose ack the broker confirmed fails the test.
func (r *rawConn) pushedBefore(id string, data []byte) (ackedAgain, seen bool) {
	if r.confirmed[id] {
		r.t.Fatalf("pushed again after its ack was confirmed: %s", data)
	}
	seen = r.pushed[id]
	r.pushed[id] = true
	return seen && r.acked[id], seen
}

// pump reads frames in the background: a gorilla connection whose read
// timed out is unusable, so tests wait on this channel instead of setting
// read deadlines.
func (r *rawConn) pump() {
	for {
		_, data, err := r.ws.ReadMessage()
		if err != nil {
			r.readErrCh <- err
			close(r.frames)
			return
		}
		r.frames <- data
	}
}

func dial(t testing.TB, b *Broker) *rawConn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(b.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	r := &rawConn{t: t, ws: ws, b: b, frames: make(chan []byte, 100000), readErrCh: make(chan error, 1),
		pushed: map[string]bool{}, acked: map[string]bool{}, confirmed: map[string]bool{}}
	go r.pump()
	data := r.read()
	if err := wire.Decode(data, &r.challenge); err != nil || r.challenge.Type != wire.TypeChallenge {
		t.Fatalf("first frame is not a challenge: %s", data)
	}
	return r
}

func (r *rawConn) read() []byte {
	r.t.Helper()
	// A deadline for a frame that must come, not a timing assumption: it
	// is generous because the machine may be loaded (CI shares it).
	data, err := r.readErr(expectWithin)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	return data
}

var errNoFrame = fmt.Errorf("no frame in time")

// expectWithin bounds the wait for a frame (or close) a test expects.
const expectWithin = 20 * time.Second

func (r *rawConn) readErr(d time.Duration) ([]byte, error) {
	select {
	case data, ok := <-r.frames:
		if !ok {
			err := <-r.readErrCh
			r.readErrCh <- err // keep it for later callers
			return nil, err
		}
		return data, nil
	case <-time.After(d):
		return nil, errNoFrame
	}
}

// next reads until a frame of one of the given types arrives (skipping
// system pushes unless asked for) and decodes it into v.
func (r *rawConn) next(v any, types ...string) wire.Envelope {
	r.t.Helper()
	for {
		data := r.read()
		env, err := wire.Peek(data)
		if err != nil {
			r.t.Fatalf("bad frame %s: %v", data, err)
		}
		ackedAgain, seen := r.note(data, env)
		if ackedAgain || (seen && !(r.wantRedelivery && slices.Contains(types, wire.TypePush))) {
			// A redelivery of a message pushed here before: the
			// protocol's normal noise on a slow machine, never the
			// push or answer a test waits for (a wait for a new push
			// that took a redelivery left the new one to derail the
			// next wait), unless it waits for a redelivery.
			continue
		}
		for _, ty := range types {
			if env.Type == ty {
				if v != nil {
					if err := wire.Decode(data, v); err != nil {
						r.t.Fatal(err)
					}
				}
				return env
			}
		}
		if env.Type == wire.TypePush && bytes.Contains(data, []byte(`"subtype":"system"`)) {
			continue
		}
		r.t.Fatalf("want %v, got %s", types, data)
	}
}

func (r *rawConn) write(v any) {
	r.t.Helper()
	var data []byte
	switch x := v.(type) {
	case string:
		data = []byte(x)
	case []byte:
		data = x
	default:
		data = wire.MustEncode(v)
	}
	if a, ok := v.(wire.ClientAck); ok {
		for _, id := range append(a.MessageIDs, a.MessageID) {
			r.acked[id] = true
		}
	}
	if err := r.ws.WriteMessage(websocket.TextMessage, data); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rawConn) helloFrame(id ident, mutate func(*wire.Hello)) wire.Hello {
	h := wire.Hello{
		Type: wire.TypeHello, Protocol: 1, MeshID: id.meshID, MemberID: id.memberID, Pubkey: id.pub(),
		Timestamp: time.Now().UnixMilli(), Challenge: r.challenge.Nonce, SessionID: "test-" + ulid.Make().String()[20:],
	}
	if mutate != nil {
		mutate(&h)
	}
	if h.Signature == "" {
		s, err := cmcrypto.HelloString(h.MeshID, h.MemberID, h.Pubkey, r.b.PublicKey(), h.Timestamp, h.Challenge)
		if err != nil {
			r.t.Fatal(err)
		}
		h.Signature = id.key.Sign(s)
	}
	return h
}

// hello authenticates and returns the hello_ack.
func (r *rawConn) hello(id ident, mutate func(*wire.Hello)) wire.HelloAck {
	r.t.Helper()
	r.write(r.helloFrame(id, mutate))
	var ack wire.HelloAck
	r.next(&ack, wire.TypeHelloAck)
	return ack
}

// connect dials and says hello as a presence (or transient).
func connect(t testing.TB, b *Broker, id ident, presence bool, mutate func(*wire.Hello)) *rawConn {
	t.Helper()
	r := dial(t, b)
	r.hello(id, func(h *wire.Hello) {
		h.Presence = &presence
		if mutate != nil {
			mutate(h)
		}
	})
	return r
}

// expectClose reads until the connection closes and returns the close code
// and reason, after checking the error frame that preceded it (if code is
// non-empty).
func (r *rawConn) expectRefusal(code string, closeCode int, reason string) {
	r.t.Helper()
	var e wire.Error
	r.next(&e, wire.TypeError)
	if e.Code != code {
		r.t.Fatalf("error code %q, want %q (%s)", e.Code, code, e.Message)
	}
	r.expectClose(closeCode, reason)
}

func (r *rawConn) expectClose(closeCode int, reason string) {
	r.t.Helper()
	for {
		_, err := r.readErr(expectWithin)
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok {
			r.t.Fatalf("want close %d %s, got %v", closeCode, reason, err)
		}
		if ce.Code != closeCode || ce.Text != reason {
			r.t.Fatalf("close %d %q, want %d %q", ce.Code, ce.Text, closeCode, reason)
		}
		return
	}
}

// request sends a reqId request and decodes the response into v.
func (r *rawConn) request(frame map[string]any, v any, types ...string) {
	r.t.Helper()
	if _, ok := frame["reqId"]; !ok {
		frame["reqId"] = "r" + ulid.Make().String()
	}
	r.write(frame)
	r.next(v, types...)
}

// invite registers a signed invite issued by issuer and returns its token.
func invite(t testing.TB, b *Broker, issuer ident, slug, role string, maxUses int, expires time.Duration) (string, *rawConn) {
	t.Helper()
	inv := &cmcrypto.Invite{V: 1, MeshID: issuer.meshID, MeshSlug: slug, MeshName: strings.ToUpper(slug[:1]) + slug[1:],
		BrokerURL: b.URL(), BrokerPubkey: b.PublicKey(), InviteID: ulid.Make().String(), Role: role,
		ExpiresAt: time.Now().Add(expires).UnixMilli(), MaxUses: maxUses, IssuerPubkey: issuer.pub()}
	if err := inv.Sign(issuer.key); err != nil {
		t.Fatal(err)
	}
	token, err := inv.Token()
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, b, issuer, false, nil)
	c.write(wire.InviteCreate{Type: wire.TypeInviteCreate, ReqID: "inv1", Token: token})
	return token, c
}

func join(t testing.TB, b *Broker, token, name string) (int, map[string]any, ident) {
	t.Helper()
	key, _ := cmcrypto.GenerateIdentity()
	return joinWith(t, b, token, name, key)
}

func joinWith(t testing.TB, b *Broker, token, name string, key *cmcrypto.Identity) (int, map[string]any, ident) {
	t.Helper()
	inv, _, err := cmcrypto.ParseInvite(token)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().UnixMilli()
	s, err := cmcrypto.EnrollString(inv.MeshID, inv.InviteID, key.PublicHex(), name, ts)
	if err != nil {
		t.Fatal(err)
	}
	st, body := postJSON(t, b.HTTPURL()+"/v1/join", "", map[string]any{
		"token": token, "pubkey": key.PublicHex(), "displayName": name, "timestamp": ts, "signature": key.Sign(s),
	})
	id := ident{key: key, meshID: inv.MeshID, name: name}
	if st == 200 {
		id.memberID = body["memberId"].(string)
	}
	return st, body, id
}

// addMember creates a member through a real invite and join.
func addMember(t testing.TB, b *Broker, owner ident, slug, name string) ident {
	t.Helper()
	token, c := invite(t, b, owner, slug, "member", 1, time.Hour)
	var info wire.InviteReply
	c.next(&info, wire.TypeInvite)
	st, body, id := join(t, b, token, name)
	if st != 200 {
		t.Fatalf("join %s: %d %v", name, st, body)
	}
	return id
}

// dm builds a box send from a to b.
func dm(t testing.TB, from ident, to string, text string) wire.Send {
	t.Helper()
	toKey, err := cmcrypto.ParsePublicKey(to)
	if err != nil {
		t.Fatal(err)
	}
	nonce, ct, err := cmcrypto.SealBox([]byte(text), toKey, from.key)
	if err != nil {
		t.Fatal(err)
	}
	return wire.Send{Type: wire.TypeSend, ID: ulid.Make().String(), TargetSpec: to, Kind: wire.KindBox, Nonce: nonce, Ciphertext: ct}
}

// multi builds a multi send.
func multi(t testing.TB, from ident, target string, text string, to ...string) wire.Send {
	t.Helper()
	var keys []cmcrypto.PublicKey
	for _, k := range to {
		p, _ := cmcrypto.ParsePublicKey(k)
		keys = append(keys, p)
	}
	env, err := cmcrypto.SealMulti(from.meshID, target, []byte(text), keys, from.key)
	if err != nil {
		t.Fatal(err)
	}
	s := wire.Send{Type: wire.TypeSend, ID: ulid.Make().String(), TargetSpec: target, Kind: wire.KindMulti, Nonce: env.Nonce, Ciphertext: env.Ciphertext, Signature: env.Signature}
	for _, k := range env.Keys {
		s.Keys = append(s.Keys, wire.MultiKey{To: k.To, Nonce: k.Nonce, Box: k.Box})
	}
	return s
}

func (r *rawConn) sendAck(s wire.Send) wire.Ack {
	r.t.Helper()
	r.write(s)
	for {
		data := r.read()
		env, _ := wire.Peek(data)
		if env.Type != wire.TypeAck {
			continue // receipts and pushes may interleave
		}
		var ack wire.Ack
		if err := wire.Decode(data, &ack); err != nil {
			r.t.Fatal(err)
		}
		if ack.ID == s.ID {
			return ack
		}
	}
}

// openPush decrypts a push addressed to id.
func openPush(t testing.TB, p *wire.Push, id ident) string {
	t.Helper()
	sender, err := cmcrypto.ParsePublicKey(p.SenderPubkey)
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	switch p.Kind {
	case wire.KindBox:
		body, err = cmcrypto.OpenBox(p.Nonce, p.Ciphertext, sender, id.key)
	case wire.KindMulti:
		if p.Key == nil {
			t.Fatalf("multi push without key")
		}
		body, err = cmcrypto.OpenMulti(p.MeshID, p.TargetSpec, p.Nonce, p.Ciphertext, p.Signature,
			cmcrypto.MultiKey{To: p.Key.To, Nonce: p.Key.Nonce, Box: p.Key.Box}, sender, id.key)
	default:
		t.Fatalf("kind %s", p.Kind)
	}
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return string(body)
}

// nextPushAgain waits for a push that may be a redelivery of one pushed
// here before (nextPush skips those).
func (r *rawConn) nextPushAgain() wire.Push {
	r.t.Helper()
	r.wantRedelivery = true
	defer func() { r.wantRedelivery = false }()
	return r.nextPush()
}

// nextPush returns the next non-system push of a message not pushed here
// before.
func (r *rawConn) nextPush() wire.Push {
	r.t.Helper()
	for {
		var p wire.Push
		r.next(&p, wire.TypePush)
		if p.Subtype != wire.SubtypeSystem {
			return p
		}
	}
}

// expectSilence checks that nothing new arrives within d: system pushes
// and redeliveries of messages pushed before (unacked, or acked without a
// confirmation yet) are allowed; a new message, a push of a message whose
// ack was confirmed, or any other frame is not.
func (r *rawConn) expectSilence(d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		data, err := r.readErr(time.Until(deadline))
		if err == errNoFrame {
			return
		}
		if err != nil {
			r.t.Fatalf("connection closed: %v", err)
		}
		if bytes.Contains(data, []byte(`"subtype":"system"`)) {
			continue
		}
		env, _ := wire.Peek(data)
		var p wire.Push
		if env.Type == wire.TypePush && wire.Decode(data, &p) == nil && r.pushed[p.MessageID] {
			r.note(data, env) // fails on a confirmed one
			continue
		}
		r.t.Fatalf("unexpected frame: %s", data)
	}
}

// ack settles ids and waits for the broker's `acked`, after which the
// broker never pushes them again.
func (r *rawConn) ack(ids ...string) {
	r.t.Helper()
	reqID := "ack-" + ulid.Make().String()
	r.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: reqID, MessageIDs: ids})
	for {
		var a wire.Acked
		r.next(&a, wire.TypeAcked)
		if a.ReqID == reqID {
			return
		}
	}
}

// ackDurably acks ids on a cluster node as a client does: an ack refused
// unavailable (the node is still catching up with the log after a quorum
// came back) is sent again after its retryAfterMs, until it is acked.
func (r *rawConn) ackDurably(ids ...string) {
	r.t.Helper()
	deadline := time.Now().Add(expectWithin)
	for {
		reqID := "ack-" + ulid.Make().String()
		r.write(wire.ClientAck{Type: wire.TypeClientAck, ReqID: reqID, MessageIDs: ids})
		for {
			env := r.next(nil, wire.TypeAcked, wire.TypeError)
			if env.ReqID != reqID {
				continue
			}
			if env.Type == wire.TypeAcked {
				return
			}
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("ack of %v still refused after %v", ids, expectWithin)
		}
		time.Sleep(200 * time.Millisecond) // the broker's retryAfterMs is 1 s; a client waits before retrying
	}
}

func ptr[T any](v T) *T { return &v }
