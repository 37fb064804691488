package client

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"

	"github.com/gorilla/websocket"
)

func TestBackoffSchedule(t *testing.T) {
	within := func(got, want time.Duration) bool {
		return got >= want*8/10 && got <= want*12/10
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i, w := range want {
		for range 50 {
			if d := Backoff(i, DefaultBackoffMax); !within(d, w*time.Second) {
				t.Fatalf("attempt %d: %v, want %v ±20%%", i, d, w*time.Second)
			}
		}
	}
	// A cap below the first step shortens every step.
	for i := range 8 {
		if d := Backoff(i, 200*time.Millisecond); !within(d, 200*time.Millisecond) {
			t.Fatalf("capped attempt %d: %v", i, d)
		}
	}
	// Jitter really varies.
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[Backoff(3, DefaultBackoffMax)] = true
	}
	if len(seen) < 2 {
		t.Fatal("no jitter")
	}

	t.Setenv(BackoffEnv, "200ms")
	if d := BackoffMaxFromEnv(); d != 200*time.Millisecond {
		t.Fatalf("env cap %v", d)
	}
	t.Setenv(BackoffEnv, "soon")
	if d := BackoffMaxFromEnv(); d != 0 {
		t.Fatalf("invalid env cap must be ignored, got %v", d)
	}
}

// stateLog records every state a presence goes through.
type stateLog struct {
	mu     sync.Mutex
	states []State
	errs   []error
}

func (l *stateLog) add(s State, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, s)
	l.errs = append(l.errs, err)
}

func (l *stateLog) snapshot() ([]State, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]State(nil), l.states...), append([]error(nil), l.errs...)
}

func waitState(t *testing.T, p *Presence, want State) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := p.WaitState(ctx, want)
	if s != want {
		t.Fatalf("presence state %s (%v), want %s", s, err, want)
	}
	return err
}

// TestPresenceBackoffEnv: five refused handshakes in a row would take
// 1+2+4+8+16 s (at least 24.8 s with jitter) with the default schedule; with
// CLAUDEMESH_BACKOFF_MAX=20ms the presence must be open well within the
// 10 s deadline, and it must report the refusals while reconnecting.
func TestPresenceBackoffEnv(t *testing.T) {
	t.Setenv(BackoffEnv, "20ms")
	f := newFakeBroker(t)
	f.set(func(f *fakeBroker) {
		f.refuse = func(n int) (*wire.Error, int, string) {
			if n < 5 {
				return &wire.Error{Code: wire.CodeCapacity, Message: "full"}, websocket.ClosePolicyViolation, wire.CodeCapacity
			}
			return nil, 0, ""
		}
	})
	var log stateLog
	stateAtConnect := make(chan State, 1)
	p := StartPresence(testCtx(t), f.identity(t), DialOptions{Presence: true, Role: wire.RoleControlPlane, SessionID: "daemon"}, PresenceOptions{
		OnState: log.add,
		OnConnected: func(ctx context.Context, c *Conn) {
			states, _ := log.snapshot()
			stateAtConnect <- states[len(states)-1]
		},
	})
	defer p.Close()
	waitState(t, p, StateOpen)
	if s := recvWithin(t, stateAtConnect, "OnConnected"); s == StateOpen {
		t.Fatal("OnConnected must run before the presence reports open")
	}
	if p.Conn() == nil || p.Conn().HelloAck().MeshID != "mesh1" {
		t.Fatal("open presence exposes no connection")
	}
	states, errs := log.snapshot()
	refused := 0
	for i, s := range states {
		if s == StateReconnecting && CodeOf(errs[i]) == wire.CodeCapacity {
			refused++
		}
	}
	if states[0] != StateConnecting || refused < 1 {
		t.Fatalf("states %v errs %v", states, errs)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hellos != 6 {
		t.Fatalf("%d hellos, want 6", f.hellos)
	}
}

// TestPresenceCloseCodes drives 01-protocol §9: which closes end the
// presence for good and which are retried.
func TestPresenceCloseCodes(t *testing.T) {
	t.Setenv(BackoffEnv, "20ms")
	cases := []struct {
		name      string
		errFrame  *wire.Error
		code      int
		reason    string
		want      State // final state, or StateOpen for a reconnect
		wantCode  string
		wantInMsg string
	}{
		{name: "kicked", code: wire.CloseKicked, reason: wire.ReasonKicked, want: StateKicked, wantCode: wire.ReasonKicked},
		{name: "removed", code: wire.CloseKicked, reason: wire.ReasonRemoved, want: StateRemoved, wantCode: wire.ReasonRemoved},
		{name: "banned", errFrame: &wire.Error{Type: wire.TypeError, Code: wire.CodeRevoked, Message: `You've been removed from "Mesh One".`},
			code: wire.CloseBanned, reason: wire.ReasonBanned, want: StateBanned, wantCode: wire.ReasonBanned, wantInMsg: `You've been removed from "Mesh One".`},
		{name: "session_replaced", code: websocket.CloseNormalClosure, reason: wire.ReasonReplaced, want: StateClosed, wantCode: wire.ReasonReplaced},
		{name: "left", code: websocket.CloseNormalClosure, reason: wire.ReasonLeft, want: StateClosed, wantCode: wire.ReasonLeft},
		{name: "disconnected", code: websocket.CloseNormalClosure, reason: wire.ReasonDisconnected, want: StateOpen},
		{name: "shutting_down", code: websocket.CloseGoingAway, reason: wire.ReasonShutdown, want: StateOpen},
		{name: "slow_consumer", code: wire.CloseSlowConsumer, reason: wire.ReasonSlowConsumer, want: StateOpen},
		{name: "network loss", code: -1, want: StateOpen},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeBroker(t)
			p := StartPresence(testCtx(t), f.identity(t), DialOptions{Presence: true}, PresenceOptions{})
			defer p.Close()
			fc := f.next(t)
			waitState(t, p, StateOpen)
			first := p.Conn()
			if tc.errFrame != nil {
				fc.send(t, tc.errFrame)
			}
			if tc.code == -1 {
				fc.ws.NetConn().Close() // no close frame at all
			} else {
				fc.closeWith(tc.code, tc.reason)
			}
			if tc.want != StateOpen {
				err := waitState(t, p, tc.want)
				recvWithin(t, p.Done(), "the presence to stop")
				e := wantCode(t, err, tc.wantCode)
				if tc.wantInMsg != "" && e.Message != tc.wantInMsg {
					t.Fatalf("message %q, want %q", e.Message, tc.wantInMsg)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				if f.hellos != 1 {
					t.Fatalf("reconnected (%d hellos) after %s", f.hellos, tc.name)
				}
				return
			}
			second := f.next(t) // a new connection reached the broker
			if second == fc {
				t.Fatal("same connection")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for {
				ch := p.Changed()
				if s, _ := p.State(); s == StateOpen && p.Conn() != first {
					break
				}
				select {
				case <-ch:
				case <-ctx.Done():
					t.Fatal("presence did not reopen")
				}
			}
		})
	}
}

func TestPresenceHandshakeBanned(t *testing.T) {
	t.Setenv(BackoffEnv, "20ms")
	f := newFakeBroker(t)
	msg := `You've been removed from "Mesh One". Contact the mesh owner to rejoin.`
	f.set(func(f *fakeBroker) {
		f.refuse = func(int) (*wire.Error, int, string) {
			return &wire.Error{Code: wire.CodeRevoked, Message: msg}, wire.CloseBanned, wire.ReasonBanned
		}
	})
	p := StartPresence(testCtx(t), f.identity(t), DialOptions{Presence: true}, PresenceOptions{})
	err := waitState(t, p, StateBanned)
	recvWithin(t, p.Done(), "the presence to stop")
	if e := wantCode(t, err, wire.CodeRevoked); e.Message != msg {
		t.Fatalf("message %q", e.Message)
	}
}

func TestPresenceCloseEndsCleanly(t *testing.T) {
	f := newFakeBroker(t)
	p := StartPresence(testCtx(t), f.identity(t), DialOptions{Presence: true}, PresenceOptions{})
	fc := f.next(t)
	waitState(t, p, StateOpen)
	p.Close()
	if cl := recvWithin(t, fc.closed, "close frame"); cl[0].(int) != websocket.CloseNormalClosure {
		t.Fatalf("close code %v", cl[0])
	}
	if s, _ := p.State(); s != StateClosed || p.Conn() != nil {
		t.Fatalf("state after Close: %s", s)
	}
}

// TestPresenceStopsOnBrokerKeyMismatch: a server that cannot sign with the
// pinned broker key is not dialled again: the presence stops in
// broker_key_mismatch with the error that names both keys.
func TestPresenceStopsOnBrokerKeyMismatch(t *testing.T) {
	t.Setenv(BackoffEnv, "20ms")
	f := newFakeBroker(t)
	id := f.identity(t)
	other, _ := cmcrypto.GenerateIdentity()
	id.BrokerPubkey = other.PublicHex()
	p := StartPresence(testCtx(t), id, DialOptions{Presence: true}, PresenceOptions{})
	err := waitState(t, p, StateBrokerKeyMismatch)
	recvWithin(t, p.Done(), "the presence to stop")
	e := wantCode(t, err, CodeBrokerKeyMismatch)
	if !strings.Contains(e.Message, other.PublicHex()) || !strings.Contains(e.Message, f.key.PublicHex()) {
		t.Fatalf("message does not name both keys: %q", e.Message)
	}
	if !StateBrokerKeyMismatch.Final() {
		t.Fatal("broker_key_mismatch must be final")
	}
}
