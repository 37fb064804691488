package verbs

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"golang.org/x/text/unicode/norm"

	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// maxSummary is the broker's limit on a summary, in code points.
const maxSummary = 280

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "set your status, summary and groups",
		Description: cliui.WithExamples(
			"Changes your member profile, seen by everyone in the mesh: status (idle, working, dnd — messages\n"+
				"of priority next and low wait while you are working or dnd), a one-line summary, and the groups\n"+
				"that @group messages reach. Groups are labels for addressing, not access control.",
			"claudemesh status set working",
			"claudemesh status summary \"refactoring the billing service\"",
			"claudemesh status group join ops --role oncall",
			"claudemesh status group leave ops",
		),
		Subcommands: []*cli.Command{statusSetCommand(), summaryCommand("summary", false), groupCommand("group", false)},
	}
}

func statusSetCommand() *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "set your status: idle, working or dnd",
		ArgsUsage: "idle|working|dnd",
		Description: cliui.WithExamples(
			"working decays to idle after 10 minutes without a refresh; dnd stays until changed.",
			"claudemesh status set dnd", "claudemesh status set idle --mesh acme"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 1, 1); err != nil {
				return err
			}
			st := c.Args().First()
			switch st {
			case wire.StatusIdle, wire.StatusWorking, wire.StatusDND:
			default:
				return cliui.UsageErrorf("status must be idle, working or dnd, not %q", st)
			}
			return profile(c, profileChange{Op: opStatus, Value: st}, "status is now "+st)
		},
	}
}

// summaryCommand is `status summary` and, as the top-level `summary`, its
// alias.
func summaryCommand(name string, alias bool) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     aliasUsage(alias, "set the one-line summary others see (alias: claudemesh summary)", "status summary"),
		Hidden:    alias,
		ArgsUsage: "TEXT...",
		Description: cliui.WithExamples("Words are joined with single spaces; at most 280 characters.",
			"claudemesh summary \"reviewing PR 412\"", "claudemesh status summary waiting for CI --mesh acme"),
		Action: func(c *cli.Context) error {
			if err := cliui.ArgsBetween(c, 1, -1); err != nil {
				return err
			}
			// NFC first, as names are: an "é" typed as e and a combining
			// accent is one character, not two (the broker counts code
			// points).
			text := norm.NFC.String(strings.Join(c.Args().Slice(), " "))
			if n := utf8.RuneCountInString(text); n > maxSummary {
				return cliui.Errorf(cliui.CodeInvalidArgument, "the summary is %d characters; at most %d", n, maxSummary)
			}
			return profile(c, profileChange{Op: opSummary, Value: text}, "summary updated")
		},
	}
}

// groupCommand is `status group` and, as the top-level `group`, its alias.
func groupCommand(name string, alias bool) *cli.Command {
	return &cli.Command{
		Name:   name,
		Usage:  aliasUsage(alias, "join or leave a group (alias: claudemesh group)", "status group"),
		Hidden: alias,
		Description: cliui.WithExamples("",
			"claudemesh group join ops", "claudemesh status group join ops/east --role lead", "claudemesh group leave ops"),
		Subcommands: []*cli.Command{
			{
				Name:      "join",
				Usage:     "join a group (@NAME messages reach you)",
				ArgsUsage: "NAME",
				Description: cliui.WithExamples(
					"NAME: lowercase letters, digits, _ and -, up to 4 levels separated by / (ops/east); a message to\n"+
						"@ops also reaches @ops/east.",
					"claudemesh group join ops", "claudemesh status group join ops/east --role lead"),
				Flags: []cli.Flag{&cli.StringFlag{Name: "role", Usage: "your `R`ole in the group (a free label)"}},
				Action: func(c *cli.Context) error {
					g, err := groupArg(c)
					if err != nil {
						return err
					}
					if !wire.ValidText(c.String("role"), 32) {
						// It was refused by the broker as a bad group name,
						// with the name's pattern.
						return cliui.UsageErrorf("--role %s is not a role: at most 32 bytes (a short label: lead, oncall), with no control characters",
							strconv.Quote(cliui.SanitizePeerText(c.String("role"))))
					}
					err = profile(c, profileChange{Op: opGroupJoin, Value: g, Role: c.String("role")}, "joined @"+g)
					var ce *cliui.Error
					if errors.As(err, &ce) && ce.Hint == "" && strings.HasPrefix(ce.Message, "at most ") && strings.HasSuffix(ce.Message, " groups") {
						// The broker's --max-groups: the way on is to leave one.
						ce.Hint = "leave one first: claudemesh status group leave NAME (peer list shows your groups)"
					}
					return err
				},
			},
			{
				Name:        "leave",
				Usage:       "leave a group",
				ArgsUsage:   "NAME",
				Description: cliui.WithExamples("", "claudemesh group leave ops"),
				Action: func(c *cli.Context) error {
					g, err := groupArg(c)
					if err != nil {
						return err
					}
					return profile(c, profileChange{Op: opGroupLeave, Value: g}, "left @"+g)
				},
			},
		},
	}
}

func groupArg(c *cli.Context) (string, error) {
	if err := cliui.ArgsBetween(c, 1, 1); err != nil {
		return "", err
	}
	g := strings.TrimPrefix(c.Args().First(), "@")
	if !wire.ValidGroup(g) {
		return "", cliui.Errorf(cliui.CodeInvalidArgument, "%q is not a group name: lowercase letters, digits, _ and -, up to 4 levels separated by /", g)
	}
	return g, nil
}

func profile(c *cli.Context, ch profileChange, done string) error {
	e, err := newEnv(c)
	if err != nil {
		return err
	}
	m, tr, err := withTransport(e, e.writeMesh)
	if err != nil {
		return err
	}
	if err := tr.Profile(e.ctx(), m, ch); err != nil {
		err = cliError(err)
		var ce *cliui.Error
		if ch.Op == opGroupLeave && errors.As(err, &ce) && ce.Code == wire.CodeNotFound {
			// The broker changed nothing: say so, not "left".
			ce.Message = "you are not in @" + ch.Value + " in " + m.Slug + ": nothing to leave"
			ce.Hint = "claudemesh peer list shows your groups"
		}
		return err
	}
	return e.printOK("%s in %s", done, m.Slug)
}
