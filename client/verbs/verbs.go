// Package verbs holds the one-shot CLI verbs a mesh member uses: mesh
// create/list/leave, invite, join, whoami, peer list/verify, send, inbox,
// message status and status/summary/group (04-cli.md).
//
// The verbs that the daemon will serve (send, peer list, inbox, message
// status, status/summary/group) reach the mesh only through the transport
// interface (transport.go). Today its one implementation is direct, the
// "cold path" of 04-cli: a short transient broker connection per command.
// The next step adds a daemon implementation and picks it first, keeping
// direct as the fallback, without touching the flag handling or the output
// code here. Verbs that only the member itself can do (mesh create, join,
// invite, mesh leave) talk to the broker directly, as they must work before
// any daemon knows the mesh.
//
// Decisions where the spec is silent are written next to the code; the
// main ones:
//
//   - Reads across several meshes (peer list, inbox) query every mesh and
//     report a mesh that failed without hiding the others: a warning on
//     stderr, and in --json an element {mesh, error:{code, message}} at the
//     end of the array; the exit code is 0 as long as one mesh answered.
//     A mesh whose rows the daemon served from its store is no failure of
//     the read: a broker it cannot reach meanwhile is a warning in human
//     output and nothing in inbox --json (daemon status --json says it).
//     When every mesh failed (or only one was asked), the command fails with
//     that error.
//   - `send … -` reads the message from stdin and drops one trailing newline.
//   - `inbox --follow` exits 130 on Ctrl-C, like every interrupted command
//     that is not cliui.ReadOnly; with --limit N it stops after N messages.
//   - `inbox --limit N` counts across meshes; with --unread (and always on
//     the direct path) it takes the oldest unread messages, so a backlog
//     is read in order; a plain daemon listing shows the N most recent.
package verbs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/internal/fsutil"
	"claudemesh/wire"
)

// opTimeout bounds one exchange with a broker (a request and its answer),
// so a broker that accepted the connection but went silent fails the
// command with exit 5 instead of hanging it.
const opTimeout = 30 * time.Second

// commands are the member verbs in the order help lists them, each with
// the name its constructor gives it, so that Command can build one verb
// without the others (TestCommandTable keeps the names honest).
var commands = []struct {
	name  string
	build func() *cli.Command
}{
	{"mesh", meshCommand},
	{"invite", inviteCommand},
	{"join", joinCommand},
	{"whoami", whoamiCommand},
	{"peer", peerCommand},
	{"peers", func() *cli.Command { return peerListCommand("peers", true) }},
	{"send", sendCommand},
	{"inbox", inboxCommand},
	{"message", messageCommand},
	{"status", statusCommand},
	{"summary", func() *cli.Command { return summaryCommand("summary", true) }},
	{"group", func() *cli.Command { return groupCommand("group", true) }},
	{wire.TypeKick, func() *cli.Command { return dropCommand(wire.TypeKick) }},
	{wire.TypeDisconnect, func() *cli.Command { return dropCommand(wire.TypeDisconnect) }},
	{"ban", banCommand},
	{"unban", unbanCommand},
	{"bans", bansCommand},
	{"role", roleCommand},
	{"grant", grantCommand},
	{"revoke", revokeCommand},
	{"block", blockCommand},
	{"unblock", unblockCommand},
	{"grants", grantsCommand},
	{"audit", auditCommand},
	{"skill", skillCommand},
	{"topic", topicCommand},
	{"apikey", apikeyCommand},
}

// Commands returns the member verbs, fresh on every call (urfave/cli flags
// hold their parsed values, so two apps must not share them).
func Commands() []*cli.Command {
	out := make([]*cli.Command, len(commands))
	for i, c := range commands {
		out[i] = c.build()
	}
	return out
}

// Command returns a fresh copy of the verb called name (not an alias), or
// nil when no verb has that name: what a process that runs one verb builds
// instead of Commands.
func Command(name string) *cli.Command {
	for _, c := range commands {
		if c.name == name {
			return c.build()
		}
	}
	return nil
}

// aliasUsage is the usage of a command that also stands, hidden, at the top
// level (peers, summary, group): the alias points to the full command.
func aliasUsage(alias bool, usage, full string) string {
	if alias {
		return "same as claudemesh " + full
	}
	return usage
}

// env is what every verb needs before it talks to anyone: the global
// flags, the output and the client home.
type env struct {
	c    *cli.Context
	g    cliui.Globals
	out  *cliui.Out
	home string
	log  *slog.Logger
	// daemonFailed: transport wanted the daemon, could not start it and
	// fell back to the direct path (said on stderr).
	daemonFailed bool
}

func newEnv(c *cli.Context) (*env, error) {
	g := cliui.GlobalsFrom(c)
	home, err := config.ResolveHome(g.Home)
	if err != nil {
		return nil, cliui.Errorf(cliui.CodeInvalidArgument, "%v", err).WithHint("pass --home DIR")
	}
	out := cliui.OutFrom(c)
	log := slog.New(slog.DiscardHandler)
	if os.Getenv(cliui.EnvDebug) == "1" {
		log = slog.New(slog.NewTextHandler(out.Stderr(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return &env{c: c, g: g, out: out, home: home, log: log}, nil
}

// verbEnv starts a verb's Action: it checks that the verb got minArgs to
// maxArgs arguments (-1: no upper bound) and builds the env.
func verbEnv(c *cli.Context, minArgs, maxArgs int) (*env, error) {
	if err := cliui.ArgsBetween(c, minArgs, maxArgs); err != nil {
		return nil, err
	}
	return newEnv(c)
}

func (e *env) ctx() context.Context {
	if e.c.Context != nil {
		return e.c.Context
	}
	return context.Background()
}

// transport picks how the daemon-servable verbs reach the mesh: the local
// daemon (started if it is not running), unless --no-daemon or
// CLAUDEMESH_NO_DAEMON=1; when the daemon cannot be reached, the direct
// (cold) path, unless --strict, which then fails with exit 5.
func (e *env) transport() (transport, error) {
	if !e.g.NoDaemon {
		api, err := localapi.Connect(e.ctx(), e.home, true)
		if err == nil {
			tok, terr := readSessionToken(e.home)
			if terr != nil {
				return nil, terr
			}
			api.SessionToken = tok
			return &viaDaemon{api: api, log: e.log, home: e.home}, nil
		}
		if errors.Is(err, localapi.ErrUnsafeSocket) {
			// Someone else could be behind that socket: nothing goes to it,
			// and the user must hear why the daemon is not used.
			if e.g.Strict {
				return nil, cliui.Errorf("unreachable", "the daemon cannot be used: %v", err).
					WithHint("remove the socket or fix its directory's owner and mode, then claudemesh daemon up")
			}
			e.out.Warn(err.Error()+"; using a direct broker connection instead", "remove the socket or fix its directory's owner and mode, then claudemesh daemon up")
			return e.direct(), nil
		}
		if e.g.Strict {
			return nil, cliui.Errorf("unreachable", "the daemon cannot be reached: %v", err).
				WithHint("claudemesh daemon up (or drop --strict to use a direct broker connection)")
		}
		if e.ctx().Err() != nil {
			return nil, e.ctx().Err()
		}
		if cfg, cerr := config.Load(e.home); cerr == nil && len(cfg.Meshes) == 0 {
			// No mesh joined, so no daemon (daemon up refuses one): the
			// verb's own "not joined" says it, not a failed start.
			return e.direct(), nil
		}
		// The daemon was wanted and could not be started (a damaged
		// daemon.db, a bad flag in the environment, another daemon that
		// holds the home without a socket): one line says so and why, for
		// what follows comes from the broker alone, without what the
		// daemon received and holds.
		e.daemonFailed = true
		e.out.Warn("the daemon could not start ("+startFailure(err)+"); using a direct broker connection, which does not see the daemon's inbox and outbox",
			config.Invocation(e.home)+" daemon up says what to do")
	}
	return e.direct(), nil
}

// direct is the cold path, which is also how the member-only verbs
// (invite) reach the broker: the daemon never proxies them.
func (e *env) direct() *direct {
	return &direct{home: e.home, log: e.log}
}

// exchange is one request of a member-only verb on a transient connection
// to m's broker (see direct.exchange), its failure mapped by cliError.
func (e *env) exchange(m *config.Mesh, call func(ctx context.Context, c *client.Conn) error) error {
	return cliError(e.direct().exchange(e.ctx(), m, call))
}

// reloadDaemon tells a running daemon that config.json changed (a join, a
// new mesh, a leave), without starting one. The daemon also notices on its
// own within seconds; this makes the change immediate.
func (e *env) reloadDaemon() {
	if e.g.NoDaemon {
		return
	}
	if api, _, err := localapi.Probe(e.ctx(), e.home); err == nil {
		api.Do(e.ctx(), "POST", "/v1/reload", nil, nil)
	}
}

func (e *env) load() (*config.Config, error) {
	return config.Load(e.home)
}

// writeMesh is the mesh a write goes to: --mesh, else the only joined mesh,
// else mesh_required listing the choices (never a prompt).
func (e *env) writeMesh() (*config.Mesh, error) {
	cfg, err := e.load()
	if err != nil {
		return nil, err
	}
	m, err := cfg.Choose(e.g.Mesh)
	if err != nil {
		return nil, err
	}
	cp := *m
	return &cp, nil
}

// selectedMeshes are the mesh --mesh names, else every joined mesh, which
// may be none (mesh list and whoami say so rather than fail).
func (e *env) selectedMeshes() ([]config.Mesh, error) {
	cfg, err := e.load()
	if err != nil {
		return nil, err
	}
	if e.g.Mesh == "" {
		return cfg.Meshes, nil
	}
	m, err := cfg.Choose(e.g.Mesh)
	if err != nil {
		return nil, err
	}
	return []config.Mesh{*m}, nil
}

// readMeshes are the meshes a read covers: --mesh alone, else every joined
// mesh (04-cli "Reads … default to all joined meshes"), at least one.
func (e *env) readMeshes() ([]config.Mesh, error) {
	meshes, err := e.selectedMeshes()
	if err != nil {
		return nil, err
	}
	if len(meshes) == 0 {
		return nil, &config.SelectionError{Code: config.CodeNotJoined}
	}
	return meshes, nil
}

// withTransport is what a daemon-servable verb needs before it reaches its
// meshes: the mesh(es) pick chooses (e.writeMesh or e.readMeshes), then the
// transport (e.transport).
func withTransport[T any](e *env, pick func() (T, error)) (T, transport, error) {
	picked, err := pick()
	if err != nil {
		return picked, nil, err
	}
	tr, err := e.transport()
	return picked, tr, err
}

// printNotJoined is what mesh list and whoami print when no mesh is joined.
func printNotJoined(out *cliui.Out) {
	out.Resultf("not joined to any mesh yet")
	out.Linef("%s", out.Style().Dim(out.Commands("→ join one with claudemesh join <invite link>")))
}

// identityOf turns a config entry into what client.Dial needs, refusing an
// entry whose secret key does not match its recorded public key (a hand
// edit gone wrong would otherwise sign with a key the broker rejects).
func identityOf(m *config.Mesh) (client.MeshIdentity, error) {
	key, err := cmcrypto.ParseSecretKey(m.SecretKey)
	if err != nil {
		return client.MeshIdentity{}, cliui.Errorf("bad_config", "the secret key of mesh %s in config.json is invalid: %v", m.Slug, err).
			WithHint("re-join the mesh with a new invite")
	}
	if key.PublicHex() != m.Pubkey {
		return client.MeshIdentity{}, cliui.Errorf("bad_config", "the secret key of mesh %s in config.json does not match its pubkey", m.Slug).
			WithHint("re-join the mesh with a new invite")
	}
	return client.MeshIdentity{MeshID: m.MeshID, MemberID: m.MemberID, BrokerURL: m.BrokerURL,
		BrokerURLs: m.BrokerURLs, BrokerPubkey: m.BrokerPubkey, Member: key}, nil
}

// displayNameFrom is --name, else $USER; a display name is required by the
// broker and must be the same bytes in the signed enrollment, so it is
// normalised here.
func displayNameFrom(flag string) (string, error) {
	name := flag
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		return "", cliui.UsageErrorf("no display name: pass --name DISPLAY (or set $USER)")
	}
	n, err := cmcrypto.NormalizeName(name)
	if err != nil {
		return "", cliui.UsageErrorf("invalid display name %q: 1 to 64 characters, no control characters and no |", name)
	}
	return n, nil
}

// cliError maps a failure to the CLI's error: client and broker codes keep
// their code and gain a hint and the exit code of 04-cli; cliui errors and
// other typed errors (config, fsutil) pass through.
func cliError(err error) error {
	if err == nil {
		return nil
	}
	var ce *cliui.Error
	if errors.As(err, &ce) {
		return err
	}
	var e *client.Error
	if !errors.As(err, &e) {
		return err
	}
	msg := e.Message
	if msg == "" {
		msg = e.Code
	}
	if e.Code == wire.CodeRevoked || e.Code == wire.CodeBanned {
		// The broker's words for a ban (01-protocol §3) say "removed",
		// which is another state (the operator's removal, for good).
		msg = bannedText
	}
	if outer := err.Error(); outer != e.Error() {
		// Keep the caller's context ("acme: …") in front.
		msg = strings.TrimSuffix(outer, e.Error()) + msg
	}
	hint := e.Hint
	if hint == "" {
		hint = hintFor(e.Code)
	}
	out := &cliui.Error{Code: e.Code, Message: msg, Cause: err, Hint: hint}
	for _, c := range e.Candidates {
		out.Candidates = append(out.Candidates, cliui.Candidate(c))
	}
	switch e.Code {
	case client.CodeTimeout, client.CodeConnectionClosed, wire.CodeShuttingDown, wire.CodeUnavailable:
		// The broker stopped answering: for the user that is an
		// unreachable broker (exit 5), whatever the transport said.
		out.Exit = cliui.ExitUnreachable
	case wire.CodeNotFound:
		out.Exit = cliui.ExitNotFound
	}
	return out
}

// bannedText says a ban as a ban.
const bannedText = "this member is banned from the mesh: the broker refuses it until the mesh owner or an admin lifts the ban"

func hintFor(code string) string {
	switch code {
	case client.CodeUnreachable, client.CodeTimeout, client.CodeConnectionClosed, wire.CodeShuttingDown:
		return "check that the broker is running and reachable, then try again"
	case wire.CodeUnavailable:
		return "the broker's cluster has lost a majority of its nodes (or this node is catching up); try again in a moment"
	case client.CodeBrokerKeyMismatch:
		return "this server is not the broker you joined; if its operator really replaced the broker key, join again with a new invite"
	case wire.CodeUnknownTarget:
		return "run claudemesh peer list --all to see who you can message"
	case wire.CodeAmbiguousTarget:
		return "use one of the pubkeys below (a prefix of 8 or more hex digits is enough)"
	case wire.CodeUnknownRecipient:
		return "that key is not in the mesh; run claudemesh peer list --all"
	case client.CodeTopicNotFound:
		return "run claudemesh topic list to see the topics you can reach"
	case wire.CodeForbidden, wire.CodeIssuerNotAdmin:
		return "ask the mesh owner or an admin"
	case wire.CodeInviteExpired, wire.CodeInviteRevoked, wire.CodeInviteExhausted, wire.CodeInviteNotFound:
		return "ask the mesh owner or an admin for a new invite"
	case wire.CodeBadSignature:
		return "the invite was altered or mistyped; copy the whole link again"
	case wire.CodeRevoked, wire.CodeBanned:
		return "ask the mesh owner or an admin to lift the ban (they run: claudemesh unban YOUR-NAME)"
	case wire.ReasonKicked:
		return "if an admin only kicked you, running the command again (or claudemesh daemon up) reconnects; if you were removed, ask the mesh owner for a new invite"
	case wire.ReasonRemoved:
		return "the broker's operator removed you from the mesh: ask the mesh owner or an admin for a new invite, then run claudemesh mesh leave SLUG and claudemesh join LINK"
	case wire.CodeUnauthorized:
		return "the broker does not know this identity (left or removed?); join again with a new invite"
	case wire.CodeNameTaken:
		return "choose another display name with --name"
	case "unknown_session":
		return "CLAUDEMESH_SESSION_TOKEN_FILE names an agent session that is no longer registered: unset it to act as yourself, or start the session again with claudemesh launch"
	case wire.CodeSlugTaken:
		return "choose another slug with --slug"
	case wire.CodeIdempotencyKeyReused:
		return "a different message was already sent with this id; claudemesh message status ID shows it"
	case wire.CodeRateLimited:
		return "slow down and retry in a moment"
	case wire.CodeTimestampSkew:
		return "this machine's clock is off; sync it (NTP) and retry"
	}
	return ""
}

// meshError prefixes an error with the mesh it concerns, for commands that
// span several meshes.
func meshError(slug string, err error) error {
	if err == nil || meshPrefixed(err.Error(), slug) {
		return err // already said ("acme: acme: …" was printed)
	}
	return fmt.Errorf("%s: %w", slug, err)
}

// meshPrefixed reports whether msg already names the mesh slug up front
// ("acme: …", or the daemon's "mesh acme: …").
func meshPrefixed(msg, slug string) bool {
	return strings.HasPrefix(msg, slug+": ") || strings.HasPrefix(msg, "mesh "+slug+": ")
}

// withMesh is msg with the mesh slug in front, once.
func withMesh(slug, msg string) string {
	if meshPrefixed(msg, slug) {
		return msg
	}
	return slug + ": " + msg
}

// errorJSON is the {code, message} of a failed mesh in a multi-mesh read.
type errorJSON struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// meshErrorRow is the array element standing for a mesh that could not be
// read, so a --json reader learns about it without parsing stderr.
type meshErrorRow struct {
	SchemaVersion int       `json:"schemaVersion"`
	Mesh          string    `json:"mesh"`
	Error         errorJSON `json:"error"`
}

func errorRow(slug string, err error) meshErrorRow {
	code, msg := classify(err)
	return meshErrorRow{SchemaVersion: cliui.SchemaVersion, Mesh: slug, Error: errorJSON{Code: code, Message: msg}}
}

// classify is the code and message an error would be reported with.
func classify(err error) (code, msg string) {
	err = cliError(err)
	var ce *cliui.Error
	if errors.As(err, &ce) {
		return ce.Code, ce.Error()
	}
	var c interface{ ErrorCode() string }
	if errors.As(err, &c) {
		return c.ErrorCode(), err.Error()
	}
	return cliui.CodeInternal, err.Error()
}

// warnMesh reports a failed mesh on stderr (human output only).
func warnMesh(out *cliui.Out, slug string, err error) {
	_, msg := classify(err)
	hint := ""
	var h interface{ ErrorHint() string }
	if errors.As(cliError(err), &h) {
		hint = h.ErrorHint()
	}
	out.Warn(cliui.SanitizePeerText(withMesh(slug, msg)), hint)
}

// shortKey is the 8-hex prefix shown to humans; 8 is also the shortest
// prefix `send` accepts, so what is shown can be typed back.
func shortKey(k string) string {
	if len(k) > client.MinPrefix {
		return k[:client.MinPrefix]
	}
	return k
}

// when formats a Unix-ms timestamp for humans in local time.
func when(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	t := time.UnixMilli(ms)
	if time.Since(t) < 20*time.Hour && t.Day() == time.Now().Day() {
		return t.Format("15:04:05")
	}
	return t.Format("2006-01-02 15:04")
}

// okResult is the --json answer of verbs that have no result (04-cli).
type okResult struct {
	OK bool `json:"ok"`
}

func okJSON() okResult { return okResult{OK: true} }

// printOK ends a verb that has no result: {"ok":true} under --json, else a
// green ✔ and the human line.
func (e *env) printOK(format string, args ...any) error {
	if e.out.JSONMode() {
		return e.out.JSON(okJSON())
	}
	e.out.Resultf("%s "+format, append([]any{e.out.Style().Green("✔")}, args...)...)
	return nil
}

// sessionToken is the calling agent session's token, from the file named
// by CLAUDEMESH_SESSION_TOKEN_FILE (set by launch for claude and everything
// it runs): verbs run by the agent then send as its session, see its inbox
// and mark it as "you" in peer list. "" when unset or unreadable.
func sessionToken(home string) string {
	tok, _ := readSessionToken(home)
	return tok
}

// readSessionToken is sessionToken for verbs that act: a variable naming a
// file that is gone (`launch` removes it when the session ends, the daemon
// when it reaps a killed one) is an error, not a silent switch to acting
// as the member.
//
// The daemon writes a session's token file under its own home
// (sessions/<mesh>/<id>.token): a file under another home's is a session
// of that home's daemon, which this home's daemon does not know, and the
// verb says so rather than that the session ended (an agent running a
// verb with --home for another home than its session's).
func readSessionToken(home string) (string, error) {
	path := os.Getenv("CLAUDEMESH_SESSION_TOKEN_FILE")
	if path == "" {
		return "", nil
	}
	if other, ok := tokenHome(path); ok && !fsutil.Under(path, filepath.Join(home, "sessions")) {
		return "", cliui.Errorf("unknown_session", "CLAUDEMESH_SESSION_TOKEN_FILE names an agent session of another home (%s), not of %s", other, home).
			WithHint("unset it to act as this home's member: env -u CLAUDEMESH_SESSION_TOKEN_FILE " + config.Invocation(home) + " …")
	}
	data, err := fsutil.ReadPrivateFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", cliui.Errorf("unknown_session", "CLAUDEMESH_SESSION_TOKEN_FILE names %s, which no longer exists: the agent session it belonged to has ended", path).
			WithHint(hintFor("unknown_session"))
	}
	if err != nil {
		return "", cliui.Errorf("unknown_session", "CLAUDEMESH_SESSION_TOKEN_FILE: %v", err).WithHint(hintFor("unknown_session"))
	}
	return strings.TrimSpace(string(data)), nil
}

// tokenHome is the home a session token file belongs to, when its path has
// the shape the daemon and launch give it (HOME/sessions/<mesh>/<id>.token).
func tokenHome(path string) (string, bool) {
	dir := filepath.Dir(path)
	if filepath.Ext(path) != ".token" || filepath.Base(filepath.Dir(dir)) != "sessions" {
		return "", false
	}
	return filepath.Dir(filepath.Dir(dir)), true
}
