package cliui

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/urfave/cli/v2"
)

// clearColorEnv makes colour depend only on what a test sets.
func clearColorEnv(t *testing.T) {
	t.Helper()
	for _, k := range []string{"NO_COLOR", "CLICOLOR_FORCE", "COLORTERM", EnvDebug, "CLAUDEMESH_NO_DAEMON", "CLAUDEMESH_HOME", "TEST_CLAUDEMESH_BROKER"} {
		t.Setenv(k, "")
	}
	t.Setenv("TERM", "xterm-256color")
}

type result struct {
	code           int
	stdout, stderr string
}

func run(t *testing.T, app *cli.App, argv ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := RunContext(context.Background(), app, append([]string{"claudemesh"}, argv...), &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

// appWith returns an app with one command "do" whose action returns err.
func appWith(err error) *cli.App {
	return NewApp("claudemesh", "test", []*cli.Command{{
		Name: "do", Usage: "fail on purpose",
		Action: func(*cli.Context) error { return err },
	}})
}

func TestHelpLeadsWithExamplesAndIsPlainWithoutTTY(t *testing.T) {
	clearColorEnv(t)
	for _, argv := range [][]string{{"--help"}, {"-h"}, {}, {"help"}} {
		r := run(t, testApp(&seen{}), argv...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%q: exit %d, stderr %q", argv, r.code, r.stderr)
		}
		if strings.Contains(r.stdout, "\x1b") {
			t.Fatalf("%q: ANSI escapes without a TTY:\n%s", argv, r.stdout)
		}
		lines := strings.Split(r.stdout, "\n")
		if !strings.HasPrefix(lines[0], "claudemesh — test app") {
			t.Fatalf("%q: title = %q", argv, lines[0])
		}
		if first := firstSection(r.stdout); first != "EXAMPLES" {
			t.Fatalf("%q: first section %q, want EXAMPLES:\n%s", argv, first, r.stdout)
		}
		for _, want := range []string{
			`$ claudemesh send bob "tests pass"`,
			"send TO MESSAGE...",
			"status group join NAME [--role R]",
			"daemon outbox list",
			"peer list",
			"(alias: ls)",
			"--json",
			"-q, --quiet",
			"--mesh SLUG",
			"$CLAUDEMESH_NO_DAEMON",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%q: help lacks %q:\n%s", argv, want, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "\n  help") {
			t.Errorf("hidden help command listed:\n%s", r.stdout)
		}
	}
}

func firstSection(help string) string {
	for _, l := range strings.Split(help, "\n")[1:] {
		if l != "" && !strings.HasPrefix(l, " ") {
			return l
		}
	}
	return ""
}

func TestCommandHelp(t *testing.T) {
	clearColorEnv(t)
	for _, argv := range [][]string{
		{"send", "--help"},
		{"send", "bob", "hi", "-h", "--json"},
		{"help", "send"},
		{"--help", "send"},
	} {
		r := run(t, testApp(&seen{}), argv...)
		if r.code != 0 {
			t.Fatalf("%q: exit %d %q", argv, r.code, r.stderr)
		}
		if !strings.HasPrefix(r.stdout, "claudemesh send — send a message\n\nEXAMPLES\n") {
			t.Fatalf("%q: help starts:\n%s", argv, r.stdout)
		}
		for _, want := range []string{"claudemesh send TO MESSAGE...", "Sends a message.", "--priority VALUE", "(default: next)", "--reply-to ID", "GLOBAL FLAGS"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%q: lacks %q:\n%s", argv, want, r.stdout)
			}
		}
	}
	// A group shows its subcommands with full syntax, with or without --help.
	for _, argv := range [][]string{{"status", "--help"}, {"status"}, {"status", "help"}, {"help", "status"}} {
		r := run(t, testApp(&seen{}), argv...)
		if r.code != 0 || !strings.Contains(r.stdout, "status group join NAME [--role R]") || !strings.Contains(r.stdout, "claudemesh status COMMAND") {
			t.Fatalf("%q: exit %d:\n%s%s", argv, r.code, r.stdout, r.stderr)
		}
	}
	// A command with its own action and subcommands lists both.
	r := run(t, testApp(&seen{}), "--help")
	if !strings.Contains(r.stdout, "  invite [--role R]") || !strings.Contains(r.stdout, "  invite list") {
		t.Errorf("invite rows missing:\n%s", r.stdout)
	}
	r = run(t, testApp(&seen{}), "invite", "--help")
	if !strings.Contains(r.stdout, "claudemesh invite [--role R]\n  claudemesh invite COMMAND\n") {
		t.Errorf("invite usage:\n%s", r.stdout)
	}

	r = run(t, testApp(&seen{}), "help", "nope")
	if r.code != ExitUsage {
		t.Fatalf("help nope: exit %d", r.code)
	}
}

func TestHelpColour(t *testing.T) {
	clearColorEnv(t)
	t.Setenv("CLICOLOR_FORCE", "1")
	r := run(t, testApp(&seen{}), "--help")
	for _, want := range []string{
		"\x1b[1;38;5;208mclaudemesh — test app\x1b[0m", // title in brand orange
		"\x1b[1mEXAMPLES\x1b[0m",                       // bold headers
		"\x1b[36msend TO MESSAGE...\x1b[0m",            // verb syntax in cyan
		"\x1b[2m(alias: ls)\x1b[0m",                    // alias dimmed
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("coloured help lacks %q:\n%q", want, r.stdout)
		}
	}
	t.Setenv("COLORTERM", "truecolor")
	if r := run(t, testApp(&seen{}), "--help"); !strings.Contains(r.stdout, "\x1b[1;38;2;217;119;87m") {
		t.Errorf("truecolor brand missing")
	}

	// Explicit opt-outs beat CLICOLOR_FORCE.
	if r := run(t, testApp(&seen{}), "--help", "--no-color"); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("--no-color ignored")
	}
	t.Setenv("NO_COLOR", "1")
	if r := run(t, testApp(&seen{}), "--help"); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("NO_COLOR did not beat CLICOLOR_FORCE")
	}
}

func TestColorEnabledFor(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range []struct {
		noColor, force, term string
		flag                 bool
		want                 bool
	}{
		{want: false}, // not a terminal
		{force: "1", want: true},
		{force: "0", want: false},
		{force: "1", term: "dumb", want: true},
		{force: "1", noColor: "1", want: false},
		{force: "1", flag: true, want: false},
	} {
		clearColorEnv(t)
		t.Setenv("NO_COLOR", tc.noColor)
		t.Setenv("CLICOLOR_FORCE", tc.force)
		if tc.term != "" {
			t.Setenv("TERM", tc.term)
		}
		if got := ColorEnabledFor(&buf, tc.flag); got != tc.want {
			t.Errorf("%+v: got %v", tc, got)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	clearColorEnv(t)
	for _, argv := range [][]string{
		{"--bogus"},
		{"bogus"},
		{"sned", "bob", "hi"},
		{"status", "bogus"},
		{"send", "--wait-timeout", "soon", "bob", "hi"},
		{"send", "bob", "--priority"},
		{"--mesh"},
		{"mesh", "create", "acme"}, // required --broker missing
	} {
		r := run(t, testApp(&seen{}), argv...)
		if r.code != ExitUsage {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", argv, r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("%q: stdout %q, want empty", argv, r.stdout)
		}
		if !strings.HasPrefix(r.stderr, "  ✘ ") || !strings.Contains(r.stderr, "\n  → ") {
			t.Errorf("%q: stderr %q lacks ✘ message and → hint", argv, r.stderr)
		}
	}
	if r := run(t, testApp(&seen{}), "sned"); !strings.Contains(r.stderr, "did you mean claudemesh send?") {
		t.Errorf("no suggestion: %q", r.stderr)
	}
	t.Setenv("TEST_CLAUDEMESH_BROKER", "wss://b")
	if r := run(t, testApp(&seen{}), "mesh", "create", "acme"); r.code != 0 {
		t.Errorf("required flag from env: exit %d %q", r.code, r.stderr)
	}
}

func TestJSONUsageErrorOnStdout(t *testing.T) {
	clearColorEnv(t)
	for _, argv := range [][]string{
		{"--json", "--bogus"},
		{"bogus", "--json"},
		{"send", "--wait-timeout", "soon", "bob", "--json"},
		{"mesh", "create", "acme", "--json"},
		{"--json"}, // no command
		{"status", "--json"},
	} {
		r := run(t, testApp(&seen{}), argv...)
		if r.code != ExitUsage {
			t.Errorf("%q: exit %d", argv, r.code)
		}
		if r.stderr != "" {
			t.Errorf("%q: stderr %q, want empty", argv, r.stderr)
		}
		var doc struct {
			SchemaVersion int  `json:"schemaVersion"`
			OK            bool `json:"ok"`
			Error         struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &doc, json.RejectUnknownMembers(true)); err != nil {
			t.Fatalf("%q: stdout %q: %v", argv, r.stdout, err)
		}
		if doc.SchemaVersion != 1 || doc.OK || doc.Error.Code != "usage" || doc.Error.Message == "" {
			t.Errorf("%q: %+v", argv, doc)
		}
		if !strings.HasPrefix(r.stdout, `{"schemaVersion":1,"ok":false,"error":{"code":"usage","message":`) {
			t.Errorf("%q: shape %s", argv, r.stdout)
		}
	}
}

// pubkeyErr stands for another package's typed error.
type pubkeyErr struct{}

func (pubkeyErr) Error() string     { return "broker key changed" }
func (pubkeyErr) ErrorCode() string { return "broker_key_mismatch" }
func (pubkeyErr) ErrorHint() string { return "check the broker operator" }

func TestErrorReporting(t *testing.T) {
	clearColorEnv(t)
	ambiguous := &Error{
		Code: "ambiguous_target", Message: `"bob" matches 2 peers`, Hint: "use a pubkey prefix",
		Candidates: []Candidate{
			{DisplayName: "bob", Pubkey: strings.Repeat("a1", 32), Kind: "session"},
			{DisplayName: "bob\x1b]52;c;ZXZpbA==\x07", Pubkey: strings.Repeat("b2", 32), Kind: "member"},
		},
	}
	for _, tc := range []struct {
		name string
		err  error
		code string
		exit int
	}{
		{"typed", ambiguous, "ambiguous_target", 6},
		{"wrapped", fmt.Errorf("sending: %w", ambiguous), "ambiguous_target", 6},
		{"coder", fmt.Errorf("connecting: %w", pubkeyErr{}), "broker_key_mismatch", 4},
		{"plain", errors.New("disk on fire"), "internal", 1},
		{"override", &Error{Code: "internal", Message: "x", Exit: 5}, "internal", 5},
		{"cli.Exit", cli.Exit("old style", 3), "error", 3},
		{"unreachable", Errorf(CodeUnreachable, "cannot connect to %s", "wss://b"), "unreachable", 5},
		{"wait", &Error{Code: CodeWaitTimeout, Message: "not delivered within 30s"}, "wait_timeout", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, appWith(tc.err), "do")
			if r.code != tc.exit || r.stdout != "" {
				t.Fatalf("human: exit %d stdout %q", r.code, r.stdout)
			}
			if !strings.HasPrefix(r.stderr, "  ✘ "+tc.err.Error()) {
				t.Fatalf("human stderr %q", r.stderr)
			}

			r = run(t, appWith(tc.err), "do", "--json")
			if r.code != tc.exit || r.stderr != "" {
				t.Fatalf("json: exit %d stderr %q", r.code, r.stderr)
			}
			var doc struct {
				SchemaVersion int  `json:"schemaVersion"`
				OK            bool `json:"ok"`
				Error         struct {
					Code       string      `json:"code"`
					Message    string      `json:"message"`
					Candidates []Candidate `json:"candidates"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &doc, json.RejectUnknownMembers(true)); err != nil {
				t.Fatalf("json stdout %q: %v", r.stdout, err)
			}
			if doc.SchemaVersion != 1 || doc.OK || doc.Error.Code != tc.code || doc.Error.Message != tc.err.Error() {
				t.Fatalf("json doc %+v", doc)
			}
		})
	}

	r := run(t, appWith(ambiguous), "do")
	for _, want := range []string{"  → use a pubkey prefix\n", "    · bob (a1a1a1a1a1a1a1a1…, session)\n", "    · bob (b2b2"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "\x1b") || strings.Contains(r.stderr, "\x07") {
		t.Errorf("peer escape reached the terminal: %q", r.stderr)
	}
	r = run(t, appWith(ambiguous), "do", "--json")
	if !strings.Contains(r.stdout, `"candidates":[{"displayName":"bob","pubkey":"a1a1`) {
		t.Errorf("json candidates: %s", r.stdout)
	}
	if r := run(t, appWith(errors.New("x")), "do", "--json"); strings.Contains(r.stdout, "candidates") {
		t.Errorf("empty candidates printed: %s", r.stdout)
	}

	t.Setenv(EnvDebug, "1")
	r = run(t, appWith(errors.New("disk on fire")), "do", "--json")
	if !strings.Contains(r.stderr, "disk on fire") || !strings.Contains(r.stdout, `"code":"internal"`) {
		t.Errorf("debug: stdout %q stderr %q", r.stdout, r.stderr)
	}
}

func TestExitCode(t *testing.T) {
	want := map[int][]string{
		0: {""},
		2: {"usage", "mesh_required", "malformed", "invalid_argument", "payload_too_large"},
		3: {"unknown_target", "unknown_recipient", "mesh_not_found", "invite_not_found", "topic_not_found", "not_found"},
		4: {"forbidden", "unauthorized", "revoked", "banned", "kicked", "not_a_member", "blocked_by_recipient",
			"issuer_not_admin", "bad_signature", "invite_expired", "invite_revoked", "invite_exhausted",
			"broker_key_mismatch", "not_joined", "insecure_permissions"},
		5: {"unreachable", "timeout", "connection_closed", "shutting_down"},
		6: {"ambiguous_target", "idempotency_key_reused", "slug_taken", "name_taken", "topic_exists", "invite_exists", "already_running"},
		7: {"wait_timeout"},
		1: {"rate_limited", "timestamp_skew", "capacity", "internal", "something_new"},
	}
	for exit, codes := range want {
		for _, code := range codes {
			if got := ExitCode(code); got != exit {
				t.Errorf("ExitCode(%q) = %d, want %d", code, got, exit)
			}
		}
	}
}

func TestInterruptedIsSilent(t *testing.T) {
	clearColorEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	app := NewApp("claudemesh", "test", []*cli.Command{{
		Name: "tail",
		Action: func(c *cli.Context) error {
			cancel() // stands for SIGINT arriving mid-command
			<-c.Context.Done()
			return fmt.Errorf("following: %w", c.Context.Err())
		},
	}})
	var stdout, stderr bytes.Buffer
	code := RunContext(ctx, app, []string{"claudemesh", "tail"}, &stdout, &stderr)
	if code != ExitInterrupted || stdout.Len() != 0 || stderr.Len() != 0 {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout.String(), stderr.String())
	}
}

func TestArgsBetween(t *testing.T) {
	clearColorEnv(t)
	app := NewApp("claudemesh", "test", []*cli.Command{{
		Name: "verify", ArgsUsage: "PEER",
		Action: func(c *cli.Context) error { return ArgsBetween(c, 1, 1) },
	}})
	for argv, want := range map[string]string{
		"verify":              "missing argument; usage: claudemesh verify PEER",
		"verify a b":          `unexpected argument "b" for claudemesh verify`,
		"verify a --frobnify": "unknown flag --frobnify for claudemesh verify",
	} {
		r := run(t, app, strings.Fields(argv)...)
		if r.code != ExitUsage || !strings.Contains(r.stderr, want) {
			t.Errorf("%s: exit %d stderr %q", argv, r.code, r.stderr)
		}
	}
	if r := run(t, app, "verify", "a"); r.code != 0 {
		t.Errorf("verify a: exit %d %q", r.code, r.stderr)
	}
}

// TestHelpExitCodes: `help exit-codes` prints the one table, every row.
func TestHelpExitCodes(t *testing.T) {
	clearColorEnv(t)
	app := NewApp("claudemesh", "test", nil)
	r := run(t, app, "help", "exit-codes")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, row := range ExitCodeTable {
		if !strings.Contains(r.stdout, fmt.Sprintf("%3d  %s", row.Code, row.Meaning)) {
			t.Errorf("help exit-codes lacks %d: %q", row.Code, r.stdout)
		}
		if row.Code != ExitOK && row.Code != ExitFailure && row.Code != ExitInterrupted {
			found := false
			for _, code := range []string{"usage", "unknown_target", "forbidden", "unreachable", "ambiguous_target", "wait_timeout", CodeOutcomeUnknown} {
				found = found || ExitCode(code) == row.Code
			}
			if !found {
				t.Errorf("no code maps to exit %d", row.Code)
			}
		}
	}
}

// TestHelpTopicWithoutJSON: `help TOPIC --json` for a topic with no JSON
// form prints its text, as every help page does; the JSON renderer was
// looked up in a second map and called whether it was there or not (a
// nil function: a panic).
func TestHelpTopicWithoutJSON(t *testing.T) {
	clearColorEnv(t)
	helpTopics["text-only"] = helpTopic{text: func(w io.Writer, s Style) { io.WriteString(w, "just text\n") }}
	t.Cleanup(func() { delete(helpTopics, "text-only") })
	app := NewApp("claudemesh", "test", nil)
	r := run(t, app, "help", "text-only", "--json")
	if r.code != 0 || r.stdout != "just text\n" {
		t.Fatalf("help text-only --json: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, app, "help", "exit-codes", "--json"); r.code != 0 || !strings.HasPrefix(r.stdout, `{"schemaVersion":1,"exitCodes":[`) {
		t.Fatalf("help exit-codes --json: exit %d stdout %q", r.code, r.stdout)
	}
}

// TestCompiledSet: NewApp sets App.Compiled, which urfave/cli would
// otherwise find by stat(2)ing argv[0] in every process.
func TestCompiledSet(t *testing.T) {
	app := NewApp("claudemesh", "test", nil)
	if app.Compiled.IsZero() {
		t.Fatal("App.Compiled is zero")
	}
	app.Setup()
	if !app.Compiled.Equal(time.Unix(1, 0)) {
		t.Fatalf("App.Compiled became %v", app.Compiled)
	}
}

// TestStartsFast: Run delays catching signals only for command lines that
// run nothing but read-only code; every unmarked command catches them
// before it runs.
func TestStartsFast(t *testing.T) {
	noop := func(*cli.Context) error { return nil }
	app := NewApp("claudemesh", "test", []*cli.Command{
		ReadOnly(&cli.Command{Name: "version", Action: noop}),
		{Name: "install", Action: noop},
		{Name: "peer", Subcommands: []*cli.Command{
			ReadOnly(&cli.Command{Name: "list", Action: noop}),
			{Name: "verify", Action: noop},
		}},
	})
	for line, want := range map[string]bool{
		"":                     true,
		"--version":            true,
		"version":              true,
		"install --help":       true,
		"help install":         true,
		"peer":                 true,
		"peer list --json":     true,
		"install":              false,
		"install --version":    true, // --version is the version command
		"--json install":       false,
		"peer verify":          false,
		"peer verify --json":   false,
		"nosuchcommand --json": true,
		"-- install":           false, // urfave/cli runs install
		"--json -- install":    false,
		"-- peer verify":       false,
		"peer -- verify":       false,
		"peer list -- x":       true, // an argument of a read-only command
	} {
		argv := append([]string{"claudemesh"}, strings.Fields(line)...)
		if got := startsFast(app, parseArgs(app, argv)); got != want {
			t.Errorf("startsFast(%q) = %v, want %v", line, got, want)
		}
	}
}
