//go:build !linux

package web

import (
	"errors"
	"net/netip"
)

// peerCheckSupported: elsewhere the page cannot tell which local user
// connected (see docs/security.md).
const peerCheckSupported = false

func portHolder(netip.Addr, uint16) (int, bool) { return 0, false }

func peerUID(local, remote netip.AddrPort) (int, bool, error) {
	return 0, false, errors.New("not supported on this system")
}
