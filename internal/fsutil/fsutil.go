// Package fsutil holds the few file-system helpers that keep claudemesh's
// secrets (identity keys, tokens, the daemon's database) private and intact:
// a private directory, an atomic write that never exposes a file with the
// wrong permissions, and a permission check that refuses files other users
// could read. The broker, the daemon and the CLI all use it so the rules are
// the same everywhere.
package fsutil

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// InsecurePermError reports a file or directory that group or other users can
// access. It is returned rather than silently fixing the file because a key
// that was readable by others may already be compromised; the user decides.
type InsecurePermError struct {
	// Path is the offending file or directory.
	Path string
	// Mode is its mode as found (type bits included, so a directory is
	// recognisable).
	Mode fs.FileMode
}

// Error names the path, the mode and the command that fixes it, so the
// message alone is actionable (JSON errors carry no separate hint).
func (e *InsecurePermError) Error() string {
	what := "file"
	if e.Mode.IsDir() {
		what = "directory"
	}
	return fmt.Sprintf("%s %s is accessible by other users (mode %04o); fix it with: %s",
		what, e.Path, e.Mode.Perm(), e.ErrorHint())
}

// ErrorCode is the CLI error code; the CLI maps it to exit code 4.
func (e *InsecurePermError) ErrorCode() string { return "insecure_permissions" }

// ErrorHint is the command that makes the path private again.
func (e *InsecurePermError) ErrorHint() string {
	if e.Mode.IsDir() {
		return "chmod 700 " + shellQuote(e.Path)
	}
	return "chmod 600 " + shellQuote(e.Path)
}

// privateChecks says whether Unix permission bits mean anything here; on
// Windows they are synthesised from the read-only attribute and every file
// would look world-readable.
func privateChecks() bool { return runtime.GOOS != "windows" }

// EnsurePrivateDir creates path (and missing parents) with mode 0700. An
// existing directory we own that is group/other-accessible is tightened to
// 0700, because every file in it is a secret; one we do not own cannot be
// fixed and is reported as an *InsecurePermError.
func EnsurePrivateDir(path string) error {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory", path)
	}
	if !privateChecks() || fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	if !ownedByUs(fi) {
		return &InsecurePermError{Path: path, Mode: fi.Mode()}
	}
	if err := os.Chmod(path, 0o700); err != nil {
		return fmt.Errorf("tightening %s to 0700: %w", path, err)
	}
	return nil
}

// WriteFileAtomic replaces path with data so that readers see either the old
// or the new content, never a torn file, and a crash leaves one of the two.
// The temporary file is created next to the target with O_EXCL and the final
// permissions from the start, so the secret is never readable by others even
// for a moment (no chmod after the data is written); it is fsynced, renamed
// over the target, and the directory is fsynced so the rename survives a
// power loss. perm is still subject to the process umask, which can only
// narrow it. A symlink at path is replaced, not followed.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	var f *os.File
	for range 100 {
		tmp := filepath.Join(dir, "."+base+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir makes a rename or a new file in dir durable.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

// CheckPrivateFile returns an *InsecurePermError when path (after following
// symlinks) has any group or other permission bit set, and the stat error
// (fs.ErrNotExist included) when it cannot be inspected.
func CheckPrivateFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	return checkMode(path, fi)
}

// CheckNotWritableByOthers returns an *InsecurePermError when the
// directory dir can be written by group or other users: they could
// replace the private files in it (a 0600 file does not stop an unlink
// and a create beside it), such as a home's config.json with its broker
// and keys. A directory others can only list is left alone here.
func CheckNotWritableByOthers(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if privateChecks() && fi.Mode().Perm()&0o022 != 0 {
		return &InsecurePermError{Path: dir, Mode: fi.Mode()}
	}
	return nil
}

// ReadPrivateFile reads path after checking, on the open descriptor, that it
// is a private regular file. Checking the descriptor rather than the path
// means the file read is the file checked, even if the path is swapped in
// between.
func ReadPrivateFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkMode(path, fi); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}

func checkMode(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if privateChecks() && fi.Mode().Perm()&0o077 != 0 {
		return &InsecurePermError{Path: path, Mode: fi.Mode()}
	}
	return nil
}

// shellQuote quotes p for a POSIX shell when it needs it, so a copied hint
// works for paths with spaces.
func shellQuote(p string) string {
	safe := p != "" && strings.IndexFunc(p, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			strings.ContainsRune("/._-+@%:,=~", r))
	}) < 0
	if safe {
		return p
	}
	return "'" + strings.ReplaceAll(p, "'", `'\''`) + "'"
}

// Under says whether path is dir or inside it, as written or with symlinks
// resolved (a home reached through a symlink is still that home).
func Under(path, dir string) bool {
	resolve := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return p
	}
	for _, d := range []string{dir, resolve(dir)} {
		for _, p := range []string{path, resolve(path)} {
			if rel, err := filepath.Rel(d, p); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				return true
			}
		}
	}
	return false
}
