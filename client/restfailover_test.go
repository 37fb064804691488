package client

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"claudemesh/wire"
)

// node is one REST server of a pretend cluster: it answers every request
// with status and body and counts what it was asked.
type node struct {
	srv    *httptest.Server
	hits   atomic.Int32
	status int
	body   string
}

func newNode(t *testing.T, status int, body string) *node {
	n := &node{status: status, body: body}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(n.status)
		w.Write([]byte(n.body))
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *node) url() string { return "ws" + strings.TrimPrefix(n.srv.URL, "http") + "/ws" }

const joined = `{"meshId":"M","memberId":"m1","memberRole":"member","brokerPubkey":"k"}`

func TestJoinAnyGoesOnPastADeadOrUnavailableNode(t *testing.T) {
	dead := deadURL(t)
	busy := newNode(t, http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"no quorum"}}`)
	good := newNode(t, http.StatusOK, joined)
	res, at, err := joinAny(testCtx(t), []string{dead, busy.url(), good.url()}, nil, JoinRequest{})
	if err != nil || res.MemberID != "m1" || at != good.url() {
		t.Fatalf("JoinAny = %+v, %q, %v; want m1 from %s", res, at, err, good.url())
	}
	if busy.hits.Load() != 1 || good.hits.Load() != 1 {
		t.Fatalf("hits: unavailable node %d, good node %d; want 1 and 1", busy.hits.Load(), good.hits.Load())
	}
}

// An answer about the request itself would be the same from every node of
// the cluster: the pass ends there.
func TestJoinAnyStopsAtAnAuthoritativeAnswer(t *testing.T) {
	gone := newNode(t, http.StatusGone, `{"error":{"code":"invite_revoked","message":"this invite was revoked"}}`)
	good := newNode(t, http.StatusOK, joined)
	_, _, err := joinAny(testCtx(t), []string{gone.url(), good.url()}, nil, JoinRequest{})
	wantCode(t, err, wire.CodeInviteRevoked)
	if good.hits.Load() != 0 {
		t.Fatalf("the second node was asked %d times after an authoritative refusal", good.hits.Load())
	}
}

// When every node fails, the error is the first one's, naming the others.
func TestJoinAnyAllFailed(t *testing.T) {
	dead := deadURL(t)
	busy := newNode(t, http.StatusBadGateway, "<html>bad gateway</html>")
	_, _, err := joinAny(testCtx(t), []string{dead, busy.url()}, nil, JoinRequest{})
	e := wantCode(t, err, CodeUnreachable)
	if !strings.Contains(e.Message, "all 2 broker URLs failed") || !strings.Contains(e.Message, busy.url()+": http_502") {
		t.Fatalf("message %q does not name every URL's failure", e.Message)
	}
}

// A request that is not idempotent goes on only when nothing was sent.
func TestRestNextURLWithoutIdempotence(t *testing.T) {
	dead := deadURL(t)
	err := doJSON(testCtx(t), http.MethodPost, RESTBase(dead)+"/v1/join", "", struct{}{}, &struct{}{})
	if !restNextURL(err, false) {
		t.Fatalf("a refused connection (%v) should go on to the next URL", err)
	}
	busy := newNode(t, http.StatusServiceUnavailable, `{"error":{"code":"unavailable","message":"no quorum"}}`)
	err = doJSON(testCtx(t), http.MethodPost, RESTBase(busy.url())+"/v1/x", "", struct{}{}, &struct{}{})
	if restNextURL(err, false) || !restNextURL(err, true) {
		t.Fatalf("unavailable (%v): next URL only for an idempotent request", err)
	}
}

// A pass in which the live nodes said "unavailable, retry later" and the
// dead one "unreachable" is retried after the wait, not given up on the
// dead node's error (a cluster moving its log's leadership after a kill).
func TestJoinAnyWaitsOutAnUnavailableCluster(t *testing.T) {
	dead := deadURL(t)
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if asked.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"unavailable","message":"no quorum yet","retryAfterMs":100}}`))
			return
		}
		w.Write([]byte(joined))
	}))
	t.Cleanup(srv.Close)
	live := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	res, at, err := joinAny(testCtx(t), []string{dead, live}, nil, JoinRequest{})
	if err != nil || res.MemberID != "m1" || at != live || asked.Load() != 2 {
		t.Fatalf("JoinAny = %+v, %q, %v after %d requests; want m1 from %s on the second", res, at, err, asked.Load(), live)
	}
}
