package localapi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// maxSocketPath is the portable limit of a Unix socket path (sun_path is
// 104 bytes on macOS, 108 on Linux, including the NUL).
const maxSocketPath = 103

// EnvSocket overrides the socket path.
const EnvSocket = "CLAUDEMESH_DAEMON_SOCK"

// Dir is the daemon's directory inside a client home.
func Dir(home string) string { return filepath.Join(home, "daemon") }

// SocketPath is where the daemon for home listens: <home>/daemon/daemon.sock,
// or, when that path is too long for a Unix socket (deep test dirs), a short
// path derived from a hash of home: $XDG_RUNTIME_DIR/claudemesh-<hash>.sock,
// else /tmp/claudemesh-<uid>/<hash>.sock. The last one is in a directory of
// the user's own (0700), never directly in the shared temp directory, where
// another local user could create the name first and serve a fake daemon
// (03-daemon "Local API"; the directory is checked before every use, see
// CheckSocket). CLAUDEMESH_DAEMON_SOCK overrides all of them.
func SocketPath(home string) string {
	if p := os.Getenv(EnvSocket); p != "" {
		return p
	}
	p := filepath.Join(Dir(home), "daemon.sock")
	if len(p) <= maxSocketPath {
		return p
	}
	sum := sha256.Sum256([]byte(home))
	tag := hex.EncodeToString(sum[:])[:12]
	if rt := os.Getenv("XDG_RUNTIME_DIR"); rt != "" {
		if q := filepath.Join(rt, "claudemesh-"+tag+".sock"); len(q) <= maxSocketPath {
			return q
		}
	}
	return filepath.Join(FallbackSocketDir(), tag+".sock")
}

// SocketPathFile is where a daemon writes the socket path it listens on
// (0600, beside daemon.pid): SocketPath depends on the environment
// (CLAUDEMESH_DAEMON_SOCK, XDG_RUNTIME_DIR), so a daemon started by a
// service or a desktop session and a CLI run over ssh or cron can compute
// different paths. The CLI tries the recorded one first (ClientSocket).
func SocketPathFile(home string) string { return filepath.Join(Dir(home), "daemon.sock.path") }

// ClientSocket is the socket a client of home's daemon dials: the path
// the running daemon recorded (SocketPathFile), when the file is this
// user's own (not a symlink, mode 0600 or stricter, an absolute path) and
// a socket is there, else SocketPath. Whichever it is, the dial checks
// the socket and its directory as always (CheckSocket, the peer's uid).
func ClientSocket(home string) string {
	if p := recordedSocket(home); p != "" {
		return p
	}
	return SocketPath(home)
}

// recordedSocket is the path in SocketPathFile when it can be trusted and
// a socket exists there ("" otherwise).
func recordedSocket(home string) string {
	f := SocketPathFile(home)
	fi, err := os.Lstat(f)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o077 != 0 || fi.Size() > 4096 || !mine(fi) {
		return ""
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return ""
	}
	p := strings.TrimSpace(string(b))
	if !filepath.IsAbs(p) {
		return ""
	}
	if si, err := os.Lstat(p); err != nil || si.Mode().Type() != os.ModeSocket {
		return ""
	}
	return p
}

// mine reports whether this user owns fi.
func mine(fi os.FileInfo) bool {
	uid, ok := ownerOf(fi)
	return ok && uid == os.Getuid()
}

// WriteSocketPath records the socket path a daemon listens on (0600).
func WriteSocketPath(home, sock string) error {
	abs, err := filepath.Abs(sock)
	if err != nil {
		return err
	}
	f := SocketPathFile(home)
	tmp := f + ".tmp"
	if err := os.WriteFile(tmp, []byte(abs+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, f)
}

// FallbackSocketDir is the user's own directory for short socket paths in
// the shared temp directory: /tmp/claudemesh-<uid>.
func FallbackSocketDir() string {
	return filepath.Join("/tmp", fmt.Sprintf("claudemesh-%d", os.Getuid()))
}

// PIDPath, LogPath, DBPath and TokenPath name the daemon's other files.
func PIDPath(home string) string   { return filepath.Join(Dir(home), "daemon.pid") }
func LogPath(home string) string   { return filepath.Join(Dir(home), "daemon.log") }
func DBPath(home string) string    { return filepath.Join(Dir(home), "daemon.db") }
func TokenPath(home string) string { return filepath.Join(Dir(home), "local-token") }
