package client

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRESTWrongBrokerURLSaysWhatIsWrong (a new user's trial): mesh create
// with a slightly wrong --broker printed net/http's words ("Post …: http:
// server gave HTTP response to HTTPS client", the URL twice), the TLS
// server's "Client sent an HTTP request to an HTTPS server." or Go's
// "404 page not found", with no hint. Each says what the server is and
// which URL to use (unreachable: exit 5).
func TestRESTWrongBrokerURLSaysWhatIsWrong(t *testing.T) {
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake errors are the point
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	plainHost := strings.TrimPrefix(plain.URL, "http://")
	tlsHost := strings.TrimPrefix(tlsSrv.URL, "https://")
	for _, c := range []struct {
		url, msg, hint string
	}{
		{"wss://" + plainHost + "/ws", "the server at https://" + plainHost + " speaks plain HTTP, not TLS", "use its ws:// URL: ws://" + plainHost + "/ws"},
		{"ws://" + tlsHost + "/ws", "the server at http://" + tlsHost + " speaks TLS, so ws:// (plain HTTP) cannot reach it", "use its wss:// URL: wss://" + tlsHost + "/ws"},
		{"ws://" + plainHost + "/wrong", "no claudemesh broker answers at http://" + plainHost + "/wrong (HTTP 404 for /wrong/v1/admin/meshes)", "that server's would be ws://" + plainHost + "/ws"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := CreateMesh(ctx, c.url, "token", CreateMeshRequest{Name: "X", OwnerPubkey: strings.Repeat("a", 64), OwnerDisplayName: "zed"})
		cancel()
		e, ok := err.(*Error)
		if !ok || e.Code != CodeUnreachable || !strings.HasPrefix(e.Message, c.msg) || !strings.Contains(e.Hint, c.hint) {
			t.Errorf("%s: %#v, want unreachable %q with a hint naming %q", c.url, err, c.msg, c.hint)
		}
	}
}
