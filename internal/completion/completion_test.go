package completion

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestCandidatesFixedWords: the words completion offers without looking at
// config.json or the daemon: a flag's values, a command's first argument,
// and the peer and topic verbs that look further (none here: empty home).
func TestCandidatesFixedWords(t *testing.T) {
	app := &cli.App{
		Flags: []cli.Flag{&cli.StringFlag{Name: "mesh"}},
		Commands: []*cli.Command{
			{Name: "send", Flags: []cli.Flag{&cli.StringFlag{Name: "priority"}}},
			{Name: "kick"},
			{Name: "hook"},
			{Name: "completion"},
			{Name: "status", Subcommands: []*cli.Command{{Name: "set"}}},
			{Name: "topic", Subcommands: []*cli.Command{{Name: "post"}, {Name: "create"}}},
		},
	}
	home := filepath.Join(t.TempDir(), "home")
	for _, tc := range []struct {
		words []string
		want  []string
	}{
		{[]string{"send", "--priority"}, []string{"now", "next", "low"}},
		{[]string{"hook"}, []string{"working", "idle", "dnd"}},
		{[]string{"completion"}, []string{"bash", "zsh", "fish"}},
		{[]string{"status", "set"}, []string{"idle", "working", "dnd"}},
		{[]string{"topic", "post"}, nil},                     // topic names: none in an empty home
		{[]string{"topic", "create"}, []string{"--mesh"}},    // no topic verb: only flags
		{[]string{"kick"}, []string{"--mesh"}},               // a peer verb: no peers in an empty home
		{[]string{"send"}, []string{"--mesh", "--priority"}}, // no send targets either
	} {
		got := Candidates(app, tc.words, home)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: %q, want %q", tc.words, got, tc.want)
		}
	}
	for _, name := range []string{"send", "verify", "kick", "disconnect", "ban", "unban", "grant", "revoke", "block"} {
		if !peerVerb(name) {
			t.Errorf("%s is not a peer verb", name)
		}
	}
	if peerVerb("status") || topicVerb("topic create") || !topicVerb("topic read") {
		t.Error("peerVerb or topicVerb is wrong")
	}
}

// TestCompletable: what __complete offers from the daemon is one line and
// one word of visible characters, and no flag or home directory; the
// shells quote the rest (e2e TestBashCompletionNeverRunsNames and the zsh
// and fish ones run the real scripts on hostile names).
func TestCompletable(t *testing.T) {
	for s, want := range map[string]bool{
		"alice": true, "élise": true, "@ops": true, "#general": true,
		"$(touch${IFS}x)": true, "`id`": true, "x;y": true, // quoted by the shells
		"": false, "a b": false, "a\tb": false, "a\nb": false, "a\rb": false,
		"a\x1b[31mb": false, "a\u0085b": false, "a\u00a0b": false, "a\u2028b": false,
		"a\u200bb": false, "a\u202eb": false, "a\xffb": false,
		"--all": false, "-x": false, "~root": false, "a-b~": true,
	} {
		if got := completable(s); got != want {
			t.Errorf("completable(%q) = %v, want %v", s, got, want)
		}
	}
}
