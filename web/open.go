package web

import (
	"os"
	"os/exec"
	"runtime"
)

// openBrowser tries to open url in the desktop's browser, and reports
// whether it started an opener. Without a desktop (no DISPLAY or
// WAYLAND_DISPLAY on Linux, an SSH session) it does nothing: the URL is
// printed either way.
func openBrowser(url string) bool {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		if os.Getenv("SSH_CONNECTION") != "" {
			return false
		}
		cmd = exec.Command("open", url)
	case "linux", "freebsd", "openbsd", "netbsd":
		if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
			return false
		}
		path, err := exec.LookPath("xdg-open")
		if err != nil {
			return false
		}
		cmd = exec.Command(path, url)
	default:
		return false
	}
	// The opener must not tie up our output: a caller reading it would
	// otherwise wait for the browser.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Start(); err != nil {
		return false
	}
	go cmd.Wait()
	return true
}
