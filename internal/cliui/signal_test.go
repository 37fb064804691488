//go:build unix

package cliui

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// envSignalChild makes the test binary run signalChild instead of tests.
const envSignalChild = "CLAUDEMESH_TEST_SIGNAL_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(envSignalChild) == "1" {
		signalChild()
		return
	}
	os.Exit(m.Run())
}

// signalChild runs Run with a command that says when its context ends and
// then ignores it, as a command stuck in a system call would.
func signalChild() {
	app := NewApp("claudemesh", "test", []*cli.Command{{
		Name: "stuck",
		Action: func(c *cli.Context) error {
			fmt.Println("running")
			<-c.Context.Done()
			fmt.Println("cancelled")
			select {}
		},
	}})
	os.Exit(Run(app, []string{"claudemesh", "stuck"}, os.Stdout, os.Stderr))
}

// TestSecondSignalKills: the first SIGINT cancels the command's context;
// Run then restores the default handling, so a second one kills a command
// that ignores its context.
func TestSecondSignalKills(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envSignalChild+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(out)
	expect := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("child printed %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	expect("running")
	cmd.Process.Signal(os.Interrupt)
	expect("cancelled")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The handler is restored right after the context ends; until then a
	// SIGINT is still caught. Repeat until one kills the child.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child ended with %v", err)
			}
			ws, ok := ee.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
				t.Fatalf("child ended with %v, not killed by SIGINT", err)
			}
			return
		case <-tick.C:
			cmd.Process.Signal(os.Interrupt)
		case <-deadline:
			t.Fatal("a second SIGINT did not kill the child: its handler was not restored")
		}
	}
}
