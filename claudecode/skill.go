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

// SkillCommand is `claudemesh skill` on its own: with no subcommand it
// prints the embedded SKILL.md.
func SkillCommand() *cli.Command {
	c := &cli.Command{Name: "skill"}
	AttachSkill(c)
	return c
}

// AttachSkill makes an existing `skill` command (the mesh-skill verbs list,
// get, publish and remove are its subcommands) print the embedded SKILL.md
// when it is run without a subcommand.
func AttachSkill(c *cli.Command) {
	c.Usage = "print the claudemesh skill for agents (SKILL.md); list, get, publish or remove the mesh's skills"
	c.Description = cliui.WithExamples("Without a subcommand: the SKILL.md that claudemesh install puts in\n"+
		"~/.claude/skills/claudemesh/SKILL.md. Mesh skills are stored on the broker as plaintext: members and the\n"+
		"broker's operator can read them, so never put a secret in one.",
		"claudemesh skill", "claudemesh skill list", "claudemesh skill get deploy", "claudemesh skill publish ./deploy.md")
	c.Action = func(c *cli.Context) error {
		if err := cliui.NoArgs(c); err != nil {
			return err
		}
		out := cliui.OutFrom(c)
		if out.JSONMode() {
			return out.JSON(map[string]string{"name": "claudemesh", "body": string(SkillMD)})
		}
		_, err := out.Stdout().Write(SkillMD)
		return err
	}
}
