package verbs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
)

// TestDaemonSendSurvivesCancel: a signal (the command's context ending)
// while the daemon is accepting a send does not abandon the request: the
// daemon's answer is returned, so send prints what was accepted instead of
// leaving the caller to guess whether to send again. With --wait, the
// accept is returned with the error interrupted, not waited on: the
// delivery --wait asks about was not waited for, and a nil error (exit 0)
// would say it was delivered.
func TestDaemonSendSurvivesCancel(t *testing.T) {
	for _, wait := range []bool{false, true} {
		t.Run(map[bool]string{false: "send", true: "wait"}[wait], func(t *testing.T) {
			received, answer := make(chan struct{}), make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.Method == "GET" && r.URL.Path == "/v1/events":
					// An event stream that never tells of the delivery.
					w.Header().Set("Content-Type", "text/event-stream")
					w.WriteHeader(http.StatusOK)
					w.(http.Flusher).Flush()
					<-r.Context().Done()
				case r.Method == "POST" && r.URL.Path == "/v1/send":
					close(received)
					<-answer // the client's context has ended by now
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusAccepted)
					json.NewEncoder(w).Encode(localapi.SendResponse{MessageID: "01JD3Z5C8Q2W0W6N5D3H4K7M9P", ClientMessageID: "c1", Status: localapi.StatusAccepted})
				default:
					http.NotFound(w, r)
				}
			}))
			defer srv.Close()
			defer srv.CloseClientConnections()
			v := &viaDaemon{api: localapi.NewTCP(strings.TrimPrefix(srv.URL, "http://"), "")}
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				<-received
				cancel()
				close(answer)
			}()
			res, err := v.Send(ctx, &config.Mesh{Slug: "acme"}, sendRequest{To: "bob", Body: "hi", Wait: wait, WaitTimeout: time.Minute})
			var ce *cliui.Error
			switch {
			case !wait && err != nil:
				t.Fatalf("Send after the context ended: %v (the accept was abandoned, or not reported)", err)
			case wait && (!errors.As(err, &ce) || ce.Code != cliui.CodeInterrupted):
				t.Fatalf("Send --wait after the context ended: %v, want the error interrupted", err)
			case res == nil:
				t.Fatal("Send after the context ended returned no result: the accept was abandoned, or not reported")
			}
			if res.MessageID != "01JD3Z5C8Q2W0W6N5D3H4K7M9P" || res.Status != localapi.StatusAccepted {
				t.Fatalf("Send = %+v", res)
			}
		})
	}
}

// TestDaemonSendNoAnswerMayHaveTaken: a send whose request reached the
// daemon but got no answer (here the connection closes; the API client's
// 30 s timeout alike) says the daemon may or may not have taken the
// message and how to retry on the same path (--id … --strict), not just
// that the daemon stopped answering, which invited a blind re-send.
func TestDaemonSendNoAnswerMayHaveTaken(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/v1/send" {
			http.NotFound(w, r)
			return
		}
		io.ReadAll(r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	}))
	defer srv.Close()
	v := &viaDaemon{api: localapi.NewTCP(strings.TrimPrefix(srv.URL, "http://"), "")}
	_, err := v.Send(context.Background(), &config.Mesh{Slug: "acme"}, sendRequest{To: "bob", Body: "hi", ClientMessageID: "c1"})
	var ce *cliui.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Message, "handed message c1") || !strings.Contains(ce.Message, "may or may not have taken it") ||
		!strings.Contains(ce.Hint, "--id c1 --strict") || ce.ClientMessageID != "c1" || ce.Code != cliui.CodeOutcomeUnknown {
		t.Fatalf("Send = %#v (%v): want outcome_unknown, saying the daemon may have message c1 and to retry with --id c1 --strict", ce, err)
	}
}
