// Package doctor is `claudemesh doctor`: a list of checks, each answering
// ok, warn or fail with a one-line fix. Other parts of the program add
// their checks to the list main.go passes to Command (the Claude Code
// integration's, the audit chain's, ...).
package doctor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
	"claudemesh/store"
	"claudemesh/wire"
)

// Statuses of a check.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Result is one line of the report. A check may return several (one per
// mesh).
type Result struct {
	Name    string `json:"name"`
	Status  string `json:"status"`
	Message string `json:"message"`
	Fix     string `json:"fix,omitempty"`
}

// Env is what checks get: the client home and a context bounded by the
// doctor's deadline.
type Env struct {
	Ctx  context.Context
	Home string
	// Self is the absolute path of the running binary.
	Self string
}

// Check is one named check.
type Check struct {
	Name string
	Run  func(e *Env) []Result
}

func one(name, status, msg, fix string) []Result {
	return []Result{{Name: name, Status: status, Message: msg, Fix: fix}}
}

// SelfPath is the absolute path of the running binary, symlinks resolved.
func SelfPath() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	abs, _ := filepath.Abs(exe)
	return abs
}

// Builtin are the checks of the CLI, config, daemon and brokers.
func Builtin() []Check {
	return []Check{
		{"binary", checkBinary},
		{"config", checkConfig},
		{"daemon", checkDaemon},
		{"broker", checkBrokers},
		{"audit", checkAudit}, // audit.go
	}
}

func checkBinary(e *Env) []Result {
	p, err := exec.LookPath("claudemesh")
	if err != nil {
		return one("binary on PATH", Warn, "claudemesh is not on PATH (running "+e.Self+")", "install it: sudo install "+e.Self+" /usr/local/bin/claudemesh")
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		p = real
	}
	if abs, _ := filepath.Abs(p); abs != e.Self {
		return one("binary on PATH", Warn, fmt.Sprintf("claudemesh on PATH is %s, not this binary (%s)", abs, e.Self), "put one claudemesh on PATH, then run claudemesh install again")
	}
	return one("binary on PATH", OK, p+" ("+buildinfo.Version+")", "")
}

func checkConfig(e *Env) []Result {
	fi, err := os.Stat(e.Home)
	if errors.Is(err, os.ErrNotExist) {
		return one("config", Warn, "no "+e.Home+" yet", config.Invocation(e.Home)+" join LINK")
	}
	if err == nil && fi.Mode().Perm()&0o077 != 0 {
		what := "others can list it"
		if fi.Mode().Perm()&0o022 != 0 {
			what = "others can write in it: they can replace config.json, with its broker and keys"
		}
		return one("config", Fail, fmt.Sprintf("%s is %o (%s)", e.Home, fi.Mode().Perm(), what), (&fsutil.InsecurePermError{Path: e.Home, Mode: fi.Mode()}).ErrorHint())
	}
	if err := fsutil.CheckPrivateFile(config.Path(e.Home)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return one("config", Fail, err.Error(), "chmod 600 "+config.Path(e.Home))
	}
	cfg, err := config.Load(e.Home)
	if err != nil {
		return one("config", Fail, err.Error(), "fix or remove "+config.Path(e.Home))
	}
	if len(cfg.Meshes) == 0 {
		return one("config", Warn, "not joined to any mesh", config.Invocation(e.Home)+" join LINK")
	}
	var bad []Result
	for _, m := range cfg.Meshes {
		key, err := cmcrypto.ParseSecretKey(m.SecretKey)
		if err != nil || key.PublicHex() != m.Pubkey {
			bad = append(bad, Result{Name: "key " + m.Slug, Status: Fail, Message: "the secret key does not match the pubkey", Fix: "join the mesh again with a new invite"})
		}
	}
	if len(bad) > 0 {
		return bad
	}
	return one("config", OK, count(len(cfg.Meshes), "mesh", "meshes")+", keys private (0600 in 0700)", "")
}

func checkDaemon(e *Env) []Result {
	cl, v, err := localapi.Probe(e.Ctx, e.Home)
	if err != nil {
		// Not running: its store must let it start (the verbs start it,
		// and fall back to the direct path when it cannot start).
		if u := localapi.StillUnanswering(e.Ctx, e.Home, 3*time.Second); u != nil {
			return one("daemon", Fail, u.Message(), u.Hint(config.Invocation(e.Home)))
		}
		path := localapi.DBPath(e.Home)
		// Read with no start under way: a start creating daemon.db
		// showed it empty or truncated, and doctor said the daemon
		// cannot start.
		var cerr error
		if err := localapi.WithoutStart(e.Home, func() error { cerr = store.CheckFile(path, false); return nil }); errors.Is(err, localapi.ErrStarting) {
			return one("daemon", Warn, "starting (it holds daemon/start.lock while it opens daemon.db; its socket answers once it is up)",
				"run "+config.Invocation(e.Home)+" doctor again in a moment; "+config.Invocation(e.Home)+" daemon status says when it is up")
		} else if err != nil {
			cerr = err
		}
		if err := cerr; err != nil {
			what := store.Why(err)
			if what == "" {
				what = "it cannot be used: " + err.Error()
			}
			if errors.Is(err, store.ErrCorrupt) {
				what += "; what the daemon received and holds is in that file"
			}
			return one("daemon", Fail, fmt.Sprintf("not running, and it cannot start: %s: %s; verbs use a direct broker connection meanwhile", path, what),
				config.Invocation(e.Home)+" daemon up says what to do (restore daemon.db from a backup, or start afresh with daemon up --init)")
		}
		if cfg, err := config.Load(e.Home); err == nil && len(cfg.Meshes) == 0 {
			// daemon up refuses a home that joined no mesh: its advice
			// could not work.
			return one("daemon", OK, "not running: not needed until this home joins a mesh ("+config.Invocation(e.Home)+" join LINK, which any verb's daemon follows)", "")
		}
		return one("daemon", Warn, "not running", config.Invocation(e.Home)+" daemon up (or "+config.Invocation(e.Home)+" daemon install-service to run it as a service)")
	}
	if v.DaemonVersion != buildinfo.Version {
		return one("daemon", Fail, fmt.Sprintf("pid %d runs %s, this CLI is %s", v.PID, v.DaemonVersion, buildinfo.Version), config.Invocation(e.Home)+" daemon down && "+config.Invocation(e.Home)+" daemon up")
	}
	out := one("daemon", OK, fmt.Sprintf("pid %d, %s", v.PID, v.DaemonVersion), "")
	// The daemon's own view of each mesh: what this doctor's fresh probe
	// of the broker cannot see (the daemon met a server that could not
	// prove the broker key, the member was kicked, removed or banned).
	var st localapi.Status
	if _, err := cl.Do(e.Ctx, "GET", "/v1/status", nil, &st); err != nil {
		return append(out, Result{Name: "daemon meshes", Status: Warn, Message: "the daemon did not say how its meshes are: " + err.Error(),
			Fix: config.Invocation(e.Home) + " daemon status"})
	}
	slugs := make([]string, 0, len(st.MeshErrors))
	for slug := range st.MeshErrors {
		slugs = append(slugs, slug)
	}
	slices.Sort(slugs)
	for _, slug := range slugs {
		p := st.MeshErrors[slug]
		status := Warn // connecting, unreachable: the daemon retries
		switch p.Code {
		case client.CodeBrokerKeyMismatch, wire.ReasonKicked, wire.ReasonRemoved, wire.CodeBanned, wire.CodeRevoked, wire.CodeUnauthorized, wire.ReasonLeft, wire.ReasonReplaced:
			status = Fail
		}
		fix := p.Hint
		if fix == "" {
			fix = config.Invocation(e.Home) + " daemon status"
		}
		out = append(out, Result{Name: "daemon mesh " + slug, Status: status, Message: st.Meshes[slug] + ": " + p.Message, Fix: fix})
	}
	return out
}

// checkBrokers dials every mesh's broker: a completed handshake proves it
// is reachable and signs with the pinned key; hello_ack's server time gives
// the clock skew.
func checkBrokers(e *Env) []Result {
	cfg, err := config.Load(e.Home)
	if err != nil {
		// Said, not silently left out: no broker or clock line otherwise.
		return one("broker", Warn, "skipped: the config cannot be read ("+err.Error()+")", "fix the config (see the config check), then run claudemesh doctor again")
	}
	if len(cfg.Meshes) == 0 {
		return nil
	}
	var out []Result
	for _, m := range cfg.Meshes {
		key, err := cmcrypto.ParseSecretKey(m.SecretKey)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(e.Ctx, 5*time.Second)
		start := time.Now()
		c, err := client.Dial(ctx, client.MeshIdentity{MeshID: m.MeshID, MemberID: m.MemberID, BrokerURL: m.BrokerURL, BrokerURLs: m.BrokerURLs, BrokerPubkey: m.BrokerPubkey, Member: key}, client.DialOptions{})
		cancel()
		name := "broker " + m.Slug
		if err != nil {
			msg, fix := err.Error(), "check that "+strings.Join(m.URLs(), " or ")+" is up and reachable from here"
			if h := client.CertificateHint(err); h != "" {
				// It answered: what stands in the way is this machine's
				// trust in its certificate.
				fix = h
			}
			switch client.CodeOf(err) {
			case client.CodeBrokerKeyMismatch:
				fix = "this server is not the broker you joined; join again if its operator replaced the key"
			case wire.CodeCapacity:
				// The broker answered: it is up, but full for this member
				// (--max-connections-per-member) or this mesh.
				fix = "the broker is up but refused another connection; close other claudemesh sessions of this mesh, or ask its operator about --max-connections-per-member and --max-connections-per-mesh"
			case wire.CodeRateLimited:
				fix = "the broker is up but asked this member to slow down; run claudemesh doctor again in a minute"
			case wire.CodeRevoked, wire.CodeBanned:
				fix = "you have been removed from this mesh; ask its owner for a new invite"
			case wire.CodeUnauthorized:
				fix = "the broker does not know this member in this mesh (removed, or the mesh is gone); ask its owner for a new invite"
			case cliui.CodeInvalidArgument:
				// Nothing was dialled: what we hold for this mesh is bad.
				var ce *client.Error
				if errors.As(err, &ce) && ce.Message != "" {
					msg = ce.Message
				}
				msg = "the mesh's entry in " + config.Path(e.Home) + " cannot be used: " + msg
				fix = "restore config.json from a backup, or join the mesh again with a new invite"
			}
			out = append(out, Result{Name: name, Status: Fail, Message: msg, Fix: fix})
			continue
		}
		rtt := time.Since(start)
		skew := time.Duration(time.Now().UnixMilli()-c.HelloAck().ServerTime) * time.Millisecond
		c.Close()
		out = append(out, Result{Name: name, Status: OK, Message: fmt.Sprintf("%s reachable, key matches the pin, handshake %s", c.Identity().BrokerURL, rtt.Round(time.Millisecond))})
		r := Result{Name: "clock " + m.Slug, Status: OK, Message: fmt.Sprintf("skew %s against the broker", skew.Round(time.Millisecond))}
		if abs := max(skew, -skew); abs > 30*time.Second {
			r.Status, r.Fix = Fail, "sync this machine's clock (NTP): the broker refuses hellos 60 s off"
		} else if abs > 5*time.Second+rtt {
			r.Status, r.Fix = Warn, "sync this machine's clock (NTP)"
		}
		out = append(out, r)
	}
	return out
}

type reportJSON struct {
	OK     bool     `json:"ok"`
	Checks []Result `json:"checks"`
}

// Command is `claudemesh doctor` running checks in order.
func Command(checks ...Check) *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check the set-up: binary, config, daemon and its service, brokers, clock, audit chains, Claude Code integration",
		Description: cliui.WithExamples("Each check says ok, warn or fail, with a one-line fix. Exits 0 unless a check fails.",
			"claudemesh doctor", "claudemesh doctor --json"),
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			out := cliui.OutFrom(c)
			home, err := config.ResolveHome(cliui.GlobalsFrom(c).Home)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			e := &Env{Ctx: ctx, Home: home, Self: SelfPath()}
			rep := reportJSON{OK: true, Checks: []Result{}}
			for _, ch := range checks {
				for _, r := range ch.Run(e) {
					rep.Checks = append(rep.Checks, r)
					if r.Status == Fail {
						rep.OK = false
					}
				}
			}
			if out.JSONMode() {
				if err := out.JSON(rep); err != nil {
					return err
				}
			} else {
				s := out.Style()
				for _, r := range rep.Checks {
					if r.Status == OK && out.Quiet() {
						continue // --quiet: what needs looking at, alone
					}
					mark := map[string]string{OK: s.Green("✔"), Warn: s.Yellow("⚠"), Fail: s.Red("✘")}[r.Status]
					out.Resultf("%s %s: %s", mark, r.Name, r.Message)
					if r.Fix != "" {
						out.Resultf("  %s", s.Dim(out.Commands("→ "+r.Fix)))
					}
				}
			}
			if !rep.OK {
				return cliui.Reported(cliui.ExitFailure)
			}
			return nil
		},
	}
}

// count is "1 mesh", "2 meshes".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
