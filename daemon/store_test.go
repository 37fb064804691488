package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
}
