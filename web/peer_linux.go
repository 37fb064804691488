package web

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// peerCheckSupported: on Linux the page knows who is on the other end of
// a local TCP connection.
const peerCheckSupported = true

// tcpTables are the kernel's lists of TCP sockets (tests replace them).
var tcpTables = []string{"/proc/net/tcp", "/proc/net/tcp6"}

// peerUID finds the socket at the other end of a TCP connection on this
// machine, the one whose local address is remote and whose remote address
// is local, in /proc/net/tcp and /proc/net/tcp6, and returns the uid that
// owns it. found is false when no local socket has that address pair: the
// peer is on another host (or already gone). An IPv4 connection accepted
// by an IPv6 socket lists its addresses as ::ffff:a.b.c.d on our side and
// as plain IPv4 on the peer's; both compare equal here.
func peerUID(local, remote netip.AddrPort) (uid int, found bool, err error) {
	// /proc/net/tcp6 has no zones: a link-local address (fe80::1%eth0,
	// with --web-allow-remote) must compare without its own, or no row
	// ever matches and the peer reads as another host's.
	local = netip.AddrPortFrom(local.Addr().Unmap().WithZone(""), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap().WithZone(""), remote.Port())
	var errs []error
	for _, file := range tcpTables {
		uid, found, err := scanTCPTable(file, remote, local)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if found {
			return uid, true, nil
		}
	}
	if len(errs) == len(tcpTables) {
		return 0, false, errors.Join(errs...)
	}
	return 0, false, nil
}

// scanTCPTable looks for the socket with local address src and remote
// address dst in one /proc/net/tcp* file. Sockets no process owns (inode
// 0: TIME_WAIT, or a client that closed at once, FIN_WAIT2) are listed
// with uid 0 and are skipped: they would pass for root's.
func scanTCPTable(file string, src, dst netip.AddrPort) (int, bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] == "06" || fields[9] == "0" {
			continue
		}
		l, ok1 := parseProcAddr(fields[1])
		r, ok2 := parseProcAddr(fields[2])
		if !ok1 || !ok2 || l != src || r != dst {
			continue
		}
		uid, err := strconv.Atoi(fields[7])
		if err != nil {
			return 0, false, err
		}
		return uid, true, nil
	}
	return 0, false, sc.Err()
}

// portHolder finds who listens on port at addr, or at the unspecified
// address of its family (a listener there takes addr's connections too):
// the uid owning that listening socket in /proc/net/tcp{,6}.
func portHolder(addr netip.Addr, port uint16) (uid int, found bool) {
	addr = addr.Unmap().WithZone("")
	for _, file := range tcpTables {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" { // LISTEN
				continue
			}
			l, ok := parseProcAddr(fields[1])
			if !ok || l.Port() != port || l.Addr() != addr && !l.Addr().IsUnspecified() {
				continue
			}
			if u, err := strconv.Atoi(fields[7]); err == nil {
				f.Close()
				return u, true
			}
		}
		f.Close()
	}
	return 0, false
}

// parseProcAddr reads "0100007F:1F90": the address as the kernel prints
// it, 32-bit words in the machine's byte order, then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || len(a) != 8 && len(a) != 32 {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw := make([]byte, len(a)/2)
	for i := 0; i < len(a); i += 8 {
		w, err := strconv.ParseUint(a[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, false
		}
		binary.NativeEndian.PutUint32(raw[i/2:], uint32(w))
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true
}
