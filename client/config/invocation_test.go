package config

import (
	"path/filepath"
	"testing"
)

// TestInvocationNamesAHomeThatIsNotTheDefault: a hint's command runs
// against the same identity as the command that printed it; "claudemesh
// daemon down" printed for --home /tmp/b used to stop ~/.claudemesh's
// daemon instead.
func TestInvocationNamesAHomeThatIsNotTheDefault(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv(HomeEnv, "")
	def := filepath.Join(user, DefaultHomeDir)
	for home, want := range map[string]string{
		def:                    "claudemesh",
		"/tmp/nu-bob":          "claudemesh --home /tmp/nu-bob",
		"/tmp/my homes/it's b": `claudemesh --home '/tmp/my homes/it'\''s b'`,
	} {
		if got := Invocation(home); got != want {
			t.Errorf("Invocation(%q) = %q, want %q", home, got, want)
		}
	}
	t.Setenv(HomeEnv, "/tmp/nu-bob")
	if got := Invocation("/tmp/nu-bob"); got != "claudemesh" {
		t.Errorf("with %s=/tmp/nu-bob, Invocation = %q, want the bare command", HomeEnv, got)
	}
}

// TestHomeArgsPinAnyHomeButTheDefault: what install writes into Claude
// Code's settings names every home but ~/.claudemesh, whatever
// CLAUDEMESH_HOME this process has (Claude Code does not run with it).
func TestHomeArgsPinAnyHomeButTheDefault(t *testing.T) {
	user := t.TempDir()
	t.Setenv("HOME", user)
	t.Setenv(HomeEnv, "/tmp/nu-bob")
	def := filepath.Join(user, DefaultHomeDir)
	if got, err := DefaultHome(); err != nil || got != def {
		t.Fatalf("DefaultHome() = %q, %v; want %q", got, err, def)
	}
	if got := HomeArgs(def); len(got) != 0 {
		t.Errorf("HomeArgs(default) = %q, want none", got)
	}
	if got := HomeArgs("/tmp/nu-bob"); len(got) != 2 || got[0] != "--home" || got[1] != "/tmp/nu-bob" {
		t.Errorf("HomeArgs(/tmp/nu-bob) with %s=/tmp/nu-bob = %q, want --home /tmp/nu-bob", HomeEnv, got)
	}
}
