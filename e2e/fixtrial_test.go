package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// bystander is another program of the user's: a `sleep` whose pid a
// stale daemon.pid names. notSignalled kills it and reports whether the
// first signal it got was ours (SIGKILL): a fatal signal sent earlier
// (a SIGTERM from `daemon down`) decides the exit status when it is
// sent, so this tells without waiting whether anything signalled it.
type bystander struct {
	t   *testing.T
	cmd *exec.Cmd
}

func startBystander(t *testing.T) *bystander {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &bystander{t: t, cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return b
}

func (b *bystander) pid() int { return b.cmd.Process.Pid }

func (b *bystander) notSignalled() bool {
	b.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Wait()
	ws, ok := b.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		b.t.Logf("bystander: %v", b.cmd.ProcessState)
		return false
	}
	if ws.Signal() != syscall.SIGKILL {
		b.t.Logf("bystander got %v", ws.Signal())
		return false
	}
	return true
}

// TestDaemonDownLeavesAStalePIDAlone: a daemon.pid left by a daemon that
// was killed -9 names whatever program has that pid now; `daemon down`
// sent it SIGTERM and said "daemon stopped". It now signals only a
// process proven to be this home's daemon, removes the stale file, and
// says so; a daemon that cannot be reached on its socket, or is stopped
// (SIGSTOP), is still stopped, whatever the pid file says.
func TestDaemonDownLeavesAStalePIDAlone(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	pidFile := filepath.Join(alice.home, "daemon", "daemon.pid")

	// No daemon; the pid file names another program.
	alice.startDaemon()
	alice.ok("daemon", "down")
	other := startBystander(t)
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.pid())+"\n"), 0o600)
	var down struct {
		WasRunning bool `json:"wasRunning"`
		StalePID   int  `json:"stalePid"`
		PID        int  `json:"pid"`
	}
	alice.json(&down, "daemon", "down")
	if down.WasRunning || down.PID != 0 || down.StalePID != other.pid() {
		t.Errorf("daemon down over a stale pid file: %+v", down)
	}
	if _, err := os.Stat(pidFile); err == nil {
		t.Errorf("the stale pid file is still there")
	}
	if r := alice.ok("daemon", "down"); !strings.Contains(r.stdout, "daemon not running") || strings.Contains(r.stdout, "stopped") {
		t.Errorf("second daemon down: %s", r)
	}
	if !other.notSignalled() {
		t.Fatalf("daemon down signalled pid %d, which is not a daemon", other.pid())
	}
	// Once more, with the text a user sees.
	other = startBystander(t)
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.pid())+"\n"), 0o600)
	r := alice.ok("daemon", "down")
	if want := "daemon not running (removed a stale daemon.pid naming pid " + strconv.Itoa(other.pid()) + ": pid " + strconv.Itoa(other.pid()) + " is another program now, left alone)"; !strings.Contains(r.stdout, want) {
		t.Errorf("daemon down says %q, want %q", r.stdout, want)
	}
	if !other.notSignalled() {
		t.Fatalf("daemon down signalled pid %d, which is not a daemon", other.pid())
	}

	// A daemon whose socket was removed, and whose pid file names
	// another program: the daemon (daemon.db's lock holder) is stopped,
	// the program is left alone.
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	other = startBystander(t)
	os.WriteFile(pidFile, []byte(strconv.Itoa(other.pid())+"\n"), 0o600)
	os.Remove(filepath.Join(alice.home, "daemon", "daemon.sock"))
	alice.json(&down, "daemon", "down")
	if !down.WasRunning || down.PID != pid {
		t.Errorf("daemon down of an unreachable daemon: %+v (daemon pid %d)", down, pid)
	}
	waitExit(t, pid)
	if !other.notSignalled() {
		t.Fatalf("daemon down signalled pid %d, which is not a daemon", other.pid())
	}

	// A stopped daemon (SIGSTOP) ends too: it gets the TERM once
	// continued.
	pid = alice.startDaemon()
	alice.waitDaemonOpen()
	syscall.Kill(pid, syscall.SIGSTOP)
	alice.json(&down, "daemon", "down")
	if !down.WasRunning || down.PID != pid {
		t.Errorf("daemon down of a stopped daemon: %+v (daemon pid %d)", down, pid)
	}
	waitExit(t, pid)
}
