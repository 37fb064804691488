package daemon

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"claudemesh/client/config"
	"claudemesh/internal/doctor"
)

// DoctorChecks are the daemon's checks of `claudemesh doctor`: this home's
// user service (install-service) — installed, for this home and this
// binary, and running.
func DoctorChecks() []doctor.Check {
	return []doctor.Check{{Name: "daemon service", Run: checkService}}
}

func checkService(e *doctor.Env) []doctor.Result {
	const name = "daemon service"
	res := func(status, msg, fix string) []doctor.Result {
		return []doctor.Result{{Name: name, Status: status, Message: msg, Fix: fix}}
	}
	inv := config.InvocationWithHome(e.Home)
	unit, label := serviceNames(e.Home)
	path, err := servicePathOf(unit, label)
	if err != nil {
		return res(doctor.Warn, "cannot tell where the service file would be: "+err.Error(), "")
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && unit != systemdUnitName {
		// An install from before each home had its own wrote this
		// home's service under the shared name.
		if shared, serr := servicePathOf(systemdUnitName, launchdLabel); serr == nil {
			if d, rerr := os.ReadFile(shared); rerr == nil && filepath.Clean(serviceHome(string(d))) == filepath.Clean(e.Home) {
				path, unit, label, data, err = shared, systemdUnitName, launchdLabel, d, nil
			}
		}
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return res(doctor.OK, "not installed (the CLI and claude start the daemon when they need it; "+inv+" daemon install-service runs it at login)", "")
	case err != nil:
		return res(doctor.Warn, "cannot read "+path+": "+err.Error(), "")
	}
	body := string(data)
	if other := serviceHome(body); other != "" && filepath.Clean(other) != filepath.Clean(e.Home) {
		return res(doctor.Warn, path+" runs the daemon of another home, "+other+"; this home has no service",
			"claudemesh --home "+config.ShellQuote(other)+" daemon uninstall-service if that home is gone, then "+inv+" daemon install-service")
	}
	if exe := serviceExe(body); exe != "" {
		real, rerr := filepath.EvalSymlinks(exe)
		switch {
		case rerr != nil:
			return res(doctor.Fail, path+" runs "+exe+", which does not exist: the service cannot start", inv+" daemon install-service (writes it again for this binary)")
		case e.Self != "" && real != e.Self:
			return res(doctor.Warn, path+" runs "+exe+", not this binary ("+e.Self+")", inv+" daemon install-service (writes it again for this binary)")
		}
	}
	state, ok := serviceState(unit, label)
	switch {
	case ok && state == "active":
		return res(doctor.OK, unit+" is running this home's daemon ("+path+")", "")
	case ok:
		return res(doctor.Warn, path+" is installed but not running (the service manager says: "+state+")", startHint(path, unit)+", or "+inv+" daemon install-service")
	}
	return res(doctor.Warn, path+" is installed; the service manager cannot be asked whether it runs: "+state, "")
}

// serviceExe is the binary a unit or agent file we wrote runs ("" when
// body names none).
func serviceExe(body string) string {
	if _, rest, ok := strings.Cut(body, "<key>ProgramArguments</key>"); ok {
		if _, rest, ok = strings.Cut(rest, "<string>"); ok {
			exe, _, _ := strings.Cut(rest, "</string>")
			return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(exe)
		}
		return ""
	}
	for _, line := range strings.Split(body, "\n") {
		cmd, ok := strings.CutPrefix(line, "ExecStart=")
		if !ok {
			continue
		}
		exe, _, ok := strings.Cut(cmd, " --home ")
		if !ok {
			return ""
		}
		return unquoteExecArg(exe)
	}
	return ""
}

// serviceState asks the service manager about unit (label on macOS):
// "active" when it runs, else its word for the state; ok false when it
// could not be asked (the text says why).
func serviceState(unit, label string) (state string, ok bool) {
	if runtime.GOOS == "darwin" {
		out, err := exec.Command("launchctl", "list", label).CombinedOutput()
		if err != nil {
			if _, isExit := err.(*exec.ExitError); isExit {
				return "not loaded", true
			}
			return err.Error(), false
		}
		if strings.Contains(string(out), `"PID" = `) {
			return "active", true
		}
		return "loaded, not running", true
	}
	out, err := exec.Command("systemctl", "--user", "is-active", unit).Output()
	state = strings.TrimSpace(string(out))
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return err.Error(), false // no systemctl
		}
		if state == "" {
			// No state on stdout: it could not ask (no user bus, …).
			if msg := strings.TrimSpace(strings.ReplaceAll(string(ee.Stderr), "\n", " ")); msg != "" {
				return msg, false
			}
			return err.Error(), false
		}
	}
	return state, true
}
