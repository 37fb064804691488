package daemon

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/testcert"
)

// TestCheckTCP: `daemon up --tcp` is loopback unless --tcp-allow-remote,
// which needs TLS (0.0.0.0 used to be accepted: the local API, with the
// user's identity and decrypted inbox, on every interface, token in clear).
func TestCheckTCP(t *testing.T) {
	for _, tc := range []struct {
		addr      string
		remote    bool
		cert, key string
		ok        bool
	}{
		{"127.0.0.1:7902", false, "", "", true},
		{"[::1]:7902", false, "", "", true},
		{"localhost:7902", false, "", "", true},
		{"0.0.0.0:7902", false, "", "", false},
		{":7902", false, "", "", false},
		{"[::]:7902", false, "", "", false},
		{"192.0.2.7:7902", false, "", "", false},
		{"0.0.0.0:7902", true, "", "", false},
		{"0.0.0.0:7902", true, "c.pem", "", false},
		{"0.0.0.0:7902", true, "c.pem", "k.pem", true},
		{"", true, "", "", false},
		{"no-port", false, "", "", false},
	} {
		err := CheckTCP(tc.addr, tc.remote, tc.cert, tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("CheckTCP(%q, remote %v, %q, %q) = %v", tc.addr, tc.remote, tc.cert, tc.key, err)
		}
	}
}

// TestRemoteTCPListener: a daemon refuses to serve a non-loopback --tcp
// without --tcp-allow-remote and TLS; with them it serves HTTPS only, the
// bearer token required, under the daemon's network name.
func TestRemoteTCPListener(t *testing.T) {
	e := newEnv(t)
	d, err := Open(Options{Home: e.homes["alice"], TCP: "0.0.0.0:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("Serve on 0.0.0.0 without --tcp-allow-remote: %v", err)
	}
	d.db.Close()

	cert, key, pool := testcert.SelfSigned(t, "mesh-laptop.example")
	rd := e.daemonWith("alice", Options{TCP: "0.0.0.0:0", TCPAllowRemote: true, TCPTLSCert: cert, TCPTLSKey: key})
	_, port, _ := net.SplitHostPort(*rd.d.tcpAddr.Load())
	token, err := os.ReadFile(localapi.TokenPath(e.homes["alice"]))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "mesh-laptop.example"}}, Timeout: 10 * time.Second}
	get := func(url, bearer string) (int, error) {
		req, _ := http.NewRequest("GET", url, nil)
		req.Host = "mesh-laptop.example:" + port
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if st, err := get("https://127.0.0.1:"+port+"/v1/version", strings.TrimSpace(string(token))); err != nil || st != 200 {
		t.Fatalf("HTTPS with the token: %d %v", st, err)
	}
	if st, err := get("https://127.0.0.1:"+port+"/v1/version", ""); err != nil || st != 401 {
		t.Fatalf("HTTPS without the token: %d %v", st, err)
	}
	if st, err := get("http://127.0.0.1:"+port+"/v1/version", strings.TrimSpace(string(token))); err == nil && st == 200 {
		t.Fatal("the remote listener answered plain HTTP")
	}
}
