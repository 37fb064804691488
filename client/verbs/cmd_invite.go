package verbs

import (
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// maxInviteUses is the invite format's bound on maxUses (02-crypto).
const maxInviteUses = 10000

// maxInviteTTL bounds invite --expires.
const maxInviteTTL = 365 * 24 * time.Hour

func inviteCommand() *cli.Command {
	return &cli.Command{
		Name:  "invite",
		Usage: "print an invite link (ic://join/…) for someone to join the mesh",
		Description: cliui.WithExamples(
			"Builds the invite here, signs it with your member key and registers it with the broker; the link is\n"+
				"printed only once the broker accepted it. Only the mesh owner and admins may invite, and only the\n"+
				"owner may invite admins. The link carries no secret, but whoever holds it can join until it expires\n"+
				"or its uses run out: send it privately.",
			"claudemesh invite",
			"claudemesh invite --role admin --expires 1d --uses 3 --mesh acme",
			"claudemesh invite list",
			"claudemesh invite revoke 01JD3Z5C8Q2W0W6N5D3H4K7M9P",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "role", Value: wire.MemberMember, Usage: "role of the joiner: member or admin"},
			&cli.StringFlag{Name: "expires", Value: "7d", Usage: "validity as a `DUR` (90m, 12h, 7d; at most 365d)"},
			&cli.IntFlag{Name: "uses", Value: 1, Usage: "how many people may join with it (1 to 10000)"},
		},
		Action:      inviteCreate,
		Subcommands: []*cli.Command{inviteListCommand(), inviteRevokeCommand()},
	}
}

// inviteJSON is `invite --json` (04-cli).
type inviteJSON struct {
	Link      string `json:"link"`
	InviteID  string `json:"inviteId"`
	Role      string `json:"role"`
	ExpiresAt int64  `json:"expiresAt"`
	MaxUses   int    `json:"maxUses"`
}

func inviteCreate(c *cli.Context) error {
	e, err := verbEnv(c, 0, 0)
	if err != nil {
		return err
	}
	role := c.String("role")
	if role != wire.MemberMember && role != wire.MemberAdmin {
		return cliui.UsageErrorf("--role must be member or admin, not %q", role)
	}
	ttl, err := cliui.ParseDuration(c.String("expires"))
	if err != nil {
		return err
	}
	if ttl <= 0 {
		return cliui.UsageErrorf("--expires must be positive")
	}
	if ttl > maxInviteTTL {
		// Whoever holds the link can join until it expires: a typo
		// (100000d) must not make it good for centuries.
		return cliui.UsageErrorf("--expires is at most %dd (an invite link lets whoever holds it join until it expires)", maxInviteTTL/(24*time.Hour)).
			WithHint("make a new invite when this one expires: claudemesh invite")
	}
	uses := c.Int("uses")
	if uses < 1 || uses > maxInviteUses {
		return cliui.UsageErrorf("--uses must be 1 to %d", maxInviteUses)
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	key, err := cmcrypto.ParseSecretKey(m.SecretKey)
	if err != nil {
		return err
	}
	inv := &cmcrypto.Invite{V: 1, MeshID: m.MeshID, MeshSlug: m.Slug, MeshName: m.Name, BrokerURL: m.BrokerURL,
		BrokerPubkey: m.BrokerPubkey, InviteID: client.NewID(), Role: role,
		ExpiresAt: time.Now().Add(ttl).UnixMilli(), MaxUses: uses,
		// Unsigned (02-crypto signs brokerUrl only); absent for a single
		// broker, so such invites stay what they always were.
		BrokerURLs: m.BrokerURLs}
	if err := inv.Sign(key); err != nil {
		return cliui.Errorf("bad_config", "cannot sign an invite for %s: %v", m.Slug, err)
	}
	token, err := inv.Token()
	if err != nil {
		return err
	}
	link, err := inv.Link()
	if err != nil {
		return err
	}
	var info *wire.InviteInfo
	err = e.exchange(m, func(ctx context.Context, conn *client.Conn) (err error) {
		info, err = conn.InviteCreate(ctx, token)
		if client.CodeOf(err) == wire.CodeForbidden {
			return cliui.Errorf(wire.CodeForbidden, "the broker refused the invite: %s", errMessage(err)).
				WithHint("only the mesh owner or an admin can invite, and only the owner can invite admins")
		}
		return err
	})
	if err != nil {
		line := "claudemesh invite"
		if role == wire.MemberAdmin {
			line += " --role admin"
		}
		return askWhoCan(err, m, role == wire.MemberAdmin, line)
	}
	res := inviteJSON{Link: link, InviteID: info.InviteID, Role: info.Role, ExpiresAt: info.ExpiresAt, MaxUses: info.MaxUses}
	if e.out.JSONMode() {
		return e.out.JSON(res)
	}
	if e.out.Quiet() {
		// Bare, for LINK=$(claudemesh invite -q).
		_, err := io.WriteString(e.out.Stdout(), link+"\n")
		return err
	}
	e.out.Resultf("%s", link)
	uw := "use"
	if res.MaxUses != 1 {
		uw = "uses"
	}
	e.out.Linef("%s", e.out.Style().Dim(
		"→ "+res.Role+" invite to "+m.Slug+", "+itoa(res.MaxUses)+" "+uw+", expires "+time.UnixMilli(res.ExpiresAt).Format(time.RFC3339)+
			"; the joiner runs: claudemesh join <link>"))
	// The id invite revoke needs (invite list shows it too).
	id := cliui.SanitizePeerText(res.InviteID) // the broker's text: printed, never trusted
	e.out.Linef("%s", e.out.Style().Dim("  id "+id+" (to revoke it: "+config.Invocation(e.home)+" invite revoke "+config.ShellQuote(id)+" --mesh "+config.ShellQuote(m.Slug)+")"))
	return nil
}

func itoa(n int) string { return strconv.Itoa(n) }

// joinedAs is what a join stores of the broker's answer. A broker is
// trusted with routing, not with the home's files or the terminal: its
// slug names directories (sessions/<slug>/) and is printed everywhere, so
// the slug stored is the one the invite signed (checked as a slug); a
// name, role or display name the answer gives is kept only when it is one
// (names normalised, no controls), else the invite's or the one asked for.
func joinedAs(inv *cmcrypto.Invite, name, role, display, asked string) (string, string, string, string) {
	if n, err := cmcrypto.NormalizeName(name); err != nil || n != name {
		name = inv.MeshName
	}
	switch role {
	case wire.MemberOwner, wire.MemberAdmin, wire.MemberMember:
	default:
		role = inv.Role
	}
	if n, err := cmcrypto.NormalizeName(display); err != nil || n != display {
		display = asked
	}
	return inv.MeshSlug, name, role, display
}

// errMessage is a client error's human text without its code prefix.
func errMessage(err error) string {
	var e *client.Error
	if errors.As(err, &e) && e.Message != "" {
		return e.Message
	}
	return err.Error()
}

// inviteRowJSON is one element of `invite list --json` (04-cli).
type inviteRowJSON struct {
	InviteID  string `json:"inviteId"`
	Role      string `json:"role"`
	ExpiresAt int64  `json:"expiresAt"`
	MaxUses   int    `json:"maxUses"`
	Uses      int    `json:"uses"`
	CreatedAt int64  `json:"createdAt"`
	RevokedAt int64  `json:"revokedAt,omitzero"`
	// State is active, used (every use taken), expired or revoked, as
	// the text's STATE column says it.
	State string `json:"state"`
}

// inviteState is an invite's state at now (ms).
func inviteState(i wire.InviteInfo, now int64) string {
	switch {
	case i.RevokedAt != 0:
		return "revoked"
	case i.ExpiresAt <= now:
		return "expired"
	case i.Uses >= i.MaxUses:
		return "used"
	}
	return "active"
}

func inviteListCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:        "list",
		Usage:       "list the mesh's invites (owner and admins)",
		Description: cliui.WithExamples("", "claudemesh invite list", "claudemesh invite list --json --mesh acme"),
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			m, err := e.writeMesh()
			if err != nil {
				return err
			}
			var invites []wire.InviteInfo
			err = e.exchange(m, func(ctx context.Context, conn *client.Conn) (err error) {
				invites, err = conn.InviteList(ctx)
				return err
			})
			if err != nil {
				return askWhoCan(err, m, false, "claudemesh invite list")
			}
			now := time.Now().UnixMilli()
			rows := make([]inviteRowJSON, 0, len(invites))
			for _, i := range invites {
				rows = append(rows, inviteRowJSON{InviteID: i.InviteID, Role: i.Role, ExpiresAt: i.ExpiresAt,
					MaxUses: i.MaxUses, Uses: i.Uses, CreatedAt: i.CreatedAt, RevokedAt: i.RevokedAt, State: inviteState(i, now)})
			}
			if e.out.JSONMode() {
				return e.out.JSON(rows)
			}
			if len(rows) == 0 {
				e.out.Resultf("no invites in %s", m.Slug)
				return nil
			}
			tw := newTable(e.out)
			tw.row("INVITE", "ROLE", "USES", "EXPIRES", "STATE")
			for _, r := range rows {
				state := r.State
				if state == "used" {
					state = "used up"
				}
				tw.row(r.InviteID, r.Role, itoa(r.Uses)+"/"+itoa(r.MaxUses), when(r.ExpiresAt), state)
			}
			return tw.flush()
		},
	})
}

func inviteRevokeCommand() *cli.Command {
	return &cli.Command{
		Name:        "revoke",
		Usage:       "revoke an invite so nobody else can join with it",
		ArgsUsage:   "ID",
		Description: cliui.WithExamples("People who already joined with it stay members.", "claudemesh invite revoke 01JD3Z5C8Q2W0W6N5D3H4K7M9P"),
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 1, 1)
			if err != nil {
				return err
			}
			m, err := e.writeMesh()
			if err != nil {
				return err
			}
			err = e.exchange(m, func(ctx context.Context, conn *client.Conn) error {
				return conn.InviteRevoke(ctx, c.Args().First())
			})
			var ce *cliui.Error
			if errors.As(err, &ce) && ce.Code == wire.CodeInviteNotFound {
				ce.Message = "no invite " + cliui.Clip(c.Args().First()) + " in " + m.Slug
				ce.Hint = "claudemesh invite list shows this mesh's invites and their ids"
			}
			if err != nil {
				return askWhoCan(err, m, false, "claudemesh invite revoke "+config.ShellQuote(c.Args().First()))
			}
			return e.printOK("revoked invite %s", c.Args().First())
		},
	}
}

// unwrapLink undoes what mail and chat clients do to a pasted link: the
// <…> of an autolink (Slack, Markdown) and a line break inside a long
// one (the token's pieces, base64url words, follow it). A link that
// parses as it is comes back unchanged, and the pieces are taken only
// when the whole then parses (the signature still protects the content).
func unwrapLink(link string, fields []string) string {
	trim := func(s string) string { return strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">") }
	if _, _, err := cmcrypto.ParseInvite(link); err == nil || len(fields) == 0 {
		return link
	}
	first := trim(fields[0])
	if !strings.HasPrefix(first, "ic://") && !strings.HasPrefix(first, "https://") && !strings.HasPrefix(first, "http://") {
		return trim(strings.TrimSpace(link))
	}
	joined := first
	for _, f := range fields[1:] {
		if closed := strings.HasSuffix(f, ">"); closed || isBase64URLWord(f) {
			joined += trim(f)
			if closed {
				break
			}
			continue
		}
		break
	}
	for _, cand := range []string{joined, first} {
		if _, _, err := cmcrypto.ParseInvite(cand); err == nil {
			return cand
		}
	}
	return link
}

// isBase64URLWord reports whether s is a piece of a base64url token.
func isBase64URLWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return s != ""
}

// newInviteHint is the advice for an invite that cannot be used: the
// command whose link would do.
func newInviteHint(slug string) string {
	return "ask the mesh owner or an admin for a new invite: they run claudemesh invite --mesh " + config.ShellQuote(slug)
}

func joinCommand() *cli.Command {
	return &cli.Command{
		Name:      "join",
		Usage:     "join a mesh with a signed invite link",
		ArgsUsage: "LINK",
		Description: cliui.WithExamples(
			"LINK is ic://join/<token>, https://<broker-host>/join/<token> or the bare token (a link a mail client\n"+
				"broke over lines, or in <…>, is taken whole); - reads it from stdin\n"+
				"(so the bearer link stays out of the process list and shell history). The invite's signature\n"+
				"and expiry are checked here before the broker is contacted; your member key is generated here and\n"+
				"never leaves this machine. The broker key named in the invite is pinned: before the invite is sent,\n"+
				"the server at its URL must sign a fresh challenge with that key (else: \"not the broker the invite\n"+
				"names\", exit 4, and the invite is not sent), and every later connection must prove it again.\n"+
				"Ctrl-C (SIGINT, SIGTERM) while the broker answers keeps waiting, up to 30 s, so that the key it may\n"+
				"already have enrolled is saved; a second one stops waiting and says how to find out.",
			"claudemesh join ic://join/eyJ2IjoxLCJtZXNoSWQiOi…",
			"claudemesh join \"$LINK\" --name bob --json",
			"claudemesh join - --name bob < invite.txt",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "name", Usage: "your `DISPLAY` name in the mesh (default $USER)"},
		},
		Action: join,
	}
}

func join(c *cli.Context) error {
	e, err := verbEnv(c, 1, 1)
	if err != nil {
		return err
	}
	link := c.Args().First()
	if link == "-" {
		// The link on stdin, out of argv (which every user's ps shows).
		in := io.Reader(os.Stdin)
		if c.App != nil && c.App.Reader != nil {
			in = c.App.Reader
		}
		b, err := io.ReadAll(io.LimitReader(in, 64<<10))
		if err != nil {
			return cliui.Errorf(wire.CodeMalformed, "reading the invite link from stdin: %v", err)
		}
		link = string(b)
	}
	fields := strings.Fields(link)
	switch {
	case len(fields) == 0:
		return cliui.UsageErrorf("missing LINK: the invite link is empty").WithHint("claudemesh join 'ic://join/…' --name NAME, with the link the mesh's owner or an admin gave you")
	case len(fields) > 1 && (strings.HasPrefix(strings.TrimLeft(fields[0], "<"), "ic://") || strings.HasPrefix(strings.TrimLeft(fields[0], "<"), "https://")):
		// L=$(claudemesh invite) holds the link and, on the next line,
		// invite's note about it: the link is the first word.
		link = fields[0]
	}
	link = unwrapLink(link, fields)
	inv, token, err := cmcrypto.ParseInvite(link)
	if err != nil {
		// The decoder's detail (an offset in base64 or JSON) helps nobody
		// holding a link; it stays in the cause for CLAUDEMESH_DEBUG=1.
		return &cliui.Error{Code: wire.CodeMalformed, Cause: err,
			Message: "this is not a valid invite link: it is damaged or incomplete (often the end was cut off when it was copied)",
			Hint:    "copy the whole ic://join/… link again, or ask for a new invite"}
	}
	if err := inv.Verify(); err != nil {
		if errors.Is(err, cmcrypto.ErrBadSignature) {
			return cliui.Errorf(wire.CodeBadSignature, "the invite's signature does not verify: it was altered or mistyped").
				WithHint(hintFor(wire.CodeBadSignature))
		}
		// Which field is wrong, without the crypto package's prefix
		// ("crypto: invalid invite: …"), which names code, not the link.
		why := strings.ReplaceAll(err.Error(), "crypto: ", "")
		why = strings.TrimPrefix(why, "invalid invite: ")
		return &cliui.Error{Code: wire.CodeMalformed, Cause: err,
			Message: "this invite link cannot be used: " + cliui.SanitizePeerText(why),
			Hint:    "ask for a new invite (one made by an older or newer claudemesh may not be understood here)"}
	}
	if err := inv.CheckExpiry(time.Now()); err != nil {
		return cliui.Errorf(wire.CodeInviteExpired, "the invite to %s expired at %s", inv.MeshSlug,
			time.UnixMilli(inv.ExpiresAt).Format(time.RFC3339)).WithHint(newInviteHint(inv.MeshSlug))
	}
	display, err := displayNameFrom(c.String("name"))
	if err != nil {
		return err
	}
	cfg, err := e.load()
	if err != nil {
		return err
	}
	for _, m := range cfg.Meshes {
		if m.MeshID == inv.MeshID {
			e := cliui.Errorf("already_joined", "already joined %s (as %s) from this home", m.Slug, m.DisplayName).
				WithHint("use another --home for a second identity; to join again after being removed from the mesh, run " +
					config.InvocationWithHome(e.home) + " mesh leave " + m.Slug + " first")
			e.Exit = cliui.ExitConflict
			return e
		}
	}
	if _, taken := cfg.Find(inv.MeshSlug); taken {
		return slugTaken(inv.MeshSlug)
	}

	// Saved before it is enrolled, so a join killed meanwhile is
	// completed by the next one (joinpending.go).
	key, resumed, err := pendingJoinKey(e.home, inv.MeshID, display)
	if err != nil {
		return err
	}
	if resumed {
		e.out.Linef("%s", e.out.Style().Dim("  using the key an unfinished join of "+inv.MeshSlug+" saved here"))
	}
	req, err := client.NewJoinRequest(token, inv.MeshID, inv.InviteID, display, key, time.Now())
	if err != nil {
		return cliError(err)
	}
	// The signed brokerUrl first, then the other nodes the invite lists
	// (checked by Verify), so a join works while one node is down.
	urls, err := wire.BrokerURLList(inv.BrokerURL, inv.BrokerURLs)
	if err != nil {
		urls = []string{inv.BrokerURL}
	}
	// The enrolment is not abandoned at the first signal (cliui.Hold;
	// join catches them from its start): the broker may already have
	// enrolled the key and spent the invite's use, and the key must then
	// be saved, or the member would exist with a key nobody holds. The
	// first SIGINT or SIGTERM says so on stderr and join waits for the
	// answer, at most opTimeout, and saves the key; a second stops
	// waiting, with an error that says what is unknown and how to find
	// out.
	var res *client.JoinResponse
	var answered string
	err = cliui.Hold(e.ctx(), joinHeldNote, func(hctx context.Context) error {
		ctx, cancel := context.WithTimeout(hctx, opTimeout)
		defer cancel()
		var err error
		res, answered, err = client.JoinAny(ctx, urls, inv.BrokerPubkey, req)
		if err != nil && hctx.Err() != nil {
			return joinAbandoned(inv.MeshSlug, display, inv.BrokerURL, err)
		}
		return err
	})
	if err != nil {
		// The broker's refusal, the abandon's interrupted error or, for
		// a signal before the request, context.Canceled (nothing was
		// asked: join ends as an interrupted command).
		ce, ok := cliError(err).(*cliui.Error)
		if ok && refusedForGood(ce.Code) {
			dropPendingJoin(e.home, inv.MeshID)
		}
		if ok {
			switch ce.Code {
			case wire.CodeInviteExpired, wire.CodeInviteRevoked, wire.CodeInviteExhausted, wire.CodeInviteNotFound:
				ce.Hint = newInviteHint(inv.MeshSlug)
			}
			return ce
		}
		return cliError(err)
	}
	if res.BrokerPubkey != inv.BrokerPubkey || res.MeshID != inv.MeshID {
		return cliui.Errorf(client.CodeBrokerKeyMismatch,
			"the broker at %s answered with key %s for mesh %s, but the invite names %s for %s; not joined",
			answered, res.BrokerPubkey, res.MeshID, inv.BrokerPubkey, inv.MeshID).WithHint(hintFor(client.CodeBrokerKeyMismatch))
	}
	slug, name, role, display := joinedAs(inv, res.Name, res.MemberRole, res.DisplayName, display)
	m := config.Mesh{MeshID: res.MeshID, MemberID: res.MemberID, Slug: slug, Name: name, Pubkey: key.PublicHex(),
		SecretKey: key.SecretKeyHex(), BrokerURL: inv.BrokerURL, BrokerPubkey: inv.BrokerPubkey, Role: role,
		DisplayName: display, JoinedAt: config.JoinedNow()}
	// A REST answer proves nothing about who holds the broker key, from
	// the signed brokerUrl or another; what is stored is the signed
	// brokerUrl and the broker's own list, else the invite's unsigned
	// one. Every URL is only ever used to open connections that must prove
	// the pinned key, so a forged URL can make the member's connections
	// fail, never trust another server.
	announced := res.BrokerURLs
	if len(announced) == 0 {
		announced = inv.BrokerURLs
	}
	m.BrokerURLs = e.brokerURLsOf(inv.BrokerURL, announced)
	if err := e.addMesh(m); err != nil {
		return err
	}
	dropPendingJoin(e.home, inv.MeshID)
	if e.out.JSONMode() {
		return e.out.JSON(meshJSONOf(&m))
	}
	e.out.Resultf("%s joined %s (%s) as %s, %s", e.out.Style().Green("✔"), cliui.SanitizePeerText(m.Name), m.Slug,
		cliui.SanitizePeerText(m.DisplayName), m.Role)
	if answered != inv.BrokerURL {
		e.out.Linef("%s", e.out.Style().Dim("  enrolled through "+answered+": the invite's broker "+inv.BrokerURL+" could not take the join"))
	}
	e.out.Linef("%s", e.out.Style().Dim(e.out.Commands("→ see who is around: claudemesh peer list")))
	return nil
}

// joinHeldNote is what join says on stderr at its first signal while it
// waits for the broker's answer to its enrolment (cliui.Hold).
const joinHeldNote = "interrupted: waiting up to 30 s for the broker's answer, so that the key it may already have enrolled " +
	"(spending the invite's use) is saved; a second Ctrl-C stops waiting"

// joinAbandoned is a join whose enrolment a second signal stopped waiting
// for: the broker may or may not have enrolled the new key, which was
// saved in the home before it was asked (joinpending.go). A join of the
// same mesh from this home asks again with that key: the broker answers a
// key it enrolled with its member, and enrols one it did not.
func joinAbandoned(slug, name, brokerURL string, cause error) error {
	e := cliui.Errorf(cliui.CodeInterrupted,
		"stopped waiting for the broker's answer: it may or may not have enrolled your new key in %s as %s; the key is saved here",
		slug, name).
		WithHint("run the same join again from this home: it asks again with the saved key, and completes the join either way")
	e.Cause = cause
	return e
}

// shellWord is s as one word a shell reads back as s: as it is when it
// holds nothing a shell treats specially, else in single quotes.
func shellWord(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
