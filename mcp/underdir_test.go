package mcp

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUnderDirThroughASymlink: a session token file launch wrote under a
// home reached through a symlink is under that home (the MCP server warned
// it was launched "for another home").
func TestUnderDirThroughASymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if err := os.MkdirAll(filepath.Join(real, "sessions"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(real, "sessions", "s1.token")
	if err := os.WriteFile(tok, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, dir string }{
		{tok, filepath.Join(link, "sessions")},
		{filepath.Join(link, "sessions", "s1.token"), filepath.Join(real, "sessions")},
		{tok, filepath.Join(real, "sessions")},
	} {
		if !underDir(c.path, c.dir) {
			t.Errorf("%s is under %s", c.path, c.dir)
		}
	}
	if underDir(tok, filepath.Join(dir, "other", "sessions")) {
		t.Errorf("%s is not under another home", tok)
	}
}
