package cluster

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs a TLS handshake between a route's soliciting end (client)
// and its accepting end (server) over an in-memory connection.
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	done := make(chan error, 1)
	go func() {
		s := tls.Server(b, server)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3 sends the client's certificate after the client's
			// handshake is done: read once so a refusal reaches the client.
			_, err = s.Read(make([]byte, 1))
		}
		b.Close()
		done <- err
	}()
	c := tls.Client(a, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Write([]byte{'x'})
		if clientErr == nil {
			_, clientErr = c.Read(make([]byte, 1))
		}
	}
	a.Close()
	return clientErr, <-done
}

// Two nodes of one cluster (one secret) trust each other's route
// certificates although each drew its own key; a node holding another
// secret is refused by both ends.
func TestRouteTLSTrustsOnlyTheSameSecret(t *testing.T) {
	n1, err := routeTLSConfig(testSecret, "c", "n1")
	if err != nil {
		t.Fatal(err)
	}
	n2, err := routeTLSConfig(testSecret, "c", "n2")
	if err != nil {
		t.Fatal(err)
	}
	if _, serr := handshake(t, n1, n2); serr != nil && !strings.Contains(serr.Error(), "EOF") && !strings.Contains(serr.Error(), "closed pipe") {
		t.Fatalf("the accepting node refused a node of its own cluster: %v", serr)
	}
	other, err := routeTLSConfig([]byte("another broker key's secret"), "c", "n3")
	if err != nil {
		t.Fatal(err)
	}
	// Soliciting a node of another cluster: the client refuses its
	// certificate.
	if cerr, _ := handshake(t, other, n1); cerr == nil || !strings.Contains(cerr.Error(), "certificate") {
		t.Fatalf("a node with another secret completed a route to n1 (client error %v)", cerr)
	}
	// Accepting one: the server refuses the client's certificate.
	if _, serr := handshake(t, n1, other); serr == nil || !strings.Contains(serr.Error(), "certificate") {
		t.Fatalf("a node with another secret was accepted (server error %v)", serr)
	}
}

// Embedded nodes form their routes over TLS only: the route port answers
// a plaintext route with nothing, and a TLS client holding the cluster's
// authority gets the server's INFO inside TLS.
func TestRoutesSpeakOnlyTLS(t *testing.T) {
	nodes := startNodes(t, "tls", 2)
	deadline := time.Now().Add(30 * time.Second)
	for nodes[0].Server().NumRoutes() == 0 || nodes[1].Server().NumRoutes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the two nodes never formed a route")
		}
		time.Sleep(20 * time.Millisecond)
	}
	plain, err := net.DialTimeout("tcp", nodes[0].RouteAddr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	plain.SetDeadline(time.Now().Add(20 * time.Second))
	plain.Write([]byte("CONNECT {\"user\":\"claudemesh\"}\r\nPING\r\n"))
	got, _ := io.ReadAll(plain)
	if strings.Contains(string(got), "INFO") || strings.Contains(string(got), "PONG") {
		t.Fatalf("a plaintext route connection was answered: %q", got)
	}

	cfg, err := routeTLSConfig(testSecret, "tls", "probe")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", nodes[0].RouteAddr(), cfg)
	if err != nil {
		t.Fatalf("a TLS client with the cluster's authority: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	info, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(info, "INFO ") {
		t.Fatalf("no INFO inside TLS: %q %v", info, err)
	}
}
