package e2e

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestInstallService: on CI the service is refused unless --allow-ci; with
// it, the unit (Linux) names this binary, the home and --foreground, and
// uninstall removes exactly that file. --no-start keeps the test from
// touching the machine's service manager.
func TestInstallService(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd unit is Linux-only; launchd is written on macOS")
	}
	u := newUser(t, "svc")
	fakeHome := t.TempDir()
	u.extraEnv = []string{"HOME=" + fakeHome, "XDG_CONFIG_HOME=" + filepath.Join(fakeHome, ".config"), "CI=true"}
	u.fails(4, "forbidden", "daemon", "install-service")
	units := filepath.Join(fakeHome, ".config", "systemd", "user")
	if _, err := os.Stat(units); err == nil {
		t.Fatal("refused install still wrote the unit")
	}
	var res struct {
		OK   bool   `json:"ok"`
		Path string `json:"path"`
	}
	u.json(&res, "daemon", "install-service", "--allow-ci", "--no-start")
	// Not the default home: a unit of its own, claudemesh-daemon-<8 hex>.service.
	unit := res.Path
	if name := filepath.Base(unit); !res.OK || filepath.Dir(unit) != units || !strings.HasPrefix(name, "claudemesh-daemon-") ||
		len(name) != len("claudemesh-daemon-12345678.service") {
		t.Fatalf("install: %+v", res)
	}
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	body := string(data)
	for _, want := range []string{"ExecStart=" + bin + " --home " + u.home + " daemon up --foreground", "Restart=always", "WantedBy=default.target"} {
		if !strings.Contains(body, want) {
			t.Errorf("unit lacks %q:\n%s", want, body)
		}
	}
	u.ok("daemon", "uninstall-service", "--no-stop")
	if _, err := os.Stat(unit); !os.IsNotExist(err) {
		t.Fatalf("unit still there after uninstall: %v", err)
	}
}

// Each home has its own service (trial13 #7): installing home B's does not
// replace home A's, and A's uninstall removes A's alone. A unit under the
// shared name that an older install wrote for another home is neither
// replaced nor removed by the default home (exit 6), and the home it names
// removes it with its own uninstall.
func TestInstallServicePerHome(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd unit is Linux-only; launchd is written on macOS")
	}
	fakeHome := t.TempDir()
	env := []string{"HOME=" + fakeHome, "XDG_CONFIG_HOME=" + filepath.Join(fakeHome, ".config")}
	install := func(u *user) string {
		t.Helper()
		u.extraEnv = env
		var res struct {
			OK   bool   `json:"ok"`
			Path string `json:"path"`
		}
		u.json(&res, "daemon", "install-service", "--allow-ci", "--no-start")
		data, err := os.ReadFile(res.Path)
		if err != nil || !strings.Contains(string(data), " --home "+u.home+" daemon up") {
			t.Fatalf("%s's unit %s: %v\n%s", u.name, res.Path, err, data)
		}
		return res.Path
	}
	a, b := newUser(t, "a"), newUser(t, "b")
	pa, pb := install(a), install(b)
	if pa == pb {
		t.Fatalf("two homes share the unit %s", pa)
	}
	a.ok("daemon", "uninstall-service", "--no-stop")
	if _, err := os.Stat(pa); !os.IsNotExist(err) {
		t.Fatalf("a's unit still there: %v", err)
	}
	if data, err := os.ReadFile(pb); err != nil || !strings.Contains(string(data), b.home) {
		t.Fatalf("a's uninstall touched b's unit: %v %s", err, data)
	}
	// b's unit under the shared name, as an older install wrote it.
	shared := filepath.Join(fakeHome, ".config", "systemd", "user", "claudemesh-daemon.service")
	legacy := "[Service]\nExecStart=/usr/bin/claudemesh --home " + b.home + " daemon up --foreground\n"
	if err := os.WriteFile(shared, []byte(legacy), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newUser(t, "d")
	d.home, d.extraEnv = filepath.Join(fakeHome, ".claudemesh"), env
	d.fails(6, "installed_for_another_home", "daemon", "install-service", "--allow-ci", "--no-start")
	d.fails(6, "installed_for_another_home", "daemon", "uninstall-service", "--no-stop")
	if data, _ := os.ReadFile(shared); string(data) != legacy {
		t.Fatalf("the default home changed b's shared unit:\n%s", data)
	}
	b.ok("daemon", "uninstall-service", "--no-stop")
	for _, p := range []string{pb, shared} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("b's uninstall left %s: %v", p, err)
		}
	}
}
