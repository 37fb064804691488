package claudecode

import (
	_ "embed"

	"github.com/urfave/cli/v2"

	"claudemesh/internal/cliui"
)

// SkillMD is the skill Claude Code loads (install writes it to
// ~/.claude/skills/claudemesh/SKILL.md; `claudemesh skill` prints it). It is
// the one copy: sections for new verbs are added to SKILL.md here.
//
//go:embed SKILL.md
var SkillMD []byte

// SkillCommand is `claudemesh skill`: with no subcommand it prints the
// embedded SKILL.md. Mesh skills (list, get, publish, remove) are
// subcommands added to this same command.
func SkillCommand() *cli.Command {
	return &cli.Command{
		Name:  "skill",
		Usage: "print the claudemesh skill for agents (SKILL.md)",
		Description: cliui.WithExamples("The same text claudemesh install puts in ~/.claude/skills/claudemesh/SKILL.md.",
			"claudemesh skill"),
		Action: func(c *cli.Context) error {
			if err := cliui.NoArgs(c); err != nil {
				return err
			}
			out := cliui.OutFrom(c)
			if out.JSONMode() {
				return out.JSON(map[string]string{"name": "claudemesh", "body": string(SkillMD)})
			}
			_, err := out.Stdout().Write(SkillMD)
			return err
		},
	}
}
