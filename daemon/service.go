package daemon

import (
	"claudemesh/web"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
)

// The default home's unit and agent keep the names every home once shared,
// so an install from before stays its own; every other home has its own
// (serviceNames), and a file that runs the daemon of another home is never
// overwritten or removed (serviceHome).
const (
	systemdUnitName = "claudemesh-daemon.service"
	launchdLabel    = "com.claudemesh.daemon"
)

// serviceNames is home's systemd unit name and launchd label: the shared
// ones for the default home (~/.claudemesh), else names with 8 hex digits
// of the SHA-256 of the home's path.
func serviceNames(home string) (unit, label string) {
	if def, err := config.DefaultHome(); err == nil && filepath.Clean(def) == filepath.Clean(home) {
		return systemdUnitName, launchdLabel
	}
	sum := sha256.Sum256([]byte(filepath.Clean(home)))
	h := hex.EncodeToString(sum[:4])
	return "claudemesh-daemon-" + h + ".service", launchdLabel + "." + h
}

// plistArg is the argument after flag in a launchd agent file we wrote
// (ProgramArguments), unescaped.
func plistArg(body, flag string) (string, bool) {
	_, rest, ok := strings.Cut(body, "<string>"+flag+"</string><string>")
	if !ok {
		return "", false
	}
	v, _, _ := strings.Cut(rest, "</string>")
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(v), true
}

// unquoteExecArg undoes the quoting of an ExecStart argument we wrote
// (systemdQuote).
func unquoteExecArg(v string) string {
	if len(v) >= 2 && strings.HasPrefix(v, `"`) && strings.HasSuffix(v, `"`) {
		v = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(v[1 : len(v)-1])
	}
	return strings.NewReplacer("%%", "%", "$$", "$").Replace(v)
}

// serviceHome is the home whose daemon a unit or agent file we wrote runs
// ("" when body names none).
func serviceHome(body string) string {
	if h, ok := plistArg(body, "--home"); ok {
		return h
	}
	for _, line := range strings.Split(body, "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		_, rest, ok := strings.Cut(cmd, " --home ")
		if !ok {
			return ""
		}
		h, _, _ := strings.Cut(rest, " daemon up --foreground") // --web ADDR may follow
		return unquoteExecArg(h)
	}
	return ""
}

// serviceWeb is the --web address a service file this command wrote gives
// its daemon, "" for none.
func serviceWeb(body string) string {
	if w, ok := plistArg(body, "--web"); ok {
		return w
	}
	for _, line := range strings.Split(body, "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		_, w, ok := strings.Cut(cmd, " daemon up --foreground --web ")
		if !ok {
			return ""
		}
		return unquoteExecArg(w)
	}
	return ""
}

// anotherHomesService is the refusal to replace or remove the service file
// at path, which runs the daemon of other, not home.
func anotherHomesService(path, other, home, verb string) error {
	e := cliui.Errorf("installed_for_another_home",
		"%s runs the daemon of another home, %s: not %s for %s", path, other, verb, home).
		WithHint("that home's service is its own: manage it with claudemesh --home " + other + " daemon install-service / uninstall-service")
	return e
}

// onCI reports whether we run under a CI system, where installing a user
// service would outlive the job and touch a machine we do not own.
func onCI() bool {
	for _, k := range []string{"CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL"} {
		if v := os.Getenv(k); v != "" && v != "false" && v != "0" {
			return true
		}
	}
	return false
}

// servicePath is where home's unit (Linux) or agent (macOS) file goes.
func servicePath(home string) (string, error) {
	unit, label := serviceNames(home)
	return servicePathOf(unit, label)
}

func servicePathOf(unit, label string) (string, error) {
	userHome, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	if runtime.GOOS == "darwin" {
		return filepath.Join(userHome, "Library", "LaunchAgents", label+".plist"), nil
	}
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		cfg = filepath.Join(userHome, ".config")
	}
	return filepath.Join(cfg, "systemd", "user", unit), nil
}

// systemdUnit runs the daemon in the foreground under the user manager,
// restarting it whatever way it exits.
func systemdUnit(exe, home, web string) string {
	extra := ""
	if web != "" {
		extra = " --web " + systemdQuote(web)
	}
	return fmt.Sprintf(`[Unit]
Description=claudemesh daemon (broker connections, outbox, inbox, local API)
After=network-online.target

[Service]
Type=simple
ExecStart=%s --home %s daemon up --foreground%s
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=10

[Install]
WantedBy=default.target
`, systemdQuote(exe), systemdQuote(home), extra)
}

// systemdQuote writes s as one ExecStart argument: quoted when it holds
// white space, quotes or backslashes, and with '%' and '$' doubled, which
// systemd expands (specifiers such as %h, and environment variables)
// even inside quotes: a home named "100%done" ran another home's daemon.
func systemdQuote(s string) string {
	s = strings.NewReplacer("%", "%%", "$", "$$").Replace(s)
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func launchdPlist(exe, home, label, web string) string {
	esc := func(s string) string {
		return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
	}
	webArgs := ""
	if web != "" {
		webArgs = "<string>--web</string><string>" + esc(web) + "</string>"
	}
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>%s</string>
  <key>ProgramArguments</key>
  <array>
    <string>%s</string><string>--home</string><string>%s</string>
    <string>daemon</string><string>up</string><string>--foreground</string>%s
  </array>
  <key>KeepAlive</key><true/>
  <key>RunAtLoad</key><true/>
  <key>StandardOutPath</key><string>%s</string>
  <key>StandardErrorPath</key><string>%s</string>
</dict>
</plist>
`, esc(label), esc(exe), esc(home), webArgs, esc(filepath.Join(home, "daemon", "daemon.log")), esc(filepath.Join(home, "daemon", "daemon.log")))
}

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install-service",
		Usage: "run the daemon as a user service (systemd on Linux, launchd on macOS)",
		Description: cliui.WithExamples(
			"Writes ~/.config/systemd/user/claudemesh-daemon.service (Restart=always) or\n"+
				"~/Library/LaunchAgents/com.claudemesh.daemon.plist (KeepAlive) and starts it. That is the\n"+
				"default home's; another --home gets its own, claudemesh-daemon-<8 hex>.service or\n"+
				"com.claudemesh.daemon.<8 hex>.plist, so each home's daemon runs beside the others. A file that\n"+
				"runs another home's daemon is never replaced (exit 6). Refuses on CI unless --allow-ci. When the\n"+
				"service manager cannot start it, the file stays and this exits 1 (service_not_started).\n"+
				"claudemesh doctor checks the service: installed, for this home and binary, running.",
			"claudemesh daemon install-service",
			"claudemesh --home ~/.claudemesh-work daemon install-service --web 127.0.0.1:7902",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "web", Usage: "the service's daemon serves the chat page on `ADDR`, or off (default: " + web.DefaultAddr + "; each home's daemon needs its own)"},
			&cli.BoolFlag{Name: "allow-ci", Usage: "install even when CI is detected"},
			&cli.BoolFlag{Name: "no-start", Usage: "write the service file without enabling or starting it"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			if onCI() && !c.Bool("allow-ci") {
				return cliui.Errorf("forbidden", "refusing to install a user service on CI").WithHint("pass --allow-ci if you really mean it")
			}
			home, err := homeOf(c)
			if err != nil {
				return err
			}
			webAddr := c.String("web")
			if webAddr != "" && webAddr != "off" {
				if err := web.CheckFlags(webAddr, false, "", ""); err != nil {
					return cliui.UsageErrorf("%v", err)
				}
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			exe, _ = filepath.Abs(exe)
			unit, label := serviceNames(home)
			path, err := servicePathOf(unit, label)
			if err != nil {
				return err
			}
			kept := ""
			if old, err := os.ReadFile(path); err == nil {
				if other := serviceHome(string(old)); other != "" && filepath.Clean(other) != filepath.Clean(home) {
					return anotherHomesService(path, other, home, "replaced")
				}
				if !c.IsSet("web") {
					// Written again (doctor advises it after an update;
					// install runs it) without --web: the page's address
					// the service had stays, or a second home's daemon
					// would compete for the default port.
					if webAddr = serviceWeb(string(old)); webAddr != "" {
						kept = " (kept --web " + webAddr + " from the service it replaces)"
					}
				}
			}
			body := systemdUnit(exe, home, webAddr)
			if runtime.GOOS == "darwin" {
				body = launchdPlist(exe, home, label, webAddr)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := fsutil.WriteFileAtomic(path, []byte(body), 0o644); err != nil {
				return err
			}
			started, why := false, "--no-start"
			if !c.Bool("no-start") {
				if err := startService(path, unit); err != nil {
					why = err.Error()
				} else {
					started, why = true, ""
				}
			}
			if !started && !c.Bool("no-start") {
				// Written but not running: not a success (it exited 0
				// after a ✘ line). The file stays: the service manager
				// may start it at the next login.
				return cliui.Errorf(CodeServiceNotStarted, "the service was written to %s, but the service manager could not start it: %s", path, why).
					WithHint(startHint(path, unit) + ", or run " + config.InvocationWithHome(home) + " daemon up")
			}
			return printResult(cliui.OutFrom(c), map[string]any{"ok": true, "path": path, "started": started}, "service written to %s%s%s", path,
				map[bool]string{true: " and started", false: " (not started: --no-start)"}[started], kept)
		},
	}
}

// CodeServiceNotStarted: install-service wrote the service file, but the
// service manager did not start it (exit 1).
const CodeServiceNotStarted = "service_not_started"

// startHint is how to start the service at path by hand.
func startHint(path, unit string) string {
	if runtime.GOOS == "darwin" {
		return "start it yourself (launchctl load -w " + config.ShellQuote(path) + ")"
	}
	return "start it yourself (systemctl --user enable --now " + unit + ")"
}

func startService(path, unit string) error {
	if runtime.GOOS == "darwin" {
		return runManager("launchctl", "load", "-w", path)
	}
	if err := runManager("systemctl", "--user", "daemon-reload"); err != nil {
		return err
	}
	return runManager("systemctl", "--user", "enable", "--now", unit)
}

// stopService stops home's service when it is installed and running: a
// daemon it keeps (systemd's Restart=always, launchd's KeepAlive) would
// be started again seconds after a SIGTERM, so `daemon down` goes
// through the manager. stopped is the command that stopped it ("" when
// there is no running service); how names the command to run by hand
// when stopping it failed (err).
func stopService(home string) (stopped, how string, err error) {
	path, perr := servicePath(home)
	if perr != nil {
		return "", "", nil
	}
	if _, serr := os.Stat(path); serr != nil {
		return "", "", nil // not installed
	}
	unit, label := serviceNames(home)
	if state, ok := serviceState(unit, label); !ok || state != "active" {
		return "", "", nil // installed, not running (a daemon started by hand is SIGTERMed)
	}
	if runtime.GOOS == "darwin" {
		how = "launchctl unload " + config.ShellQuote(path)
		return how, how, runManager("launchctl", "unload", path)
	}
	how = "systemctl --user stop " + unit
	return how, how, runManager("systemctl", "--user", "stop", unit)
}

// runManager runs a service-manager command; its error says what the
// command said (systemctl's "Failed to connect to bus", …).
func runManager(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(strings.ReplaceAll(string(out), "\n", " ")); msg != "" {
			return fmt.Errorf("%s %s: %s", name, args[len(args)-1], msg)
		}
		return fmt.Errorf("%s %s: %v", name, args[len(args)-1], err)
	}
	return nil
}

func uninstallCommand() *cli.Command {
	return &cli.Command{
		Name:  "uninstall-service",
		Usage: "stop and remove the user service",
		Description: cliui.WithExamples("Stops and removes this home's service (see install-service), never another home's: a file\n"+
			"that runs another home's daemon is left as it is (exit 6). A service this home's install\n"+
			"wrote under the shared name, before each home had its own, is removed too.",
			"claudemesh daemon uninstall-service"),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-stop", Usage: "remove the service file without asking the service manager to stop it"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			home, err := homeOf(c)
			if err != nil {
				return err
			}
			unit, label := serviceNames(home)
			path, err := servicePathOf(unit, label)
			if err != nil {
				return err
			}
			// This home's file, and the shared one when an older
			// install wrote this home's service there.
			type svc struct{ path, unit string }
			var mine []svc
			if data, err := os.ReadFile(path); err == nil {
				if other := serviceHome(string(data)); other != "" && filepath.Clean(other) != filepath.Clean(home) {
					return anotherHomesService(path, other, home, "removed")
				}
				mine = append(mine, svc{path, unit})
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			if unit != systemdUnitName {
				if shared, err := servicePathOf(systemdUnitName, launchdLabel); err == nil {
					if data, err := os.ReadFile(shared); err == nil && filepath.Clean(serviceHome(string(data))) == filepath.Clean(home) {
						mine = append(mine, svc{shared, systemdUnitName})
					}
				}
			}
			if len(mine) == 0 {
				// Nothing of ours to stop: the service manager is not
				// asked about a unit we never wrote.
				return printResult(cliui.OutFrom(c), map[string]any{"ok": true, "removed": false, "path": path}, "%s", "no service was installed")
			}
			manage := !c.Bool("no-stop")
			removed := false
			var lines []string
			for _, sv := range mine {
				if manage && runtime.GOOS == "darwin" {
					exec.Command("launchctl", "unload", "-w", sv.path).Run()
				} else if manage {
					exec.Command("systemctl", "--user", "disable", "--now", sv.unit).Run()
				}
				if os.Remove(sv.path) == nil {
					removed = true
					lines = append(lines, "removed "+sv.path)
				}
			}
			if manage && runtime.GOOS != "darwin" {
				exec.Command("systemctl", "--user", "daemon-reload").Run()
			}
			line := "no service was installed"
			if removed {
				line = strings.Join(lines, "; ")
			}
			return printResult(cliui.OutFrom(c), map[string]any{"ok": true, "removed": removed, "path": mine[0].path}, "%s", line)
		},
	}
}
