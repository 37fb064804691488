package claudecode

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"claudemesh/internal/agentview"
	"claudemesh/internal/cliui"
)

// TestSkillTeachesShellSafeReplies: SKILL.md used to teach
// `claudemesh send "alice-api" "…"`: a reply by name (a name may hold
// `$(…)`, and may be someone else's by the time the reply goes) with the
// text in double quotes, where bash runs `$(…)` and backticks. It teaches
// replying to from_pubkey with the text in a quoted heredoc, and no example
// puts a name or a text in double quotes. Its heredocs ended at a fixed
// CLAUDEMESH_REPLY, which a peer's line quoted in a reply could equal (the
// rest of the reply then ran as shell): they use the random delimiter of
// the reply hint (agentview.NewReplyDelimiter), never a fixed one.
func TestSkillTeachesShellSafeReplies(t *testing.T) {
	skill := string(SkillMD)
	placeholder := agentview.ReplyDelimiterPrefix + strings.Repeat("X", 16)
	if !strings.Contains(skill, "`from_pubkey` (64 hex digits) is how to answer") ||
		!strings.Contains(skill, "<<'"+placeholder+"'\n") || !strings.Contains(skill, "\n"+placeholder+"\n") {
		t.Fatal("SKILL.md does not teach replying to the key with a quoted heredoc")
	}
	heredoc := regexp.MustCompile(`<<-?\s*'?([^'\s]+)`)
	for _, m := range heredoc.FindAllStringSubmatch(skill, -1) {
		if m[1] != placeholder {
			t.Errorf("SKILL.md has a heredoc ending at a fixed %q", m[1])
		}
	}
	dq := regexp.MustCompile("(?m)^claudemesh (send|topic post) [^\n]*\"|`claudemesh (send|topic post) [^`\n]*\"")
	if m := dq.FindAllString(skill, -1); len(m) > 0 {
		t.Fatalf("SKILL.md still double-quotes in: %q", m)
	}
}

// TestSkillNamesEveryExitCode: the skill's "When something fails" names
// every exit code a verb can end with (1 to 8 of `claudemesh help
// exit-codes`), so an agent knows exit 8 means "do not resend blindly".
func TestSkillNamesEveryExitCode(t *testing.T) {
	skill := string(SkillMD)
	i := strings.Index(skill, "## When something fails")
	if i < 0 {
		t.Fatal("SKILL.md has no \"When something fails\" section")
	}
	section := skill[i:]
	if j := strings.Index(section[3:], "\n## "); j >= 0 {
		section = section[:j+3]
	}
	for _, row := range cliui.ExitCodeTable {
		if row.Code == cliui.ExitOK || row.Code == cliui.ExitInterrupted {
			continue
		}
		if !regexp.MustCompile(`\b` + strconv.Itoa(row.Code) + ` [a-z]`).MatchString(section) {
			t.Errorf("SKILL.md's \"When something fails\" does not name exit %d (%s)", row.Code, row.Meaning)
		}
	}
}
