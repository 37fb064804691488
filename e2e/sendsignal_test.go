package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// signalledSend is a `send` subprocess whose stderr is read line by line,
// so a test can wait for the line a signal makes it print.
type signalledSend struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout bytes.Buffer
	lines  chan string // stderr, line by line; closed at EOF
	mu     sync.Mutex
	stderr strings.Builder
}

func startSend(t *testing.T, u *user, args ...string) *signalledSend {
	t.Helper()
	s := &signalledSend{t: t, lines: make(chan string, 64)}
	s.cmd = exec.Command(bin, append([]string{"--home", u.home}, args...)...)
	s.cmd.Env = u.env()
	s.cmd.Stdout = &s.stdout
	errPipe, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill() })
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			s.mu.Lock()
			s.stderr.WriteString(sc.Text() + "\n")
			s.mu.Unlock()
			s.lines <- sc.Text()
		}
	}()
	return s
}

// waitLine waits for a stderr line containing want; it fails the test if
// the process closes stderr (exits) first.
func (s *signalledSend) waitLine(want string) {
	s.t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				s.t.Fatalf("send ended without printing %q; stdout %q, stderr %q", want, s.stdout.String(), s.errText())
			}
			if strings.Contains(l, want) {
				return
			}
		case <-deadline:
			s.t.Fatalf("send did not print %q within 20 s; stderr %q", want, s.errText())
		}
	}
}

func (s *signalledSend) errText() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// wait waits for the process (stderr read to its end first) and returns
// its exit code.
func (s *signalledSend) wait() int {
	s.t.Helper()
	for range s.lines {
	}
	err := s.cmd.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errorsAs(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			s.t.Fatalf("send was killed by %v; stderr %q", ws.Signal(), s.errText())
		}
		return ee.ExitCode()
	default:
		s.t.Fatal(err)
		return -1
	}
}

func errorsAs(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*ee = e
	}
	return ok
}

// TestDaemonSendSaysWhatASignalWaitsFor: a send signalled while the
// daemon has not answered yet (it may wait on the broker: a mesh still
// connecting, a name to look up) says on stderr, at the first signal,
// that it waits for the daemon's answer and that a second Ctrl-C stops
// waiting, then prints the accept when it comes. A second signal stops
// waiting, and the error says the outcome is unknown and how to retry
// without a duplicate (--id). It used to wait silently. A fake daemon on
// the socket holds POST /v1/send and signals the send.
func TestDaemonSendSaysWhatASignalWaitsFor(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := newUser(t, "alice")
	alice.createMesh(b, "Test Mesh", "test")

	for _, second := range []bool{false, true} {
		t.Run(map[bool]string{false: "answered", true: "abandoned"}[second], func(t *testing.T) {
			dir, err := os.MkdirTemp("", "cmsig")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			sock := filepath.Join(dir, "d.sock")
			ln, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(sock, 0o600); err != nil {
				t.Fatal(err)
			}
			sending := make(chan *signalledSend, 1)
			noted, gone := make(chan struct{}), make(chan struct{})
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/v1/send" {
					http.NotFound(w, r)
					return
				}
				var req localapi.SendRequest
				json.NewDecoder(r.Body).Decode(&req)
				(<-sending).cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-noted:
				case <-r.Context().Done():
					close(gone)
					return
				}
				if second {
					<-r.Context().Done() // the second signal: the client is gone
					close(gone)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusAccepted)
				json.NewEncoder(w).Encode(localapi.SendResponse{ClientMessageID: req.ClientMessageID, Mesh: req.Mesh,
					Status: localapi.StatusAccepted, MeshState: "open",
					Target: localapi.Target{Kind: "box", TargetSpec: strings.Repeat("ab", 32), DisplayName: "bob"}})
			})}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })

			u := *alice
			u.useDaemon = true
			u.extraEnv = []string{localapi.EnvSocket + "=" + sock}
			s := startSend(t, &u, "send", "bob", "hello", "--id", "hello-1")
			sending <- s
			s.waitLine("waiting up to 30 s for the daemon's answer, so that the message is neither lost nor sent twice; a second Ctrl-C stops waiting")
			close(noted)
			if second {
				s.cmd.Process.Signal(syscall.SIGTERM)
			}
			code := s.wait()
			if !second {
				if code != 0 || !strings.Contains(s.stdout.String(), "accepted for bob") {
					t.Fatalf("send exited %d; stdout %q, stderr %q: want the accept", code, s.stdout.String(), s.errText())
				}
				return
			}
			<-gone
			errText := s.errText()
			t.Logf("stderr: %s", errText)
			if code != 130 || !strings.Contains(errText, "may or may not have taken message hello-1") ||
				!strings.Contains(errText, "--id hello-1") {
				t.Fatalf("send exited %d; stderr %q: want 130 and an error that says the outcome is unknown and how to retry", code, errText)
			}
		})
	}
}
