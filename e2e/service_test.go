package e2e

import (
	"encoding/json"
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

// Each home has its own service (a new user's trial): installing home B's does not
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

// fakeSystemctl puts a systemctl on PATH that records its calls and
// answers as a user manager would: enable fails with "Failed to connect
// to bus" unless up, is-active says active or inactive.
type fakeSystemctl struct {
	dir string
}

func newFakeSystemctl(t *testing.T) *fakeSystemctl {
	f := &fakeSystemctl{dir: t.TempDir()}
	script := `#!/bin/sh
echo "$*" >> "` + f.dir + `/calls"
case "$*" in
*is-active*) if [ -e "` + f.dir + `/up" ]; then echo active; exit 0; fi; echo inactive; exit 3;;
*enable*) if [ -e "` + f.dir + `/up" ]; then exit 0; fi; echo "Failed to connect to bus: No medium found" >&2; exit 1;;
*" stop "*) if [ -e "` + f.dir + `/stopfail" ]; then echo "Failed to stop: Access denied" >&2; exit 1; fi; exit 0;;
esac
exit 0
`
	if err := os.WriteFile(filepath.Join(f.dir, "systemctl"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeSystemctl) setUp(t *testing.T, up bool) {
	p := filepath.Join(f.dir, "up")
	if up {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		os.Remove(p)
	}
}

// TestInstallServiceNotStartedFailsAndDoctorChecksIt: install-service
// printed "✘ could not start it with the service manager" and exited 0;
// it exits 1 (service_not_started) now, the file written. `doctor` did
// not look at the service at all: it says whether this home's is
// installed, runs this binary, and runs.
func TestInstallServiceNotStartedFailsAndDoctorChecksIt(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("the systemd unit is Linux-only")
	}
	fake := newFakeSystemctl(t)
	fakeHome := t.TempDir()
	u := newUser(t, "svc")
	u.extraEnv = []string{"HOME=" + fakeHome, "XDG_CONFIG_HOME=" + filepath.Join(fakeHome, ".config"),
		"PATH=" + fake.dir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"CI=", "GITHUB_ACTIONS=", "GITLAB_CI=", "BUILDKITE=", "JENKINS_URL="}
	service := func() doctorCheck {
		t.Helper()
		r := u.run("doctor", "--json")
		var rep struct {
			Checks []doctorCheck `json:"checks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("doctor --json: %v\n%s", err, r)
		}
		for _, c := range rep.Checks {
			if c.Name == "daemon service" {
				return c
			}
		}
		t.Fatalf("doctor has no daemon service check: %s", r)
		return doctorCheck{}
	}
	if c := service(); c.Status != "ok" || !strings.Contains(c.Message, "not installed") {
		t.Fatalf("no service: %+v", c)
	}

	e := u.fails(1, "service_not_started", "daemon", "install-service")
	if !strings.Contains(e.Error.Message, "Failed to connect to bus") || !strings.Contains(e.Error.Message, "the service was written to ") {
		t.Fatalf("not started: %+v", e)
	}
	units, _ := filepath.Glob(filepath.Join(fakeHome, ".config", "systemd", "user", "claudemesh-daemon-*.service"))
	if len(units) != 1 {
		t.Fatalf("unit files: %v", units)
	}
	if r := u.run("daemon", "install-service"); r.code != 1 || !strings.Contains(r.stderr, "could not start it") || !strings.Contains(r.stderr, "systemctl --user enable --now") {
		t.Fatalf("human: %s", r)
	}
	if c := service(); c.Status != "warn" || !strings.Contains(c.Message, "installed but not running") || !strings.Contains(c.Message, "inactive") {
		t.Fatalf("not running: %+v", c)
	}
	// install reports it as a warning of its step, not as skipped.
	// Its advice holds in a home that has joined nothing yet (daemon up
	// refuses such a home).
	if r := u.ok("install", "--no-hooks", "--no-skill"); !strings.Contains(r.stdout, "⚠ daemon service (claudemesh daemon install-service): not started: ") ||
		!strings.Contains(r.stdout, "run claudemesh --home "+u.home+" daemon up once a mesh is joined") {
		t.Fatalf("install: %s", r)
	}

	fake.setUp(t, true)
	var res struct {
		OK      bool   `json:"ok"`
		Path    string `json:"path"`
		Started bool   `json:"started"`
	}
	u.json(&res, "daemon", "install-service")
	if !res.OK || !res.Started || res.Path != units[0] {
		t.Fatalf("started: %+v", res)
	}
	if c := service(); c.Status != "ok" || !strings.Contains(c.Message, "is running this home's daemon") {
		t.Fatalf("running: %+v", c)
	}
	// A unit whose binary is gone cannot start.
	body, _ := os.ReadFile(units[0])
	gone := strings.Replace(string(body), "ExecStart="+bin, "ExecStart=/nonexistent/claudemesh", 1)
	if err := os.WriteFile(units[0], []byte(gone), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := service(); c.Status != "fail" || !strings.Contains(c.Message, "/nonexistent/claudemesh, which does not exist") {
		t.Fatalf("binary gone: %+v", c)
	}
}
