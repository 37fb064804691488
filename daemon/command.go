package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
	"claudemesh/internal/gcfloor"
	"claudemesh/store"
	"claudemesh/web"
)

// Command is `claudemesh daemon` and its verbs.
func Command() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "the per-user runtime: one broker connection per mesh, durable outbox and inbox, local API",
		Description: cliui.WithExamples("",
			"claudemesh daemon up",
			"claudemesh daemon status --json",
			"claudemesh daemon outbox list --status failed",
			"claudemesh daemon down",
		),
		Subcommands: []*cli.Command{
			upCommand(), downCommand(), statusCommand(), installCommand(), uninstallCommand(), outboxCommand(),
		},
	}
}

func homeOf(c *cli.Context) (string, error) {
	return config.ResolveHome(cliui.GlobalsFrom(c).Home)
}

// verbStart starts a daemon verb's Action: it checks that the verb got
// minArgs to maxArgs arguments, and returns the client home and the output.
func verbStart(c *cli.Context, minArgs, maxArgs int) (string, *cliui.Out, error) {
	if err := cliui.ArgsBetween(c, minArgs, maxArgs); err != nil {
		return "", nil, err
	}
	home, err := homeOf(c)
	if err != nil {
		return "", nil, err
	}
	return home, cliui.OutFrom(c), nil
}

// printResult is a verb's answer: v under --json, else the human line.
func printResult(out *cliui.Out, v any, format string, args ...any) error {
	if out.JSONMode() {
		return out.JSON(v)
	}
	out.Resultf(format, args...)
	return nil
}

func upCommand() *cli.Command {
	return &cli.Command{
		Name:  "up",
		Usage: "start the daemon (detached unless --foreground)",
		Description: cliui.WithExamples(
			"Detached, the daemon re-executes itself in a new session with its output in daemon/daemon.log,\n"+
				"and this command returns once its socket answers. --foreground runs it in place (service managers).\n"+
				"With a daemon already running it says so (exit 0), and names the start flags given that it keeps\n"+
				"as it started (daemon down first to change them); the meshes its reload starts (joined since, or\n"+
				"kicked or banned before) it names with how each came out within 3 s: connected, still connecting,\n"+
				"refused again by the broker (a warning: a ban still in force), or a server that could not prove the\n"+
				"broker's key (a warning: not the broker you joined?). Of two started at the same moment\n"+
				"for one home, one starts the daemon and the other says it is already running and names it (exit 0\n"+
				"too). A home that\n"+
				"joined no mesh, or does not exist (a mistyped --home), gets no daemon: up says so (exit 4) and creates nothing.",
			"claudemesh daemon up",
			"claudemesh daemon up --foreground",
			"claudemesh daemon up --tcp 127.0.0.1:7902",
			"claudemesh daemon up --web 127.0.0.1:8080",
			"claudemesh daemon up --web off",
		),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "foreground", Usage: "run in this process"},
			&cli.BoolFlag{Name: "init", Usage: "make a new daemon.db where the file is empty (a truncated file; its inbox and outbox are lost)"},
			&cli.StringFlag{Name: "tcp", Usage: "also listen on `ADDR` (loopback; requires the bearer token in daemon/local-token)"},
			&cli.BoolFlag{Name: "tcp-allow-remote", Usage: "let --tcp listen on a non-loopback address (needs --tcp-tls-cert and --tcp-tls-key)"},
			&cli.StringFlag{Name: "tcp-tls-cert", Usage: "serve --tcp over HTTPS with this certificate `FILE`"},
			&cli.StringFlag{Name: "tcp-tls-key", Usage: "the private key `FILE` of --tcp-tls-cert"},
			&cli.StringFlag{Name: "web", Value: web.DefaultAddr, EnvVars: []string{"CLAUDEMESH_WEB"},
				Usage: "serve the local chat page (claudemesh ui) on `ADDR`, or off"},
			&cli.BoolFlag{Name: "web-allow-remote", Usage: "UNSAFE: let --web listen on a non-loopback address (needs --web-tls-cert and --web-tls-key), giving anyone who reaches it and gets a login link your mesh identity"},
			&cli.BoolFlag{Name: "web-any-local-user", EnvVars: []string{"CLAUDEMESH_WEB_ANY_LOCAL_USER"},
				Usage: "UNSAFE on a shared machine: serve the chat page to connections the daemon cannot tell are yours (a browser behind WSL2's localhost forwarding or a proxy run by root; WSL1, gVisor), so any local user with a login link, or the session cookie and page key, can use it"},
			&cli.StringFlag{Name: "web-tls-cert", Usage: "serve the page over HTTPS with this certificate `FILE` (with --web-tls-key)"},
			&cli.StringFlag{Name: "web-tls-key", Usage: "the private key `FILE` of --web-tls-cert"},
			&cli.Int64Flag{Name: "inbox-max-bytes", Value: DefaultInboxMaxBytes, Usage: "cap the inbox at `BYTES`: past it the oldest seen messages are dropped (unseen ones are kept, and daemon status warns); one member may hold at most half of it unseen"},
		},
		Action: func(c *cli.Context) error {
			home, out, err := verbStart(c, 0, 0)
			if err != nil {
				return err
			}
			f := upFlags{tcp: c.String("tcp"), web: c.String("web"), webAllowRemote: c.Bool("web-allow-remote"), webAnyLocalUser: c.Bool("web-any-local-user"),
				webTLSCert: c.String("web-tls-cert"), webTLSKey: c.String("web-tls-key"), init: c.Bool("init"),
				tcpAllowRemote: c.Bool("tcp-allow-remote"), tcpTLSCert: c.String("tcp-tls-cert"), tcpTLSKey: c.String("tcp-tls-key"),
				inboxMaxBytes: c.Int64("inbox-max-bytes")}
			if f.inboxMaxBytes < MinInboxMaxBytes {
				// 0 or -1 became the default without a word, and 1 a cap
				// no message fits in (the inbox full for good).
				return cliui.UsageErrorf("--inbox-max-bytes %d is not a cap the inbox can work with: it is at least %d (1 MiB; one message alone can take 64 KiB), "+
					"and %d (256 MiB) without the flag", f.inboxMaxBytes, MinInboxMaxBytes, DefaultInboxMaxBytes)
			}
			if err := f.check(); err != nil {
				return err
			}
			anyLocalUser := f.webAnyLocalUser && f.web != "" && f.web != "off"
			if c.Bool("foreground") {
				if anyLocalUser {
					out.Warn(web.AnyLocalUserWarning, "")
				}
				return runForeground(c.Context, home, f)
			}
			running := func(cl *localapi.Client, v *localapi.Version) error {
				// Already running: a reload reconnects meshes that were
				// kicked or banned (after an unban), as `up` promises.
				var rl localapi.ReloadResponse
				if _, err := cl.Do(c.Context, "POST", "/v1/reload", nil, &rl); err != nil {
					return err
				}
				// The running daemon keeps the flags it started with:
				// say whether its page checks, not what this command
				// asked for.
				var st localapi.Status
				if _, err := cl.Do(c.Context, "GET", "/v1/status", nil, &st); err == nil {
					warnNotApplied(c, out, home, f, &st)
					switch {
					case st.Web != nil && st.Web.PeerCheck == "off":
						out.Warn(web.AnyLocalUserWarning, "")
					case anyLocalUser:
						cm := config.Invocation(home)
						out.Warn("--web-any-local-user not applied: the running daemon keeps the flags it was started with, and its chat page's check",
							"to turn the check off: "+cm+" daemon down && "+cm+" daemon up --web-any-local-user")
					}
				}
				if len(rl.Started) == 0 && joinedNone(home) && !out.JSONMode() {
					// The last mesh was left: up refuses such a home, and
					// this one runs on (it takes up the next join).
					out.Resultf("daemon already running (pid %d), with no mesh joined: it takes up the next join (%s join <invite link>)", v.PID, config.Invocation(home))
					return nil
				}
				return reportRunning(out, config.Invocation(home), v.PID, rl.Started, startedOutcome(c.Context, cl, rl.Started))
			}
			if cl, v, err := localapi.Probe(c.Context, home); err == nil {
				return running(cl, v)
			}
			// A home that joined no mesh gets no daemon: it would
			// connect to nothing, and a mistyped --home would be
			// created (with a daemon for it) instead of refused.
			if err := checkJoined(home); err != nil {
				return err
			}
			// A daemon that runs but cannot be reached (its socket was
			// removed) holds daemon.db: a second one cannot start, and
			// the detached one would only exit with a pointer to its log.
			// One that is starting (another daemon up a moment ago) holds
			// it too until its socket answers: that one is running.
			if localapi.FindUnanswering(home) != nil {
				if u := localapi.StillUnanswering(c.Context, home, unansweringPatience); u != nil {
					return unansweringError(home, u)
				}
				if cl, v, err := localapi.Probe(c.Context, home); err == nil {
					return running(cl, v)
				}
			}
			// An empty or damaged daemon.db is said here, not only in
			// the detached daemon's log; not while another start holds
			// the start lock (it may be creating the file: the daemon
			// started below checks it under that lock).
			if err := checkDBUnlessStarting(home, f.init); err != nil {
				return DBRefusal(home, f.init, err)
			}
			pid, err := detach(c.Context, home, f)
			var lost *lostRaceError
			if errors.As(err, &lost) {
				// What `daemon up` is for holds: a daemon runs for this
				// home, as when one was already running (exit 0); a
				// script's `daemon up && …` must not fail because two
				// started at once. The words say this one started none.
				return printResult(out, map[string]any{"ok": true, "pid": lost.pid, "alreadyRunning": true},
					"daemon already running (pid %d, started at the same moment by another command; this one started none)", lost.pid)
			}
			if err != nil {
				return err
			}
			if anyLocalUser {
				out.Warn(web.AnyLocalUserWarning, "")
			}
			if w := web.RemoteWarning(f.web, ""); w != "" && f.webAllowRemote {
				out.Warn(w, "daemon status names its port")
			}
			// The page is up before the socket answers (Serve): a port
			// another program holds is known now, and said now, not only
			// by a later daemon status.
			if cl, _, err := localapi.Probe(c.Context, home); err == nil {
				var st localapi.Status
				if _, err := cl.Do(c.Context, "GET", "/v1/status", nil, &st); err == nil && st.Web != nil && st.Web.State == "unavailable" {
					out.Warn(fmt.Sprintf("the chat page is not served on %s: %s", st.Web.Addr, cliui.SanitizePeerText(st.Web.Error)), web.UnavailableHint(home))
				}
			}
			return report(out, pid, false)
		},
	}
}

// warnNotApplied says which of the start flags given to `up` the running
// daemon does not have: it keeps the ones it started with, and a user who
// raised --inbox-max-bytes (as daemon status advises) must not believe it
// done. --web and --inbox-max-bytes are compared with the running
// daemon's; the others are named whenever they are given.
func warnNotApplied(c *cli.Context, out *cliui.Out, home string, f upFlags, st *localapi.Status) {
	var asked, has []string
	webNow := "off"
	if st.Web != nil && st.Web.Addr != "" {
		webNow = st.Web.Addr
	}
	if c.IsSet("web") && f.web != webNow {
		asked, has = append(asked, "--web "+f.web), append(has, "--web "+webNow)
	}
	if c.IsSet("inbox-max-bytes") && st.Inbox != nil && st.Inbox.MaxBytes != f.inboxMaxBytes {
		asked = append(asked, fmt.Sprintf("--inbox-max-bytes %d", f.inboxMaxBytes))
		has = append(has, fmt.Sprintf("--inbox-max-bytes %d", st.Inbox.MaxBytes))
	}
	for _, name := range []string{"tcp", "tcp-allow-remote", "tcp-tls-cert", "tcp-tls-key", "web-allow-remote", "web-tls-cert", "web-tls-key", "init"} {
		if c.IsSet(name) {
			asked = append(asked, "--"+name)
		}
	}
	if len(asked) == 0 {
		return
	}
	msg := strings.Join(asked, ", ") + " not applied: the running daemon keeps the flags it was started with"
	if len(has) > 0 {
		msg += " (" + strings.Join(has, ", ") + ")"
	}
	cm := config.Invocation(home)
	out.Warn(msg, "to apply them: "+cm+" daemon down, then "+cm+" daemon up with them")
}

// checkJoined refuses to start a daemon for a home that joined no mesh
// (or does not exist: a mistyped --home), creating nothing. A daemon
// already running for such a home (a service started before the first
// join) is left alone: it picks the first join up by itself.
func checkJoined(home string) error {
	cfg, err := config.Load(home)
	if err != nil {
		return err
	}
	if len(cfg.Meshes) > 0 {
		return nil
	}
	cm := config.Invocation(home)
	if _, err := os.Stat(home); err != nil {
		return cliui.Errorf(cliui.CodeNotJoined, "no daemon started: %s does not exist (a mistyped --home or CLAUDEMESH_HOME?), and a daemon needs a joined mesh", home).
			WithHint("join a mesh first: " + cm + " join <invite link>, then " + cm + " daemon up")
	}
	return cliui.Errorf(cliui.CodeNotJoined, "no daemon started: %s has joined no mesh, so a daemon would have nothing to connect to", home).
		WithHint("join a mesh first: " + cm + " join <invite link>, then " + cm + " daemon up")
}

// joinedNone reports whether home's config names no mesh (the last one
// was left, or none joined yet).
func joinedNone(home string) bool {
	cfg, err := config.Load(home)
	return err == nil && len(cfg.Meshes) == 0
}

// checkDBUnlessStarting is store.CheckFile of home's daemon.db under the
// start lock, or nothing when another start holds it.
func checkDBUnlessStarting(home string, init bool) error {
	release, err := startLock(home, 0)
	if err != nil {
		// Starting now (errStartBusy), or no daemon/ directory yet (so
		// no daemon.db either): the daemon checks it.
		return nil
	}
	defer release()
	return store.CheckFile(localapi.DBPath(home), init)
}

func report(out *cliui.Out, pid int, already bool) error {
	format := "daemon started (pid %d)"
	if already {
		format = "daemon already running (pid %d)"
	}
	return printResult(out, map[string]any{"ok": true, "pid": pid, "alreadyRunning": already}, format, pid)
}

// startedOutcomeWait bounds how long `up` waits to say how the meshes its
// reload started came out.
const startedOutcomeWait = 3 * time.Second

// startedOutcome waits, at most startedOutcomeWait, until each mesh a
// reload started has left "connecting", and returns the states it got
// to (a new user's trial: `up` on a home whose mesh was still banned said
// "connecting acme now", and the broker refused it again at once). It
// polls /v1/health, which has the states: /v1/status reads the whole
// inbox at each of up to 60 polls.
func startedOutcome(ctx context.Context, cl *localapi.Client, started []string) map[string]string {
	if len(started) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, startedOutcomeWait)
	defer cancel()
	states := map[string]string{}
	for {
		var st localapi.Health
		if _, err := cl.Do(ctx, "GET", "/v1/health", nil, &st); err != nil {
			return states
		}
		pending := false
		for _, slug := range started {
			s := st.Meshes[slug]
			states[slug] = s
			if s == "" || s == localapi.MeshConnecting || s == localapi.MeshReconnecting {
				pending = true
			}
		}
		if !pending {
			return states
		}
		select {
		case <-ctx.Done():
			return states
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// reportRunning is `up`'s answer when a daemon was already running: what
// its reload started (a mesh joined since, or one stopped by a kick or a
// ban being tried again), if anything, and how each came out.
func reportRunning(out *cliui.Out, cm string, pid int, started []string, states map[string]string) error {
	if len(started) == 0 {
		return report(out, pid, true)
	}
	var open, connecting, refused, trouble, hints []string
	hinted := map[string]bool{}
	hint := func(state, h string) {
		if !hinted[state] {
			hinted[state] = true
			hints = append(hints, h)
		}
	}
	for _, slug := range started {
		switch s := states[slug]; s {
		case localapi.MeshOpen:
			open = append(open, slug)
		case "", localapi.MeshConnecting, localapi.MeshReconnecting:
			connecting = append(connecting, slug)
		case localapi.MeshBanned:
			refused = append(refused, slug+" (banned)")
			hint(s, "after a ban, an admin must unban this member first")
		case localapi.MeshRemoved:
			refused = append(refused, slug+" (removed)")
			hint(s, "a member removed is no longer one: mesh leave, then join with a new invite")
		case localapi.MeshKicked:
			refused = append(refused, slug+" (kicked)")
			hint(s, "after a kick, daemon up connects again")
		case localapi.MeshBrokerKeyMismatch:
			// Nothing refused this member: the daemon refused a server
			// that could not prove the broker key the mesh was joined
			// with (possibly not the broker at all).
			trouble = append(trouble, "the server at "+slug+"'s broker address could not prove the broker's key (not the broker you joined?)")
			hint(s, "if its operator really replaced the broker key, join again with a new invite")
		default:
			trouble = append(trouble, slug+" is "+s)
		}
	}
	var parts []string
	if len(open) > 0 {
		parts = append(parts, "connected "+strings.Join(open, ", "))
	}
	if len(connecting) > 0 {
		parts = append(parts, "connecting "+strings.Join(connecting, ", ")+" now")
	}
	if len(refused) > 0 {
		parts = append(parts, "the broker refused "+strings.Join(refused, ", ")+" again")
	}
	parts = append(parts, trouble...)
	res := map[string]any{"ok": true, "pid": pid, "alreadyRunning": true, "meshesStarted": started, "meshStates": states}
	if out.JSONMode() {
		return out.JSON(res)
	}
	line := fmt.Sprintf("daemon already running (pid %d); %s", pid, strings.Join(parts, "; "))
	if len(refused)+len(trouble) > 0 {
		out.Warn(line, strings.Join(append([]string{cm + " daemon status says why"}, hints...), "; "))
		return nil
	}
	out.Resultf("%s", line)
	return nil
}

// upFlags are `daemon up`'s listener flags, passed on to the detached
// process as given.
type upFlags struct {
	tcp, web              string
	webAllowRemote        bool
	webAnyLocalUser       bool
	webTLSCert, webTLSKey string
	init                  bool
	tcpAllowRemote        bool
	tcpTLSCert, tcpTLSKey string
	inboxMaxBytes         int64
}

// check refuses a bad --tcp or --web at once, before anything detaches.
func (f upFlags) check() error {
	if err := CheckTCP(f.tcp, f.tcpAllowRemote, f.tcpTLSCert, f.tcpTLSKey); err != nil {
		return cliui.UsageErrorf("%v", err)
	}
	if f.web == "" || f.web == "off" {
		return nil
	}
	if err := web.CheckFlags(f.web, f.webAllowRemote, f.webTLSCert, f.webTLSKey); err != nil {
		return cliui.UsageErrorf("%v", err)
	}
	return nil
}

func (f upFlags) args() []string {
	args := []string{"--web", f.web}
	if f.web == "" {
		args[1] = "off"
	}
	if f.tcp != "" {
		args = append(args, "--tcp", f.tcp)
	}
	if f.webAllowRemote {
		args = append(args, "--web-allow-remote")
	}
	if f.webAnyLocalUser {
		args = append(args, "--web-any-local-user")
	}
	if f.webTLSCert != "" {
		args = append(args, "--web-tls-cert", f.webTLSCert, "--web-tls-key", f.webTLSKey)
	}
	if f.init {
		args = append(args, "--init")
	}
	if f.tcpAllowRemote {
		args = append(args, "--tcp-allow-remote")
	}
	if f.tcpTLSCert != "" {
		args = append(args, "--tcp-tls-cert", f.tcpTLSCert, "--tcp-tls-key", f.tcpTLSKey)
	}
	if f.inboxMaxBytes > 0 {
		args = append(args, "--inbox-max-bytes", strconv.FormatInt(f.inboxMaxBytes, 10))
	}
	return args
}

// runForeground runs the daemon in this process until SIGTERM/SIGINT.
func runForeground(ctx context.Context, home string, f upFlags) error {
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d, err := Open(Options{Home: home, TCP: f.tcp, Logger: log, Web: f.web, WebAllowRemote: f.webAllowRemote, WebAnyLocalUser: f.webAnyLocalUser,
		WebTLSCert: f.webTLSCert, WebTLSKey: f.webTLSKey, Init: f.init,
		TCPAllowRemote: f.tcpAllowRemote, TCPTLSCert: f.tcpTLSCert, TCPTLSKey: f.tcpTLSKey, InboxMaxBytes: f.inboxMaxBytes})
	if errors.Is(err, ErrAlreadyRunning) {
		return cliui.Errorf("already_running", "another daemon is running for %s", home).WithHint(config.Invocation(home) + " daemon status")
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The heap goal stays at least gcHeadroom above the live heap: the
	// daemon's live heap is a few MB, and under a burst of sends GOGC=100
	// made it collect many times a second (~10 % of its CPU per accepted
	// message). GOGC in the environment turns this off.
	defer gcfloor.Start(gcHeadroom)()
	// CLAUDEMESH_CPUPROFILE=FILE writes a pprof CPU profile of the whole
	// run, for `claudemesh bench --via-daemon` investigations.
	if path := os.Getenv("CLAUDEMESH_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	return d.Serve(ctx)
}

// detach starts `daemon up --foreground` in a new session with stdin from
// /dev/null and stdout/stderr in daemon.log, inheriting no other
// descriptor, and waits up to 3 s for its socket.
func detach(ctx context.Context, home string, f upFlags) (int, error) {
	if err := fsutil.EnsurePrivateDir(home); err != nil {
		return 0, err
	}
	if err := fsutil.EnsurePrivateDir(localapi.Dir(home)); err != nil {
		return 0, err
	}
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	logf, err := os.OpenFile(localapi.LogPath(home), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	defer devnull.Close()
	args := append([]string{"--home", home, "daemon", "up", "--foreground"}, f.args()...)
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// daemon.db's lock decides which daemon runs: another `daemon up` for
	// this home started at the same moment may have won it, and then the
	// socket answers with that daemon's pid while ours exits (it waits
	// for the lock a moment first). Only our own pid is a start.
	ours, other := cmd.Process.Pid, 0
	deadline := time.After(3 * time.Second)
	for {
		if _, v, err := localapi.Probe(ctx, home); err == nil {
			if v.PID == ours {
				return v.PID, nil
			}
			other = v.PID
		}
		select {
		case err := <-exited:
			if other == 0 {
				if _, v, perr := localapi.Probe(ctx, home); perr == nil {
					other = v.PID
				}
			}
			if other != 0 {
				return 0, lostRace(home, other)
			}
			return 0, cliui.Errorf("daemon_start", "the daemon exited at start (%v); see %s", err, localapi.LogPath(home))
		case <-deadline:
			if other != 0 {
				// Ours is still waiting for the lock: it must not take
				// over once the other stops (this daemon up says it
				// started none).
				cmd.Process.Kill()
				<-exited
				return 0, lostRace(home, other)
			}
			return 0, cliui.Errorf("daemon_start", "the daemon did not answer within 3s; see %s", localapi.LogPath(home))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// lostRace is `daemon up`'s answer when the daemon it started found
// daemon.db locked by another one (pid), started at the same moment: it
// started none, and says which one runs.
func lostRace(home string, pid int) error { return &lostRaceError{pid: pid} }

// lostRaceError is detach's answer when another daemon took the home first.
type lostRaceError struct{ pid int }

func (e *lostRaceError) Error() string {
	return fmt.Sprintf("another daemon (pid %d) took the home's lock first", e.pid)
}

func downCommand() *cli.Command {
	return &cli.Command{
		Name:        "down",
		Usage:       "stop the daemon (SIGTERM, waits up to 5 s)",
		Description: cliui.WithExamples("", "claudemesh daemon down"),
		Action: func(c *cli.Context) error {
			home, out, err := verbStart(c, 0, 0)
			if err != nil {
				return err
			}
			// Only a process proven to be this home's daemon is signalled
			// (the socket's answer, or the holder of daemon.db's lock): a
			// daemon.pid left by a daemon that was killed -9 or lost in a
			// reboot names whatever program has that pid now.
			// Recorded first, so that the clients which lose their
			// daemon now (inbox --follow, claudemesh mcp) wait for a
			// start instead of making one with the default flags.
			if err := localapi.MarkStopped(home); err != nil {
				return cliui.Errorf("daemon_stop", "recording the stop in %s: %v", localapi.StoppedPath(home), err)
			}
			pid, filePID := 0, 0
			if _, v, err := localapi.Probe(c.Context, home); err == nil {
				pid = v.PID
			} else {
				pid, filePID = localapi.DaemonPID(home)
			}
			if pid <= 0 {
				if filePID > 0 && localapi.RemoveStalePIDFile(home, filePID) {
					why := "no process has that pid now"
					if syscall.Kill(filePID, 0) == nil {
						why = "pid " + strconv.Itoa(filePID) + " is another program now, left alone"
					}
					return printResult(out, map[string]any{"ok": true, "wasRunning": false, "stalePid": filePID},
						"daemon not running (removed a stale daemon.pid naming pid %d: %s)", filePID, why)
				}
				if u := localapi.FindUnanswering(home); u != nil {
					return unansweringError(home, u)
				}
				return printResult(out, map[string]any{"ok": true, "wasRunning": false}, "daemon not running")
			}
			// A service would start it again: stop it through its manager
			// (which sends the TERM), and signal whatever still runs.
			viaService, serviceHow, serr := stopService(home)
			if serr != nil {
				viaService = ""
			}
			// The manager's stop waits for the exit: then the pid is no
			// longer proven to be this daemon's, and is left alone.
			if viaService == "" || !stopped(home, pid) {
				if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
					return cliui.Errorf("daemon_stop", "signalling pid %d: %v", pid, err)
				}
				// A stopped daemon (SIGSTOP, Ctrl-Z) handles the TERM only
				// once continued, as systemd's stop does.
				syscall.Kill(pid, syscall.SIGCONT)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !stopped(home, pid) {
				if time.Now().After(deadline) {
					return cliui.Errorf("daemon_stop", "the daemon (pid %d) did not exit within 5s of SIGTERM: it is hung (a stuck disk?)", pid).
						WithHint(fmt.Sprintf("kill -9 %d, then %s daemon up (what it accepted is kept in daemon.db)", pid, config.Invocation(home)))
				}
				time.Sleep(20 * time.Millisecond)
			}
			res := map[string]any{"ok": true, "wasRunning": true, "pid": pid}
			if serr != nil {
				// Stopped, but its service starts it again in a moment.
				res["serviceRestarts"] = true
				out.Warn(fmt.Sprintf("its service could not be stopped (%v): it starts the daemon again in a moment", serr), "stop it with "+serviceHow)
				return printResult(out, res, "daemon stopped (pid %d), but its service starts it again", pid)
			}
			// What starts it again: up or a verb; for a home that joined no
			// mesh (the last one left), up refuses until a join.
			until := config.Invocation(home) + " daemon up or another verb starts it"
			if joinedNone(home) {
				until = "this home joins a mesh (" + config.Invocation(home) + " join <invite link>) and then " + until
			}
			if viaService != "" {
				res["service"] = viaService
				return printResult(out, res, "daemon stopped (pid %d) with its service (%s); it stays down until %s, or the service starts at your next login (running claude sessions and inbox --follow wait for that)",
					pid, viaService, until)
			}
			return printResult(out, res,
				"daemon stopped (pid %d); it stays down until %s (running claude sessions and inbox --follow wait for that)", pid, until)
		},
	}
}

func statusCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:  "status",
		Usage: "is the daemon running, and how are its meshes, outbox and inbox",
		Description: cliui.WithExamples("Never starts the daemon; with none running it prints running: false and exits 0. A daemon that runs but\n"+
			"cannot be reached (its socket was removed) is named, with the way out (exit 5).", "claudemesh daemon status", "claudemesh daemon status --json"),
		Action: func(c *cli.Context) error {
			home, out, err := verbStart(c, 0, 0)
			if err != nil {
				return err
			}
			cl, _, err := localapi.Probe(c.Context, home)
			if err != nil {
				if u := localapi.StillUnanswering(c.Context, home, unansweringPatience); u != nil {
					return unansweringError(home, u)
				}
				if cl, _, err = localapi.Probe(c.Context, home); err != nil {
					return printResult(out, localapi.Status{Running: false}, "daemon not running")
				}
			}
			var st localapi.Status
			if _, err := cl.Do(c.Context, "GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			if out.JSONMode() {
				return out.JSON(st)
			}
			out.Resultf("daemon running (pid %d, up %s, %s)", st.PID, (time.Duration(st.UptimeSec) * time.Second).String(),
				map[bool]string{true: "1 agent session", false: strconv.Itoa(st.Sessions) + " agent sessions"}[st.Sessions == 1])
			slugs := make([]string, 0, len(st.Meshes))
			for s := range st.Meshes {
				slugs = append(slugs, s)
			}
			sort.Strings(slugs)
			sty := out.Style()
			if len(slugs) == 0 && joinedNone(home) {
				// The last mesh was left (or a service started it before
				// the first join): it runs on, and says so.
				cm := config.Invocation(home)
				out.Linef("no mesh joined: the daemon takes up the next join (%s join <invite link>); %s daemon down stops it", cm, cm)
			}
			for _, s := range slugs {
				if via := st.MeshBrokers[s]; via != "" {
					// Which node of a cluster it is on.
					out.Linef("mesh %-20s %s (connected to %s)", s, st.Meshes[s], cliui.SanitizePeerText(via))
				} else {
					out.Linef("mesh %-20s %s", s, st.Meshes[s])
				}
				if p, ok := st.MeshErrors[s]; ok {
					out.Linef("  %s %s", sty.Red("✘"), cliui.SanitizePeerText(p.Message))
					if p.Hint != "" {
						out.Linef("  %s", sty.Dim(out.Commands("→ "+cliui.SanitizePeerText(p.Hint))))
					}
				}
				if a, ok := st.Audit[s]; ok && !a.OK {
					if a.Problem != "" {
						out.Linef("  %s audit log %s at entry %d: %s", sty.Red("✘"), strings.ReplaceAll(a.Problem, "_", " "), a.FirstBadSeq, cliui.SanitizePeerText(a.Message))
						out.Linef("  %s", sty.Dim(out.Commands("→ the broker's record of this mesh cannot be trusted; run claudemesh audit verify and tell the mesh owner")))
					}
					if a.Error != "" {
						since := ""
						if a.Problem != "" {
							since = " since"
						}
						out.Linef("  audit check%s could not run: %s", since, cliui.SanitizePeerText(a.Error))
					}
				}
			}
			// The public statuses of outbox list (03-daemon "Outbox").
			o := st.Outbox
			untracked := ""
			if o.Untracked > 0 {
				untracked = fmt.Sprintf(", %d untracked (held by the broker when their mesh was left)", o.Untracked)
			}
			out.Linef("outbox: %d accepted (%d of them being sent), %d queued, %d sent, %d delivered, %d failed%s",
				o.Pending+o.Inflight, o.Inflight, o.Queued, o.Sent, o.Delivered, o.Dead+o.Aborted, untracked)
			unread := fmt.Sprintf("%d unread", st.InboxUnread)
			if st.InboxMentions > 0 {
				// Posts whose sender named this member (--mention):
				// claudemesh inbox shows them marked "mentions you".
				unread += fmt.Sprintf(" (%d %s you)", st.InboxMentions, map[bool]string{true: "mentions", false: "mention"}[st.InboxMentions == 1])
			}
			if u := st.Inbox; u != nil {
				rows := "rows"
				if u.Rows == 1 {
					rows = "row"
				}
				out.Linef("inbox: %s, %d %s, %s of %s", unread, u.Rows, rows, humanSize(u.Bytes), humanSize(u.MaxBytes))
			} else {
				out.Linef("inbox: %s", unread)
			}
			if wst := st.Web; wst != nil {
				switch wst.State {
				case "serving":
					out.Linef("%s", out.Commands("chat page: "+wst.URL+" (claudemesh ui prints a login link)"))
					if wst.PeerCheck == "off" {
						out.Linef("  %s %s", sty.Yellow("!"), web.AnyLocalUserWarning)
					}
					if w := web.RemoteWarning(wst.Addr, wst.URL); w != "" {
						out.Linef("  %s %s", sty.Yellow("!"), w)
					}
				case "unavailable":
					out.Linef("chat page: %s not served on %s: %s", sty.Red("✘"), wst.Addr, cliui.SanitizePeerText(wst.Error))
					out.Linef("  %s", sty.Dim(out.Commands("→ "+web.UnavailableHint(home))))
				default:
					out.Linef("chat page: off (daemon up --web %s serves it)", web.DefaultAddr)
				}
			}
			if t := st.TCP; t != nil {
				scheme := "http"
				if t.TLS {
					scheme = "https"
				}
				out.Linef("local API (tcp): %s://%s (bearer token in %s)", scheme, t.Addr, t.TokenFile)
			}
			for _, w := range st.Warnings {
				out.Linef("%s %s", sty.Yellow("!"), w)
			}
			return nil
		},
	})
}

func outboxCommand() *cli.Command {
	return &cli.Command{
		Name:  "outbox",
		Usage: "inspect and retry the daemon's outbox",
		Subcommands: []*cli.Command{
			cliui.ReadOnly(&cli.Command{
				Name:  "list",
				Usage: "list outbox rows, newest first",
				Description: cliui.WithExamples("STATUS is accepted, queued, sent, delivered, failed or untracked (the broker had it when its mesh was\n"+
					"left), or an internal state: pending, inflight, dead or aborted. Any other STATUS is a usage error (exit 2).", "claudemesh daemon outbox list", "claudemesh daemon outbox list --status failed --json"),
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "status", Usage: "only rows with this `STATUS`"},
					&cli.IntFlag{Name: "limit", Value: 100, Usage: "at most `N` rows (0 = all)"},
				},
				Action: func(c *cli.Context) error {
					if err := checkOutboxStatus(c.String("status")); err != nil {
						return cliui.UsageErrorf("%v", err)
					}
					if c.Int("limit") < 0 {
						return cliui.UsageErrorf("--limit must not be negative (0 shows all rows)")
					}
					cl, out, err := running(c, 0, 0)
					if err != nil {
						return err
					}
					var rows []localapi.OutboxRow
					path := fmt.Sprintf("/v1/outbox?limit=%d", c.Int("limit"))
					if s := c.String("status"); s != "" {
						path += "&status=" + s
					}
					if _, err := cl.Do(c.Context, "GET", path, nil, &rows); err != nil {
						return err
					}
					if out.JSONMode() {
						return out.JSON(rows)
					}
					if len(rows) == 0 {
						out.Resultf("outbox is empty")
					}
					for _, r := range rows {
						to := r.TargetSpec
						if r.DisplayName != "" {
							to = r.DisplayName
						}
						line := fmt.Sprintf("%-6s %-10s %-8s → %s  %q", r.ID, r.Status, r.Mesh, to, r.Preview)
						if r.Error != "" {
							line += "  (" + r.Error + ")"
						}
						out.Resultf("%s", line)
					}
					return nil
				},
			}),
			{
				Name:        "requeue",
				Usage:       "send a failed row again",
				ArgsUsage:   "ID",
				Description: cliui.WithExamples("ID is the row id from outbox list, or its clientMessageId.", "claudemesh daemon outbox requeue 42"),
				Action: func(c *cli.Context) error {
					cl, out, err := running(c, 1, 1)
					if err != nil {
						return err
					}
					var row localapi.OutboxRow
					if _, err := cl.Do(c.Context, "POST", "/v1/outbox/requeue", localapi.RequeueRequest{ID: c.Args().First()}, &row); err != nil {
						return err
					}
					return printResult(out, row, "requeued as row %s (%s)", row.ID, row.Status)
				},
			},
		},
	}
}

// stopped reports whether the daemon pid has ended: the process is gone,
// or it no longer holds daemon.db's lock — which it releases when it exits,
// even while its exit is not reaped yet (a zombie still answers kill 0, and
// some containers' init reaps orphans late).
func stopped(home string, pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return true
	}
	f, err := os.Open(localapi.DBPath(home))
	if err != nil {
		return false
	}
	defer f.Close()
	// bbolt holds an exclusive flock for as long as the daemon has the
	// store open; a shared one succeeds only once it let go.
	if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) != nil {
		return false
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return true
}

// running starts a verb that needs the daemon (see verbStart): a client
// for the running daemon, without starting one.
func running(c *cli.Context, minArgs, maxArgs int) (*localapi.Client, *cliui.Out, error) {
	home, out, err := verbStart(c, minArgs, maxArgs)
	if err != nil {
		return nil, nil, err
	}
	cl, _, err := localapi.Probe(c.Context, home)
	if err != nil {
		if u := localapi.StillUnanswering(c.Context, home, unansweringPatience); u != nil {
			return nil, nil, unansweringError(home, u)
		}
		if cl, _, err = localapi.Probe(c.Context, home); err == nil {
			return cl, out, nil // it was starting
		}
		return nil, nil, cliui.Errorf("unreachable", "the daemon is not running").WithHint(config.Invocation(home) + " daemon up")
	}
	return cl, out, nil
}

// unansweringPatience is how long a daemon that holds the home without
// answering may be starting before the verbs say it does not answer: as
// long as daemon up waits for a new daemon's socket.
const unansweringPatience = 3 * time.Second

// unansweringError is what the daemon verbs say of a daemon that runs but
// cannot be reached (localapi.FindUnanswering): exit 5, with the way out.
func unansweringError(home string, u *localapi.Unanswering) error {
	return cliui.Errorf(cliui.CodeUnreachable, "%s", u.Message()).WithHint(u.Hint(config.Invocation(home)))
}

// gcHeadroom is how far above the live heap the daemon's next collection
// is set at least (internal/gcfloor): 16 MiB, small beside what a laptop
// has, enough that a burst of sends collects a few times a second, not
// dozens.
const gcHeadroom = 16 << 20
