// Package e2e drives the real claudemesh binary the way a user does: a
// `claudemesh broker` subprocess with its own data directory and short
// timers, and CLI subprocesses with one --home per identity
// (CLAUDEMESH_NO_DAEMON=1, so the one-shot verbs take the direct path).
// TestMain builds the binary once; every test runs its own broker and homes
// and may run in parallel with the others. Nothing waits by sleeping: tests
// poll observable state (peer list, a follower's output) with deadlines.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is the claudemesh binary built by TestMain; it is written once,
// before any test runs.
var bin string

// minWait is the least a wait for a condition allows (eventually, the
// browser's waitJS and clicks, a follower's line, a presence): the suite
// runs under -race beside other work on two cores, where waits of 5-15 s
// for steps the product takes in milliseconds alone have run out at load
// 13-25. It bounds a hang; it is no promise of speed (timings are logged,
// never asserted).
const minWait = 45 * time.Second

func TestMain(m *testing.M) { os.Exit(buildAndRun(m)) }

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "claudemesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin = filepath.Join(dir, "claudemesh")
	// Built without -race even under `go test -race`: the race detector
	// watches the test process; the subprocesses only need to be fast.
	cmd := exec.Command(goTool(), "build", "-o", bin, ".")
	cmd.Dir = ".." // the module root
	// The binary is built without -race (GOFLAGS may carry it for the test
	// process): the race detector needs cgo, and the subprocesses are the
	// product as users run it.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building claudemesh: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// noteSources opens every source file of the module once per test run.
// The tests exercise a binary built from them in TestMain, a subprocess
// whose inputs `go test` cannot see; files a test opens are part of the
// key of its cached result, so opening them here means a cached pass never
// stands for a binary that was not tested. (TestMain's own opens happen
// before the test log starts, so it is done from the tests' helpers.)
var noteSources = sync.OnceFunc(func() {
	filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if name := d.Name(); name != ".." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			if f, err := os.Open(path); err == nil {
				f.Close()
			}
		}
		return nil
	})
})

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// baseEnv is the environment of every subprocess: the caller's, minus
// anything that would change claudemesh's behaviour, plus no daemon, no
// colour and a short reconnect backoff.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "CLAUDEMESH_") || k == "NO_COLOR" || k == "CLICOLOR_FORCE" || k == "USER" {
			continue
		}
		env = append(env, kv)
	}
	// CLAUDEMESH_WEB=off: daemons of tests never take the chat page's
	// default port (tests that want the page set an address of their own).
	return append(env, "CLAUDEMESH_NO_DAEMON=1", "NO_COLOR=1", "CLAUDEMESH_BACKOFF_MAX=200ms", "CLAUDEMESH_WEB=off")
}

// ---- broker ----

// listening is the broker's "broker listening" log line.
type listening struct {
	Msg          string `json:"msg"`
	Addr         string `json:"addr"`
	PublicURL    string `json:"publicUrl"`
	BrokerPubkey string `json:"brokerPubkey"`
}

type brokerProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	data   string
	addr   string // host:port it listens on
	url    string // ws://…/ws
	pubkey string
	done   chan struct{} // closed once the process has exited
	ready  chan listening

	mu   sync.Mutex
	logs bytes.Buffer
}

// startBroker runs `claudemesh broker` on listen (127.0.0.1:0 for a free
// port) with data as its data directory and test-sized timers, and returns
// once it logged "broker listening". extra flags are appended.
//
// A broker started again on the address it had (a restart the clients
// must find where they pinned it) can find the port taken meanwhile: by a
// parallel test's connection, which the kernel gave it as its source
// port, or listener. It exits with "address already in use" and is
// started again until the port is free (at most portRetryFor).
func startBroker(t *testing.T, data, listen string, extra ...string) *brokerProc {
	t.Helper()
	deadline := time.Now().Add(portRetryFor)
	for attempt := 1; ; attempt++ {
		b := spawnBroker(t, data, listen, extra...)
		if !strings.HasSuffix(listen, ":0") && time.Now().Before(deadline) {
			select {
			case l := <-b.ready:
				b.ready <- l // for waitListening
			case <-b.done:
				if strings.Contains(b.log(), "address already in use") {
					if attempt == 1 {
						t.Logf("the broker's address %s is taken; starting it again until it is free", listen)
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
			case <-time.After(60 * time.Second):
			}
		}
		b.waitListening()
		return b
	}
}

// portRetryFor is how long startBroker tries to start a broker again on a
// fixed address that is taken.
const portRetryFor = 30 * time.Second

// spawnBroker starts `claudemesh broker` like startBroker without waiting
// for it to listen (the nodes of a cluster wait for each other); call
// waitListening.
func spawnBroker(t *testing.T, data, listen string, extra ...string) *brokerProc {
	noteSources()
	t.Helper()
	b := &brokerProc{t: t, data: data, done: make(chan struct{})}
	b.cmd = exec.Command(bin, append([]string{"broker", "--listen", listen, "--metrics-listen", "off", "--data", data,
		"--grace", "500ms", "--redeliver-after", "500ms", "--ping-interval", "1s", "--pong-timeout", "5s"}, extra...)...)
	b.cmd.Env = baseEnv()
	stderr, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan listening, 1)
	b.ready = ready
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			b.mu.Lock()
			b.logs.Write(line)
			b.logs.WriteByte('\n')
			b.mu.Unlock()
			var l listening
			if json.Unmarshal(line, &l) == nil && l.Msg == "broker listening" {
				select {
				case ready <- l:
				default:
				}
			}
		}
		b.cmd.Wait() // only after the pipe is drained
		close(b.done)
	}()
	t.Cleanup(b.kill)
	return b
}

// waitListening waits for the broker's "broker listening" log line and
// takes its address, URL and key from it.
func (b *brokerProc) waitListening() {
	t := b.t
	t.Helper()
	select {
	case l := <-b.ready:
		b.addr, b.url, b.pubkey = l.Addr, l.PublicURL, l.BrokerPubkey
	case <-b.done:
		t.Fatalf("broker exited before listening:\n%s", b.log())
	case <-time.After(60 * time.Second):
		t.Fatalf("broker did not log \"broker listening\":\n%s", b.log())
	}
	if b.url == "" || b.pubkey == "" {
		t.Fatalf("incomplete listening line:\n%s", b.log())
	}
}

func (b *brokerProc) log() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.logs.String()
}

func (b *brokerProc) tokenFile() string { return filepath.Join(b.data, "operator.token") }

func (b *brokerProc) dbPath() string { return filepath.Join(b.data, "broker.db") }

// kill is kill -9: no shutdown code runs.
func (b *brokerProc) kill() {
	select {
	case <-b.done:
		return
	default:
	}
	b.cmd.Process.Kill()
	<-b.done
}

// stop is a clean SIGTERM shutdown (store closed, connections closed 1001).
func (b *brokerProc) stop() {
	b.t.Helper()
	select {
	case <-b.done:
		return
	default:
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(15 * time.Second):
		b.t.Errorf("broker did not stop on SIGTERM:\n%s", b.log())
		b.kill()
	}
}

// ---- CLI users ----

// user is one identity: its own --home, driven through the binary.
type user struct {
	t      *testing.T
	name   string
	home   string
	pubkey string // set by create/join
	// useDaemon lets the verbs use (and start) this user's daemon;
	// otherwise CLAUDEMESH_NO_DAEMON=1 keeps them on the direct path.
	useDaemon bool
	// extraEnv is added to every subprocess (failpoints for crash tests).
	extraEnv []string
}

// env is the subprocess environment of this user.
func (u *user) env() []string {
	env := baseEnv()
	if u.useDaemon {
		env = slices.DeleteFunc(env, func(kv string) bool { return kv == "CLAUDEMESH_NO_DAEMON=1" })
	}
	return append(env, u.extraEnv...)
}

// atDefaultHome makes u's home the default one, ~/.claudemesh of a HOME
// of its own: what install writes for that home carries no --home.
func (u *user) atDefaultHome() *user {
	h := u.t.TempDir()
	u.home = filepath.Join(h, ".claudemesh")
	u.extraEnv = append(u.extraEnv, "HOME="+h)
	return u
}

func newUser(t *testing.T, name string) *user {
	noteSources()
	u := &user{t: t, name: name, home: filepath.Join(t.TempDir(), name)}
	// Whatever a test does (or fails to do), no daemon it started outlives
	// it. The pid file names the running one; but a daemon may also be
	// on its way up (`claudemesh mcp` and the thin verbs start one when
	// they find none, and a `daemon up` spawned a moment ago has not
	// written its pid yet), so every process whose arguments name this
	// home is stopped, until none is left, before the temp dir goes.
	t.Cleanup(func() {
		if data, err := os.ReadFile(filepath.Join(u.home, "daemon", "daemon.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
				killAndWait(pid)
			}
		}
		// One empty scan is not enough: /proc/PID/cmdline reads empty
		// while a process is inside execve, so a daemon a `daemon up` (or
		// an MCP server that saw its daemon go) is starting can be missed
		// once. The home counts as quiet after two scans in a row find no
		// process and no lock on daemon.db or start.lock is held.
		quiet := 0
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			pids := processesOfHome(u.home)
			if len(pids) == 0 && !homeLocked(u.home) {
				if quiet++; quiet == 2 {
					return
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			quiet = 0
			if len(pids) == 0 {
				// A lock is held by a process not found yet: look again
				// in a moment, without spinning on /proc.
				time.Sleep(20 * time.Millisecond)
			}
			for _, pid := range pids {
				killAndWait(pid)
			}
		}
		t.Errorf("processes of %s still running after 10s: %v (a daemon lock held: %v)", u.home, processesOfHome(u.home), homeLocked(u.home))
	})
	return u
}

// processesOfHome lists the live processes whose arguments include
// `--home HOME` (every process the harness or the binary starts for a
// user carries it, a child between fork and exec included). Linux only:
// elsewhere it finds nothing and the pid file is all there is.
func processesOfHome(home string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	needle := "\x00--home\x00" + home + "\x00"
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains("\x00"+string(cmd), needle) || exited(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// homeLocked reports whether a process holds daemon.db's bbolt lock or
// the daemon's start lock in home: a daemon is open or opening there.
func homeLocked(home string) bool {
	for _, name := range []string{"daemon.db", "start.lock"} {
		f, err := os.Open(filepath.Join(home, "daemon", name))
		if err != nil {
			continue
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		f.Close() // closing releases a lock it took
		if err != nil {
			return true
		}
	}
	return false
}

// killAndWait kills pid and waits (briefly) until it has exited, so the
// test's temporary directories are not removed while it still writes to
// them.
func killAndWait(pid int) {
	syscall.Kill(pid, syscall.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); !exited(pid) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

type result struct {
	code           int
	stdout, stderr string
	args           []string
}

func (r result) String() string {
	return fmt.Sprintf("claudemesh %q: exit %d\nstdout: %s\nstderr: %s", r.args, r.code, r.stdout, r.stderr)
}

// run runs the binary with --home first and args as given (so tests can
// place flags anywhere), with stdin when given.
func (u *user) runIn(stdin string, args ...string) result {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--home", u.home}, args...)
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Env = u.env()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), args: args}
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			u.t.Fatalf("claudemesh %q: %v", args, err)
		}
		r.code = ee.ExitCode()
	}
	return r
}

func (u *user) run(args ...string) result {
	u.t.Helper()
	return u.runIn("", args...)
}

// ok runs args and fails the test unless it exits 0.
func (u *user) ok(args ...string) result {
	u.t.Helper()
	r := u.run(args...)
	if r.code != 0 {
		u.t.Fatalf("%s", r)
	}
	return r
}

// json runs args with --json appended, requires exit 0 and an empty stderr,
// and decodes stdout into v.
func (u *user) json(v any, args ...string) {
	u.t.Helper()
	r := u.ok(append(args, "--json")...)
	if r.stderr != "" {
		u.t.Fatalf("stderr not empty under --json: %s", r)
	}
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		u.t.Fatalf("decoding %s: %v", r, err)
	}
}

// cliError is the --json error document.
type cliError struct {
	SchemaVersion int  `json:"schemaVersion"`
	OK            bool `json:"ok"`
	Error         struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		Candidates []struct {
			DisplayName  string `json:"displayName"`
			Pubkey       string `json:"pubkey"`
			Kind         string `json:"kind"`
			MemberName   string `json:"memberName"`
			MemberPubkey string `json:"memberPubkey"`
		} `json:"candidates"`
	} `json:"error"`
}

// fails runs args with --json and requires exit code `exit` with error
// code `code`, on stdout, with stderr empty.
func (u *user) fails(exit int, code string, args ...string) cliError {
	u.t.Helper()
	return u.failsIn("", exit, code, args...)
}

func (u *user) failsIn(stdin string, exit int, code string, args ...string) cliError {
	u.t.Helper()
	r := u.runIn(stdin, append(args, "--json")...)
	var e cliError
	if err := json.Unmarshal([]byte(r.stdout), &e); err != nil || r.code != exit || e.OK || e.Error.Code != code || e.SchemaVersion != 1 {
		u.t.Fatalf("want exit %d code %s, got %s", exit, code, r)
	}
	if r.stderr != "" {
		u.t.Fatalf("stderr not empty under --json: %s", r)
	}
	return e
}

type whoami struct {
	Meshes []struct {
		Slug, MeshID, MemberID, Pubkey, DisplayName, Role, BrokerURL string
	} `json:"meshes"`
}

func (u *user) whoami() whoami {
	u.t.Helper()
	var w whoami
	u.json(&w, "whoami")
	return w
}

type meshJSON struct {
	MeshID, Slug, Name, MemberID, Role, BrokerURL string
}

// createMesh makes u the owner of a new mesh on b.
func (u *user) createMesh(b *brokerProc, name, slug string) meshJSON {
	u.t.Helper()
	var m meshJSON
	u.json(&m, "mesh", "create", name, "--slug", slug, "--broker", b.url, "--operator-token-file", b.tokenFile(), "--name", u.name)
	if m.Role != "owner" || m.Slug != slug || m.BrokerURL != b.url {
		u.t.Fatalf("mesh create: %+v", m)
	}
	u.pubkey = u.whoami().Meshes[0].Pubkey
	return m
}

type inviteJSON struct {
	Link      string `json:"link"`
	InviteID  string `json:"inviteId"`
	Role      string `json:"role"`
	ExpiresAt int64  `json:"expiresAt"`
	MaxUses   int    `json:"maxUses"`
}

func (u *user) invite(args ...string) inviteJSON {
	u.t.Helper()
	var inv inviteJSON
	u.json(&inv, append([]string{"invite"}, args...)...)
	if !strings.HasPrefix(inv.Link, "ic://join/") || inv.InviteID == "" {
		u.t.Fatalf("invite: %+v", inv)
	}
	return inv
}

func (u *user) join(link string, args ...string) meshJSON {
	u.t.Helper()
	var m meshJSON
	u.json(&m, append([]string{"join", link, "--name", u.name}, args...)...)
	for _, wm := range u.whoami().Meshes {
		if wm.MeshID == m.MeshID {
			u.pubkey = wm.Pubkey
		}
	}
	return m
}

// onBothPaths runs f as two parallel subtests, "direct" (--no-daemon) and
// "daemon": a verb must behave the same through the daemon and without it.
// f starts the daemons it needs.
func onBothPaths(t *testing.T, f func(t *testing.T, viaDaemon bool)) {
	t.Helper()
	for _, viaDaemon := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "daemon"}[viaDaemon], func(t *testing.T) {
			t.Parallel()
			f(t, viaDaemon)
		})
	}
}

// setupMesh starts a mesh on b owned by the first name, joined by the
// others, and returns the users in order.
func setupMesh(t *testing.T, b *brokerProc, names ...string) []*user {
	t.Helper()
	users := make([]*user, len(names))
	for i, n := range names {
		users[i] = newUser(t, n)
	}
	users[0].createMesh(b, "Test Mesh", "test")
	if len(names) > 1 {
		link := users[0].invite("--uses", fmt.Sprint(len(names)-1)).Link
		for _, u := range users[1:] {
			u.join(link)
		}
	}
	return users
}

// ---- inbox rows ----

type inboxRow struct {
	SchemaVersion int    `json:"schemaVersion"`
	ID            string `json:"id"`
	MessageID     string `json:"messageId"`
	Mesh          string `json:"mesh"`
	Kind          string `json:"kind"`
	SenderName    string `json:"senderName"`
	SenderPubkey  string `json:"senderPubkey"`
	// SenderMemberPubkey and SenderMemberName: the member behind a sender.
	SenderMemberPubkey string  `json:"senderMemberPubkey"`
	SenderMemberName   string  `json:"senderMemberName"`
	Body               *string `json:"body"`
	DecryptError       string  `json:"decryptError"`
	Verified           bool    `json:"verified"`
	Plaintext          bool    `json:"plaintext"`
	Priority           string  `json:"priority"`
	ReceivedAt         int64   `json:"receivedAt"`
	SentAt             int64   `json:"sentAt"`
	ReplyToID          string  `json:"replyToId"`
}

func (r inboxRow) body() string {
	if r.Body == nil {
		return ""
	}
	return *r.Body
}

func (u *user) inbox(args ...string) []inboxRow {
	u.t.Helper()
	var rows []inboxRow
	u.json(&rows, append([]string{"inbox"}, args...)...)
	return rows
}

func bodies(rows []inboxRow) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.body()
	}
	return out
}

// follower is a running `inbox --follow --json`.
type follower struct {
	t    *testing.T
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	rows    []inboxRow
	notices []followNotice // inbox --follow --json's lines about itself
	changed chan struct{}
	stderr  bytes.Buffer
}

// followNotice is a notice line of inbox --follow --json.
type followNotice struct {
	SchemaVersion int    `json:"schemaVersion"`
	Notice        string `json:"notice"`
	Mesh          string `json:"mesh"`
	Message       string `json:"message"`
	ID            string `json:"id"`
}

func (u *user) follow() *follower {
	u.t.Helper()
	return u.followWith(baseEnv())
}

// followDaemon is follow through u's daemon (which it starts when none
// runs).
func (u *user) followDaemon() *follower {
	u.t.Helper()
	u.useDaemon = true
	return u.followWith(u.env())
}

func (u *user) followWith(env []string) *follower {
	u.t.Helper()
	return u.followCmd(env, "inbox", "--follow", "--json")
}

// followCmd runs args (a follower printing NDJSON: rows with an id and
// notices) as a follower.
func (u *user) followCmd(env []string, args ...string) *follower {
	u.t.Helper()
	return u.followCmdGated(env, nil, args...)
}

// followCmdGated is followCmd whose reading of the follower's output
// stops after its first line until gate is closed (nil: it never stops):
// the follower then blocks once it fills its stdout pipe.
func (u *user) followCmdGated(env []string, gate chan struct{}, args ...string) *follower {
	u.t.Helper()
	f := &follower{t: u.t, done: make(chan struct{}), changed: make(chan struct{})}
	f.cmd = exec.Command(bin, append([]string{"--home", u.home}, args...)...)
	f.cmd.Env = env
	f.cmd.Stderr = &lockedWriter{mu: &f.mu, w: &f.stderr}
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		u.t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		u.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var n followNotice
			if json.Unmarshal(sc.Bytes(), &n) == nil && n.Notice != "" {
				if n.SchemaVersion != 1 || n.Message == "" || n.ID != "" {
					f.t.Errorf("follower printed a bad notice %q", sc.Text())
				}
				f.mu.Lock()
				f.notices = append(f.notices, n)
				close(f.changed)
				f.changed = make(chan struct{})
				f.mu.Unlock()
				continue
			}
			var r inboxRow
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.SchemaVersion != 1 || r.ID == "" {
				f.t.Errorf("follower printed a bad line %q: %v", sc.Text(), err)
				continue
			}
			f.mu.Lock()
			f.rows = append(f.rows, r)
			close(f.changed)
			f.changed = make(chan struct{})
			f.mu.Unlock()
			if gate != nil {
				<-gate
			}
		}
		f.cmd.Wait()
		close(f.done)
	}()
	u.t.Cleanup(f.stop)
	return f
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// waitFor waits until the follower printed a message with body and returns
// it.
func (f *follower) waitFor(body string) inboxRow {
	f.t.Helper()
	return f.waitForOn(f.t, body)
}

// waitForOn is waitFor reporting a failure on t (a subtest of the test
// that started the follower).
func (f *follower) waitForOn(t *testing.T, body string) inboxRow {
	t.Helper()
	deadline := time.After(minWait)
	for {
		f.mu.Lock()
		for _, r := range f.rows {
			if r.body() == body {
				f.mu.Unlock()
				return r
			}
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-f.done:
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Fatalf("follower exited before %q arrived; stderr: %s", body, f.stderr.String())
		case <-deadline:
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Fatalf("follower never printed %q; got %v; stderr: %s", body, bodies(f.rows), f.stderr.String())
		}
	}
}

func (f *follower) all() []inboxRow {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]inboxRow(nil), f.rows...)
}

// stop ends the follower as Ctrl-C would; it must exit 130, like every
// interrupted command.
func (f *follower) stop() {
	select {
	case <-f.done:
		return
	default:
	}
	f.cmd.Process.Signal(os.Interrupt)
	select {
	case <-f.done:
		if code := f.cmd.ProcessState.ExitCode(); code != 130 {
			f.t.Errorf("follower exited %d on SIGINT, want 130; stderr: %s", code, f.stderr.String())
		}
	case <-time.After(10 * time.Second):
		f.t.Errorf("follower did not stop on SIGINT")
		f.cmd.Process.Kill()
		<-f.done
	}
}

// ---- peers ----

type peerRow struct {
	Mesh          string `json:"mesh"`
	Pubkey        string `json:"pubkey"`
	MemberPubkey  string `json:"memberPubkey"`
	DisplayName   string `json:"displayName"`
	Role          string `json:"role"`
	MemberRole    string `json:"memberRole"`
	Status        string `json:"status"`
	Summary       string `json:"summary"`
	Groups        []struct{ Name, Role string }
	SessionID     string `json:"sessionId"`
	Cwd           string `json:"cwd"`
	PeerType      string `json:"peerType"`
	Online        bool   `json:"online"`
	IsSelf        bool   `json:"isSelf"`
	IsThisSession bool   `json:"isThisSession"`
	ConnectedAt   int64  `json:"connectedAt"`
}

// waitPresence polls observer's peer list until a connected presence of
// member pubkey with connection role `role` is listed.
func waitPresence(t *testing.T, observer *user, pubkey, role string) peerRow {
	t.Helper()
	deadline := time.Now().Add(minWait)
	for {
		var rows []peerRow
		observer.json(&rows, "peer", "list")
		for _, p := range rows {
			if p.MemberPubkey == pubkey && p.Role == role && p.Online {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no online %s presence of %s in %+v", role, pubkey, rows)
		}
		time.Sleep(50 * time.Millisecond) // poll interval, not synchronisation
	}
}
