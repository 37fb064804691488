package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"claudemesh/wire"
)

// childStartTimeout bounds the wait for the child's "broker listening" log
// line; opening a fresh bbolt file takes milliseconds, so this only fires
// when the child is wedged or is not a claudemesh binary.
const childStartTimeout = 20 * time.Second

// childStopTimeout is how long a graceful SIGTERM may take before SIGKILL.
const childStopTimeout = 5 * time.Second

// childBroker is `claudemesh broker` running as a child process on a
// temporary data directory. It is a separate process, not an in-process
// broker, so that its peak RSS (VmHWM) is the broker's alone and the load
// generator's own memory and CPU are not mixed into it.
type childBroker struct {
	cmd    *exec.Cmd
	dir    string // temporary, removed by stop
	data   string // the broker's --data, inside dir
	url    string // publicUrl from the start-up log
	pubkey string // brokerPubkey from the start-up log
	token  string // operator.token
	// metrics is the address of its /metrics ("" with --metrics-listen
	// off; cluster nodes have one, on loopback).
	metrics string
	exited  chan struct{}
	ready   chan listeningLine

	mu   sync.Mutex
	tail []string // last lines of its log, for error messages
	once sync.Once
}

// listeningLine is the start-up log record the broker writes once it is
// bound (broker.Start logs msg "broker listening" with these fields).
type listeningLine struct {
	Msg          string `json:"msg"`
	Addr         string `json:"addr"`
	PublicURL    string `json:"publicUrl"`
	BrokerPubkey string `json:"brokerPubkey"`
	Metrics      string `json:"metrics"`
}

// startChild runs exe as `claudemesh broker` with the bench settings of
// 05-quality: no send rate limit, no per-mesh connection cap (nor, for the
// idle connections of one member, a presence rate limit), an ephemeral
// loopback port and no metrics listener (so parallel runs never collide on
// a port). It returns once the broker logged that it is listening.
func startChild(ctx context.Context, exe string, extraEnv []string, extraArgs ...string) (*childBroker, error) {
	c, err := launchChild(exe, extraEnv, childOpts{listen: "127.0.0.1:0", metricsListen: "off"}, extraArgs...)
	if err != nil {
		return nil, err
	}
	if err := c.waitListening(ctx, childStartTimeout); err != nil {
		return nil, err
	}
	return c, nil
}

// childOpts are what differs between a single child broker and a cluster
// node.
type childOpts struct {
	brokerKey     string // written as broker.key when not empty (a cluster's nodes share one key)
	listen        string // --listen
	metricsListen string // --metrics-listen ("off" for none)
	logPath       string // when not empty, a copy of the child's log goes there
}

// launchChild starts the broker process on a new temporary data directory
// without waiting for it; waitListening does.
func launchChild(exe string, extraEnv []string, o childOpts, extraArgs ...string) (*childBroker, error) {
	dir, err := os.MkdirTemp("", "claudemesh-bench-")
	if err != nil {
		return nil, fmt.Errorf("temporary broker directory: %w", err)
	}
	data := filepath.Join(dir, "data")
	if o.brokerKey != "" {
		if err := os.Mkdir(data, 0o700); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(data, "broker.key"), []byte(o.brokerKey+"\n"), 0o600); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	args := append([]string{"broker",
		"--listen", o.listen,
		"--metrics-listen", o.metricsListen,
		"--data", data,
		"--rate", "0",
		"--byte-rate", "0",
		"--max-connections-per-mesh", "0",
	}, extraArgs...)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.SysProcAttr = childProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting %s broker: %w", exe, err)
	}
	c := &childBroker{cmd: cmd, dir: dir, data: data, exited: make(chan struct{}), ready: make(chan listeningLine, 1)}
	var log io.Reader = stderr
	if o.logPath != "" {
		if f, err := os.Create(o.logPath); err == nil {
			log = io.TeeReader(stderr, f)
			go func() { <-c.exited; f.Close() }()
		}
	}
	go c.readLog(log, c.ready)
	return c, nil
}

// waitListening waits for the child's "broker listening" line and reads
// its operator token; on failure it stops the child.
func (c *childBroker) waitListening(ctx context.Context, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var l listeningLine
	select {
	case l = <-c.ready:
	case <-c.exited:
		c.stop()
		return fmt.Errorf("the child broker exited before listening (%s)%s", c.cmd.ProcessState, c.logTail())
	case <-timer.C:
		c.stop()
		return fmt.Errorf("the child broker did not start listening within %s%s", timeout, c.logTail())
	case <-ctx.Done():
		c.stop()
		return ctx.Err()
	}
	c.url, c.pubkey, c.metrics = l.PublicURL, l.BrokerPubkey, l.Metrics
	tok, err := os.ReadFile(filepath.Join(c.data, "operator.token"))
	if err != nil {
		c.stop()
		return fmt.Errorf("reading the child broker's operator token: %w", err)
	}
	c.token = strings.TrimSpace(string(tok))
	if c.url == "" || c.token == "" {
		c.stop()
		return fmt.Errorf("the child broker's start-up log named no URL%s", c.logTail())
	}
	return nil
}

// readLog scans the child's JSON log for the listening line, keeps the
// last lines for diagnostics, and drains the pipe until the child exits so
// that a chatty broker never blocks on a full pipe. Only then does it reap
// the process: exec requires every read of the pipe to finish before Wait.
func (c *childBroker) readLog(r io.Reader, ready chan<- listeningLine) {
	defer close(c.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	found := false
	for sc.Scan() {
		line := sc.Bytes()
		c.mu.Lock()
		if len(c.tail) == 20 {
			c.tail = c.tail[1:]
		}
		c.tail = append(c.tail, string(line))
		c.mu.Unlock()
		if found {
			continue
		}
		var l listeningLine
		if wire.Decode(line, &l) == nil && l.Msg == "broker listening" {
			found = true
			ready <- l
		}
	}
	io.Copy(io.Discard, r) // a line over 1 MiB stops the scanner, not the drain
	c.cmd.Wait()
}

func (c *childBroker) logTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tail) == 0 {
		return ""
	}
	return "; its last log lines:\n" + strings.Join(c.tail, "\n")
}

// pid is the child's process id.
func (c *childBroker) pid() int { return c.cmd.Process.Pid }

// memUsage is the child's memory as /proc reports it, in bytes: the peak
// resident set (VmHWM) and, at the time of reading, the resident set split
// into anonymous memory (the Go heap and stacks) and file-backed pages
// (mostly the bbolt file, which the broker maps into memory).
type memUsage struct {
	peak, now, anon, file int64
}

// memory reads the child's memUsage. It must be read while the child is
// alive: /proc forgets an exited process.
func (c *childBroker) memory() (memUsage, error) {
	st, err := procStatus(c.pid())
	if err != nil {
		return memUsage{}, err
	}
	peak, ok := st["VmHWM"]
	if !ok {
		return memUsage{}, fmt.Errorf("no VmHWM in /proc/%d/status", c.pid())
	}
	return memUsage{peak: peak, now: st["VmRSS"], anon: st["RssAnon"], file: st["RssFile"]}, nil
}

// cpu is the child's user+system CPU time so far (0 where there is no
// /proc).
func (c *childBroker) cpu() time.Duration { return procCPU(c.pid()) }

// procStatus parses the "Name:  123456 kB" lines of /proc/<pid>/status,
// returning bytes by name.
func procStatus(pid int) (map[string]int64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, fmt.Errorf("peak RSS needs /proc (Linux): %w", err)
	}
	out := map[string]int64{}
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[name] = kb << 10
		}
	}
	return out, nil
}

// kill ends the child with SIGKILL (a machine that dies) and waits until
// it is reaped; stop still removes its directory.
func (c *childBroker) kill() {
	c.cmd.Process.Kill()
	<-c.exited
}

// stop ends the child (SIGTERM, then SIGKILL after childStopTimeout) and
// removes its data directory. It is idempotent and runs on every exit path
// of Run, error and cancellation included, so no broker outlives a bench.
func (c *childBroker) stop() {
	c.once.Do(func() {
		select {
		case <-c.exited:
		default:
			if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				c.cmd.Process.Kill()
			}
			t := time.NewTimer(childStopTimeout)
			select {
			case <-c.exited:
			case <-t.C:
				c.cmd.Process.Kill()
				<-c.exited
			}
			t.Stop()
		}
		os.RemoveAll(c.dir)
	})
}
