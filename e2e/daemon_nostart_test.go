package e2e

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestADaemonThatCannotStartIsSaid (a new user's trial): with daemon.db damaged
// or emptied, the verbs that start the daemon say in one warning that it
// could not start and why before they use the direct path, inbox does not
// pass the broker's empty answer off as the whole inbox, and doctor fails
// on the store.
func TestADaemonThatCannotStartIsSaid(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "dave")
	alice, dave := u[0], u[1]
	dave.startDaemon()
	dave.waitDaemonOpen()
	alice.ok("send", "dave", "kept by dave's daemon")
	eventually(t, 20*time.Second, "the message in dave's daemon", func() bool { return len(dave.inbox()) == 1 })
	dave.ok("daemon", "down")
	db := filepath.Join(dave.home, "daemon", "daemon.db")
	// A page of the tree overwritten (as `dd … conv=notrunc` over the
	// file does): the header is sound, a read-only open reads no such
	// page, and only the daemon's own open used to notice.
	whole, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// The page the newer meta page names as the root of the tree.
	page := os.Getpagesize()
	le := binary.LittleEndian
	meta := whole[16:]
	if other := whole[page+16:]; le.Uint64(other[48:]) > le.Uint64(meta[48:]) {
		meta = other
	}
	root := int(le.Uint64(meta[16:]))
	if root < 2 || (root+1)*page > len(whole) {
		t.Fatalf("daemon.db's root page %d", root)
	}
	for i := root * page; i < (root+1)*page; i++ {
		whole[i] = 0x5a
	}
	for _, c := range []struct {
		name, content, says string
	}{
		{"damaged", strings.Repeat("\x5a\xa5 not a bbolt file ", 8), "damaged"},
		{"empty", "", "empty"},
		{"a damaged page", string(whole), "damaged"},
	} {
		if err := os.WriteFile(db, []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		r := dave.ok("inbox")
		for _, internal := range []string{"assertion", "Page expected", "invalid database", "crypto:", "bbolt"} {
			// bbolt's own words name its code, not the file.
			if strings.Contains(r.stderr, internal) {
				t.Errorf("%s daemon.db: inbox shows %q: %s", c.name, internal, r)
			}
		}
		if r := dave.run("daemon", "up"); r.code == 0 || strings.Contains(r.stderr, "assertion") || strings.Contains(r.stderr, "invalid database") || !strings.Contains(r.stderr, c.says) {
			t.Errorf("%s daemon.db: daemon up: %s", c.name, r)
		}
		if !strings.Contains(r.stderr, "the daemon could not start") || !strings.Contains(r.stderr, c.says) ||
			!strings.Contains(r.stderr, "direct broker connection") || strings.Count(r.stderr, "⚠") != 1 {
			t.Fatalf("%s daemon.db: inbox says nothing of the daemon (one warning wanted): %s", c.name, r)
		}
		if strings.TrimSpace(r.stdout) == "no new messages" || !strings.Contains(r.stdout, "not shown") {
			t.Fatalf("%s daemon.db: inbox passes the broker's answer off as the inbox: %s", c.name, r)
		}
		if r := dave.ok("send", "alice", "sent directly"); !strings.Contains(r.stderr, "the daemon could not start") {
			t.Fatalf("%s daemon.db: send says nothing of the daemon: %s", c.name, r)
		}
		r = dave.run("doctor", "--json")
		var rep struct {
			OK     bool
			Checks []doctorCheck `json:"checks"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 1 || rep.OK {
			t.Fatalf("%s daemon.db: doctor does not fail: %s", c.name, r)
		}
		found := false
		for _, ch := range rep.Checks {
			if ch.Name == "daemon" {
				found = ch.Status == "fail" && strings.Contains(ch.Message, "daemon.db") && strings.Contains(ch.Message, c.says) && ch.Fix != ""
			}
		}
		if !found {
			t.Fatalf("%s daemon.db: doctor's daemon check: %+v", c.name, rep.Checks)
		}
	}
}
