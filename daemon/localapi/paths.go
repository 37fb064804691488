package localapi

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
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
