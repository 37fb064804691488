package verbs

import (
	"context"
	"slices"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// Grants verbs (01-protocol §6): what each other member may send you. The
// broker enforces them: a DM from a member without "dm" is refused with
// blocked_by_recipient, a broadcast or @group message from one without
// "broadcast" is dropped for you alone. Grants name members, so they cover
// every agent session of that member too.

// grantJSON is one row of `grants --json` and the answer of the other
// grant verbs.
type grantJSON struct {
	Mesh        string   `json:"mesh"`
	Pubkey      string   `json:"pubkey"`
	DisplayName string   `json:"displayName"`
	Caps        []string `json:"caps"`
	Blocked     bool     `json:"blocked"`
	Default     bool     `json:"default"`
}

// capList lists the capabilities for messages (built when one is shown,
// not by every process's package initialisation).
func capList() string { return strings.Join(wire.DefaultCaps, ", ") }

// grantsEdit is one grant verb's change to one sender's capabilities:
// cur is what the sender has now (nil: the defaults); it returns the new
// list, or nil for the defaults.
type grantsEdit func(cur []string) []string

func parseCaps(args []string, allowAll bool) ([]string, bool, error) {
	var caps []string
	all := false
	for _, a := range args {
		for _, cp := range strings.Split(a, ",") {
			cp = strings.ToLower(strings.TrimSpace(cp))
			switch {
			case cp == "":
			case cp == "all" && allowAll:
				all = true
			case cp == wire.CapDM || cp == wire.CapBroadcast:
				if !slices.Contains(caps, cp) {
					caps = append(caps, cp)
				}
			default:
				return nil, false, cliui.UsageErrorf("unknown capability %q: the capabilities are %s", cp, capList())
			}
		}
	}
	if len(caps) == 0 && !all {
		return nil, false, cliui.UsageErrorf("name at least one capability: %s", capList())
	}
	return caps, all, nil
}

// normCaps sorts caps and says nil when they are exactly the defaults, so a
// grant back to everything clears the explicit entry.
func normCaps(caps []string) []string {
	caps = slices.Clone(caps)
	slices.Sort(caps)
	def := slices.Clone(wire.DefaultCaps)
	slices.Sort(def)
	if slices.Equal(caps, def) {
		return nil
	}
	if caps == nil {
		caps = []string{}
	}
	return caps
}

func grantCommand() *cli.Command {
	return &cli.Command{
		Name:      "grant",
		Usage:     "let a member send you DMs or broadcasts again",
		ArgsUsage: "PEER CAP...",
		Description: cliui.WithExamples("CAP is dm or broadcast (several, or comma-separated). Applies to the member's agent sessions too.",
			"claudemesh grant bob dm", "claudemesh grant bob dm broadcast"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 2, -1); err != nil {
				return err
			}
			caps, _, err := parseCaps(c.Args().Slice()[1:], false)
			if err != nil {
				return err
			}
			return editGrant(c, "now may send you", func(cur []string) []string {
				if cur == nil {
					return nil // the defaults already include every capability
				}
				for _, cp := range caps {
					if !slices.Contains(cur, cp) {
						cur = append(cur, cp)
					}
				}
				return normCaps(cur)
			})
		},
	}
}

func revokeCommand() *cli.Command {
	return &cli.Command{
		Name:      "revoke",
		Usage:     "stop a member from sending you DMs or broadcasts",
		ArgsUsage: "PEER CAP...|all",
		Description: cliui.WithExamples("CAP is dm or broadcast; all is the same as block. Applies to the member's agent sessions too.",
			"claudemesh revoke bob broadcast", "claudemesh revoke bob all"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 2, -1); err != nil {
				return err
			}
			caps, all, err := parseCaps(c.Args().Slice()[1:], true)
			if err != nil {
				return err
			}
			return editGrant(c, "now may send you", func(cur []string) []string {
				if all {
					return []string{}
				}
				if cur == nil {
					cur = slices.Clone(wire.DefaultCaps)
				}
				cur = slices.DeleteFunc(cur, func(cp string) bool { return slices.Contains(caps, cp) })
				return normCaps(cur)
			})
		},
	}
}

func blockCommand() *cli.Command {
	return &cli.Command{
		Name:      "block",
		Usage:     "refuse every message from a member (and its agent sessions)",
		ArgsUsage: "PEER",
		Description: cliui.WithExamples("Their DMs to you are refused with blocked_by_recipient; their broadcasts skip you.",
			"claudemesh block mallory"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 1, 1); err != nil {
				return err
			}
			return editGrant(c, "is blocked", func([]string) []string { return []string{} })
		},
	}
}

func unblockCommand() *cli.Command {
	return &cli.Command{
		Name:        "unblock",
		Usage:       "return a member to the defaults (DMs and broadcasts)",
		ArgsUsage:   "PEER",
		Description: cliui.WithExamples("", "claudemesh unblock mallory"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 1, 1); err != nil {
				return err
			}
			return editGrant(c, "now may send you", func([]string) []string { return nil })
		},
	}
}

// senderKey resolves PEER to the member key grants are stored under: a
// session resolves to its member.
func senderKey(to string, m *config.Mesh, members []wire.Member, peers []wire.Peer) (string, string, error) {
	t, err := client.ResolveTarget(to, members, peers, m.Pubkey)
	if err != nil {
		return "", "", err
	}
	if t.Kind != wire.KindBox {
		return "", "", cliui.UsageErrorf("grants name one member, not %q", to)
	}
	for _, mem := range members {
		if mem.Pubkey == t.Spec {
			return mem.Pubkey, mem.DisplayName, nil
		}
	}
	for _, p := range peers {
		if p.Pubkey == t.Spec && p.Role == wire.RoleSession {
			for _, mem := range members {
				if mem.Pubkey == p.MemberPubkey {
					return mem.Pubkey, mem.DisplayName, nil
				}
			}
		}
	}
	return t.Spec, t.DisplayName, nil
}

func editGrant(c *cli.Context, done string, edit grantsEdit) error {
	e, err := newEnv(c)
	if err != nil {
		return err
	}
	to, err := peerArg(c)
	if err != nil {
		return err
	}
	m, err := e.writeMesh()
	if err != nil {
		return err
	}
	var row grantJSON
	err = e.exchange(m, func(ctx context.Context, conn *client.Conn) error {
		members, peers, err := snapshot(ctx, conn)
		if err != nil {
			return err
		}
		key, name, err := senderKey(to, m, members, peers)
		if err != nil {
			return err
		}
		if key == m.Pubkey {
			return cliui.UsageErrorf("that is you: grants are about other members")
		}
		cur, err := conn.GrantsGet(ctx)
		if err != nil {
			return err
		}
		var have []string
		if caps, ok := cur.Grants[key]; ok {
			have = slices.Clone(caps)
		}
		next := edit(have)
		var p *[]string
		if next != nil {
			p = &next
		}
		res, err := conn.GrantsSet(ctx, map[string]*[]string{key: p})
		if err != nil {
			return err
		}
		row = grantRow(m.Slug, key, name, res)
		return nil
	})
	if err != nil {
		return err
	}
	// A running daemon reads the grants again: a member blocked now has
	// its unseen messages marked seen, and what it sent before that is
	// still on its way is taken as seen (no longer held for its share of
	// the inbox).
	e.reloadDaemon()
	if e.out.JSONMode() {
		return e.out.JSON(row)
	}
	what := strings.Join(row.Caps, " and ")
	switch {
	case row.Blocked:
		// Whatever verb got here (block, revoke … all, a revoke of the
		// last capability), the outcome is the same sentence.
		e.out.Resultf("%s %s (%s) is blocked: they cannot message you, nor can their agent sessions", e.out.Style().Green("✔"), agentview.QuoteName(row.DisplayName), shortKey(row.Pubkey))
		return nil
	case row.Default:
		what = capList() + " (the defaults)"
	}
	e.out.Resultf("%s %s (%s) %s %s", e.out.Style().Green("✔"), agentview.QuoteName(row.DisplayName), shortKey(row.Pubkey), done, what)
	return nil
}

func grantRow(slug, key, name string, g *wire.Grants) grantJSON {
	caps, explicit := g.Grants[key]
	if !explicit {
		caps = g.Defaults
	}
	caps = slices.Clone(caps)
	if caps == nil {
		caps = []string{}
	}
	return grantJSON{Mesh: slug, Pubkey: key, DisplayName: name, Caps: caps, Blocked: explicit && len(caps) == 0, Default: !explicit}
}

func grantsCommand() *cli.Command {
	return cliui.ReadOnly(&cli.Command{
		Name:  "grants",
		Usage: "list the members you blocked or limited",
		Description: cliui.WithExamples("Members not listed may send you DMs and broadcasts (the defaults).",
			"claudemesh grants", "claudemesh grants --json"),
		Action: func(c *cli.Context) error {
			e, err := verbEnv(c, 0, 0)
			if err != nil {
				return err
			}
			var rows []grantJSON
			m, err := e.onWriteMesh(func(ctx context.Context, conn *client.Conn) error {
				members, err := conn.MembersList(ctx)
				if err != nil {
					return err
				}
				g, err := conn.GrantsGet(ctx)
				if err != nil {
					return err
				}
				names := map[string]string{}
				for _, mem := range members {
					names[mem.Pubkey] = mem.DisplayName
				}
				for key := range g.Grants {
					rows = append(rows, grantRow("", key, names[key], g))
				}
				return nil
			})
			if err != nil {
				return err
			}
			for i := range rows {
				rows[i].Mesh = m.Slug
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i].DisplayName+rows[i].Pubkey < rows[j].DisplayName+rows[j].Pubkey })
			if e.out.JSONMode() {
				return e.out.JSON(rows)
			}
			if len(rows) == 0 {
				e.out.Resultf("everyone in %s may send you DMs and broadcasts (nobody is blocked)", m.Slug)
				return nil
			}
			t := newTable(e.out)
			t.row("NAME", "KEY", "MAY SEND")
			for _, r := range rows {
				may := strings.Join(r.Caps, ", ")
				if r.Blocked {
					may = "nothing (blocked)"
				}
				t.row(agentview.QuoteName(r.DisplayName), shortKey(r.Pubkey), may)
			}
			if err := t.flush(); err != nil {
				return err
			}
			e.out.Linef("%s", e.out.Style().Dim("→ everyone else: "+capList()))
			return nil
		},
	})
}
