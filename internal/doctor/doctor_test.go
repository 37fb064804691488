package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"claudemesh/daemon/localapi"
)

// A daemon starting (it holds daemon/start.lock and is creating
// daemon.db, still empty) is said to be starting, not "not running, and
// it cannot start: … empty": doctor read the file a start was writing.
func TestDoctorSaysADaemonIsStarting(t *testing.T) {
	home := t.TempDir()
	if err := os.MkdirAll(localapi.Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(localapi.Dir(home), "start.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(localapi.DBPath(home), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res := checkDaemon(&Env{Ctx: context.Background(), Home: home})
	if len(res) != 1 || res[0].Status != Warn || !strings.HasPrefix(res[0].Message, "starting") {
		t.Fatalf("doctor while a daemon starts: %+v, want a warning that it is starting", res)
	}
	// Once the start is over, the empty file is what it is.
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	res = checkDaemon(&Env{Ctx: context.Background(), Home: home})
	if len(res) != 1 || res[0].Status != Fail {
		t.Fatalf("doctor with an empty daemon.db and no start: %+v, want a failure", res)
	}
}
