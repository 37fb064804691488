package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

// TestUnderThroughASymlink: a session token file launch wrote under a home
// reached through a symlink is under that home (the MCP server warned it
// was launched "for another home"); a sibling whose name starts with ".."
// is not a parent.
func TestUnderThroughASymlink(t *testing.T) {
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
		if !Under(c.path, c.dir) {
			t.Errorf("%s is under %s", c.path, c.dir)
		}
	}
	if Under(tok, filepath.Join(dir, "other", "sessions")) {
		t.Errorf("%s is not under another home", tok)
	}
	if Under(filepath.Join(dir, "..x", "s1.token"), dir) == false {
		t.Errorf("a directory named ..x inside %s is under it", dir)
	}
	if Under(filepath.Join(dir, "real2", "s1.token"), real) {
		t.Errorf("real2 is not under real")
	}
}
