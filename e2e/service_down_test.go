package e2e

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestDaemonDownStopsItsService (review): with the user service installed
// and running, `daemon down` SIGTERMed the daemon and said it stayed down,
// and the service (Restart=always) started it again two seconds later.
// Now it stops the service through its manager (here a recording
// systemctl), and says so; when the manager refuses, it says the service
// starts the daemon again and how to stop it.
func TestDaemonDownStopsItsService(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd unit is Linux-only")
	}
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0]
	fake := newFakeSystemctl(t)
	fake.setUp(t, true)
	fakeHome := t.TempDir()
	alice.extraEnv = append(alice.extraEnv, "HOME="+fakeHome, "XDG_CONFIG_HOME="+filepath.Join(fakeHome, ".config"),
		"PATH="+fake.dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"CI=", "GITHUB_ACTIONS=", "GITLAB_CI=", "BUILDKITE=", "JENKINS_URL=")
	alice.ok("daemon", "install-service")
	units, _ := filepath.Glob(filepath.Join(fakeHome, ".config", "systemd", "user", "claudemesh-daemon-*.service"))
	if len(units) != 1 {
		t.Fatalf("unit files: %v", units)
	}
	unit := filepath.Base(units[0])

	alice.startDaemon()
	r := alice.ok("daemon", "down")
	if !strings.Contains(r.stdout, "with its service (systemctl --user stop "+unit+")") {
		t.Fatalf("daemon down with a running service: %s", r)
	}
	calls, _ := os.ReadFile(filepath.Join(fake.dir, "calls"))
	if !strings.Contains(string(calls), "--user stop "+unit) {
		t.Fatalf("systemctl was not asked to stop %s: %s", unit, calls)
	}
	if st := alice.daemonStatus(); st.Running {
		t.Fatalf("a daemon runs after daemon down: %+v", st)
	}

	// The manager refuses: the daemon is stopped, and the text does not
	// promise that it stays down.
	if err := os.WriteFile(filepath.Join(fake.dir, "stopfail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	alice.startDaemon()
	r = alice.ok("daemon", "down")
	out := r.stdout + r.stderr
	if strings.Contains(out, "stays down") || !strings.Contains(out, "its service starts it again") || !strings.Contains(out, "Access denied") ||
		!strings.Contains(out, "systemctl --user stop "+unit) {
		t.Fatalf("daemon down when the service cannot be stopped: %s", r)
	}
}
