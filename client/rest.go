package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"strconv"
	"strings"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// maxRESTBody bounds what is read of a REST answer; the broker's own bodies
// are far smaller, and a misdirected URL must not fill memory.
const maxRESTBody = 1 << 20

// RESTBase turns a broker WebSocket URL into the REST base URL (01-protocol
// §7): ws→http, wss→https, trailing /ws removed. http(s) URLs are accepted
// as they are, so a user may paste either.
func RESTBase(brokerURL string) string {
	u := strings.TrimRight(brokerURL, "/")
	switch {
	case strings.HasPrefix(u, "ws://"):
		u = "http://" + strings.TrimPrefix(u, "ws://")
	case strings.HasPrefix(u, "wss://"):
		u = "https://" + strings.TrimPrefix(u, "wss://")
	}
	u = strings.TrimSuffix(u, "/ws")
	return strings.TrimRight(u, "/")
}

// CreateMeshRequest is the body of POST /v1/admin/meshes.
type CreateMeshRequest struct {
	Name             string `json:"name"`
	Slug             string `json:"slug,omitempty"`
	OwnerPubkey      string `json:"ownerPubkey"`
	OwnerDisplayName string `json:"ownerDisplayName"`
}

// CreateMeshResponse is the broker's answer; BrokerURL and BrokerPubkey are
// what the creator stores and pins (02-crypto "Which URL is stored").
type CreateMeshResponse struct {
	MeshID    string `json:"meshId"`
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	MemberID  string `json:"memberId"`
	BrokerURL string `json:"brokerUrl"`
	// BrokerURLs: every public URL of a clustered broker (optional).
	BrokerURLs   []string `json:"brokerUrls,omitempty"`
	BrokerPubkey string   `json:"brokerPubkey"`
}

// CreateMesh creates a mesh with the operator token; the caller becomes its
// owner with the key whose public half is req.OwnerPubkey.
func CreateMesh(ctx context.Context, brokerURL, operatorToken string, req CreateMeshRequest) (*CreateMeshResponse, error) {
	var out CreateMeshResponse
	if err := postJSON(ctx, RESTBase(brokerURL)+"/v1/admin/meshes", operatorToken, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// JoinRequest is the body of POST /v1/join: the bare invite token and the
// joiner's enrollment signature (02-crypto "Invite links").
type JoinRequest struct {
	Token       string `json:"token"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	Timestamp   int64  `json:"timestamp"`
	Signature   string `json:"signature"`
}

// JoinResponse is the broker's answer to an enrollment. The caller must
// refuse it when BrokerPubkey differs from the invite's (02-crypto).
type JoinResponse struct {
	MeshID     string `json:"meshId"`
	Slug       string `json:"slug"`
	Name       string `json:"name"`
	MemberID   string `json:"memberId"`
	MemberRole string `json:"memberRole"`
	BrokerURL  string `json:"brokerUrl"`
	// BrokerURLs: every public URL of a clustered broker (optional).
	BrokerURLs   []string `json:"brokerUrls,omitempty"`
	BrokerPubkey string   `json:"brokerPubkey"`
	DisplayName  string   `json:"displayName"`
}

// NewJoinRequest signs an enrollment with the joiner's new member key over
// claudemesh/enroll/v1 (02-crypto "Signed strings").
func NewJoinRequest(token, meshID, inviteID, displayName string, key *cmcrypto.Identity, now time.Time) (JoinRequest, error) {
	ts := now.UnixMilli()
	s, err := cmcrypto.EnrollString(meshID, inviteID, key.PublicHex(), displayName, ts)
	if err != nil {
		return JoinRequest{}, wrapError(wire.CodeInvalidArgument, err, "enrollment")
	}
	return JoinRequest{Token: token, Pubkey: key.PublicHex(), DisplayName: displayName, Timestamp: ts, Signature: key.Sign(s)}, nil
}

// Join enrolls with a signed invite at the broker named by the invite,
// whose key brokerPubkey (the invite's) it must prove first (ProveBroker).
func Join(ctx context.Context, brokerURL, brokerPubkey string, req JoinRequest) (*JoinResponse, error) {
	res, _, err := JoinAny(ctx, []string{brokerURL}, brokerPubkey, req)
	return res, err
}

// JoinAny enrolls at the first of urls that answers (restfailover.go): the
// invite's signed brokerUrl first, then the other nodes of its cluster. A
// join is idempotent (a re-join of the same key is answered with the same
// member and consumes no use), so a node that failed mid-request is simply
// asked again elsewhere. It returns the URL that answered.
//
// The invite's token is a bearer credential: it is sent to a URL only after
// the server there proved it holds brokerPubkey, the key the signed invite
// pins (ProveBroker). A URL whose server cannot is skipped; when none can,
// the error is CodeBrokerKeyMismatch and no server was given the token.
func JoinAny(ctx context.Context, urls []string, brokerPubkey string, req JoinRequest) (*JoinResponse, string, error) {
	return joinAny(ctx, urls, func(ctx context.Context, u string) error { return ProveBroker(ctx, u, brokerPubkey) }, req)
}

// joinAny is JoinAny with the proof as a parameter (nil: none, for tests of
// the fail-over policy against plain HTTP servers).
func joinAny(ctx context.Context, urls []string, prove func(context.Context, string) error, req JoinRequest) (*JoinResponse, string, error) {
	var out JoinResponse
	var u string
	var err error
	for attempt := 0; ; attempt++ {
		u, err = postPass(ctx, urls, "/v1/join", "", req, &out, true, prove)
		if err == nil || !waitRetryAfter(ctx, err, attempt) {
			break
		}
	}
	if err != nil {
		return nil, "", err
	}
	return &out, u, nil
}

// postJSON posts in and decodes the answer into out, waiting and trying
// again when the broker answers busy with Retry-After (waitRetryAfter).
func postJSON(ctx context.Context, url, bearer string, in, out any) error {
	for attempt := 0; ; attempt++ {
		err := doJSON(ctx, http.MethodPost, url, bearer, in, out)
		if err == nil || !waitRetryAfter(ctx, err, attempt) {
			return err
		}
	}
}

// wsURL is the broker URL on the server of a REST URL: scheme ws or wss
// (""= the one of the REST URL), path /ws.
func wsURL(rest, scheme string) string {
	u, err := neturl.Parse(rest)
	if err != nil || u.Host == "" {
		return rest
	}
	if scheme == "" {
		scheme = "ws"
		if u.Scheme == "https" || u.Scheme == "wss" {
			scheme = "wss"
		}
	}
	return scheme + "://" + u.Host + "/ws"
}

// restRoot is a REST URL without its /v1/… route: what the broker URL was
// taken for.
func restRoot(rest string) string {
	if i := strings.Index(rest, "/v1/"); i >= 0 {
		return rest[:i]
	}
	return rest
}

// reqPath is the path of a URL.
func reqPath(rest string) string {
	if u, err := neturl.Parse(rest); err == nil && u.Path != "" {
		return u.Path
	}
	return rest
}

// origin is scheme://host[:port] of a URL, for messages ("the broker at
// http://127.0.0.1:7900"): the path of the request adds nothing.
func origin(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil || u.Host == "" {
		return raw
	}
	return u.Scheme + "://" + u.Host
}

// doJSON is one REST call: in (nil for no body) as JSON, the answer
// decoded into out, an error body mapped by restError.
func doJSON(ctx context.Context, method, url, bearer string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := wire.Encode(in)
		if err != nil {
			return wrapError(wire.CodeInvalidArgument, err, "encoding request")
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return wrapError(wire.CodeInvalidArgument, err, "request")
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	sent := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if e := tlsError(origin(url), err); e != nil {
			return e
		}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) && time.Since(sent) >= blameAfter {
			return &Error{Code: CodeTimeout, cause: err, Message: "the broker at " + origin(url) + " did not answer in time",
				Hint: "ask the broker's operator to check it (its log, GET /health/ready), then try again"}
		}
		if ctx.Err() != nil {
			return ctxError(ctx, method+" "+url)
		}
		if isUnreachable(err) {
			return &Error{Code: CodeUnreachable, Message: cannotReach(origin(url), err), cause: err}
		}
		if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			// net/http's words for a TLS handshake answered in plain HTTP.
			return &Error{Code: CodeUnreachable, cause: err,
				Message: "the server at " + origin(url) + " speaks plain HTTP, not TLS, so wss:// cannot reach it",
				Hint:    "use its ws:// URL: " + wsURL(url, "ws") + " (or the broker's TLS address, if it has one)"}
		}
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			return wrapError(CodeTimeout, err, "%s %s", method, url)
		}
		return wrapError(CodeUnreachable, err, "%s %s", method, url)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRESTBody))
	if err != nil {
		return wrapError(CodeConnectionClosed, err, "reading the answer of %s", url)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return restError(resp, data)
	}
	if err := wire.Decode(data, out); err != nil {
		return wrapError(CodeProtocol, err, "answer of %s", url)
	}
	return nil
}

// restError maps a REST error body {"error":{code,message}} to *Error; a
// body of another shape (a proxy's HTML page) still yields a stable code.
func restError(resp *http.Response, body []byte) *Error {
	var eb struct {
		Error struct {
			Code         string           `json:"code"`
			Message      string           `json:"message"`
			RetryAfterMs int64            `json:"retryAfterMs,omitzero"`
			Candidates   []wire.Candidate `json:"candidates,omitempty"`
		} `json:"error"`
	}
	e := &Error{Status: resp.StatusCode}
	var reqURL string
	if resp.Request != nil && resp.Request.URL != nil {
		reqURL = resp.Request.URL.String()
	}
	if wire.Decode(body, &eb) == nil && eb.Error.Code != "" {
		e.Code, e.Message, e.RetryAfterMs = eb.Error.Code, eb.Error.Message, eb.Error.RetryAfterMs
		e.Candidates = eb.Error.Candidates
	} else if resp.StatusCode == http.StatusBadRequest && bytes.Contains(body, []byte("Client sent an HTTP request to an HTTPS server")) {
		// Go's TLS server's answer to plain HTTP.
		e.Code = CodeUnreachable
		e.Message = "the server at " + origin(reqURL) + " speaks TLS, so ws:// (plain HTTP) cannot reach it"
		e.Hint = "use its wss:// URL: " + wsURL(reqURL, "wss")
	} else if resp.StatusCode == http.StatusNotFound && !strings.Contains(resp.Header.Get("Content-Type"), "json") {
		// Not a broker's answer (it says not_found in JSON): nothing of
		// claudemesh's is at that path.
		e.Code = CodeUnreachable
		e.Message = "no claudemesh broker answers at " + restRoot(reqURL) + " (HTTP 404 for " + reqPath(reqURL) + ")"
		e.Hint = "a broker's URL is ws://HOST:PORT/ws or wss://HOST/ws (or the path its TLS proxy forwards to /ws), as its operator gives it; " +
			"that server's would be " + wsURL(reqURL, "")
	} else {
		e.Code = fmt.Sprintf("http_%d", resp.StatusCode)
		e.Message = strings.TrimSpace(string(body))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200] + "…"
		}
		if e.Message == "" {
			e.Message = resp.Status
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests && e.Code == fmt.Sprintf("http_%d", resp.StatusCode) {
		e.Code = wire.CodeRateLimited
	}
	// Retry-After on 429 and 503 (a busy broker; a proxy in maintenance):
	// the caller waits that long before trying again.
	if (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) && e.RetryAfterMs == 0 {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			e.RetryAfterMs = int64(s) * 1000
		}
	}
	return e
}
