package verbs

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// `claudemesh apikey …` (04-cli): keys for bots and scripts on the broker's
// REST API, acting as this member. Like invites, they are the member's own
// business with the broker, so they always go direct.

func apikeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "apikey",
		Usage: "API keys for bots and scripts (the broker's REST API, acting as you)",
		Description: cliui.WithExamples(
			"A key acts as you on the broker's REST API (GET /v1/topics/NAME/messages, POST to them, the\n"+
				"/stream of a topic as Server-Sent Events, ...), limited to its capabilities (read, send; admin\n"+
				"for the mesh owner and admins only) and, with --topic, to some topics. The secret is shown once.",
			"claudemesh apikey create deploy-bot --cap read,send --topic deploys --expires 30d",
			"claudemesh apikey list",
			"claudemesh apikey revoke 01JD3Z5C8Q2W0W6N5D3H4K7M9P",
		),
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "create a key (its secret is shown once)", ArgsUsage: "LABEL",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "cap", Value: "read", Usage: "capabilities, comma-separated: read, send, admin"},
					&cli.StringFlag{Name: "topic", Usage: "limit the key to these topics, comma-separated"},
					&cli.StringFlag{Name: "expires", Usage: "the key stops working after `DUR` (e.g. 30d)"},
				},
				Action: apikeyCreate,
			},
			cliui.ReadOnly(&cli.Command{Name: "list", Usage: "your keys (every key of the mesh for its owner and admins)", Action: apikeyList}),
			{Name: "revoke", Usage: "revoke a key", ArgsUsage: "ID", Action: apikeyRevoke},
		},
	}
}

// apikeyJSON is `apikey create --json` (with the secret) and an element of
// `apikey list --json` (without).
type apikeyJSON struct {
	ID           string   `json:"id"`
	Secret       string   `json:"secret,omitzero"`
	Prefix       string   `json:"prefix"`
	Label        string   `json:"label"`
	Capabilities []string `json:"capabilities"`
	Topics       []string `json:"topics"`
	MemberPubkey string   `json:"memberPubkey"`
	CreatedAt    int64    `json:"createdAt"`
	ExpiresAt    int64    `json:"expiresAt,omitzero"`
	RevokedAt    int64    `json:"revokedAt,omitzero"`
	// MemberRemoved: the key's member was removed from the mesh, so the
	// broker refuses the key.
	MemberRemoved bool `json:"memberRemoved,omitzero"`
}

func apikeyOf(k wire.APIKeyInfo, secret string) apikeyJSON {
	return apikeyJSON{ID: k.ID, Secret: secret, Prefix: k.Prefix, Label: k.Label, Capabilities: k.Capabilities, Topics: k.Topics,
		MemberPubkey: k.MemberPubkey, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, MemberRemoved: k.MemberRemoved}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, strings.TrimPrefix(p, "#"))
		}
	}
	return out
}

func apikeyCreate(c *cli.Context) error {
	e, err := verbEnv(c, 1, 1)
	if err != nil {
		return err
	}
	req := wire.APIKeyCreate{Label: c.Args().First(), Capabilities: splitList(c.String("cap")), Topics: splitList(c.String("topic"))}
	if len(req.Capabilities) == 0 {
		return cliui.UsageErrorf("--cap needs at least one of read, send, admin")
	}
	for _, cp := range req.Capabilities {
		if cp != wire.CapRead && cp != wire.CapSend && cp != wire.CapAdmin {
			return cliui.UsageErrorf("--cap: %q is not read, send or admin", cp)
		}
	}
	for _, t := range req.Topics {
		if !wire.ValidTopicName(t) {
			return cliui.UsageErrorf("--topic: %q is not a topic name", t)
		}
	}
	if v := c.String("expires"); v != "" {
		d, err := cliui.ParseDuration(v)
		if err != nil {
			return err
		}
		if d <= 0 {
			return cliui.UsageErrorf("--expires must be positive")
		}
		req.ExpiresAt = time.Now().Add(d).UnixMilli()
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	var reply *wire.APIKeyReply
	var unknown []string // --topic names no topic this member can see
	if err := e.exchange(m, func(ctx context.Context, conn *client.Conn) (err error) {
		if reply, err = conn.APIKeyCreate(ctx, req); err != nil || len(req.Topics) == 0 {
			return err
		}
		// A mistyped --topic made a key that can do nothing, and nothing
		// said so. The key is made either way (a topic of that name may
		// come later); what this member cannot see is said.
		if list, lerr := conn.TopicList(ctx); lerr == nil {
			for _, t := range req.Topics {
				if !slices.ContainsFunc(list, func(i wire.TopicInfo) bool { return i.Name == t }) {
					unknown = append(unknown, t)
				}
			}
		}
		return nil
	}); err != nil {
		if ce, ok := cliError(err).(*cliui.Error); ok && ce.Code == wire.CodeForbidden && slices.Contains(req.Capabilities, wire.CapAdmin) {
			// Only an owner's or admin's key may carry admin.
			ce.Hint = "create the key without admin (--cap read,send), or ask the mesh owner to make you an admin first: claudemesh role set " +
				config.ShellQuote(m.DisplayName) + " admin --mesh " + config.ShellQuote(m.Slug)
			return ce
		}
		return err
	}
	if e.out.JSONMode() {
		return e.out.JSON(apikeyOf(reply.APIKeyInfo, reply.Secret))
	}
	s := e.out.Style()
	e.out.Resultf("%s API key %q created in %s (%s%s) — the secret is shown only now:", s.Green("✔"),
		cliui.SanitizePeerText(reply.Label), m.Slug, strings.Join(reply.Capabilities, ","), scopeText(reply.Topics))
	e.out.Resultf("  %s", reply.Secret)
	e.out.Linef("%s", s.Dim("  id "+reply.ID+" · use it as Authorization: Bearer <secret> on "+client.RESTBase(m.BrokerURL)+"/v1/…"))
	if len(unknown) > 0 {
		e.out.Warn(fmt.Sprintf("no topic %s in %s that you can see: the key reaches a topic by its name, so it can do nothing there until one of that name exists",
			"#"+strings.Join(unknown, ", #"), m.Slug), "check the name with claudemesh topic list; revoke a mistyped key with claudemesh apikey revoke "+reply.ID)
	}
	return nil
}

func scopeText(topics []string) string {
	if len(topics) == 0 {
		return ", every topic"
	}
	return ", topics " + strings.Join(topics, ",")
}

func apikeyList(c *cli.Context) error {
	e, err := verbEnv(c, 0, 0)
	if err != nil {
		return err
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	var keys []wire.APIKeyInfo
	if err := e.exchange(m, func(ctx context.Context, conn *client.Conn) (err error) {
		keys, err = conn.APIKeyList(ctx)
		return err
	}); err != nil {
		return err
	}
	rows := make([]apikeyJSON, 0, len(keys))
	for _, k := range keys {
		rows = append(rows, apikeyOf(k, ""))
	}
	if e.out.JSONMode() {
		return e.out.JSON(rows)
	}
	if len(rows) == 0 {
		e.out.Resultf("no API keys in %s", m.Slug)
		return nil
	}
	t := newTable(e.out)
	now := time.Now().UnixMilli()
	for _, k := range rows {
		state := "active"
		switch {
		case k.RevokedAt != 0:
			state = "revoked " + when(k.RevokedAt)
		case k.MemberRemoved:
			// Before "expired": a removed member's key never works again,
			// whatever its expiry said.
			state = "refused: its member was removed"
		case k.ExpiresAt != 0 && k.ExpiresAt <= now:
			state = "expired " + when(k.ExpiresAt)
		case k.ExpiresAt != 0:
			state = "until " + when(k.ExpiresAt)
		}
		t.row("  "+k.ID, k.Prefix+"…", cliui.SanitizePeerText(k.Label), strings.Join(k.Capabilities, ","), strings.TrimPrefix(scopeText(k.Topics), ", "), state)
	}
	return t.flush()
}

func apikeyRevoke(c *cli.Context) error {
	e, err := verbEnv(c, 1, 1)
	if err != nil {
		return err
	}
	id := c.Args().First()
	if !wire.ValidULID(id) {
		return cliui.UsageErrorf("%q is not an API key id (see claudemesh apikey list)", id)
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	if err := e.exchange(m, func(ctx context.Context, conn *client.Conn) error { return conn.APIKeyRevoke(ctx, id) }); err != nil {
		return err
	}
	return e.printOK("revoked API key %s; it is refused from now on", id)
}
