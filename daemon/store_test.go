package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
)

// TestDaemonRefusesAnEmptyOrDamagedDB: an empty daemon.db used to become a
// new database silently, dropping the inbox and the replay guard; a
// damaged one gave a bbolt panic trace. The daemon refuses both with the
// recovery steps; --init makes a new one where the file is empty.
func TestDaemonRefusesAnEmptyOrDamagedDB(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	d, err := Open(Options{Home: home})
	if err != nil {
		t.Fatal(err)
	}
	d.db.Close()
	path := localapi.DBPath(home)

	os.Truncate(path, 0)
	_, err = Open(Options{Home: home})
	var ce *cliui.Error
	if !errors.As(err, &ce) || ce.Code != "store_damaged" || !strings.Contains(ce.Hint, "--init") || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty daemon.db: %v", err)
	}
	d, err = Open(Options{Home: home, Init: true})
	if err != nil {
		t.Fatalf("--init: %v", err)
	}
	d.db.Close()

	os.WriteFile(path, []byte(strings.Repeat("not a database ", 1000)), 0o600)
	if _, err := Open(Options{Home: home, Init: true}); !errors.As(err, &ce) || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged daemon.db: %v", err)
	}
	// --init on a damaged file that is not empty is refused, saying why
	// and what to do first (a new user's trial: it repeated, word for
	// word, the refusal that had told them to run --init).
	_, plain := Open(Options{Home: home})
	_, err = Open(Options{Home: home, Init: true})
	var pe *cliui.Error
	if !errors.As(plain, &pe) || !errors.As(err, &ce) || ce.Hint == pe.Hint || ce.Message == pe.Message ||
		!strings.Contains(ce.Message, "--init makes a new daemon.db only where the file is empty or missing") ||
		!strings.Contains(ce.Hint, "mv "+path+" "+path+".damaged && claudemesh --home "+home+" daemon up --init") {
		t.Fatalf("--init on a damaged daemon.db: %v (→ %s)", err, ce.Hint)
	}
}

// TestAStartDoesNotJudgeTheFileAnotherStartIsCreating: two `daemon up` at
// once: the loser found the winner's daemon.db still 0 bytes (created,
// not yet initialised) and refused it as truncated, telling the user to
// restore a backup. What a start checks of daemon.db is read under the
// start lock, which the other start holds while it creates the file.
func TestAStartDoesNotJudgeTheFileAnotherStartIsCreating(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	if err := os.MkdirAll(localapi.Dir(home), 0o700); err != nil {
		t.Fatal(err)
	}
	path := localapi.DBPath(home)
	if err := os.WriteFile(path, nil, 0o600); err != nil { // as bbolt creates it, before its first write
		t.Fatal(err)
	}
	release, err := startLock(home, 0) // the other start, creating it
	if err != nil {
		t.Fatal(err)
	}
	// daemon up's own look before it detaches leaves the file to the start.
	if err := checkDBUnlessStarting(home, false); err != nil {
		t.Fatalf("daemon up's check during another start: %v", err)
	}
	opened := make(chan error, 1)
	go func() {
		d, err := Open(Options{Home: home})
		if err == nil {
			d.acc.close()
			d.db.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("Open did not wait for the start in progress: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// The other start gives up (say it failed and removed its file): this
	// one goes on, and makes a new daemon.db.
	os.Remove(path)
	release()
	if err := <-opened; err != nil {
		t.Fatalf("Open after the other start: %v", err)
	}
	// With nobody starting, an empty file is still refused.
	os.Truncate(path, 0)
	if err := checkDBUnlessStarting(home, false); err == nil {
		t.Fatal("an empty daemon.db passed daemon up's check")
	}
}
