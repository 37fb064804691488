//go:build unix

package cliui

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// envSignalChild makes the test binary run signalChild instead of tests.
const envSignalChild = "CLAUDEMESH_TEST_SIGNAL_CHILD"

func TestMain(m *testing.M) {
	switch mode := os.Getenv(envSignalChild); mode {
	case "1", "early", "writer":
		signalChild(mode)
		return
	case "take":
		takeChild()
		return
	case "hold":
		holdChild()
		return
	case "stubborn":
		stubbornChild()
		return
	case "deadline":
		deadlineChild()
		return
	}
	os.Exit(m.Run())
}

// signalChild runs Run with a command that says when its context ends and
// then ignores it, as a command stuck in a system call would. The command
// is ReadOnly, except in mode writer. It says "running" once Run catches
// signals (mode 1), or at once, with Run set to catch them only after an
// hour: a read-only command then never catches them (early), a writer must
// have caught them before it runs (writer).
func signalChild(mode string) {
	caught := make(chan struct{})
	signalsCaught = func() { close(caught) }
	switch mode {
	case "early":
		signalDelay = time.Hour
		signalsCaught = func() { fmt.Println("caught") } // never, or the test fails
		close(caught)
	case "writer":
		signalDelay = time.Hour
	}
	stuck := &cli.Command{
		Name: "stuck",
		Action: func(c *cli.Context) error {
			select {
			case <-caught:
			default:
				if mode == "writer" {
					fmt.Println("not caught before the command ran")
					os.Exit(3)
				}
				<-caught
			}
			fmt.Println("running")
			<-c.Context.Done()
			fmt.Println("cancelled")
			select {} // ignores its context
		},
	}
	if mode != "writer" {
		ReadOnly(stuck)
	}
	app := NewApp("claudemesh", "test", []*cli.Command{stuck})
	os.Exit(Run(app, []string{"claudemesh", "stuck"}, os.Stdout, os.Stderr))
}

// These tests send SIGTERM: Run treats it as it treats SIGINT, and a
// shell without job control starts its background jobs with SIGINT
// ignored, which Go keeps (and restores after signal.Stop), so a SIGINT
// would never kill the child there.

// startSignalChild runs signalChild in mode in a child process and
// returns it with a scanner of the lines it prints.
func startSignalChild(t *testing.T, mode string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envSignalChild+"="+mode)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() }) // a stuck child fails the test
	return cmd, bufio.NewScanner(out)
}

// TestEarlySignalKills: a SIGTERM before Run catches signals (a ReadOnly
// command's first signalDelay) has the default effect: it ends the
// process, and the command's context is never cancelled.
func TestEarlySignalKills(t *testing.T) {
	cmd, lines := startSignalChild(t, "early")
	if !lines.Scan() || lines.Text() != "running" {
		t.Fatalf("child printed %q (%v), want running", lines.Text(), lines.Err())
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if lines.Scan() {
		t.Fatalf("child printed %q after the SIGTERM", lines.Text())
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child ended with %v", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("child ended with %v, not killed by SIGTERM", err)
	}
}

// TestSecondSignalKills: once Run catches signals (a ReadOnly command
// after signalDelay, any other before it runs), the first SIGTERM cancels
// the command's context; Run then restores the default handling, so a
// second one kills a command that ignores its context.
func TestSecondSignalKills(t *testing.T) {
	for _, mode := range []string{"1", "writer"} {
		t.Run(mode, func(t *testing.T) { testSecondSignalKills(t, mode) })
	}
}

func testSecondSignalKills(t *testing.T, mode string) {
	cmd, lines := startSignalChild(t, mode)
	expectLine(t, lines, "running")
	cmd.Process.Signal(syscall.SIGTERM)
	expectLine(t, lines, "cancelled")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// The handler is restored right after the context ends; until then a
	// SIGTERM is still caught. Repeat until one kills the child.
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
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
				t.Fatalf("child ended with %v, not killed by SIGTERM", err)
			}
			return
		case <-tick.C:
			cmd.Process.Signal(syscall.SIGTERM)
		case <-deadline:
			t.Fatal("a second SIGTERM did not kill the child: its handler was not restored")
		}
	}
}

// takeChild signals itself and at once takes the signals: the signal
// must be seen, either by Run before the take (TakeSignals fails) or on
// the channel after it, whichever way the two race.
func takeChild() {
	cmd := &cli.Command{Name: "take", Action: func(c *cli.Context) error {
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		g, err := TakeSignals(c.Context)
		if err != nil {
			fmt.Println("before")
			return err
		}
		select {
		case <-g.C:
			fmt.Println("taken")
			g.Release(true)
			return c.Context.Err()
		case <-time.After(10 * time.Second):
			fmt.Println("missed")
			return nil
		}
	}}
	app := NewApp("claudemesh", "test", []*cli.Command{cmd})
	os.Exit(Run(app, []string{"claudemesh", "take"}, os.Stdout, os.Stderr))
}

// TestTakeSignalsHasNoGap: a SIGTERM that lands just as a command takes
// the signals is never lost between Run and the command, and the command
// ends interrupted (exit 130) either way. Each child races its own
// signal against its take once.
func TestTakeSignalsHasNoGap(t *testing.T) {
	seen := map[string]int{}
	for range 20 {
		cmd, lines := startSignalChild(t, "take")
		if !lines.Scan() {
			t.Fatalf("child printed nothing (%v)", lines.Err())
		}
		got := lines.Text()
		if got != "before" && got != "taken" {
			t.Fatalf("child printed %q: the signal was lost", got)
		}
		seen[got]++
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != ExitInterrupted {
			t.Fatalf("child (%s) ended with %v, want exit %d", got, err, ExitInterrupted)
		}
	}
	t.Logf("seen by Run before the take / on the channel after it: %v", seen)
}

// holdChild runs Hold with a request that prints "asking" and then waits
// for a line on stdin (its answer) or for its context to end (abandoned).
// Its stderr is its stdout, so the test reads the note in order.
func holdChild() {
	cmd := &cli.Command{Name: "hold", Action: func(c *cli.Context) error {
		err := Hold(c.Context, "waiting for the answer", func(ctx context.Context) error {
			answer := make(chan struct{})
			go func() {
				bufio.NewReader(os.Stdin).ReadString('\n')
				close(answer)
			}()
			fmt.Println("asking")
			select {
			case <-answer:
				fmt.Println("answered")
				return nil
			case <-ctx.Done():
				return Errorf(CodeInterrupted, "abandoned")
			}
		})
		fmt.Printf("context ended: %v\n", c.Context.Err() != nil)
		return err
	}}
	runChildCommand(cmd)
}

// TestHold: the first SIGTERM during Hold prints the note and the
// request goes on (its answer is used: the command returns it and exits
// 0, its context ended so that what follows knows it was interrupted); a
// second one abandons it, and the command's error is printed (exit 130),
// not swallowed as a silent interruption.
func TestHold(t *testing.T) {
	for _, second := range []bool{false, true} {
		t.Run(map[bool]string{false: "answered", true: "abandoned"}[second], func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), envSignalChild+"=hold")
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			time.AfterFunc(10*time.Second, func() { cmd.Process.Kill() }) // a stuck child fails the test
			lines := bufio.NewScanner(out)
			expectLine(t, lines, "asking")
			cmd.Process.Signal(syscall.SIGTERM)
			expectLine(t, lines, "  … waiting for the answer")
			if second {
				cmd.Process.Signal(syscall.SIGTERM)
				expectLine(t, lines, "context ended: true")
				expectLine(t, lines, "  ✘ abandoned")
			} else {
				stdin.Write([]byte("\n"))
				expectLine(t, lines, "answered")
				expectLine(t, lines, "context ended: true")
			}
			err = cmd.Wait()
			if !second {
				// The command returned the answer: a success.
				if err != nil {
					t.Fatalf("child ended with %v, want exit 0", err)
				}
				return
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != ExitInterrupted {
				t.Fatalf("child ended with %v, want exit %d", err, ExitInterrupted)
			}
		})
	}
}

// stubbornChild runs Hold with a request that prints "asking", and
// "abandoned" when its context ends, and then ignores it, as a request
// stuck in a system call would.
func stubbornChild() {
	cmd := &cli.Command{Name: "stubborn", Action: func(c *cli.Context) error {
		return Hold(c.Context, "waiting for the answer", func(ctx context.Context) error {
			fmt.Println("asking")
			<-ctx.Done()
			fmt.Println("abandoned")
			select {}
		})
	}}
	runChildCommand(cmd)
}

// TestThirdSignalKillsHold: the second SIGTERM during Hold abandons the
// request and gives the signals their default handling back, so a third
// kills a process whose request ignores its context. Hold used to keep
// reading them, and such a process could only be stopped by SIGKILL.
func TestThirdSignalKillsHold(t *testing.T) {
	cmd, lines := startSignalChild(t, "stubborn")
	expectLine(t, lines, "asking")
	cmd.Process.Signal(syscall.SIGTERM)
	expectLine(t, lines, "  … waiting for the answer")
	cmd.Process.Signal(syscall.SIGTERM)
	expectLine(t, lines, "abandoned")
	cmd.Process.Signal(syscall.SIGTERM)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child ended with %v", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("child ended with %v, not killed by the third SIGTERM", err)
	}
}

// deadlineChild runs Hold on a context derived from the command's whose
// deadline has passed (a command's own time limit, as sendTopic's), then
// says whether the command's context ended and what Hold returned, and
// waits for its context to end.
func deadlineChild() {
	cmd := &cli.Command{Name: "deadline", Action: func(c *cli.Context) error {
		ctx, cancel := context.WithDeadline(c.Context, time.Now().Add(-time.Second))
		defer cancel()
		err := Hold(ctx, "waiting for the answer", func(context.Context) error {
			fmt.Println("asked")
			return nil
		})
		var ce *Error
		code := ""
		if errors.As(err, &ce) {
			code = ce.Code
		}
		fmt.Printf("context ended: %v, error %s (deadline %v)\n", c.Context.Err() != nil, code, errors.Is(err, context.DeadlineExceeded))
		<-c.Context.Done()
		fmt.Println("cancelled")
		return c.Context.Err()
	}}
	runChildCommand(cmd)
}

// TestHoldPastDeadlineIsNoSignal: Hold on a derived context past its
// deadline asks nothing and returns the error timeout (the deadline),
// and the command is not interrupted: its context goes on, and a later
// SIGTERM is handled by Run as usual (it cancels the context, exit 130).
// TakeSignals used to take the deadline for a signal: it cancelled the
// command's context and restored the default handling, so the command
// was reported as interrupted and the SIGTERM killed it.
func TestHoldPastDeadlineIsNoSignal(t *testing.T) {
	cmd, lines := startSignalChild(t, "deadline")
	expectLine(t, lines, "context ended: false, error timeout (deadline true)")
	cmd.Process.Signal(syscall.SIGTERM)
	expectLine(t, lines, "cancelled")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitInterrupted {
		t.Fatalf("child ended with %v, want exit %d", err, ExitInterrupted)
	}
}

// expectLine reads the child's next line and fails unless it is want.
func expectLine(t *testing.T, lines *bufio.Scanner, want string) {
	t.Helper()
	if !lines.Scan() || lines.Text() != want {
		t.Fatalf("child printed %q (%v), want %q", lines.Text(), lines.Err(), want)
	}
}

// runChildCommand runs cmd as a child process's whole program, through
// Run, its errors and notes on stdout beside what it prints, and exits.
func runChildCommand(cmd *cli.Command) {
	app := NewApp("claudemesh", "test", []*cli.Command{cmd})
	os.Exit(Run(app, []string{"claudemesh", "--no-color", cmd.Name}, os.Stdout, os.Stdout))
}

// TestHoldAsksOnItsCallersGoroutine: Hold runs ask on the command's own
// goroutine, and the signals that come meanwhile are handled by Run's
// watcher, which goes on across the hold: Hold used to stop the watcher,
// start a goroutine for ask and wait for its answer, and start a new
// watcher after it, each a goroutine hand-off (a thread started, in a
// process as short as a send) on a warm send's path.
func TestHoldAsksOnItsCallersGoroutine(t *testing.T) {
	var stack string
	cmd := &cli.Command{Name: "ask", Action: func(c *cli.Context) error {
		return Hold(c.Context, "waiting for the answer", func(context.Context) error {
			buf := make([]byte, 64<<10)
			stack = string(buf[:runtime.Stack(buf, false)])
			return nil
		})
	}}
	app := NewApp("claudemesh", "test", []*cli.Command{cmd})
	if code := Run(app, []string{"claudemesh", "ask"}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(stack, "cliui.Run(") || !strings.Contains(stack, "cliui.Hold(") {
		t.Fatalf("ask ran on a goroutine of its own, not the command's:\n%s", stack)
	}
}
