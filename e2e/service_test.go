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
	unit := filepath.Join(fakeHome, ".config", "systemd", "user", "claudemesh-daemon.service")
	if _, err := os.Stat(unit); err == nil {
		t.Fatal("refused install still wrote the unit")
	}
	var res struct {
		OK   bool   `json:"ok"`
		Path string `json:"path"`
	}
	u.json(&res, "daemon", "install-service", "--allow-ci", "--no-start")
	if !res.OK || res.Path != unit {
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
