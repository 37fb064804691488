package daemon

import (
	"strings"
	"testing"
)

// TestSystemdUnitEscapesSpecifiers (a new user's trial): systemd expands
// '%' specifiers and '$' variables in ExecStart, even inside quotes, so a
// home named "100%done" was written as is and ran the daemon of
// "100<credentials dir>one". Both are doubled now, and reading the unit
// back gives the home and --web as given.
func TestSystemdUnitEscapesSpecifiers(t *testing.T) {
	for _, home := range []string{"/tmp/100%done", "/tmp/a $HOME b", "/tmp/q\"uote\\s%h", "/plain/home"} {
		unit := systemdUnit("/opt/cm%bin/claudemesh", home, "127.0.0.1:80%80")
		var exec string
		for _, line := range strings.Split(unit, "\n") {
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				exec = v
			}
		}
		// Every '%' and '$' of the line is doubled: none stands alone.
		for _, c := range []string{"%", "$"} {
			if strings.Count(strings.ReplaceAll(exec, c+c, ""), c) != 0 {
				t.Errorf("home %q: a lone %s in ExecStart=%s", home, c, exec)
			}
		}
		if !strings.HasPrefix(exec, "/opt/cm%%bin/claudemesh ") {
			t.Errorf("home %q: the executable is not escaped: %s", home, exec)
		}
		if got := serviceExe(unit); got != "/opt/cm%bin/claudemesh" {
			t.Errorf("serviceExe of the unit for %q = %q", home, got)
		}
		if got := serviceHome(unit); got != home {
			t.Errorf("serviceHome of the unit for %q = %q", home, got)
		}
		if got := serviceWeb(unit); got != "127.0.0.1:80%80" {
			t.Errorf("serviceWeb of the unit for %q = %q", home, got)
		}
	}
}
