//go:build unix

package claudecode

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
)

// envLaunchChild makes the test binary run launchChild instead of tests.
const envLaunchChild = "CLAUDEMESH_TEST_LAUNCH_CHILD"

// launchChild runs `claudemesh launch` through cliui.Run, as the binary
// does, against a daemon of its own on $CLAUDEMESH_DAEMON_SOCK that
// sends the process a SIGTERM while it registers the session, and
// answers only once Run has seen it (the command's context ended). It
// prints "deregistered" when launch deregisters the session.
func launchChild() {
	var cmd *cli.Command
	for _, c := range Commands() {
		if c.Name == "launch" {
			cmd = c
		}
	}
	action := cmd.Action
	ctxDone := make(chan (<-chan struct{}), 1)
	cmd.Action = func(c *cli.Context) error {
		ctxDone <- c.Context.Done()
		return action(c)
	}
	ln, err := net.Listen("unix", os.Getenv(localapi.EnvSocket))
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	os.Chmod(os.Getenv(localapi.EnvSocket), 0o600)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/sessions/register":
			var reg localapi.SessionRegister
			json.NewDecoder(r.Body).Decode(&reg)
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
			select {
			case <-<-ctxDone:
			case <-time.After(10 * time.Second):
				fmt.Println("the SIGTERM did not end the command's context")
				os.Exit(3)
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(localapi.Session{SessionID: reg.SessionID, Mesh: reg.Mesh, DisplayName: reg.DisplayName, PID: reg.PID})
		case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/sessions/"):
			fmt.Println("deregistered")
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(ln)
	app := cliui.NewApp("claudemesh", "test", []*cli.Command{cmd})
	os.Exit(cliui.Run(app, []string{"claudemesh", "--home", os.Getenv("CLAUDEMESH_HOME"), "launch"}, os.Stdout, os.Stderr))
}

// TestLaunchSignalWhileRegistering: a SIGTERM while launch registers its
// session ends launch (exit 130) without starting claude and without
// printing the session line (it used to print "✔ claudemesh: … is
// session …" for a session it then tore down); the session is
// deregistered and its token file removed.
func TestLaunchSignalWhileRegistering(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := config.Update(home, func(c *config.Config) error {
		c.Upsert(config.Mesh{MeshID: "m1", Slug: "acme", Name: "Acme", DisplayName: "alice", Role: "owner",
			BrokerURL: "ws://127.0.0.1:1/ws"})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sockDir, err := os.MkdirTemp("", "cmlaunch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	started := filepath.Join(dir, "claude-started")
	claude := filepath.Join(dir, "claude")
	if err := os.WriteFile(claude, []byte("#!/bin/sh\ntouch "+started+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envLaunchChild+"=1", "CLAUDEMESH_HOME="+home, EnvClaudeBin+"="+claude,
		localapi.EnvSocket+"="+filepath.Join(sockDir, "d.sock"), "NO_COLOR=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() }) // a stuck child fails the test
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != cliui.ExitInterrupted {
		t.Fatalf("launch ended with %v, want exit %d; stdout %q, stderr %q", err, cliui.ExitInterrupted, stdout.String(), stderr.String())
	}
	if strings.Contains(stderr.String(), "is session") {
		t.Errorf("launch printed the session line for a session it tore down: %q", stderr.String())
	}
	if _, err := os.Stat(started); err == nil {
		t.Error("launch started claude after the SIGTERM")
	}
	if !strings.Contains(stdout.String(), "deregistered") {
		t.Errorf("launch did not deregister the session: stdout %q", stdout.String())
	}
	if left, _ := filepath.Glob(filepath.Join(home, "sessions", "acme", "*")); len(left) > 0 {
		t.Errorf("token files left: %v", left)
	}
}
