package client

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestDialTextsSayWhatHappened: a broker that takes the TCP connection and
// never answers said "context deadline exceeded", and one whose TLS
// certificate this machine does not trust gave Go's x509 text with advice
// to check the broker is reachable. Each now says what happened and what
// to do.
func TestDialTextsSayWhatHappened(t *testing.T) {
	t.Parallel()
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	f := newFakeBroker(t)
	id := f.identity(t)
	id.BrokerURL = "ws://" + hung.Addr().String() + "/ws"
	_, err = Dial(testCtx(t), id, DialOptions{HandshakeTimeout: 300 * time.Millisecond})
	e := wantCode(t, err, CodeTimeout)
	if !strings.Contains(e.Message, "accepted the connection but did not answer") || strings.Contains(e.Message, "deadline") || !strings.Contains(e.Hint, "operator") {
		t.Errorf("a hung server: %q (hint %q)", e.Message, e.Hint)
	}

	// Upgraded, then silence.
	f.set(func(f *fakeBroker) { f.noChallenge = true })
	_, err = Dial(testCtx(t), f.identity(t), DialOptions{HandshakeTimeout: 300 * time.Millisecond})
	e = wantCode(t, err, CodeTimeout)
	if !strings.Contains(e.Message, "sent no handshake") || strings.Contains(e.Message, "deadline") {
		t.Errorf("a silent WebSocket server: %q", e.Message)
	}

	tlsSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	tlsSrv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	id.BrokerURL = "wss://" + tlsSrv.Listener.Addr().String() + "/ws"
	_, err = Dial(testCtx(t), id, DialOptions{HandshakeTimeout: 5 * time.Second})
	e = wantCode(t, err, CodeUnreachable)
	if !strings.Contains(e.Message, "TLS certificate") || !strings.Contains(e.Message, "does not trust") || strings.Contains(e.Message, "x509:") ||
		!strings.Contains(e.Hint, "trust store") || strings.Contains(e.Hint, "reachable") {
		t.Errorf("an untrusted certificate: %q (hint %q)", e.Message, e.Hint)
	}
	if err := ProveBroker(testCtx(t), id.BrokerURL, id.BrokerPubkey); CodeOf(err) != CodeUnreachable || !strings.Contains(MessageOf(err, ""), "does not trust") {
		t.Errorf("join's proof of the broker: %v", err)
	}
}
