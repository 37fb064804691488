package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// impostor is a server at an invite's URL that is not the invite's broker:
// its /ws sends a challenge made by challenge, and it counts the joins it is
// sent (each one a stolen invite token).
func impostor(t *testing.T, challenge func() wire.Challenge) (string, *atomic.Int32) {
	t.Helper()
	var joins atomic.Int32
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/join" {
			joins.Add(1)
			http.Error(w, `{"error":{"code":"not_found","message":"this broker has no such mesh"}}`, http.StatusNotFound)
			return
		}
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		data, _ := wire.Encode(challenge())
		ws.WriteMessage(websocket.TextMessage, data)
		ws.ReadMessage()
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws", &joins
}

func signedChallenge(t *testing.T, key *cmcrypto.Identity, presented string, at time.Time) wire.Challenge {
	nonce := strings.Repeat("ab", 32)
	s, err := cmcrypto.ChallengeString(nonce, at.UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	return wire.Challenge{Type: wire.TypeChallenge, Nonce: nonce, ServerTime: at.UnixMilli(), Protocol: wire.ProtocolVersion,
		BrokerPubkey: presented, Signature: key.Sign(s)}
}

// A join proves the broker's key before it sends the invite's token: a
// server that cannot (another key, the invite's key copied but not held, or
// an old challenge of the real broker replayed) never sees the token, and
// the joiner is told the server is not the broker the invite names.
func TestJoinSendsTheTokenOnlyToAServerThatProvesThePinnedKey(t *testing.T) {
	real, other := newID(t), newID(t)
	pinned := real.PublicHex()
	cases := []struct {
		name string
		ch   func() wire.Challenge
		code string
	}{
		{"another broker", func() wire.Challenge { return signedChallenge(t, other, other.PublicHex(), time.Now()) }, CodeBrokerKeyMismatch},
		{"copied key", func() wire.Challenge { return signedChallenge(t, other, pinned, time.Now()) }, CodeBrokerKeyMismatch},
		{"replayed challenge", func() wire.Challenge { return signedChallenge(t, real, pinned, time.Now().Add(-time.Hour)) }, wire.CodeTimestampSkew},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, joins := impostor(t, tc.ch)
			_, err := Join(testCtx(t), u, pinned, JoinRequest{Token: "secret"})
			e := wantCode(t, err, tc.code)
			if joins.Load() != 0 {
				t.Fatalf("the impostor was sent %d joins (the invite token)", joins.Load())
			}
			if tc.code == CodeBrokerKeyMismatch && !strings.Contains(e.Message, "is not the broker the invite names") {
				t.Fatalf("message %q", e.Message)
			}
		})
	}
	// The real broker's fresh challenge passes, and then the join is sent.
	u, joins := impostor(t, func() wire.Challenge { return signedChallenge(t, real, pinned, time.Now()) })
	_, err := Join(testCtx(t), u, pinned, JoinRequest{Token: "secret"})
	wantCode(t, err, "not_found")
	if joins.Load() != 1 {
		t.Fatalf("a proven server was sent %d joins, want 1", joins.Load())
	}
}

// With an impostor at the invite's first URL and the broker at the second,
// the join goes to the broker only.
func TestJoinAnySkipsAnImpostorURL(t *testing.T) {
	b := startTestBroker(t, nil)
	bad, joins := impostor(t, func() wire.Challenge { return signedChallenge(t, newID(t), b.PublicKey(), time.Now()) })
	_, _, err := JoinAny(testCtx(t), []string{bad, b.URL()}, b.PublicKey(), JoinRequest{Token: "nope"})
	wantCode(t, err, wire.CodeMalformed) // the real broker's answer to a bad token
	if joins.Load() != 0 {
		t.Fatalf("the impostor was sent %d joins", joins.Load())
	}
}
