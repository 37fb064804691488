//go:build unix

package claudecode

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/internal/cliui"
)

// envInstallChild makes the test binary run installChild instead of tests.
const envInstallChild = "CLAUDEMESH_TEST_INSTALL_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(envInstallChild) == "1" {
		installChild()
		return
	}
	if os.Getenv(envLaunchChild) == "1" {
		launchChild()
		return
	}
	os.Exit(m.Run())
}

// installChild runs `claudemesh install --no-service` through cliui.Run, as
// the binary does, and sends itself a SIGTERM as soon as install has written
// its first file (~/.claude.json), long before a read-only command would
// catch signals. Run must have caught it: install then sees its context
// cancelled (waited for here) and goes on. A process the SIGTERM kills
// leaves a half-done install behind.
func installChild() {
	var cmd *cli.Command
	for _, c := range Commands() {
		if c.Name == "install" {
			cmd = c
		}
	}
	action := cmd.Action
	var ctxDone <-chan struct{}
	cmd.Action = func(c *cli.Context) error {
		ctxDone = c.Context.Done()
		return action(c)
	}
	signalled := false
	afterSave = func(string) {
		if signalled {
			return
		}
		signalled = true
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		select {
		case <-ctxDone:
		case <-time.After(10 * time.Second):
			fmt.Fprintln(os.Stderr, "the SIGTERM did not cancel the command's context")
			os.Exit(3)
		}
	}
	app := cliui.NewApp("claudemesh", "test", []*cli.Command{cmd})
	os.Exit(cliui.Run(app, []string{"claudemesh", "--home", os.Getenv("CLAUDEMESH_HOME"), "install", "--no-service"}, os.Stdout, os.Stderr))
}

// TestInstallSurvivesEarlySignal: a SIGTERM in install's first
// milliseconds (here: right after it wrote ~/.claude.json) does not leave a
// half-done install. Run catches signals before a state-changing command
// runs, install ignores the cancellation while it writes, and the process
// ends with every file written and install.json recording them, no
// temporary files left.
func TestInstallSurvivesEarlySignal(t *testing.T) {
	dir := t.TempDir()
	home, chome := filepath.Join(dir, "claudemesh"), filepath.Join(dir, "user")
	if err := os.MkdirAll(chome, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envInstallChild+"=1", "CLAUDEMESH_HOME="+home,
		"CLAUDEMESH_CLAUDE_HOME="+chome, "HOME="+chome)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() }) // a stuck child fails the test
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("install was killed by %v after writing ~/.claude.json (stderr %q)", ws.Signal(), stderr.String())
		}
		if code := ee.ExitCode(); code != cliui.ExitInterrupted {
			t.Fatalf("install exited %d, want 0 or %d (stderr %q)", code, cliui.ExitInterrupted, stderr.String())
		}
	} else if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		filepath.Join(chome, ".claude.json"),
		filepath.Join(chome, ".claude", "settings.json"),
		skillPath(chome),
		statePath(home),
	} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("half installed: %v", err)
		}
	}
	st := loadState(home)
	for _, want := range []string{".claude.json#mcpServers", ".claude/settings.json"} {
		found := false
		for _, c := range st.Created {
			found = found || strings.HasPrefix(c, want)
		}
		if !found {
			t.Errorf("install.json does not record %s: %v", want, st.Created)
		}
	}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}
