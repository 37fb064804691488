package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"claudemesh/daemon/localapi"
)

// tcpStatus is the --tcp listener for daemon status, nil without one.
func (d *Daemon) tcpStatus() *localapi.TCPStatus {
	addr := d.tcpAddr.Load()
	if addr == nil {
		return nil
	}
	return &localapi.TCPStatus{Addr: *addr, TokenFile: localapi.TokenPath(d.home), TLS: d.opts.TCPTLSCert != ""}
}

// The optional TCP listener of the local API (`daemon up --tcp ADDR`). It
// serves the same API as the socket, with the bearer token of
// daemon/local-token required. Whoever gets through it acts with the
// user's mesh identity and reads their decrypted inbox, so it listens on
// loopback only, unless --tcp-allow-remote, which also requires TLS
// (--tcp-tls-cert/--tcp-tls-key): the token must never cross a network in
// the clear.

// CheckTCP validates --tcp and its companions before anything listens.
func CheckTCP(addr string, allowRemote bool, cert, key string) error {
	if addr == "" {
		if allowRemote || cert != "" || key != "" {
			return errors.New("--tcp-allow-remote, --tcp-tls-cert and --tcp-tls-key go with --tcp ADDR")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("--tcp %q: want HOST:PORT, for example 127.0.0.1:7902", addr)
	}
	if (cert == "") != (key == "") {
		return errors.New("--tcp-tls-cert and --tcp-tls-key go together")
	}
	if isLoopbackHost(host) {
		return nil
	}
	if !allowRemote {
		return fmt.Errorf("--tcp %s is not a loopback address: the local API gives whoever reaches it your mesh identity and your decrypted inbox, so it is refused unless you pass --tcp-allow-remote (with --tcp-tls-cert and --tcp-tls-key)", addr)
	}
	if cert == "" {
		return fmt.Errorf("--tcp %s with --tcp-allow-remote needs TLS (--tcp-tls-cert and --tcp-tls-key): the bearer token must not cross the network in the clear", addr)
	}
	return nil
}

// isLoopbackHost is true for localhost and loopback IP literals; an empty
// host (":7902", every interface) is not loopback.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// remoteHost lets a request through the API's loopback-Host check on a
// remote TCP listener, which --tcp-allow-remote asked for: there the bearer
// token over TLS is what authenticates, and the Host is the daemon's
// network name. A loopback listener keeps the check (a web page can reach
// a loopback port; it cannot send the token).
func remoteHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Host = "localhost"
		next.ServeHTTP(w, r)
	})
}
