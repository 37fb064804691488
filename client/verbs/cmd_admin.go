package verbs

import (
	"context"
	"errors"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// Administration verbs (01-protocol §6, 04-cli): kick, disconnect, ban,
// unban, bans, role set and mesh transfer. They are member-only actions, so
// they go to the broker directly, like invite; the broker resolves PEER
// (display name, full pubkey or a prefix of 8+ hex) and decides who may do
// what, and the verbs print who was affected and who was skipped and why.

// adminResultJSON is the --json answer of the admin verbs.
type adminResultJSON struct {
	Mesh     string        `json:"mesh"`
	Action   string        `json:"action"`
	Affected []peerRefJSON `json:"affected"`
	Skipped  []peerRefJSON `json:"skipped"`
}

type peerRefJSON struct {
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	Reason      string `json:"reason,omitzero"`
}

func refsJSON(refs []wire.PeerRef) []peerRefJSON {
	out := make([]peerRefJSON, 0, len(refs))
	for _, r := range refs {
		out = append(out, peerRefJSON{DisplayName: r.DisplayName, Pubkey: r.Pubkey, Reason: r.Reason})
	}
	return out
}

// skipWhy is the human reading of a skipped peer's reason ("" for a
// reason it does not know). A switch, not a map every process would build.
func skipWhy(reason string) string {
	switch reason {
	case wire.SkipSelf:
		return "that is you"
	case wire.SkipOwner:
		return "the owner"
	case wire.SkipAdmin:
		return "an admin (only the owner acts on admins)"
	case wire.SkipControlPlane:
		return "a daemon connection (kick it by name, or ban the member)"
	case wire.SkipNotConnected:
		return "not connected"
	case wire.SkipAlreadyBanned:
		return "already banned"
	case wire.SkipNotBanned:
		return "not banned"
	case wire.SkipUnchanged:
		return "already has that role"
	case wire.SkipBanned:
		return "banned"
	}
	return ""
}

// peerArg normalises a PEER argument: a hex prefix is lowercased (keys are
// lowercase on the wire), anything else goes as typed.
func peerArg(c *cli.Context) (string, error) {
	p := strings.TrimSpace(c.Args().First())
	if p == "" {
		return "", cliui.UsageErrorf("name a peer: a display name, a pubkey or a pubkey prefix (8+ hex)")
	}
	if strings.HasPrefix(p, "@") || strings.HasPrefix(p, "#") || p == "*" {
		return "", cliui.UsageErrorf("%q is not a peer: give a display name, a pubkey or a pubkey prefix", p)
	}
	if l := strings.ToLower(p); len(l) >= client.MinPrefix && isHexWord(l) {
		return l, nil
	}
	return p, nil
}

func isHexWord(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// onWriteMesh runs call on a transient connection to the mesh a write goes
// to (--mesh, else the only one) and returns that mesh: the shape of every
// member-only verb here.
func (e *env) onWriteMesh(call func(ctx context.Context, conn *client.Conn) error) (*config.Mesh, error) {
	m, err := e.writeMesh()
	if err != nil {
		return nil, err
	}
	return m, e.exchange(m, call)
}

// peerVerb starts a verb whose first argument is a PEER, taking n
// arguments in all.
func peerVerb(c *cli.Context, n int) (*env, string, error) {
	e, err := verbEnv(c, n, n)
	if err != nil {
		return nil, "", err
	}
	target, err := peerArg(c)
	return e, target, err
}

// runAdmin sends one admin request to the chosen mesh and prints its result.
func runAdmin(e *env, req *wire.AdminRequest, done string) error {
	var res *wire.AdminResult
	m, err := e.onWriteMesh(func(ctx context.Context, conn *client.Conn) (err error) {
		res, err = conn.Admin(ctx, req)
		return err
	})
	if err != nil {
		if ce, ok := cliError(err).(*cliui.Error); ok && ce.Code == wire.CodeForbidden && req.Type == wire.TypeSetRole && m != nil && m.Role == wire.MemberOwner {
			// The owner's own role (the only role set the broker refuses
			// its owner): "ask the mesh owner or an admin" told the owner
			// to ask herself.
			ce.Hint = "you are its owner: hand the mesh over first with claudemesh mesh transfer PEER --mesh " + config.ShellQuote(m.Slug) +
				" (you become an admin; the new owner can then change your role)"
			return ce
		}
		return askWhoCan(err, m, req.Type == wire.TypeSetRole || req.Type == wire.TypeMeshTransfer, adminCommandLine(req))
	}
	return printAdmin(e, m.Slug, req.Type, done, res)
}

// adminCommandLine is the command that makes req, for a hint.
func adminCommandLine(req *wire.AdminRequest) string {
	line := "claudemesh " + req.Type
	switch req.Type {
	case wire.TypeListBans:
		line = "claudemesh bans"
	case wire.TypeSetRole:
		line = "claudemesh role set"
	case wire.TypeMeshTransfer:
		line = "claudemesh mesh transfer"
	}
	switch {
	case req.All:
		line += " --all"
	case req.StaleMs > 0:
		line += " --stale " + shortDuration(time.Duration(req.StaleMs)*time.Millisecond)
	case req.Target != "":
		line += " " + config.ShellQuote(req.Target)
	}
	if req.Role != "" {
		line += " " + req.Role
	}
	return line
}

// shortDuration is d as --stale takes it: 2h, not 2h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2] // 2h0m0s → 2h0m, 30m0s → 30m
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2] // 2h0m → 2h
	}
	return s
}

// forbiddenHint gives a forbidden refusal hint (for a member; the owner
// and admins keep the broker's words' hint), other errors pass through.
func forbiddenHint(err error, m *config.Mesh, hint string) error {
	ce, ok := cliError(err).(*cliui.Error)
	if !ok || ce.Code != wire.CodeForbidden || m == nil || m.Role != wire.MemberMember {
		return cliError(err)
	}
	ce.Hint = hint
	return ce
}

// askWhoCan names, in the hint of a refusal for want of a role, the
// command the owner (ownerOnly) or an owner or admin would run for this
// member, and how the owner makes it an admin. m is the mesh the command
// went to (its role as the broker last said, config.RecordRole); other
// refusals (the owner cannot be banned, …) keep their hint.
func askWhoCan(err error, m *config.Mesh, ownerOnly bool, command string) error {
	ce, ok := cliError(err).(*cliui.Error)
	if !ok || ce.Code != wire.CodeForbidden || m == nil {
		return err
	}
	command += " --mesh " + config.ShellQuote(m.Slug)
	switch {
	case ownerOnly && m.Role != wire.MemberOwner:
		ce.Hint = "only the mesh owner can; ask the owner to run: " + command
	case !ownerOnly && m.Role == wire.MemberMember:
		ce.Hint = "ask the mesh owner or an admin to run: " + command + "; or ask the owner to make you an admin: claudemesh role set " +
			config.ShellQuote(m.DisplayName) + " admin --mesh " + config.ShellQuote(m.Slug)
	default:
		return err
	}
	return ce
}

func printAdmin(e *env, slug, action, done string, res *wire.AdminResult) error {
	if e.out.JSONMode() {
		return e.out.JSON(adminResultJSON{Mesh: slug, Action: action, Affected: refsJSON(res.Affected), Skipped: refsJSON(res.Skipped)})
	}
	s := e.out.Style()
	for _, r := range res.Affected {
		e.out.Resultf("%s %s %s (%s) in %s", s.Green("✔"), done, agentview.QuoteName(r.DisplayName), shortKey(r.Pubkey), slug)
	}
	for _, r := range res.Skipped {
		why := skipWhy(r.Reason)
		if why == "" {
			why = r.Reason
		}
		e.out.Resultf("%s skipped %s (%s): %s", s.Dim("–"), agentview.QuoteName(r.DisplayName), shortKey(r.Pubkey), why)
	}
	if len(res.Affected) == 0 && len(res.Skipped) == 0 {
		e.out.Resultf("nobody matched; nothing changed")
	}
	return nil
}

// dropCommand is kick or disconnect.
func dropCommand(name string) *cli.Command {
	kick := name == wire.TypeKick
	usage, prose := "drop a peer's connection; it reconnects on its own", "The peer's client reconnects at once: use it to make a stuck client start over."
	done := "disconnected"
	if kick {
		usage = "end a peer's connections and keep them from reconnecting"
		prose = "A kicked client stops reconnecting and tells its user; it comes back when its user runs it again\n" +
			"(or runs claudemesh daemon up). Naming a member kicks all its connections, daemon included; --all and\n" +
			"--stale leave daemon connections up and list them as skipped. To keep someone out, use ban."
		done = "kicked"
	}
	return &cli.Command{
		Name:      name,
		Usage:     usage + " (owner or admin)",
		ArgsUsage: "PEER | --all | --stale DUR",
		Description: cliui.WithExamples(prose+"\nPEER is a display name, a pubkey or a pubkey prefix (8+ hex). Admins cannot act on the owner or other admins.",
			"claudemesh "+name+" bob", "claudemesh "+name+" --stale 2h", "claudemesh "+name+" --all --mesh acme --json"),
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "every connected peer except you"},
			&cli.StringFlag{Name: "stale", Usage: "peers that sent nothing for `DUR` (30m, 2h, 1d)"},
		},
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 1)
			if err != nil {
				return err
			}
			req := &wire.AdminRequest{Type: name, All: c.Bool("all")}
			n := 0
			if req.All {
				n++
			}
			if s := c.String("stale"); s != "" {
				d, err := cliui.ParseDuration(s)
				if err != nil {
					return err
				}
				if d <= 0 {
					return cliui.UsageErrorf("--stale must be positive")
				}
				req.StaleMs = d.Milliseconds()
				n++
			}
			if c.NArg() == 1 {
				if req.Target, err = peerArg(c); err != nil {
					return err
				}
				n++
			}
			if n != 1 {
				return cliui.UsageErrorf("%s takes exactly one of PEER, --all or --stale DUR", name)
			}
			return runAdmin(e, req, done)
		},
	}
}

func banCommand() *cli.Command {
	return &cli.Command{
		Name:      "ban",
		Usage:     "remove a member and refuse it from now on (owner or admin)",
		ArgsUsage: "PEER",
		Description: cliui.WithExamples(
			"All the member's connections and agent sessions end, what is queued for it is dropped, and its\n"+
				"key is refused until unban. Admins cannot ban the owner or other admins.",
			"claudemesh ban mallory --reason \"spam\"", "claudemesh ban 3f9a12c4"),
		Flags: []cli.Flag{&cli.StringFlag{Name: "reason", Usage: "why, kept with the ban (`R`, 280 characters at most)"}},
		Action: func(c *cli.Context) error {
			e, target, err := peerVerb(c, 1)
			if err != nil {
				return err
			}
			return runAdmin(e, &wire.AdminRequest{Type: wire.TypeBan, Target: target, Reason: c.String("reason")}, "banned")
		},
	}
}

func unbanCommand() *cli.Command {
	return &cli.Command{
		Name:      "unban",
		Usage:     "let a banned member back in (owner or admin)",
		ArgsUsage: "PEER",
		Description: cliui.WithExamples("Only the owner can lift a ban the owner imposed. The member reconnects with its existing key.",
			"claudemesh unban mallory", "claudemesh unban 3f9a12c4 --json"),
		Action: func(c *cli.Context) error {
			e, target, err := peerVerb(c, 1)
			if err != nil {
				return err
			}
			return runAdmin(e, &wire.AdminRequest{Type: wire.TypeUnban, Target: target}, "unbanned")
		},
	}
}

// banJSON is one row of `bans --json`.
type banJSON struct {
	Mesh        string `json:"mesh"`
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	RevokedAt   int64  `json:"revokedAt"`
	Reason      string `json:"reason"`
	BannedBy    string `json:"bannedBy,omitzero"`
}

func bansCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:        "bans",
		Usage:       "list banned members (owner or admin)",
		Description: cliui.WithExamples("", "claudemesh bans", "claudemesh bans --mesh acme --json"),
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			var bans []wire.BanInfo
			m, err := e.onWriteMesh(func(ctx context.Context, conn *client.Conn) (err error) {
				bans, err = conn.ListBans(ctx)
				return err
			})
			if err != nil {
				return askWhoCan(err, m, false, "claudemesh bans")
			}
			rows := make([]banJSON, 0, len(bans))
			for _, b := range bans {
				rows = append(rows, banJSON{Mesh: m.Slug, DisplayName: b.DisplayName, Pubkey: b.Pubkey, RevokedAt: b.RevokedAt, Reason: b.Reason, BannedBy: b.BannedBy})
			}
			if e.out.JSONMode() {
				return e.out.JSON(rows)
			}
			if len(rows) == 0 {
				e.out.Resultf("nobody is banned in %s", m.Slug)
				return nil
			}
			t := newTable(e.out)
			t.row("NAME", "KEY", "SINCE", "REASON")
			for _, r := range rows {
				t.row(agentview.QuoteName(r.DisplayName), shortKey(r.Pubkey), when(r.RevokedAt), cliui.SanitizePeerText(r.Reason))
			}
			return t.flush()
		},
	})
}

func roleCommand() *cli.Command {
	return &cli.Command{
		Name:  "role",
		Usage: "change members' roles (owner only)",
		Subcommands: []*cli.Command{{
			Name:      "set",
			Usage:     "make a member an admin, or a plain member again (owner only)",
			ArgsUsage: "PEER admin|member",
			Description: cliui.WithExamples("Admins can invite, kick and ban members (not the owner or other admins). The owner's own\n"+
				"role changes only with claudemesh mesh transfer.",
				"claudemesh role set carol admin", "claudemesh role set carol member --mesh acme"),
			Action: func(c *cli.Context) error {
				e, target, err := peerVerb(c, 2)
				if err != nil {
					return err
				}
				role := c.Args().Get(1)
				if role != wire.MemberAdmin && role != wire.MemberMember {
					return cliui.UsageErrorf("the role is admin or member, not %q", role)
				}
				return runAdmin(e, &wire.AdminRequest{Type: wire.TypeSetRole, Target: target, Role: role}, "made "+role+":")
			},
		}},
	}
}

func meshTransferCommand() *cli.Command {
	return &cli.Command{
		Name:      "transfer",
		Usage:     "hand the mesh over to another member (owner only)",
		ArgsUsage: "PEER",
		Description: cliui.WithExamples("PEER becomes the owner; you become an admin, at once and for good (only the new owner can hand it\nback). It is recorded in the mesh's audit log.",
			"claudemesh mesh transfer bob", "claudemesh mesh transfer 3f9a12c4 --mesh acme"),
		Action: func(c *cli.Context) error {
			e, target, err := peerVerb(c, 1)
			if err != nil {
				return err
			}
			var res *wire.AdminResult
			req := &wire.AdminRequest{Type: wire.TypeMeshTransfer, Target: target}
			m, err := e.onWriteMesh(func(ctx context.Context, conn *client.Conn) (err error) {
				res, err = conn.Admin(ctx, req)
				return err
			})
			if err != nil {
				return askWhoCan(err, m, true, adminCommandLine(req))
			}
			// Keep config.json's role in step; the broker is the truth.
			if err := config.Update(e.home, func(cfg *config.Config) error {
				if cur, ok := cfg.Find(m.Slug); ok {
					cur.Role = wire.MemberAdmin
				}
				return nil
			}); err != nil {
				e.out.Warn("the mesh was handed over, but config.json could not be updated: "+err.Error(), "")
			}
			if err := printAdmin(e, m.Slug, wire.TypeMeshTransfer, "handed the mesh over to", res); err != nil {
				return err
			}
			if len(res.Affected) == 1 && !e.out.JSONMode() {
				// "handed the mesh over" alone did not say what the caller
				// is now, nor that it cannot be undone from here.
				e.out.Linef("%s", e.out.Style().Dim("→ you are an admin of "+m.Slug+" now, not its owner: only "+
					agentview.QuoteName(res.Affected[0].DisplayName)+" can hand it back (they run claudemesh mesh transfer)"))
			}
			return nil
		},
	}
}

// removeMemberJSON is `mesh remove-member --json`.
type removeMemberJSON struct {
	MeshID            string `json:"meshId"`
	MemberID          string `json:"memberId"`
	DisplayName       string `json:"displayName"`
	Pubkey            string `json:"pubkey"`
	DroppedDeliveries int    `json:"droppedDeliveries"`
}

func meshRemoveMemberCommand() *cli.Command {
	return &cli.Command{
		Name:      "remove-member",
		Usage:     "remove a member as the broker's operator",
		ArgsUsage: "PEER",
		Description: cliui.WithExamples(
			"For the broker's operator, who need not be a member: uses the operator token and the broker's REST\n"+
				"API. --mesh is the mesh's slug or id on the broker (or a mesh joined here, whose broker is then\n"+
				"used). The member's connections end and it may join again with a new invite; the removal is\n"+
				"recorded in the mesh's audit log under the broker's key. The owner cannot be removed.",
			"claudemesh mesh remove-member bob --mesh acme --broker wss://mesh.example.com/ws --operator-token-file ./operator.token",
			"CLAUDEMESH_OPERATOR_TOKEN=… claudemesh mesh remove-member 3f9a12c4 --mesh acme"),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "broker", Usage: "broker `URL` (default: the joined mesh's broker, else $" + envBrokerURL + ")"},
			&cli.StringFlag{Name: "operator-token", Usage: "operator `TOKEN` (visible in ps; prefer the file or $" + envOperatorToken + ")"},
			&cli.StringFlag{Name: "operator-token-file", Usage: "read the operator token from `FILE`"},
		},
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 1, 1)
			if err != nil {
				return err
			}
			target := strings.TrimSpace(c.Args().First())
			if target == "" {
				return cliui.UsageErrorf("name the member to remove")
			}
			mesh, brokerURL := e.g.Mesh, c.String("broker")
			if cfg, err := e.load(); err == nil {
				if m, ok := cfg.Find(mesh); ok && mesh != "" {
					mesh = m.MeshID
					if brokerURL == "" {
						brokerURL = m.BrokerURL
					}
				} else if mesh == "" {
					if m, err := cfg.Choose(""); err == nil {
						mesh = m.MeshID
						if brokerURL == "" {
							brokerURL = m.BrokerURL
						}
					}
				}
			}
			if mesh == "" {
				return cliui.UsageErrorf("name the mesh with --mesh SLUG (its slug or id on the broker)")
			}
			if brokerURL == "" {
				brokerURL = os.Getenv(envBrokerURL)
			}
			if brokerURL == "" {
				return cliui.UsageErrorf("mesh remove-member needs --broker URL (or $%s)", envBrokerURL)
			}
			token, err := operatorToken(c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(e.ctx(), opTimeout)
			defer cancel()
			res, err := client.RemoveMember(ctx, brokerURL, token, mesh, target)
			if err != nil {
				if client.CodeOf(err) == wire.CodeUnauthorized {
					return cliui.Errorf(wire.CodeUnauthorized, "the broker refused the operator token").
						WithHint("use the token in operator.token in the broker's data directory")
				}
				ce := cliError(err)
				// The operator is no member of the mesh, and is above its
				// owner: the member-facing hints do not fit.
				var e2 *cliui.Error
				if errors.As(ce, &e2) {
					switch e2.Code {
					case wire.CodeUnknownTarget:
						e2.Hint = "list the mesh's members as the operator: GET /v1/admin/meshes/" + mesh + "/members (docs/operating-a-broker.md, Removing a member)"
					case wire.CodeForbidden:
						e2.Hint = "the owner cannot be removed: its owner hands the mesh over first (claudemesh mesh transfer), or it stays"
					}
				}
				return ce
			}
			out := removeMemberJSON{MeshID: res.MeshID, MemberID: res.Removed.MemberID, DisplayName: res.Removed.DisplayName,
				Pubkey: res.Removed.Pubkey, DroppedDeliveries: res.DroppedDeliveries}
			if e.out.JSONMode() {
				return e.out.JSON(out)
			}
			e.out.Resultf("%s removed %s (%s) from %s", e.out.Style().Green("✔"), agentview.QuoteName(out.DisplayName), shortKey(out.Pubkey), mesh)
			if out.DroppedDeliveries > 0 {
				e.out.Linef("  %s for it dropped", plural(out.DroppedDeliveries, "undelivered message"))
			}
			return nil
		},
	}
}
