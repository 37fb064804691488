package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
	"github.com/urfave/cli/v2"

	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
)

func runApp(t *testing.T, argv ...string) (code int, stdout, stderr string) {
	t.Helper()
	for _, k := range []string{"NO_COLOR", "CLICOLOR_FORCE", "CLAUDEMESH_DEBUG"} {
		t.Setenv(k, "")
	}
	argv = append([]string{"claudemesh"}, argv...)
	var out, errb bytes.Buffer
	code = cliui.RunContext(context.Background(), appFor(argv), argv, &out, &errb) // as main does
	return code, out.String(), errb.String()
}

// runWith runs argv (argv[0] included) on app in-process.
func runWith(app *cli.App, argv []string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = cliui.RunContext(context.Background(), app, argv, &out, &errb)
	return code, out.String(), errb.String()
}

// TestAppForRunsAsTheWholeTree: a command line that appFor runs on an app
// holding one command prints and exits exactly as on the whole tree, and
// the lines it must not shorten (help, typos, flags before the command that
// only a command defines, --version after a command) get the whole tree.
// The home is empty and the daemon off, so every verb ends before it
// reaches a network.
func TestAppForRunsAsTheWholeTree(t *testing.T) {
	for _, k := range []string{"NO_COLOR", "CLICOLOR_FORCE", "CLAUDEMESH_DEBUG"} {
		t.Setenv(k, "")
	}
	t.Setenv("CLAUDEMESH_HOME", filepath.Join(t.TempDir(), "home"))
	t.Setenv("CLAUDEMESH_NO_DAEMON", "1")
	whole := len(newApp().Commands)
	for _, tc := range []struct {
		line  string
		short bool // appFor builds one command
	}{
		{"--version", true},
		{"--json --version", true},
		{"-q --no-color --version", true},
		{"--home /nonexistent --version", true},
		{"version", true},
		{"version --json", true},
		{"--json version", true},
		{"version extra", true},
		{"version --frobnicate", true},
		{"send", true},
		{"send bob", true},
		{"send bob hi", true},
		{"send bob hi --json", true},
		{"--json send bob hi", true},
		{"-q send bob hi", true},
		{"--mesh acme send bob hi --json", true},
		{"send bob hi --priority soon", true},
		{"send bob hi --bogus", true},
		{"send bob -5 degrees", true},
		{"send bob hi --wait-timeout", true},
		{"send bob -- --hi", true},
		{"send --id x bob hi --json", true},
		{"peer", true},
		{"peer list --json", true},
		{"peer lisst", true},
		{"peers --json", true},
		{"mesh list", true},
		{"mesh list --json", true},
		{"whoami --json", true},
		{"inbox --json", true},
		{"skill --json", true},
		{"skill list --json", true},
		{"topic", true},
		{"group", true},
		{"kick", true},
		{"grants --json", true},
		{"hook", true},
		{"hook bogus --json", true},
		{"install --frobnicate", true},
		{"uninstall extra words --json", true},
		{"launch --frobnicate", true},
		{"", false},
		{"--json", false},
		{"help", false},
		{"help send", false},
		{"--help", false},
		{"send --help", false},
		{"send bob hi -h", false},
		{"send bob hi --version", false},
		{"--version=false", false},
		{"--priority now send bob hi", false},
		{"--frobnicate send bob hi", false},
		{"sned bob hi", false},
		{"doctor --json", false},
		{"broker --help", false},
		{"--mesh", false},
	} {
		argv := append([]string{"claudemesh"}, strings.Fields(tc.line)...)
		app := appFor(argv)
		if short := len(app.Commands) < whole; short != tc.short {
			t.Errorf("%q: appFor built %d of %d commands", tc.line, len(app.Commands), whole)
		}
		if tc.line == "doctor --json" || tc.line == "broker --help" {
			continue // the whole tree either way; doctor looks at the machine
		}
		code, stdout, stderr := runWith(app, argv)
		wcode, wstdout, wstderr := runWith(newApp(), argv)
		if code != wcode || stdout != wstdout || stderr != wstderr {
			t.Errorf("%q: appFor: exit %d stdout %q stderr %q\nwhole tree: exit %d stdout %q stderr %q",
				tc.line, code, stdout, stderr, wcode, wstdout, wstderr)
		}
	}
}

func TestVersionJSON(t *testing.T) {
	for _, argv := range [][]string{{"version", "--json"}, {"--json", "version"}} {
		code, stdout, stderr := runApp(t, argv...)
		if code != 0 || stderr != "" {
			t.Fatalf("%q: exit %d stderr %q", argv, code, stderr)
		}
		var v struct {
			SchemaVersion int    `json:"schemaVersion"`
			Version       string `json:"version"`
			Go            string `json:"go"`
			Commit        string `json:"commit"`
		}
		if err := json.Unmarshal([]byte(stdout), &v, json.RejectUnknownMembers(true)); err != nil {
			t.Fatalf("%q: %q: %v", argv, stdout, err)
		}
		if v.SchemaVersion != 1 || v.Version != buildinfo.Version || v.Go != runtime.Version() {
			t.Fatalf("%q: %+v", argv, v)
		}
		if !strings.HasPrefix(stdout, `{"schemaVersion":1,"version":`) || strings.Count(stdout, "\n") != 1 {
			t.Fatalf("%q: shape %q", argv, stdout)
		}
	}
}

func TestVersionHuman(t *testing.T) {
	code, stdout, stderr := runApp(t, "version")
	if code != 0 || stderr != "" || stdout != "  claudemesh "+buildinfo.Version+"\n" {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if code, stdout, _ := runApp(t, "version", "-q"); code != 0 || !strings.Contains(stdout, buildinfo.Version) {
		t.Fatalf("--quiet hid the version: %d %q", code, stdout)
	}
}

func TestVersionRejectsUnknownFlag(t *testing.T) {
	code, stdout, stderr := runApp(t, "version", "--frobnicate")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "unknown flag --frobnicate") {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, stderr = runApp(t, "version", "--frobnicate", "--json")
	if code != 2 || stderr != "" || !strings.Contains(stdout, `"code":"usage"`) {
		t.Fatalf("json: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

func TestHelpPlainWithExamplesFirst(t *testing.T) {
	code, stdout, _ := runApp(t, "--help")
	if code != 0 || strings.Contains(stdout, "\x1b") {
		t.Fatalf("exit %d, help %q", code, stdout)
	}
	if !strings.HasPrefix(stdout, "claudemesh — ") || !strings.Contains(stdout, "\n\nEXAMPLES\n  $ claudemesh demo") {
		t.Fatalf("help:\n%s", stdout)
	}
	if strings.Index(stdout, "EXAMPLES") > strings.Index(stdout, "USAGE") {
		t.Fatalf("examples do not lead:\n%s", stdout)
	}
}

// TestVersionFlag: claudemesh --version is the version command.
func TestVersionFlag(t *testing.T) {
	code, stdout, stderr := runApp(t, "--version")
	if code != 0 || stderr != "" || stdout != "  claudemesh "+buildinfo.Version+"\n" {
		t.Fatalf("--version: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runApp(t, "--version", "--json")
	if code != 0 || !strings.HasPrefix(stdout, `{"schemaVersion":1,"version":"`+buildinfo.Version+`"`) {
		t.Fatalf("--version --json: exit %d stdout %q", code, stdout)
	}
}

// TestPlainVersionPrintsAsTheTree: main prints `claudemesh --version` and
// `claudemesh version` without an app (plainVersion) exactly as the whole
// tree does, and leaves to the tree every other line, and the environments
// in which the tree refuses the line (a global flag's variable it cannot
// parse) or could print something else.
func TestPlainVersionPrintsAsTheTree(t *testing.T) {
	for _, k := range []string{"NO_COLOR", "CLICOLOR_FORCE", "CLAUDEMESH_DEBUG"} {
		t.Setenv(k, "")
	}
	t.Setenv("CLAUDEMESH_HOME", filepath.Join(t.TempDir(), "home"))
	for _, tc := range []struct {
		line, noDaemon string // noDaemon: CLAUDEMESH_NO_DAEMON, "unset" for none
		plain          bool
	}{
		{"--version", "unset", true},
		{"version", "unset", true},
		{"--version", "1", true},
		{"--version", "", true},
		{"version", "false", true},
		{"--version", "maybe", false}, // the tree refuses it: exit 2
		{"version", "yes", false},
		{"--version --json", "unset", false},
		{"--json --version", "unset", false},
		{"-q --version", "unset", false},
		{"--version --no-color", "unset", false},
		{"--version=true", "unset", false},
		{"version extra", "unset", false},
		{"version --json", "unset", false},
		{"-version", "unset", false},
		{"Version", "unset", false},
		{"", "unset", false},
	} {
		if tc.noDaemon == "unset" {
			t.Setenv("CLAUDEMESH_NO_DAEMON", "") // restored after the test
			os.Unsetenv("CLAUDEMESH_NO_DAEMON")
		} else {
			t.Setenv("CLAUDEMESH_NO_DAEMON", tc.noDaemon)
		}
		argv := append([]string{"claudemesh"}, strings.Fields(tc.line)...)
		var out bytes.Buffer
		plain := plainVersion(argv, &out)
		if plain != tc.plain {
			t.Errorf("%q (CLAUDEMESH_NO_DAEMON %s): plainVersion %v", tc.line, tc.noDaemon, plain)
		}
		if !plain {
			if out.Len() != 0 {
				t.Errorf("%q: plainVersion declined but printed %q", tc.line, out.String())
			}
			continue
		}
		code, stdout, stderr := runWith(newApp(), argv)
		if code != cliui.ExitOK || stdout != out.String() || stderr != "" {
			t.Errorf("%q (CLAUDEMESH_NO_DAEMON %s): plainVersion printed %q; the whole tree: exit %d stdout %q stderr %q",
				tc.line, tc.noDaemon, out.String(), code, stdout, stderr)
		}
	}
	// The variable that sends the line to the tree is one the tree refuses.
	t.Setenv("CLAUDEMESH_NO_DAEMON", "maybe")
	if code, _, _ := runWith(newApp(), []string{"claudemesh", "--version"}); code == cliui.ExitOK {
		t.Errorf("CLAUDEMESH_NO_DAEMON=maybe: the tree printed the version, so plainVersion may too")
	}
}

// TestInitialisedFirst: internal/startstack's initialiser, which grows the
// main goroutine's stack before the others deepen it, runs before every
// package initialiser outside the runtime's own (GODEBUG=inittrace=1 of
// this test binary, which links what claudemesh links).
func TestInitialisedFirst(t *testing.T) {
	lines, err := initTrace()
	if err != nil {
		t.Fatal(err)
	}
	var before []string
	for _, l := range lines {
		if l.pkg == "claudemesh/internal/startstack" {
			for _, p := range before {
				if p != "runtime" && !strings.HasPrefix(p, "internal/") {
					t.Fatalf("%s was initialised before claudemesh/internal/startstack: %q", p, before)
				}
			}
			return
		}
		before = append(before, l.pkg)
	}
	t.Fatalf("no initialiser of claudemesh/internal/startstack in %d traced", len(lines))
}

// TestBrokerFlagsAreDescribed: every flag of `claudemesh broker --help`
// says what it does.
func TestBrokerFlagsAreDescribed(t *testing.T) {
	app := newApp()
	for _, c := range app.Commands {
		if c.Name != "broker" {
			continue
		}
		for _, f := range c.Flags {
			d, ok := f.(interface{ GetUsage() string })
			if !ok || strings.TrimSpace(d.GetUsage()) == "" {
				t.Errorf("broker flag %v has no description", f.Names())
			}
		}
		return
	}
	t.Fatal("no broker command")
}

// TestNoFlagCategories: no flag of any command has a urfave/cli Category.
// cliui renders help itself and never shows flag categories, but
// urfave/cli's App.Setup, which every process runs, renders the help
// line of every flag of a top-level command that has one categorised
// flag (newFlagCategoriesFromFlags): the broker's "Cluster" flags cost
// each `send` and `--version` ~150 µs for nothing anyone sees.
func TestNoFlagCategories(t *testing.T) {
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			for _, f := range c.Flags {
				if cf, ok := f.(cli.CategorizableFlag); ok && cf.GetCategory() != "" {
					t.Errorf("%s %s: flag %v has Category %q", path, c.Name, f.Names(), cf.GetCategory())
				}
			}
			walk(path+" "+c.Name, c.Subcommands)
		}
	}
	app := newApp()
	for _, f := range app.Flags {
		if cf, ok := f.(cli.CategorizableFlag); ok && cf.GetCategory() != "" {
			t.Errorf("global flag %v has Category %q", f.Names(), cf.GetCategory())
		}
	}
	walk("claudemesh", app.Commands)
}

// TestDemoJSON: demo --json prints one JSON document and no human text.
func TestDemoJSON(t *testing.T) {
	code, stdout, stderr := runApp(t, "demo", "--json")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
	var rep struct {
		SchemaVersion int      `json:"schemaVersion"`
		OK            bool     `json:"ok"`
		BrokerURL     string   `json:"brokerUrl"`
		Steps         []string `json:"steps"`
		Store         struct {
			Bytes           int `json:"bytes"`
			Ciphertexts     int `json:"ciphertexts"`
			PlaintextsFound int `json:"plaintextsFound"`
		} `json:"store"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%q: %v", stdout, err)
	}
	if rep.SchemaVersion != 1 || !rep.OK || !strings.HasPrefix(rep.BrokerURL, "ws://") || len(rep.Steps) < 5 ||
		rep.Store.Ciphertexts < 1 || rep.Store.Bytes == 0 || rep.Store.PlaintextsFound != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// TestREADMEExitCodes: the README shows the same exit-code table as
// `claudemesh help exit-codes`, and the docs never send a reader outside
// the repository.
func TestREADMEExitCodes(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), cliui.ExitCodesMarkdown()) {
		t.Errorf("README.md lacks the exit-code table:\n%s", cliui.ExitCodesMarkdown())
	}
	docs, _ := filepath.Glob("docs/*.md")
	for _, p := range append(docs, "README.md", "testdata/README.md") {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "../shared") || strings.Contains(string(data), "shared/spec") {
			t.Errorf("%s points outside the repository (../shared)", p)
		}
	}
}

// TestRawInternalsStayOut (issue 11 item 11): a damaged invite link and a
// broker address that is not a URL get plain words and a hint, not a
// decoder offset or a URL parser's error.
func TestRawInternalsStayOut(t *testing.T) {
	home := t.TempDir()
	code, _, stderr := runApp(t, "--home", home, "join", "ic://join/eyJ2IjoxLCJtZXNoSWQiOiIwMUpEUU05", "--name", "bob")
	if code != 2 || !strings.Contains(stderr, "damaged or incomplete") || strings.Contains(stderr, "offset") ||
		strings.Contains(stderr, "JSON") || strings.Contains(stderr, "unexpected EOF") {
		t.Fatalf("garbled invite: exit %d %q", code, stderr)
	}
	code, _, stderr = runApp(t, "--home", home, "mesh", "create", "Acme", "--broker", "127.0.0.1:17900", "--operator-token", "x", "--name", "alice")
	if code != 2 || !strings.Contains(stderr, "did you mean ws://127.0.0.1:17900/ws?") || strings.Contains(stderr, "parse") {
		t.Fatalf("bare host:port: exit %d %q", code, stderr)
	}
	code, _, stderr = runApp(t, "--home", home, "mesh", "create", "Acme", "--broker", "ftp://example.com/ws", "--operator-token", "x", "--name", "alice")
	if code != 2 || !strings.Contains(stderr, "ws://example.com/ws") {
		t.Fatalf("wrong scheme: exit %d %q", code, stderr)
	}
}

// TestOutboxListRefusesAnUnknownStatus: a --status no row can have is a
// usage error (exit 2) before the daemon is asked; a typo listed an empty
// outbox and exited 0.
func TestOutboxListRefusesAnUnknownStatus(t *testing.T) {
	home := t.TempDir()
	code, stdout, _ := runApp(t, "--home", home, "daemon", "outbox", "list", "--status", "bogus", "--json")
	if code != 2 || !strings.Contains(stdout, `"code":"usage"`) || !strings.Contains(stdout, "failed") {
		t.Fatalf("--status bogus: exit %d %s", code, stdout)
	}
	// A real status gets past the check (to the daemon, which is not running).
	if code, stdout, _ := runApp(t, "--home", home, "daemon", "outbox", "list", "--status", "dead", "--json"); code != 5 {
		t.Fatalf("--status dead without a daemon: exit %d %s", code, stdout)
	}
}

// TestHelpExitCodesJSON: `help exit-codes --json` is the table as JSON
// (it printed the text page under --json), every code once, in order.
func TestHelpExitCodesJSON(t *testing.T) {
	code, stdout, stderr := runApp(t, "help", "exit-codes", "--json")
	var doc struct {
		SchemaVersion int `json:"schemaVersion"`
		ExitCodes     []struct {
			Exit    int    `json:"exit"`
			Meaning string `json:"meaning"`
		} `json:"exitCodes"`
	}
	if code != 0 || stderr != "" || json.Unmarshal([]byte(stdout), &doc) != nil || doc.SchemaVersion != 1 || len(doc.ExitCodes) != len(cliui.ExitCodeTable) {
		t.Fatalf("exit %d %q %q", code, stdout, stderr)
	}
	for i, r := range cliui.ExitCodeTable {
		if doc.ExitCodes[i].Exit != r.Code || doc.ExitCodes[i].Meaning != r.Meaning {
			t.Errorf("row %d: %+v, want %+v", i, doc.ExitCodes[i], r)
		}
	}
	if code, stdout, _ := runApp(t, "help", "exit-codes"); code != 0 || !strings.HasPrefix(stdout, "claudemesh exit codes\n") {
		t.Fatalf("text page: exit %d %q", code, stdout)
	}
}
