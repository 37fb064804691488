package e2e

// Completion never runs a peer's name (a new user's trial): the bash script gave
// `claudemesh __complete`'s lines to `compgen -W`, which expands every word
// of its list, so a member named `$(touch${IFS}X)` ran a command on the
// machine of whoever pressed TAB after `claudemesh send `. Each test runs
// the real generated script in the real shell, with candidates that try
// every kind of expansion, and checks that no file appears and that the
// candidates, inserted into a command line, read back as the names.

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// hostileNames are display names a shell would run or expand: command
// substitution in both forms, a variable, a glob and a brace expansion.
// Each touch creates a file named after the form in the shell's working
// directory, should the name ever be evaluated.
var hostileNames = []string{
	"$(touch${IFS}PWNED1)",
	"`touch${IFS}PWNED2`",
	"x;touch${IFS}PWNED3",
	"*",
	"{a,b}",
}

// leftOut are names completion does not offer: "~root" (fish inserted it
// unquoted, and the shell read it as /root) and "--all" (a verb reads it
// as its flag: kick --all).
var leftOut = []string{"~root", "--all"}

// completionMesh is a mesh whose members bear hostileNames, as dave's
// running daemon lists them, and a directory no file was made in.
func completionMesh(t *testing.T) (dave *user, dir string) {
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, append(append([]string{"dave"}, hostileNames...), leftOut...)...)
	dave = users[0]
	dave.startDaemon()
	dave.waitDaemonOpen()
	// __complete prints every name as it is, one a line, once dave's
	// daemon has the directory (fetched whole from the broker, after
	// every join), and leaves out the names it must not offer.
	var out string
	eventually(t, 15*time.Second, "__complete send offers every member", func() bool {
		out = dave.ok("__complete", "send").stdout
		return !slices.ContainsFunc(hostileNames, func(n string) bool { return !strings.Contains(out, "\n"+n+"\n") })
	})
	for _, n := range leftOut {
		if strings.Contains(out, "\n"+n+"\n") {
			t.Fatalf("__complete send offers %q:\n%s", n, out)
		}
	}
	return dave, t.TempDir()
}

// runShell runs script in shell (argv) in dir, with the binary on PATH and
// CM_HOME set to home, and checks that no PWNED file appeared.
func runShell(t *testing.T, dir, home, script string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], append(argv[1:], script)...)
	cmd.Dir = dir
	cmd.Env = append(baseEnv(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"), "CM_HOME="+home, "LC_ALL=C.UTF-8")
	out, err := cmd.CombinedOutput()
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("%s ran a name: it created %v\n%s", argv[0], names, out)
	}
	if err != nil {
		t.Fatalf("%s: %v\n%s", argv[0], err, out)
	}
	return string(out)
}

func TestBashCompletionNeverRunsNames(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatal("the completion test needs bash (apt-get install bash; .ci/run installs it)")
	}
	dave, dir := completionMesh(t)
	// complete CUR prints the candidates for `claudemesh send CUR`, one a
	// line, each followed by what bash reads it as on a command line (the
	// user pressing Enter), as "candidate => word".
	script := `source <(claudemesh completion bash) || exit 1
complete_() {
  COMP_WORDS=(claudemesh --home "$CM_HOME" send "$1"); COMP_CWORD=4
  _claudemesh
  local c
  for c in "${COMPREPLY[@]}"; do
    eval "set -- $c"
    printf '%s => %s\n' "$c" "$*"
  done
}
complete_ ''
echo ---
complete_ '\$'
echo ---
complete_ 'da'
`
	out := runShell(t, dir, dave.home, script, "bash", "--norc", "--noprofile", "-c")
	all, dollar, da := splitThree(t, out)
	for _, n := range hostileNames {
		if !slices.ContainsFunc(all, func(l string) bool { return strings.HasSuffix(l, " => "+n) }) {
			t.Errorf("bash does not offer %q as itself:\n%s", n, out)
		}
	}
	if want := []string{`\$\(touch\$\{IFS\}PWNED1\) => $(touch${IFS}PWNED1)`}; !slices.Equal(dollar, want) {
		t.Errorf(`after \$: %q, want %q`, dollar, want)
	}
	if want := []string{"dave => dave"}; !slices.Equal(da, want) {
		t.Errorf("after da: %q, want %q", da, want)
	}
}

func TestZshCompletionNeverRunsNames(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Fatal("the completion test needs zsh (apt-get install zsh; .ci/run installs it)")
	}
	dave, dir := completionMesh(t)
	// compadd and compdef work only inside zsh's completion system; these
	// stand-ins print what the script gives compadd (which quotes what it
	// inserts unless given -Q), so the candidates must arrive as the names.
	script := `compdef() { :; }
compadd() {
  local -a opts
  while [[ $1 == -* ]]; do
    case $1 in
      -a) shift; printf 'compadd %s\n' "${(@P)1}"; shift ;;
      -Q|-U) echo "unsafe flag $1"; shift ;;
      *) shift ;;
    esac
  done
}
source <(claudemesh completion zsh) || exit 1
words=(claudemesh --home "$CM_HOME" send ""); CURRENT=5
_claudemesh
`
	out := runShell(t, dir, dave.home, script, "zsh", "-f", "-c")
	if strings.Contains(out, "unsafe flag") {
		t.Fatalf("zsh script: %s", out)
	}
	for _, n := range append([]string{"dave"}, hostileNames...) {
		if !strings.Contains(out, "compadd "+n+"\n") {
			t.Errorf("zsh does not offer %q as itself:\n%s", n, out)
		}
	}
}

func TestFishCompletionNeverRunsNames(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("fish"); err != nil {
		t.Fatal("the completion test needs fish (apt-get install fish; .ci/run installs it)")
	}
	dave, dir := completionMesh(t)
	// complete -C completes a command line as TAB would; fish escapes a
	// candidate as it inserts it, which --escape shows; each escaped
	// candidate is then read back as a command line's word.
	script := `claudemesh completion fish | source; or exit 1
for c in (complete --escape -C "claudemesh --home $CM_HOME send ")
  set -l w (string split -m1 \t -- $c)[1]
  echo "$w => "(eval "string join ' ' -- $w")
end
`
	out := runShell(t, dir, dave.home, script, "fish", "--no-config", "-c")
	for _, n := range append([]string{"dave"}, hostileNames...) {
		if !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.HasSuffix(l, " => "+n) }) {
			t.Errorf("fish does not offer %q as itself:\n%s", n, out)
		}
	}
}

// splitThree splits out at its two "---" lines.
func splitThree(t *testing.T, out string) (a, b, c []string) {
	t.Helper()
	parts := strings.Split(out, "---\n")
	if len(parts) != 3 {
		t.Fatalf("want three parts:\n%s", out)
	}
	lines := func(s string) []string {
		return slices.DeleteFunc(strings.Split(s, "\n"), func(l string) bool { return l == "" })
	}
	return lines(parts[0]), lines(parts[1]), lines(parts[2])
}
