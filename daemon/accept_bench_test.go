package daemon

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
)

// BenchmarkAccept: 16 concurrent local API clients post 100-byte DMs
// (POST /v1/send → 202) to a warm daemon: the accept path end to end
// (HTTP, idempotency, sealing, the accept journal and its copy into
// daemon.db), as `claudemesh bench --via-daemon`'s accept phase measures
// it, in-process. drain: the mesh is open and the drain sends every row
// to a second daemon, all on the same cores; broker-down: the broker is
// stopped after the mesh opened, so the rows wait in the outbox and only
// the accept path runs. ns/op is per accepted message over all clients.
// commits/op is the sender's daemon.db commits per message, from the
// first accept until every row is delivered (drain) or copied in
// (broker-down): the drain's records share commits (commitLinger);
// pages/op is the pages those commits wrote (bbolt's TxStats.Write).
// journal-syncs/op is the accept journal's fdatasyncs per message (one a
// group: 1 / records per group).
// cpu-µs/op is the CPU time of the whole process (clients, both daemons,
// the broker) per message over the same span: on a shared machine it
// moves far less with the load than ns/op does.
func BenchmarkAccept(b *testing.B) {
	b.Run("drain", func(b *testing.B) { benchAccept(b, false) })
	b.Run("broker-down", func(b *testing.B) { benchAccept(b, true) })
	b.Run("lone", benchAcceptLone)
}

// benchAcceptLone: one client posts its sends one after another, each
// waiting for the 202 before the next, with the drain running (the mesh
// open, every row sent to a second daemon): what a `claudemesh send`
// process waits for at a warm daemon. ns/op is one accept's round trip:
// the HTTP exchange, sealing, and the accept journal's write and
// fdatasync (a lone record, written by the request's own goroutine).
func benchAcceptLone(b *testing.B) {
	e := newEnv(b)
	e.join("bob")
	alice := e.daemon("alice")
	bob := e.daemon("bob")
	alice.waitOpen(b)
	bob.waitOpen(b)
	to := e.meshes["bob"].Pubkey
	msg := strings.Repeat("m", 100)
	api := localapi.New(localapi.SocketPath(e.homes["alice"]))
	cpu0 := processCPU()
	b.ResetTimer()
	for i := range b.N {
		var resp localapi.SendResponse
		status, err := api.Do(context.Background(), "POST", "/v1/send",
			localapi.SendRequest{To: to, Message: msg, ClientMessageID: fmt.Sprintf("lone-%d", i)}, &resp)
		if err != nil || status != 202 {
			b.Fatalf("send: HTTP %d %v", status, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	waitFor(b, time.Minute, "every row delivered", func() bool {
		var st localapi.Status
		alice.api.Do(context.Background(), "GET", "/v1/status", nil, &st)
		return st.Outbox.Delivered >= b.N
	})
}

func benchAccept(b *testing.B, brokerDown bool) {
	e := newEnv(b)
	e.join("bob")
	var commits, syncs atomic.Int64
	alice := e.daemonWith("alice", Options{testOnCommit: func(time.Duration, int) { commits.Add(1) },
		testJournalSync: func(f *os.File) error { syncs.Add(1); return syscall.Fdatasync(int(f.Fd())) }})
	bob := e.daemon("bob")
	alice.waitOpen(b)
	bob.waitOpen(b)
	if brokerDown {
		e.b.Close()
	}
	to := e.meshes["bob"].Pubkey
	msg := strings.Repeat("m", 100)
	var seq atomic.Int64
	b.SetParallelism(8) // × GOMAXPROCS (2 here): 16 clients
	b.ResetTimer()
	commits.Store(0)
	syncs.Store(0)
	pages0 := pagesWritten(alice.d)
	cpu0 := processCPU()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		api := localapi.New(localapi.SocketPath(e.homes["alice"]))
		for pb.Next() {
			i := seq.Add(1)
			var resp localapi.SendResponse
			status, err := api.Do(context.Background(), "POST", "/v1/send",
				localapi.SendRequest{To: to, Message: msg, ClientMessageID: fmt.Sprintf("bench-%d", i)}, &resp)
			if err != nil || status != 202 {
				b.Fatalf("send: HTTP %d %v", status, err)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "accepts/s")
	b.ReportMetric(float64(syncs.Load())/float64(b.N), "journal-syncs/op")
	b.StopTimer()
	waitFor(b, time.Minute, "every row settled", func() bool {
		var st localapi.Status
		alice.api.Do(context.Background(), "GET", "/v1/status", nil, &st)
		if brokerDown {
			return st.Outbox.Pending >= b.N // status waits for the journal's copy
		}
		return st.Outbox.Delivered >= b.N
	})
	b.ReportMetric(float64(commits.Load())/float64(b.N), "commits/op")
	b.ReportMetric(float64(pagesWritten(alice.d)-pages0)/float64(b.N), "pages/op")
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// pagesWritten is the number of page writes daemon.db's committed
// transactions have made so far (bbolt's TxStats.Write: every dirty page
// spilled, the freelist and the meta page).
func pagesWritten(d *Daemon) int64 {
	var n int64
	d.db.View(func(tx *bolt.Tx) error {
		st := tx.DB().Stats()
		n = st.TxStats.GetWrite()
		return nil
	})
	return n
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
