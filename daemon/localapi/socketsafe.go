package localapi

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUnsafeSocket means the daemon socket, or its directory, could belong
// to someone else: another local user who created the path first could
// receive the plaintext of every send and serve a forged inbox. The CLI
// then sends nothing to it.
var ErrUnsafeSocket = errors.New("the daemon socket is not safe to use")

// CheckSocket checks, before anything is sent, that the socket at path and
// the directory holding it belong to this user and that nobody else may
// write to the directory (so nobody else can have put the socket there, or
// replace it): the socket must be a socket owned by this user, without
// group or other permissions; its directory must be a real directory owned
// by this user and writable by nobody else.
func CheckSocket(path string) error {
	if err := checkSocketDir(filepath.Dir(path)); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return err // absent: not unsafe, just no daemon
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%w: %s is not a socket", ErrUnsafeSocket, path)
	}
	if uid, ok := ownerOf(fi); ok && uid != os.Getuid() {
		return fmt.Errorf("%w: %s belongs to uid %d, not to you (uid %d)", ErrUnsafeSocket, path, uid, os.Getuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %o; it must be 0600", ErrUnsafeSocket, path, fi.Mode().Perm())
	}
	return nil
}

// checkSocketDir is CheckSocket's rule for the directory.
func checkSocketDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return fmt.Errorf("%w: %s: %v", ErrUnsafeSocket, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory (a symlink?)", ErrUnsafeSocket, dir)
	}
	if uid, ok := ownerOf(fi); ok && uid != os.Getuid() {
		return fmt.Errorf("%w: %s belongs to uid %d, not to you (uid %d)", ErrUnsafeSocket, dir, uid, os.Getuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%w: others may write to %s (mode %o); it must be 0700", ErrUnsafeSocket, dir, fi.Mode().Perm())
	}
	return nil
}

// PrepareSocketDir creates the directory of the daemon's socket (0700) if
// it is missing and checks it as CheckSocket will: the daemon refuses to
// listen where a client would refuse to connect.
func PrepareSocketDir(path string) error {
	dir := filepath.Dir(path)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return checkSocketDir(dir)
}

func ownerOf(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// dialChecked connects to the daemon socket at path after CheckSocket, and
// where the platform can tell (Linux SO_PEERCRED, macOS LOCAL_PEERCRED),
// checks that the process that accepted runs as this user. Nothing is
// written to the connection before both checks pass.
func dialChecked(ctx context.Context, path string) (net.Conn, error) {
	if err := CheckSocket(path); err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return c, nil
	}
	uid, known, err := peerUID(uc)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("%w: reading the peer's credentials on %s: %v", ErrUnsafeSocket, path, err)
	}
	if known && uid != os.Getuid() {
		c.Close()
		return nil, fmt.Errorf("%w: the process listening on %s runs as uid %d, not as you (uid %d)", ErrUnsafeSocket, path, uid, os.Getuid())
	}
	return c, nil
}
