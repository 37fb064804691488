package broker

import (
	"net/http"
	"net/netip"
	"strings"
)

// The client address of a request behind reverse proxies
// (--trusted-proxies).
//
// Behind a proxy every request comes from the proxy's address, so the
// per-address limits either throttle every client as one (the proxy's
// address limited) or none (it exempt, --ip-limit-exempt, loopback by
// default). A proxy names the address it got each request from by
// appending it to X-Forwarded-For (nginx's $proxy_add_x_forwarded_for,
// Caddy and most others by default). The broker believes that header
// only from a listed proxy, and reads it from the right: the last entry
// was written by the proxy that connected to the broker, each one before
// it by the proxy before, and the first address that is not itself a
// trusted proxy is the client. Entries further left were written by
// whoever sent them, the client included, and are never read. A request
// from a trusted proxy without a usable entry is the proxy's own.

// clientAddr is the address the per-address limits apply to: the TCP
// peer, or for a trusted proxy's request the client it reports
// (forwarded true).
func (b *Broker) clientAddr(r *http.Request) (addr netip.Addr, forwarded bool) {
	peer := addrOf(r.RemoteAddr)
	if !b.trustedProxy(peer) {
		return peer, false
	}
	values := r.Header.Values("X-Forwarded-For")
	for i := len(values) - 1; i >= 0; i-- {
		entries := strings.Split(values[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a := addrOf(strings.TrimSpace(entries[j]))
			if !a.IsValid() {
				return peer, false // not an address: read no further left
			}
			if !b.trustedProxy(a) {
				return a, true
			}
		}
	}
	return peer, false
}

func (b *Broker) trustedProxy(a netip.Addr) bool {
	for _, p := range b.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
