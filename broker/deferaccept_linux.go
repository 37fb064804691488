package broker

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// deferAcceptControl sets TCP_DEFER_ACCEPT on the listening socket: the
// kernel keeps a connection that has sent no data out of the accept queue,
// answering its final handshake ACK with SYN-ACK retransmissions, for
// about d (rounded up to whole seconds, then to the retransmission
// schedule: 1, 3, 7, 15 … s), and hands it over once data arrives or the
// time is up. Linux counts the bare ACKs it dropped so in the
// TCPDeferAcceptDrop counter of /proc/net/netstat (`nstat -az
// TcpExtTCPDeferAcceptDrop`).
func deferAcceptControl(d time.Duration) func(network, address string, c syscall.RawConn) error {
	secs := int((d + time.Second - 1) / time.Second)
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, secs)
		}); err != nil {
			return err
		}
		return serr
	}
}
