//go:build !linux

package broker

import (
	"syscall"
	"time"
)

// deferAcceptControl does nothing outside Linux: --defer-accept is the
// kernel's TCP_DEFER_ACCEPT (deferaccept_linux.go), and the broker's own
// limits (--max-conns-per-ip, --http-read-timeout) still bound a stranger's
// idle connections there.
func deferAcceptControl(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
