package bench

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// noExitSleep stops a -race binary from sleeping a second before it exits
// (the race runtime's atexit_sleep_ms, there so that racing goroutines
// get reported), which would make every send process take a second.
const noExitSleep = "GORACE=atexit_sleep_ms=0"

// daemonTestConfig is a small --via-daemon run of this test binary acting
// as claudemesh (see TestMain): built with -race when the tests are, which
// is why the numbers only have to be plausible, never fast.
func daemonTestConfig() Config {
	return Config{ViaDaemon: true, Sends: 5, Accepts: 50, Clients: 4, Payload: DefaultDaemonPayload,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1", noExitSleep}}
}

// checkGone asserts that the daemon's process and its temporary home are
// gone once RunDaemon returned.
func checkGone(t *testing.T, pid int, home string) {
	t.Helper()
	if pid <= 0 {
		t.Fatal("the daemon was never reported up")
	}
	if alive(pid, 0) {
		t.Errorf("daemon pid %d still runs after RunDaemon returned", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if _, err := os.Stat(home); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the daemon's temporary home %s is still there (%v)", home, err)
	}
}

// TestViaDaemon runs all three measurements end to end: send processes
// through the daemon and without it, then concurrent accepts that must
// all reach the recipient; the daemon is gone afterwards.
func TestViaDaemon(t *testing.T) {
	cfg := daemonTestConfig()
	var pid int
	var home string
	cfg.onDaemonUp = func(p int, h string) { pid, home = p, h }
	var warnings []string
	cfg.Warn = func(m string) {
		if !strings.Contains(m, "built with -race") { // expected of a test binary
			warnings = append(warnings, m)
		}
	}
	res, err := RunDaemon(testContext(t), cfg)
	checkGone(t, pid, home)
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	for name, l := range map[string]Percentiles{"warm": res.WarmSendMs, "cold": res.ColdSendMs, "accept": res.AcceptMs} {
		if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s latency not ordered and positive: %+v", name, l)
		}
	}
	if res.Accepted != 50 || res.Refused != 0 || res.AcceptPerSec <= 0 {
		t.Errorf("accepted %d, refused %d (%s), %.1f/s", res.Accepted, res.Refused, res.FirstRefusal, res.AcceptPerSec)
	}
	if res.Delivered != 50 || res.DeliveredPct != 100 || res.DrainSec <= 0 || res.DrainSec < res.DrainTailSec {
		t.Errorf("delivered %d (%.2f %%), drain %.3f s, tail %.3f s", res.Delivered, res.DeliveredPct, res.DrainSec, res.DrainTailSec)
	}
	// 5 measured and 1 unmeasured send per path.
	if res.SendsExpected != 12 || res.SendsDelivered != 12 || res.Undecryptable != 0 {
		t.Errorf("send processes: %d of %d arrived, %d undecryptable", res.SendsDelivered, res.SendsExpected, res.Undecryptable)
	}
	if res.DaemonPID != pid || res.BrokerPID == 0 {
		t.Errorf("pids: daemon %d (up reported %d), broker %d", res.DaemonPID, pid, res.BrokerPID)
	}
	if err := syscall.Kill(res.BrokerPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child broker %d still exists after RunDaemon (kill 0: %v)", res.BrokerPID, err)
	}
}

// TestViaDaemonCancelled cancels the run as soon as the daemon is up (what
// Ctrl-C does): RunDaemon returns the cancellation and the daemon is
// stopped all the same.
func TestViaDaemonCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(testContext(t))
	defer cancel()
	cfg := daemonTestConfig()
	var pid int
	var home string
	cfg.onDaemonUp = func(p int, h string) { pid, home = p, h; cancel() }
	_, err := RunDaemon(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("RunDaemon after cancellation: %v", err)
	}
	checkGone(t, pid, home)
}

// TestCommandJSONViaDaemon checks that `bench --via-daemon --json` prints
// exactly the documented fields.
func TestCommandJSONViaDaemon(t *testing.T) {
	t.Setenv("GORACE", "atexit_sleep_ms=0") // the executable is this test binary
	doc, keys, text := benchJSON(t, "--via-daemon", "--sends", "2", "--accepts", "20", "--clients", "2")
	want := []string{"acceptMs", "acceptPerSec", "coldSendMs", "delivered", "deliveredPct", "drainSec", "schemaVersion", "warmSendMs"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	if doc["schemaVersion"] != 1.0 || doc["delivered"] != 20.0 || doc["deliveredPct"] != 100.0 {
		t.Errorf("document: %s", text)
	}
	for _, k := range []string{"warmSendMs", "coldSendMs", "acceptMs"} {
		l, _ := doc[k].(map[string]any)
		if len(l) != 3 || l["p50"] == nil || l["p99"] == nil || l["max"] == nil {
			t.Errorf("%s = %v", k, doc[k])
		}
	}
}
