package verbs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
)

// TestDaemonSendSurvivesCancel: a signal (the command's context ending)
// while the daemon is accepting a send does not abandon the request: the
// daemon's answer is returned, so send prints what was accepted instead of
// leaving the caller to guess whether to send again. With --wait, the
// accept is returned without waiting for the delivery (the wait would
// end at once in a silent interruption, --json printing nothing).
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
			if err != nil {
				t.Fatalf("Send after the context ended: %v (the accept was abandoned, or not reported)", err)
			}
			if res.MessageID != "01JD3Z5C8Q2W0W6N5D3H4K7M9P" || res.Status != localapi.StatusAccepted {
				t.Fatalf("Send = %+v", res)
			}
		})
	}
}
