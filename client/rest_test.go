package client

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

func TestRESTBase(t *testing.T) {
	for in, want := range map[string]string{
		"ws://127.0.0.1:7900/ws":          "http://127.0.0.1:7900",
		"wss://mesh.example.com/ws":       "https://mesh.example.com",
		"wss://mesh.example.com/ws/":      "https://mesh.example.com",
		"wss://example.com/claudemesh/ws": "https://example.com/claudemesh",
		"https://mesh.example.com":        "https://mesh.example.com",
		"http://127.0.0.1:7900/":          "http://127.0.0.1:7900",
		"wss://wsbroker.example.com":      "https://wsbroker.example.com",
	} {
		if got := RESTBase(in); got != want {
			t.Errorf("RESTBase(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCreateMesh(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.URL.Path != "/v1/admin/meshes" || r.Header.Get("Authorization") != "Bearer op-token" {
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"code":"unauthorized","message":"bad token"}}`))
			return
		}
		var req CreateMeshRequest
		if err := wire.Decode(body, &req); err != nil || req.Name != "Team" || req.OwnerDisplayName != "alice" || req.Slug != "" {
			t.Errorf("request body %s", body)
		}
		if strings.Contains(string(body), `"slug"`) {
			t.Errorf("empty slug must be omitted: %s", body)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"meshId":"01M","slug":"team","name":"Team","memberId":"01A","brokerUrl":"ws://x/ws","brokerPubkey":"` + strings.Repeat("a", 64) + `"}`))
	}))
	defer srv.Close()
	ws := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	res, err := CreateMesh(testCtx(t), ws, "op-token", CreateMeshRequest{Name: "Team", OwnerPubkey: strings.Repeat("b", 64), OwnerDisplayName: "alice"})
	if err != nil || res.Slug != "team" || res.MemberID != "01A" || res.BrokerURL != "ws://x/ws" {
		t.Fatalf("CreateMesh: %+v %v", res, err)
	}
	_, err = CreateMesh(testCtx(t), ws, "wrong", CreateMeshRequest{Name: "Team"})
	if e := wantCode(t, err, wire.CodeUnauthorized); e.Status != http.StatusUnauthorized || e.Message != "bad token" {
		t.Fatalf("error: %+v", e)
	}
}

// joinUnproven is Join without the broker's proof, for a plain HTTP server.
func joinUnproven(ctx context.Context, url string, req JoinRequest) (*JoinResponse, error) {
	res, _, err := joinAny(ctx, []string{url}, nil, req)
	return res, err
}

func TestJoinErrors(t *testing.T) {
	status, body := 0, ""
	var retryAfter string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/join" {
			t.Errorf("path %s", r.URL.Path)
		}
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"

	status, body = http.StatusGone, `{"error":{"code":"invite_expired","message":"this invite expired"}}`
	_, err := joinUnproven(testCtx(t), url, JoinRequest{})
	if e := wantCode(t, err, wire.CodeInviteExpired); e.Message != "this invite expired" || e.Status != 410 {
		t.Fatalf("%+v", e)
	}
	// A Retry-After longer than the caller's deadline is not waited for.
	status, body, retryAfter = http.StatusTooManyRequests, "slow down", "3"
	short, cancel := context.WithTimeout(testCtx(t), 2*time.Second)
	defer cancel()
	_, err = joinUnproven(short, url, JoinRequest{})
	if e := wantCode(t, err, wire.CodeRateLimited); e.RetryAfterMs != 3000 {
		t.Fatalf("%+v", e)
	}
	status, body, retryAfter = http.StatusBadGateway, "<html>bad gateway</html>", ""
	_, err = joinUnproven(testCtx(t), url, JoinRequest{})
	wantCode(t, err, "http_502")
	status, body = http.StatusOK, `{"meshId":`
	_, err = joinUnproven(testCtx(t), url, JoinRequest{})
	wantCode(t, err, CodeProtocol)
	status, body = http.StatusOK, `{"meshId":"M","memberRole":"member","brokerPubkey":"k"}`
	res, err := joinUnproven(testCtx(t), url, JoinRequest{})
	if err != nil || res.MeshID != "M" || res.MemberRole != "member" {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestRESTUnreachable(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	_, err := Join(testCtx(t), "ws://"+addr+"/ws", newID(t).PublicHex(), JoinRequest{})
	wantCode(t, err, CodeUnreachable)
	_, err = CreateMesh(testCtx(t), "ws://"+addr+"/ws", "t", CreateMeshRequest{})
	wantCode(t, err, CodeUnreachable)
}

func TestNewJoinRequest(t *testing.T) {
	key := newID(t)
	now := time.UnixMilli(1_700_000_000_000)
	req, err := NewJoinRequest("tok", "mesh", "01INVITE", "bob", key, now)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := cmcrypto.EnrollString("mesh", "01INVITE", key.PublicHex(), "bob", now.UnixMilli())
	if req.Pubkey != key.PublicHex() || req.Timestamp != now.UnixMilli() || cmcrypto.Verify(key.Public(), s, req.Signature) != nil {
		t.Fatalf("enrollment not signed as 02-crypto says: %+v", req)
	}
	if _, err := NewJoinRequest("tok", "mesh", "inv", "bo|b", key, now); CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("a name with '|' must be refused: %v", err)
	}
}

// TestJoinHonoursRetryAfter: a busy broker's 429 with Retry-After is waited
// out and the request tried again, instead of failing at once (or retrying
// at once, which is how a crowd of clients becomes a storm).
func TestJoinHonoursRetryAfter(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		at = append(at, time.Now())
		n := len(at)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"capacity","message":"busy"}}`))
			return
		}
		w.Write([]byte(`{"meshId":"M","memberRole":"member","brokerPubkey":"k"}`))
	}))
	defer srv.Close()
	res, err := joinUnproven(testCtx(t), "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", JoinRequest{})
	if err != nil || res.MeshID != "M" {
		t.Fatalf("%+v %v", res, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 2 || at[1].Sub(at[0]) < 900*time.Millisecond {
		t.Fatalf("requests at %v: want a second one after Retry-After", at)
	}
}
