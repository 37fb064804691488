package localapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// listenAt serves HTTP on a Unix socket at path (mode 0600), counting the
// requests it receives: a fake daemon.
func listenAt(t *testing.T, path string) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o600)
	var hits atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"daemonVersion":"fake","api":"v1"}`))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &hits
}

func privateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSocketChecks: the client talks to a socket only in a directory of
// its user's that nobody else may write to, only if the socket is its
// user's with no group or other permission; otherwise nothing is sent
// (another local user squatting a predictable socket path received a
// plaintext send and served a forged inbox).
func TestSocketChecks(t *testing.T) {
	ctx := context.Background()
	good := filepath.Join(privateDir(t), "daemon.sock")
	hits := listenAt(t, good)
	if _, err := New(good).Version(ctx); err != nil {
		t.Fatalf("a safe socket: %v", err)
	}
	if hits.Load() != 1 {
		t.Fatal("the request did not arrive")
	}

	shared := filepath.Join(t.TempDir(), "shared")
	os.Mkdir(shared, 0o777)
	os.Chmod(shared, 0o1777) // like /tmp
	squatted := filepath.Join(shared, "daemon.sock")
	squatHits := listenAt(t, squatted)

	loose := filepath.Join(privateDir(t), "daemon.sock")
	looseHits := listenAt(t, loose)
	os.Chmod(loose, 0o666)

	notSock := filepath.Join(privateDir(t), "daemon.sock")
	os.WriteFile(notSock, nil, 0o600)

	linkDir := filepath.Join(t.TempDir(), "link")
	os.Symlink(filepath.Dir(good), linkDir)
	viaLink := filepath.Join(linkDir, "daemon.sock")

	for name, path := range map[string]string{
		"directory others may write": squatted, "socket others may use": loose,
		"not a socket": notSock, "directory is a symlink": viaLink,
	} {
		_, err := New(path).Version(ctx)
		if !errors.Is(err, ErrUnsafeSocket) {
			t.Errorf("%s: %v, want ErrUnsafeSocket", name, err)
		}
	}
	if squatHits.Load() != 0 || looseHits.Load() != 0 || hits.Load() != 1 {
		t.Fatalf("an unsafe socket received requests: %d %d %d", squatHits.Load(), looseHits.Load(), hits.Load())
	}

	// Connect neither uses nor replaces a daemon behind an unsafe socket.
	t.Setenv(EnvSocket, squatted)
	if _, err := Connect(ctx, t.TempDir(), true); !errors.Is(err, ErrUnsafeSocket) {
		t.Fatalf("Connect over a squatted socket: %v", err)
	}
	if squatHits.Load() != 0 {
		t.Fatal("Connect talked to the squatter")
	}
}

// TestSocketOwnedByAnotherUser (as root, the only way a test can be two
// users): a socket directory owned by someone else is refused.
func TestSocketOwnedByAnotherUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := privateDir(t)
	path := filepath.Join(dir, "daemon.sock")
	hits := listenAt(t, path)
	if err := os.Chown(dir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	if _, err := New(path).Version(context.Background()); !errors.Is(err, ErrUnsafeSocket) || !strings.Contains(err.Error(), "uid 12345") {
		t.Fatalf("a directory of uid 12345: %v", err)
	}
	os.Chown(dir, 0, 0)
	os.Chown(path, 12345, 12345)
	if _, err := New(path).Version(context.Background()); !errors.Is(err, ErrUnsafeSocket) {
		t.Fatalf("a socket of uid 12345: %v", err)
	}
	if hits.Load() != 0 {
		t.Fatal("requests reached a socket of another user")
	}
}

// TestFallbackSocketDirIsPrivate: the short socket path for a deep home
// without $XDG_RUNTIME_DIR is in /tmp/claudemesh-<uid>/, not directly in
// /tmp, and the daemon prepares that directory 0700.
func TestFallbackSocketDirIsPrivate(t *testing.T) {
	t.Setenv(EnvSocket, "")
	t.Setenv("XDG_RUNTIME_DIR", "")
	home := filepath.Join(t.TempDir(), strings.Repeat("deep/", 20))
	p := SocketPath(home)
	if filepath.Dir(p) != FallbackSocketDir() || filepath.Dir(filepath.Dir(p)) != "/tmp" {
		t.Fatalf("fallback socket path %s", p)
	}
	if err := PrepareSocketDir(p); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Dir(p))
	if err != nil || fi.Mode().Perm() != 0o700 || !fi.IsDir() {
		t.Fatalf("%s: %v %v", filepath.Dir(p), fi.Mode(), err)
	}
}

// TestPeerCredentials: on Linux, a daemon socket that passes every file
// check but is served by a process of another user is refused before a
// byte is sent (SO_PEERCRED). As root, the test binds a socket in its own
// 0700 directory and hands it to a child running as uid 12345, which calls
// listen (the credentials are the listener's at listen time).
func TestPeerCredentials(t *testing.T) {
	if runtime.GOOS != "linux" || os.Getuid() != 0 {
		t.Skip("needs Linux and root to run a listener as another user")
	}
	if os.Getenv("CLAUDEMESH_TEST_PEERCRED_CHILD") == "1" {
		return
	}
	path := filepath.Join(privateDir(t), "daemon.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o600)
	f := os.NewFile(uintptr(fd), "sock")
	defer f.Close()
	// The other user must be able to run this test binary: a copy in a
	// directory anyone may read.
	dir, err := os.MkdirTemp("", "claudemesh-peercred-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	exe := filepath.Join(dir, "localapi.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run", "TestPeerCredentialsChild")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CLAUDEMESH_TEST_PEERCRED_CHILD=1")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 12345, Gid: 12345}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run a child as uid 12345: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ready := make([]byte, 6)
	if _, err := out.Read(ready); err != nil || string(ready) != "ready\n" {
		t.Fatalf("child: %q %v", ready, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = New(path).Version(ctx)
	if !errors.Is(err, ErrUnsafeSocket) || !strings.Contains(err.Error(), "runs as uid 12345") {
		t.Fatalf("a listener of uid 12345: %v", err)
	}
}

// TestPeerCredentialsChild is the other user's fake daemon: it listens on
// the inherited socket and reports any byte it receives on stderr.
func TestPeerCredentialsChild(t *testing.T) {
	if os.Getenv("CLAUDEMESH_TEST_PEERCRED_CHILD") != "1" {
		t.Skip("helper of TestPeerCredentials")
	}
	if err := syscall.Listen(3, 8); err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(os.NewFile(3, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("ready\n")
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			buf := make([]byte, 1)
			if n, _ := c.Read(buf); n > 0 {
				os.Stderr.WriteString("received " + strconv.Itoa(n) + " bytes\n")
			}
			c.Close()
		}()
	}
}
