package localapi

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDaemon serves HTTP on a Unix socket at path (mode 0600) and counts
// the connections it accepts and the requests it answers; handler answers
// them (nil: a version document).
type fakeDaemon struct {
	conns, reqs atomic.Int64
}

func serveFake(t *testing.T, path string, handler http.HandlerFunc) *fakeDaemon {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o600)
	f := &fakeDaemon{}
	if handler == nil {
		handler = func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"daemonVersion":"fake","api":"v1"}`))
		}
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.reqs.Add(1)
			handler(w, r)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				f.conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

// fakeHome is a client home whose daemon socket is a fake daemon's.
func fakeHome(t *testing.T, handler http.HandlerFunc) (string, *fakeDaemon) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "h")
	if err := os.MkdirAll(Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvSocket, "")
	return home, serveFake(t, SocketPath(home), handler)
}

// TestConnectRequestsOverItsConnection: the connection Connect dials to see
// a daemon carries the first request (one connection for a thin verb, not
// a probe and then another), with the request's headers and body and the
// answer's body intact; later requests dial as before.
func TestConnectRequestsOverItsConnection(t *testing.T) {
	var mu sync.Mutex
	var got []string
	home, d := fakeHome(t, func(w http.ResponseWriter, r *http.Request) {
		var body strings.Builder
		bufio.NewReader(r.Body).WriteTo(&body)
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Host+" "+r.Header.Get("Authorization")+" "+body.String())
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte(`{"clientMessageId":"c1","status":"accepted"}`))
	})
	ctx := context.Background()
	c, err := Connect(ctx, home, false)
	if err != nil {
		t.Fatal(err)
	}
	c.SessionToken = "tok"
	res, err := c.Send(ctx, SendRequest{To: "bob", Message: "hi"})
	if err != nil || res.ClientMessageID != "c1" || res.Status != "accepted" {
		t.Fatalf("send: %+v, %v", res, err)
	}
	if n := d.conns.Load(); n != 1 {
		t.Fatalf("Connect and one request made %d connections, want 1", n)
	}
	if _, err := c.Send(ctx, SendRequest{To: "bob", Message: "again"}); err != nil {
		t.Fatal(err)
	}
	if n, r := d.conns.Load(), d.reqs.Load(); n != 2 || r != 2 {
		t.Fatalf("after a second request: %d connections, %d requests; want 2, 2", n, r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !strings.HasPrefix(got[0], "POST /v1/send localhost ClaudeMesh-Session tok {") || !strings.Contains(got[0], `"hi"`) {
		t.Fatalf("the daemon received %q", got)
	}
}

// TestConnectStaleConnection: a connection Connect dialled longer ago than
// spareConnFresh is closed, not used; the request dials anew.
func TestConnectStaleConnection(t *testing.T) {
	home, d := fakeHome(t, nil)
	ctx := context.Background()
	c, err := Connect(ctx, home, false)
	if err != nil {
		t.Fatal(err)
	}
	c.first.mu.Lock()
	spare := c.first.conn
	c.first.at = time.Now().Add(-2 * spareConnFresh)
	c.first.mu.Unlock()
	if v, err := c.Version(ctx); err != nil || v.DaemonVersion != "fake" {
		t.Fatalf("version: %+v, %v", v, err)
	}
	if n := d.conns.Load(); n != 2 {
		t.Fatalf("%d connections, want 2 (the stale one and a new one)", n)
	}
	if _, err := spare.Write([]byte("x")); err == nil {
		t.Fatal("the stale connection is still open")
	}
}

// TestConnectCancelled: a request over Connect's connection ends when its
// context does, with the context's error, as over a dialled one.
func TestConnectCancelled(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	home, _ := fakeHome(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Connect(ctx, home, false)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Version(ctx); done <- err }()
	cancel()
	err = <-done
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
}

// TestConnectEvents: an event stream opened first uses Connect's
// connection too, and closing it closes that connection.
func TestConnectEvents(t *testing.T) {
	home, d := fakeHome(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("id: 1\nevent: message\ndata: {\"x\":1}\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ctx := context.Background()
	c, err := Connect(ctx, home, false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Events(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := s.Next()
	if err != nil || ev.ID != "1" || ev.Type != "message" || string(ev.Data) != `{"x":1}` {
		t.Fatalf("event %+v, %v", ev, err)
	}
	s.Close()
	if _, err := s.Next(); err == nil {
		t.Fatal("the stream still reads after Close")
	}
	if n := d.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}
