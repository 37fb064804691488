package fsutil

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestEnsurePrivateDirCreatesNested(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "home")
	if err := EnsurePrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Fatalf("mode = %04o, want 0700", got)
	}
	// Idempotent on an already private directory.
	if err := EnsurePrivateDir(dir); err != nil {
		t.Fatal(err)
	}
}

func TestEnsurePrivateDirTightensOwnDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePrivateDir(dir); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, dir); got != 0o700 {
		t.Fatalf("mode = %04o, want 0700", got)
	}
}

func TestEnsurePrivateDirRejectsFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := EnsurePrivateDir(f); err == nil {
		t.Fatal("EnsurePrivateDir on a regular file succeeded")
	}
}

func TestWriteFileAtomicCreatesAndReplaces(t *testing.T) {
	// A permissive umask must not widen the file beyond perm.
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := WriteFileAtomic(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Fatalf("mode = %04o, want 0600", got)
	}
	if err := WriteFileAtomic(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "two" {
		t.Fatalf("content = %q, want %q", b, "two")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("temp files left behind: %v", names)
	}
}

func TestWriteFileAtomicReplacesWiderFileWithNarrowOne(t *testing.T) {
	// The new file gets perm from creation; the old file's mode is not
	// inherited (rename replaces the inode).
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Fatalf("mode = %04o, want 0600", got)
	}
}

func TestWriteFileAtomicReplacesSymlinkNotTarget(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("symlink target was overwritten: %q", b)
	}
	fi, err := os.Lstat(link)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		t.Fatal("link is still a symlink")
	}
}

func TestWriteFileAtomicFailureKeepsOriginal(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory write permission")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte("original"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	if err := WriteFileAtomic(path, []byte("new"), 0o600); err == nil {
		t.Fatal("write into a read-only directory succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "original" {
		t.Fatalf("original changed: %q", b)
	}
}

func TestCheckPrivateFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		perm fs.FileMode
		ok   bool
	}{
		{0o600, true},
		{0o400, true},
		{0o640, false},
		{0o644, false},
		{0o606, false},
		{0o660, false},
	} {
		path := filepath.Join(dir, "f"+tc.perm.String())
		if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, tc.perm); err != nil {
			t.Fatal(err)
		}
		err := CheckPrivateFile(path)
		if tc.ok {
			if err != nil {
				t.Errorf("%04o: unexpected error %v", tc.perm, err)
			}
			continue
		}
		var ipe *InsecurePermError
		if !errors.As(err, &ipe) {
			t.Fatalf("%04o: err = %v, want *InsecurePermError", tc.perm, err)
		}
		if ipe.Path != path || ipe.Mode.Perm() != tc.perm {
			t.Errorf("%04o: got %+v", tc.perm, ipe)
		}
		if !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("%04o: message %q lacks the chmod hint", tc.perm, err)
		}
		if ipe.ErrorCode() != "insecure_permissions" {
			t.Errorf("code = %q", ipe.ErrorCode())
		}
		// ReadPrivateFile refuses the same file.
		if _, err := ReadPrivateFile(path); !errors.As(err, &ipe) {
			t.Errorf("%04o: ReadPrivateFile err = %v", tc.perm, err)
		}
	}
	if err := CheckPrivateFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: err = %v, want ErrNotExist", err)
	}
}

func TestReadPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := WriteFileAtomic(path, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := ReadPrivateFile(path)
	if err != nil || string(b) != "secret" {
		t.Fatalf("ReadPrivateFile = %q, %v", b, err)
	}
	if _, err := ReadPrivateFile(filepath.Dir(path)); err == nil {
		t.Fatal("ReadPrivateFile on a directory succeeded")
	}
}

func TestInsecurePermErrorHintQuotesAndDirs(t *testing.T) {
	e := &InsecurePermError{Path: "/tmp/my home/config.json", Mode: 0o644}
	if got, want := e.ErrorHint(), `chmod 600 '/tmp/my home/config.json'`; got != want {
		t.Errorf("hint = %q, want %q", got, want)
	}
	d := &InsecurePermError{Path: "/tmp/h", Mode: fs.ModeDir | 0o755}
	if got, want := d.ErrorHint(), "chmod 700 /tmp/h"; got != want {
		t.Errorf("dir hint = %q, want %q", got, want)
	}
	if !strings.Contains(d.Error(), "directory /tmp/h") {
		t.Errorf("dir message = %q", d.Error())
	}
}
