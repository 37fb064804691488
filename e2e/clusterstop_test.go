package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterNodeWaitingToFormStops: a cluster node whose other nodes
// are down waits (up to a minute) for its cluster to form; SIGTERM or
// SIGINT meanwhile stops it cleanly, and its ports are free again. It
// ignored them for the whole minute: `systemctl stop` hung, and a node
// started again with the right key found its ports held by the old one.
func TestClusterNodeWaitingToFormStops(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			data := filepath.Join(t.TempDir(), "n1")
			if err := os.MkdirAll(data, 0o700); err != nil {
				t.Fatal(err)
			}
			listen, route := freeAddr(t), freeAddr(t)
			routes := []string{route, freeAddr(t), freeAddr(t)} // the other two never start
			b := spawnBroker(t, data, listen, "--cluster", "lone", "--node", "n1",
				"--cluster-listen", route, "--cluster-routes", strings.Join(routes, ","))
			// Its route port answers: the embedded server is up and the
			// node waits for the others.
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				if c, err := net.Dial("tcp", route); err == nil {
					c.Close()
					break
				}
				select {
				case <-b.done:
					t.Fatalf("the node exited before it listened on its route port:\n%s", b.log())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("the node never listened on its route port %s:\n%s", route, b.log())
				}
			}
			b.cmd.Process.Signal(sig)
			select {
			case <-b.done:
			case <-time.After(20 * time.Second): // it waits 60 s for the cluster
				t.Fatalf("the node did not stop on %v while it waited for its cluster:\n%s", sig, b.log())
			}
			if code := b.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(b.log(), "stopped before it started") {
				t.Fatalf("exit %d after %v; log:\n%s", code, sig, b.log())
			}
			for _, addr := range []string{listen, route} {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("%s still held after the node stopped: %v", addr, err)
				}
				ln.Close()
			}
		})
	}
}
