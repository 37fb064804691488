package cliui_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"claudemesh/client/config"
	"claudemesh/internal/cliui"
)

// TestTypedErrorsOfOtherPackages checks that errors from client/config and
// internal/fsutil reach the user with their codes, exit codes and hints,
// without cliui importing those packages.
func TestTypedErrorsOfOtherPackages(t *testing.T) {
	for _, k := range []string{"NO_COLOR", "CLICOLOR_FORCE", "CLAUDEMESH_DEBUG", "CLAUDEMESH_HOME"} {
		t.Setenv(k, "")
	}
	home := t.TempDir()
	app := func() *cli.App {
		return cliui.NewApp("claudemesh", "test", []*cli.Command{{
			Name: "send",
			Action: func(c *cli.Context) error {
				cfg, err := config.Load(home)
				if err != nil {
					return err
				}
				_, err = cfg.Choose(cliui.GlobalsFrom(c).Mesh)
				return err
			},
		}})
	}
	run := func(argv ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := cliui.RunContext(context.Background(), app(), append([]string{"claudemesh", "send"}, argv...), &out, &errb)
		return code, out.String(), errb.String()
	}

	code, _, stderr := run()
	if code != 4 || !strings.Contains(stderr, "not joined to any mesh") || !strings.Contains(stderr, "→ join a mesh") {
		t.Fatalf("not joined: %d %q", code, stderr)
	}

	for _, slug := range []string{"acme", "beta"} {
		err := config.Update(home, func(c *config.Config) error {
			c.Upsert(config.Mesh{MeshID: "id-" + slug, Slug: slug})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	code, stdout, stderr := run("--json")
	if code != 2 || stderr != "" || !strings.Contains(stdout, `"code":"mesh_required"`) || !strings.Contains(stdout, "acme, beta") {
		t.Fatalf("mesh_required: %d %q %q", code, stdout, stderr)
	}
	if code, _, stderr := run("--mesh", "gamma"); code != 3 || !strings.Contains(stderr, `mesh "gamma" not found`) {
		t.Fatalf("mesh_not_found: %d %q", code, stderr)
	}
	if code, _, stderr := run("--mesh", "beta"); code != 0 {
		t.Fatalf("named mesh: %d %q", code, stderr)
	}

	if err := os.Chmod(filepath.Join(home, "config.json"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = run("--json")
	if code != 4 || stderr != "" || !strings.Contains(stdout, `"code":"insecure_permissions"`) ||
		!strings.Contains(stdout, "chmod 600 "+filepath.Join(home, "config.json")) {
		t.Fatalf("insecure: %d %q %q", code, stdout, stderr)
	}
}
