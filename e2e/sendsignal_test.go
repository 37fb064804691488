package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

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
// without a duplicate (--id with --strict, so that the retry goes through
// the daemon too). It used to wait silently. A fake daemon on
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
				!strings.Contains(errText, "--id hello-1 --strict") {
				t.Fatalf("send exited %d; stderr %q: want 130 and an error that says the outcome is unknown and how to retry", code, errText)
			}
		})
	}
}

// TestDirectSendWaitsForTheAckAfterASignal: `send --no-daemon` signalled
// while the broker's ack is on its way keeps waiting for it (saying so on
// stderr) and prints the result; a second signal stops waiting, and the
// error names the message's id, to check it with and to retry with
// --id on the same direct path (--no-daemon), where the broker never takes it twice. It used to give up at the first signal, the
// message sent or not. A websocket proxy in front of the broker holds
// what the broker says after the send frame, and signals the sender.
//
// In "closing", the ack comes after the first signal and the proxy never
// answers send's close frame but signals send again when it sees one:
// send, interrupted with the ack in hand, must print it and not wait for
// the broker's close (it drops the connection). It used to wait up to a
// second for the close frame with the default handling back, and the
// second Ctrl-C then killed it without a word.
func TestDirectSendWaitsForTheAckAfterASignal(t *testing.T) {
	t.Parallel()
	ln, b := brokerBehindListener(t)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: b.addr})
	// sender, when set, is signalled when its send frame has gone to the
	// broker; the broker's answers are then held until release closes.
	var sender atomic.Pointer[signalledSend]
	var release atomic.Pointer[chan struct{}]
	// closing, when set, is closed when the sender's close frame comes,
	// which is then not answered until the test ends.
	var closing atomic.Pointer[chan struct{}]
	testDone := make(chan struct{})
	t.Cleanup(func() { close(testDone) })
	// drop, when set, makes the proxy forward a send frame and then drop
	// the sender's connection without the broker's answer.
	var drop atomic.Bool
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			rp.ServeHTTP(w, r)
			return
		}
		bc, _, err := websocket.DefaultDialer.Dial("ws://"+b.addr+r.URL.RequestURI(), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer bc.Close()
		cc, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer cc.Close()
		answerClose := cc.CloseHandler()
		cc.SetCloseHandler(func(code int, text string) error {
			if ch := closing.Swap(nil); ch != nil {
				close(*ch)
				<-testDone
				return nil
			}
			return answerClose(code, text)
		})
		var hold atomic.Pointer[chan struct{}]
		go func() {
			defer cc.Close()
			for {
				mt, data, err := bc.ReadMessage()
				if err != nil {
					return
				}
				if h := hold.Load(); h != nil {
					<-*h
				}
				if cc.WriteMessage(mt, data) != nil {
					return
				}
			}
		}()
		for {
			mt, data, err := cc.ReadMessage()
			if err != nil {
				return
			}
			var f struct{ Type string }
			json.Unmarshal(data, &f)
			s := sender.Load()
			if f.Type == "send" && s != nil {
				hold.Store(release.Load())
			}
			if bc.WriteMessage(mt, data) != nil {
				return
			}
			if f.Type == "send" && drop.Load() {
				return
			}
			if f.Type == "send" && s != nil {
				s.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	users := setupMesh(t, b, "alice", "bob")
	alice := users[0]
	for _, mode := range []string{"answered", "abandoned", "closing", "waiting"} {
		second := mode == "abandoned"
		t.Run(mode, func(t *testing.T) {
			rel := make(chan struct{})
			release.Store(&rel)
			body := "hello " + map[string]string{"answered": "once", "abandoned": "twice", "closing": "thrice", "waiting": "four times"}[mode]
			args := []string{"send", "bob", body}
			if mode == "waiting" {
				args = append(args, "--wait")
			}
			s := startSend(t, alice, args...)
			sender.Store(s)
			s.waitLine("waiting up to 30 s for the broker's answer, so that the message is neither lost nor sent twice; a second Ctrl-C stops waiting")
			exited := make(chan struct{})
			if second {
				s.cmd.Process.Signal(syscall.SIGTERM)
			} else {
				if mode == "closing" {
					closed := make(chan struct{})
					closing.Store(&closed)
					go func() {
						select {
						case <-closed:
							s.cmd.Process.Signal(syscall.SIGTERM)
						case <-exited:
						}
					}()
				}
				close(rel)
			}
			code := s.wait()
			close(exited)
			closing.Store(nil)
			sender.Store(nil)
			if mode == "waiting" {
				// --wait asked for the delivery, which the signal kept
				// send from waiting for: the ack, then the error
				// interrupted. It used to exit 0, which with --wait
				// says delivered.
				if code != 130 || !strings.Contains(s.stdout.String(), "queued for bob") ||
					!strings.Contains(s.errText(), "but send stopped waiting for its delivery (interrupted)") {
					t.Fatalf("send --wait exited %d; stdout %q, stderr %q: want 130, the ack and the interrupted wait", code, s.stdout.String(), s.errText())
				}
				return
			}
			if !second {
				if code != 0 || !strings.Contains(s.stdout.String(), "queued for bob") {
					t.Fatalf("send exited %d; stdout %q, stderr %q: want the ack", code, s.stdout.String(), s.errText())
				}
				return
			}
			close(rel)
			errText := s.errText()
			i := strings.Index(errText, "stopped waiting for the broker's answer: message ")
			if code != 130 || i < 0 {
				t.Fatalf("send exited %d; stderr %q: want 130 and an error that says the outcome is unknown", code, errText)
			}
			id, _, _ := strings.Cut(errText[i+len("stopped waiting for the broker's answer: message "):], " ")
			if !strings.Contains(errText, "--id "+id+" --no-daemon") {
				t.Fatalf("stderr %q does not say to retry with --id %s on the direct path", errText, id)
			}
			// For a DM, what makes a retry differ is the text; and the
			// id is only remembered for the broker's window.
			if flat := strings.Join(strings.Fields(errText), " "); !strings.Contains(flat, "(another text)") ||
				!strings.Contains(flat, "within the broker's idempotency window (--queue-ttl + 24 h: 8 days by default)") {
				t.Fatalf("stderr %q does not say what makes a DM retry differ (another text) and within which window", errText)
			}
			// What it suggests: the message is found by its id, and a
			// retry with it on the direct path sends nothing twice: it is
			// answered with the first messageId as a duplicate. (It used
			// to be refused as idempotency_key_reused, exit 6: the retry
			// was sealed afresh.)
			// The send frame reached the broker before the signal; its
			// commit may still be under way when send has given up.
			eventually(t, 20*time.Second, "message status of "+id, func() bool {
				r := alice.run("message", "status", id)
				return r.code == 0 && strings.Contains(r.stdout, "to bob")
			})
			var st struct {
				MessageID string `json:"messageId"`
			}
			alice.json(&st, "message", "status", id)
			var again sendOut
			alice.json(&again, "send", "bob", body, "--id", id, "--no-daemon")
			if !again.OK || !again.Duplicate || again.MessageID != st.MessageID || again.ClientMessageID != id {
				t.Fatalf("retry with --id %s: %+v, want a duplicate of %s", id, again, st.MessageID)
			}
			t.Logf("stderr: %s", errText)
		})
	}
	var got []string
	for _, r := range users[1].inbox() {
		got = append(got, r.body())
	}
	if strings.Join(got, "|") != "hello once|hello twice|hello thrice|hello four times" {
		t.Fatalf("bob's inbox: %q, want each message once", got)
	}

	// A topic post whose connection is lost before the broker's answer
	// says the post may or may not have been taken, how to look for it
	// and how to post it again on the same path without a duplicate. It
	// used to print the bare connection error and "try again".
	alice.ok("topic", "create", "ops")
	drop.Store(true)
	s := startSend(t, alice, "send", "#ops", "lost post")
	code := s.wait()
	drop.Store(false)
	errText := s.errText()
	i := strings.Index(errText, "no answer from the broker, so message ")
	if code != 8 || i < 0 || !strings.Contains(errText, "may or may not have been accepted") ||
		!strings.Contains(errText, "claudemesh --home "+alice.home+" topic history ops") {
		t.Fatalf("send #ops exited %d; stderr %q: want 8 (outcome_unknown) and an error that says the outcome is unknown", code, errText)
	}
	id, _, _ := strings.Cut(errText[i+len("no answer from the broker, so message "):], " ")
	if !strings.Contains(errText, "--id "+id+" --no-daemon") {
		t.Fatalf("stderr %q does not say to retry with --id %s on the direct path", errText, id)
	}
	// A post's retry also differs after a key rotation, and the broker
	// remembers a post's id as long as it keeps the post.
	if flat := strings.Join(strings.Fields(errText), " "); !strings.Contains(flat, "(another text, or the topic's key rotated since)") ||
		!strings.Contains(flat, "as long as it keeps the post: --topic-retention, by default forever") || strings.Contains(flat, "recipients now") {
		t.Fatalf("stderr %q does not give a topic post's retry terms (key rotation, the post's retention)", errText)
	}
	t.Logf("stderr: %s", errText)
}

// TestSendWaitJSONSaysTheWaitWasInterrupted: `send --wait --json`
// signalled while it waits for the delivery (the message taken, the
// recipient offline) prints its one JSON document: the error interrupted
// (exit 130) naming the message by messageId and clientMessageId and
// saying how far it got, as a wait_timeout does. It used to exit 130 with
// nothing on stdout, through the daemon and on the direct path alike.
// CLAUDEMESH_DEBUG=1 makes send log on stderr when the wait starts.
func TestSendWaitJSONSaysTheWaitWasInterrupted(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	for _, daemon := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "daemon"}[daemon], func(t *testing.T) {
			u := *users[0]
			u.useDaemon = daemon
			u.extraEnv = []string{"CLAUDEMESH_DEBUG=1"}
			id := map[bool]string{false: "wait-direct", true: "wait-daemon"}[daemon]
			s := startSend(t, &u, "send", "bob", "unread", "--id", id, "--wait", "--json")
			s.waitLine("waiting for the delivery")
			s.cmd.Process.Signal(syscall.SIGTERM)
			code := s.wait()
			var doc struct {
				OK    bool `json:"ok"`
				Error struct {
					Code            string `json:"code"`
					Message         string `json:"message"`
					MessageID       string `json:"messageId"`
					ClientMessageID string `json:"clientMessageId"`
				} `json:"error"`
			}
			if err := json.Unmarshal(s.stdout.Bytes(), &doc); err != nil || code != 130 {
				t.Fatalf("send --wait --json exited %d with stdout %q (%v); stderr %q: want 130 and one JSON document", code, s.stdout.String(), err, s.errText())
			}
			e := doc.Error
			if doc.OK || e.Code != "interrupted" || e.ClientMessageID != id ||
				!strings.Contains(e.Message, "but send stopped waiting for its delivery (interrupted)") {
				t.Fatalf("send --wait --json printed %s", s.stdout.String())
			}
			if !daemon && (e.MessageID == "" || !strings.Contains(e.Message, "message "+e.MessageID+" was queued")) {
				t.Fatalf("the direct send's document does not say it was queued, with its messageId: %s", s.stdout.String())
			}
			t.Logf("stdout: %s", s.stdout.String())
		})
	}
}

// TestSendWaitInterruptedWhileTheBrokerIsDown: `send --wait` through the
// daemon, signalled while the broker is away, says the message stays in
// the daemon's outbox, not that the broker holds it (it used to say "in
// the outbox and at the broker" whatever the broker had taken).
func TestSendWaitInterruptedWhileTheBrokerIsDown(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	b.stop()
	u := *alice
	u.extraEnv = append(slices.Clone(u.extraEnv), "CLAUDEMESH_DEBUG=1")
	s := startSend(t, &u, "send", bob.pubkey, "while the broker is away", "--wait")
	s.waitLine("waiting for the delivery")
	s.cmd.Process.Signal(syscall.SIGTERM)
	if code := s.wait(); code != 130 || !strings.Contains(s.errText(), "stays in the daemon's outbox") || strings.Contains(s.errText(), "at the broker") {
		t.Fatalf("send --wait exited %d; stderr %q: want 130 and that it stays in the daemon's outbox", code, s.errText())
	}
}

// TestSendWaitLostDaemonIsNotNothingQueued is trial 13 #15: the daemon
// dying while `send --wait` waits for the delivery of a message it had
// accepted is no "nothing could be queued" (exit 5, which a script
// retries, sending the message twice): the message is in the daemon's
// outbox, so send says so and exits 7 (not confirmed delivered).
func TestSendWaitLostDaemonIsNotNothingQueued(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob") // bob has no daemon: offline
	alice, bob := users[0], users[1]
	pid := alice.startDaemon()
	alice.waitDaemonOpen()
	u := *alice
	u.extraEnv = append(slices.Clone(u.extraEnv), "CLAUDEMESH_DEBUG=1")
	s := startSend(t, &u, "send", bob.pubkey, "the daemon dies while I wait", "--wait", "--wait-timeout", "30s")
	s.waitLine("waiting for the delivery")
	killAndWait(pid)
	code := s.wait()
	if code != 7 || !strings.Contains(s.errText(), "stopped answering") || !strings.Contains(s.errText(), "message status") {
		t.Fatalf("send --wait exited %d; stderr %q: want 7, saying the daemon stopped answering and how to check", code, s.errText())
	}
}

// TestSendWhoseDaemonDiesInTheAcceptIsOutcomeUnknown (a new user's trial): a
// daemon that dies after it made the message durable and before it
// answered leaves send not knowing whether the message was queued. That
// is exit 8 (outcome_unknown), not 5 ("nothing could be queued", which a
// script retries, sending the message twice), and the text is the user's,
// not the HTTP client's (`Post "http://localhost/v1/send": unexpected
// EOF`). The message was in fact taken: the restarted daemon sends it.
func TestSendWhoseDaemonDiesInTheAcceptIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.extraEnv = []string{"CLAUDEMESH_FAILPOINT=accept-kill"}
	alice.startDaemon()
	alice.waitDaemonOpen()
	r := alice.run("send", "bob", "taken or not")
	if r.code != 8 || !strings.Contains(r.stderr, "the daemon stopped answering after it was handed the message") ||
		!strings.Contains(r.stderr, "may or may not have taken it") || !strings.Contains(r.stderr, "daemon outbox list") {
		t.Fatalf("send whose daemon died: %s; want exit 8, saying the outcome is unknown and how to check", r)
	}
	for _, internal := range []string{"http://", "Post ", "EOF", "daemon unreachable"} {
		if strings.Contains(r.stderr, internal) {
			t.Fatalf("send's error carries the HTTP client's text %q: %s", internal, r)
		}
	}
	alice.extraEnv = nil
	alice.startDaemon()
	alice.waitDaemonOpen()
	eventually(t, 20*time.Second, "the message in bob's inbox", func() bool {
		rows := bob.inbox()
		return len(rows) == 1 && rows[0].body() == "taken or not"
	})
}
