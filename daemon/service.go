package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
)

const (
	systemdUnitName = "claudemesh-daemon.service"
	launchdLabel    = "com.claudemesh.daemon"
)

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

// servicePath is where the unit (Linux) or agent (macOS) file goes.
func servicePath() (string, error) {
	userHome, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	if runtime.GOOS == "darwin" {
		return filepath.Join(userHome, "Library", "LaunchAgents", launchdLabel+".plist"), nil
	}
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" {
		cfg = filepath.Join(userHome, ".config")
	}
	return filepath.Join(cfg, "systemd", "user", systemdUnitName), nil
}

// systemdUnit runs the daemon in the foreground under the user manager,
// restarting it whatever way it exits.
func systemdUnit(exe, home string) string {
	return fmt.Sprintf(`[Unit]
Description=claudemesh daemon (broker connections, outbox, inbox, local API)
After=network-online.target

[Service]
Type=simple
ExecStart=%s --home %s daemon up --foreground
Restart=always
RestartSec=2
KillSignal=SIGTERM
TimeoutStopSec=10

[Install]
WantedBy=default.target
`, systemdQuote(exe), systemdQuote(home))
}

func systemdQuote(s string) string {
	if !strings.ContainsAny(s, " \t\"'\\") {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func launchdPlist(exe, home string) string {
	esc := func(s string) string {
		return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
	}
	return fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>%s</string>
  <key>ProgramArguments</key>
  <array>
    <string>%s</string><string>--home</string><string>%s</string>
    <string>daemon</string><string>up</string><string>--foreground</string>
  </array>
  <key>KeepAlive</key><true/>
  <key>RunAtLoad</key><true/>
  <key>StandardOutPath</key><string>%s</string>
  <key>StandardErrorPath</key><string>%s</string>
</dict>
</plist>
`, launchdLabel, esc(exe), esc(home), esc(filepath.Join(home, "daemon", "daemon.log")), esc(filepath.Join(home, "daemon", "daemon.log")))
}

func installCommand() *cli.Command {
	return &cli.Command{
		Name:  "install-service",
		Usage: "run the daemon as a user service (systemd on Linux, launchd on macOS)",
		Description: cliui.WithExamples(
			"Writes ~/.config/systemd/user/claudemesh-daemon.service (Restart=always) or\n"+
				"~/Library/LaunchAgents/com.claudemesh.daemon.plist (KeepAlive) and starts it.\n"+
				"Refuses on CI unless --allow-ci.",
			"claudemesh daemon install-service",
		),
		Flags: []cli.Flag{
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
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			exe, _ = filepath.Abs(exe)
			path, err := servicePath()
			if err != nil {
				return err
			}
			body := systemdUnit(exe, home)
			if runtime.GOOS == "darwin" {
				body = launchdPlist(exe, home)
			}
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			if err := fsutil.WriteFileAtomic(path, []byte(body), 0o644); err != nil {
				return err
			}
			started, why := false, "--no-start"
			if !c.Bool("no-start") {
				if err := startService(path); err != nil {
					why = err.Error()
				} else {
					started, why = true, ""
				}
			}
			out := cliui.OutFrom(c)
			if out.JSONMode() {
				res := map[string]any{"ok": true, "path": path, "started": started}
				if !started {
					res["startError"] = why
				}
				return out.JSON(res)
			}
			out.Resultf("service written to %s", path)
			if !started && !c.Bool("no-start") {
				out.Warn("could not start it with the service manager: "+why, "start it yourself, or run claudemesh daemon up")
			}
			return nil
		},
	}
}

func startService(path string) error {
	if runtime.GOOS == "darwin" {
		return runManager("launchctl", "load", "-w", path)
	}
	if err := runManager("systemctl", "--user", "daemon-reload"); err != nil {
		return err
	}
	return runManager("systemctl", "--user", "enable", "--now", systemdUnitName)
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
		Name:        "uninstall-service",
		Usage:       "stop and remove the user service",
		Description: cliui.WithExamples("", "claudemesh daemon uninstall-service"),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-stop", Usage: "remove the service file without asking the service manager to stop it"},
		},
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			path, err := servicePath()
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
				// Nothing of ours to stop: the service manager is not
				// asked about a unit we never wrote.
				return printResult(cliui.OutFrom(c), map[string]any{"ok": true, "removed": false, "path": path}, "%s", "no service was installed")
			}
			manage := !c.Bool("no-stop")
			if manage && runtime.GOOS == "darwin" {
				exec.Command("launchctl", "unload", "-w", path).Run()
			} else if manage {
				exec.Command("systemctl", "--user", "disable", "--now", systemdUnitName).Run()
			}
			removed := os.Remove(path) == nil
			if manage && runtime.GOOS != "darwin" {
				exec.Command("systemctl", "--user", "daemon-reload").Run()
			}
			line := "no service was installed"
			if removed {
				line = "removed " + path
			}
			return printResult(cliui.OutFrom(c), map[string]any{"ok": true, "removed": removed, "path": path}, "%s", line)
		},
	}
}
