package localapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	json "github.com/go-json-experiment/json"
)

// Client talks to a daemon over its Unix socket (or, with Bearer set, its
// optional TCP listener). It always sends Host: localhost and never puts a
// token in a query string, as the daemon requires.
type Client struct {
	hc           *http.Client
	stream       *http.Client // no timeout: SSE streams live long
	base         string
	Bearer       string // TCP listener only
	SessionToken string // identifies the calling agent session
	// first is the connection Connect dialled, checked and found a daemon
	// on: the first request goes over it rather than a second dial.
	first spareConn
}

// spareConnFresh is how long after its dial a spare connection is still
// used: well inside the daemon's ReadHeaderTimeout (10 s), so it cannot
// have been dropped for idling. The thin verbs use it at once.
const spareConnFresh = time.Second

// spareConn holds one connection for a single request.
type spareConn struct {
	mu   sync.Mutex
	conn net.Conn
	at   time.Time
}

func (s *spareConn) set(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conn, s.at = c, time.Now()
}

// take returns the spare connection, if there is a fresh one, and forgets
// it; a stale one is closed.
func (s *spareConn) take() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.conn
	s.conn = nil
	if c != nil && time.Since(s.at) > spareConnFresh {
		c.Close()
		return nil
	}
	return c
}

// New returns a client for the daemon listening on socketPath.
func New(socketPath string) *Client {
	// Every connection is checked before a byte is written to it: the
	// socket and its directory belong to this user, and so does the
	// process listening (socketsafe.go).
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialChecked(ctx, socketPath)
	}
	tr := &http.Transport{DialContext: dial, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	return &Client{
		hc:     &http.Client{Transport: tr, Timeout: 30 * time.Second},
		stream: &http.Client{Transport: tr},
		base:   "http://localhost",
	}
}

// NewTCP returns a client for the daemon's TCP listener at addr.
func NewTCP(addr, bearer string) *Client {
	tr := &http.Transport{MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	return &Client{
		hc:     &http.Client{Transport: tr, Timeout: 30 * time.Second},
		stream: &http.Client{Transport: tr},
		base:   "http://" + addr,
		Bearer: bearer,
	}
}

// APIError is a non-2xx answer from the daemon.
type APIError struct {
	HTTPStatus int
	Body       Error
}

func (e *APIError) Error() string { return e.Body.Message }

// ErrorCode lets the CLI map the daemon's code to an exit code.
func (e *APIError) ErrorCode() string { return e.Body.Code }

// ErrUnreachable wraps failures to reach the daemon at all.
var ErrUnreachable = errors.New("daemon unreachable")

func (c *Client) newRequest(ctx context.Context, method, path string, in any, header map[string]string) (*http.Request, error) {
	var body io.Reader
	if in != nil {
		data, ok := []byte(nil), false
		if r, isSend := in.(SendRequest); isSend {
			data, ok = r.encodeFast() // fastjson.go
		}
		if !ok {
			var err error
			if data, err = json.Marshal(in); err != nil {
				return nil, err
			}
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	req.Host = "localhost"
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.Bearer)
		if c.SessionToken != "" {
			req.Header.Set("X-ClaudeMesh-Session", c.SessionToken)
		}
	} else if c.SessionToken != "" {
		req.Header.Set("Authorization", "ClaudeMesh-Session "+c.SessionToken)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return req, nil
}

// Do performs one request; out (if non-nil) receives the JSON body of a 2xx
// answer. It returns the HTTP status.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (int, error) {
	return c.DoHeader(ctx, method, path, in, out, nil)
}

// DoHeader is Do with extra request headers (Idempotency-Key).
func (c *Client) DoHeader(ctx context.Context, method, path string, in, out any, header map[string]string) (int, error) {
	req, err := c.newRequest(ctx, method, path, in, header)
	if err != nil {
		return 0, err
	}
	var resp *http.Response
	if conn := c.first.take(); conn != nil {
		resp, err = roundTripOn(conn, req, c.hc.Timeout)
	} else {
		resp, err = c.hc.Do(req)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		if json.Unmarshal(data, &eb) != nil || eb.Error.Code == "" {
			eb.Error = Error{Code: "daemon_error", Message: fmt.Sprintf("daemon answered %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))}
		}
		return resp.StatusCode, &APIError{HTTPStatus: resp.StatusCode, Body: eb.Error}
	}
	if out != nil && len(data) > 0 {
		if r, isSend := out.(*SendResponse); isSend && r.decodeFast(data) { // fastjson.go
			return resp.StatusCode, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding the daemon's answer: %w", err)
		}
	}
	return resp.StatusCode, nil
}

// roundTripOn does req on conn, a connection Connect dialled, the way the
// client's http.Transport would (the same request bytes, HTTP/1.1, the
// client's timeout and req's context), without the Transport's connection
// pool and its reader and writer goroutines: a one-shot verb makes one
// request. Closing the response's body closes conn. Errors are what
// http.Client returns (*url.Error, the context's error when it ended).
func roundTripOn(conn net.Conn, req *http.Request, timeout time.Duration) (*http.Response, error) {
	ctx := req.Context()
	fail := func(err error) (*http.Response, error) {
		conn.Close()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, &url.Error{Op: req.Method[:1] + strings.ToLower(req.Method[1:]), URL: req.URL.String(), Err: err}
	}
	deadline, ok := ctx.Deadline()
	if timeout > 0 && (!ok || time.Until(deadline) > timeout) {
		deadline, ok = time.Now().Add(timeout), true
	}
	if ok {
		conn.SetDeadline(deadline)
	}
	// A cancelled context ends the exchange as it would the Transport's.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	if err := req.Write(conn); err != nil {
		stop()
		return fail(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		stop()
		return fail(err)
	}
	resp.Body = &connBody{ReadCloser: resp.Body, conn: conn, stop: stop}
	return resp, nil
}

// connBody is a response body that closes its connection. The connection
// is closed first: the body's own Close reads to the end (to reuse the
// connection), which an event stream never reaches.
type connBody struct {
	io.ReadCloser
	conn net.Conn
	stop func() bool
}

func (b *connBody) Close() error {
	b.stop()
	err := b.conn.Close()
	b.ReadCloser.Close()
	return err
}

// Version asks which daemon is listening (also the liveness probe).
func (c *Client) Version(ctx context.Context) (*Version, error) {
	var v Version
	_, err := c.Do(ctx, "GET", "/v1/version", nil, &v)
	return &v, err
}

// Send accepts a message into the outbox.
func (c *Client) Send(ctx context.Context, req SendRequest) (*SendResponse, error) {
	var out SendResponse
	_, err := c.Do(ctx, "POST", "/v1/send", req, &out)
	return &out, err
}

// Event is one Server-Sent Event.
type Event struct {
	ID   string
	Type string
	Data []byte
}

// EventStream reads events from GET /v1/events.
type EventStream struct {
	resp *http.Response
	r    *bufio.Reader
}

// Events subscribes to the daemon's event stream, replaying message events
// after lastEventID when it is non-empty.
func (c *Client) Events(ctx context.Context, lastEventID string, query string) (*EventStream, error) {
	path := "/v1/events"
	if query != "" {
		path += "?" + query
	}
	req, err := c.newRequest(ctx, "GET", path, nil, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	var resp *http.Response
	if conn := c.first.take(); conn != nil {
		resp, err = roundTripOn(conn, req, 0) // no timeout, as c.stream
	} else {
		resp, err = c.stream.Do(req)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	if resp.StatusCode != 200 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var eb ErrorBody
		json.Unmarshal(data, &eb)
		return nil, &APIError{HTTPStatus: resp.StatusCode, Body: eb.Error}
	}
	return &EventStream{resp: resp, r: bufio.NewReaderSize(resp.Body, 64<<10)}, nil
}

// Next blocks for the next event (comments and keepalives are skipped).
func (s *EventStream) Next() (Event, error) {
	var ev Event
	var data []byte
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if ev.Type == "" && data == nil {
				continue
			}
			ev.Data = data
			return ev, nil
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id:"):
			ev.ID = strings.TrimSpace(line[3:])
		case strings.HasPrefix(line, "event:"):
			ev.Type = strings.TrimSpace(line[6:])
		case strings.HasPrefix(line, "data:"):
			if data != nil {
				data = append(data, '\n')
			}
			data = append(data, strings.TrimPrefix(line[5:], " ")...)
		}
	}
}

// Close ends the stream.
func (s *EventStream) Close() error { return s.resp.Body.Close() }
