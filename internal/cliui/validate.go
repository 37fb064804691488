package cliui

import (
	"github.com/urfave/cli/v2"
)

// NoArgs is ArgsBetween(c, 0, 0), for verbs that take no positional
// arguments. Because unknown -x tokens stay positional (04-cli), this is
// also what turns a mistyped flag into "unknown flag".
func NoArgs(c *cli.Context) error { return ArgsBetween(c, 0, 0) }

// ArgsBetween returns a usage error unless c has at least minArgs and (when
// maxArgs >= 0) at most maxArgs positional arguments. The error names the
// command's syntax (its ArgsUsage) or the unexpected word.
func ArgsBetween(c *cli.Context, minArgs, maxArgs int) error {
	n := c.Args().Len()
	path := pathOf(c)
	name := commandName(c.App, path)
	hint := helpHint(c.App, path)
	switch {
	case n < minArgs:
		syntax := name
		if c.Command != nil && c.Command.ArgsUsage != "" {
			syntax += " " + c.Command.ArgsUsage
		}
		return UsageErrorf("missing argument; usage: %s", syntax).WithHint(hint)
	case maxArgs >= 0 && n > maxArgs:
		extra := c.Args().Get(maxArgs)
		for _, a := range c.Args().Slice()[maxArgs:] {
			if looksLikeFlag(a) {
				return UsageErrorf("unknown flag %s for %s", a, name).WithHint(hint)
			}
		}
		return UsageErrorf("unexpected argument %q for %s", extra, name).WithHint(hint)
	}
	return nil
}
