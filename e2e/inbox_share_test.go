package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// One member cannot stop everyone else's messages to a daemon (trial 18,
// finding 11): two members flood vic (whose inbox cap is 1 MiB) with
// 60 KB messages, more than twice the cap and more than the broker's
// window of 4 MiB, and vic reads nothing. alice's one DM must still
// arrive while the flood is held; daemon status names the flooders;
// once vic reads the flood, what waited is stored at once (the broker's
// --redeliver-after is 5 minutes here, so only that can bring it).
func TestOneMemberCannotFillAnothersInbox(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0", "--byte-rate", "0", "--rate", "0", "--redeliver-after", "5m")
	u := setupMesh(t, b, "alice", "vic", "flooda", "floodb")
	alice, vic, fa, fb := u[0], u[1], u[2], u[3]

	vic.useDaemon = true
	var up struct {
		PID int `json:"pid"`
	}
	r := vic.run("daemon", "up", "--json", "--inbox-max-bytes", "1048576", "--web", "off")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &up) != nil || up.PID <= 0 {
		t.Fatalf("daemon up: %s", r)
	}
	t.Cleanup(func() { killAndWait(up.PID) })
	vic.waitDaemonOpen()

	big := strings.Repeat("f", 60000)
	const each = 45 // 2.7 MB from each flooder: 5.4 MB in all
	var wg sync.WaitGroup
	for _, f := range []*user{fa, fb} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				f.runIn(fmt.Sprintf("%s %d ", f.name, i)+big, "send", "vic", "-", "-q")
			}
		}()
	}
	wg.Wait()
	// The flood reached vic's daemon as far as it goes (each flooder
	// holds its share, half the cap, in unseen rows; before, the two
	// together filled the inbox to twice the cap).
	eventually(t, 30*time.Second, "the flood stored in vic's inbox", func() bool {
		return len(vic.inbox("--all")) >= 16
	})
	alice.ok("send", "vic", "important from alice")
	eventually(t, 20*time.Second, "alice's DM in vic's inbox while the flood is held", func() bool {
		for _, row := range vic.inbox("--all") {
			if row.body() == "important from alice" {
				return true
			}
		}
		return false
	})

	// daemon status names the flooders over their share.
	type share struct {
		Pubkey      string `json:"pubkey"`
		Name        string `json:"name"`
		UnseenBytes int64  `json:"unseenBytes"`
		Waiting     int    `json:"waiting"`
	}
	type status struct {
		Inbox struct {
			Bytes     int64   `json:"bytes"`
			Full      bool    `json:"full"`
			OverShare []share `json:"overShare"`
		} `json:"inbox"`
		Warnings []string `json:"warnings"`
	}
	var st status
	eventually(t, 30*time.Second, "both flooders over their share in daemon status", func() bool {
		st = status{}
		vic.json(&st, "daemon", "status")
		return len(st.Inbox.OverShare) == 2
	})
	names := map[string]bool{}
	for _, s := range st.Inbox.OverShare {
		names[s.Name] = true
		if s.UnseenBytes < 512<<10 {
			t.Fatalf("a sender listed under its share: %+v", s)
		}
	}
	if !names["flooda"] || !names["floodb"] {
		t.Fatalf("daemon status names %+v", st.Inbox.OverShare)
	}
	if st.Inbox.Full {
		t.Fatalf("two senders' shares filled the inbox: %+v", st.Inbox)
	}
	text := vic.ok("daemon", "status").stdout
	if !strings.Contains(text, "flooda (") || !strings.Contains(text, "its share of the inbox") {
		t.Fatalf("daemon status text does not name the flooders:\n%s", text)
	}

	// vic reads: the pushes that waited are stored now, not at the
	// broker's redelivery. Reading makes room for a share at a time per
	// flooder, so read until every message of the flood was shown.
	read := map[string]bool{}
	eventually(t, 60*time.Second, fmt.Sprintf("all %d flood messages read", 2*each), func() bool {
		for _, row := range vic.inbox("--unread", "--mark-seen") {
			if strings.HasPrefix(row.body(), "flood") {
				read[row.body()[:12]] = true
			}
		}
		return len(read) == 2*each
	})
	st = status{}
	vic.json(&st, "daemon", "status")
	if len(st.Inbox.OverShare) != 0 || st.Inbox.Full {
		t.Fatalf("after reading, daemon status still says %+v", st.Inbox)
	}
}

// block frees what the blocked member holds: its unseen rows are marked
// seen (they no longer count against its share) and what it sent that
// was still waiting is taken as seen, so daemon status no longer names it
// and nothing of it is new in the inbox.
func TestBlockFreesTheBlockedMembersShare(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0", "--byte-rate", "0", "--rate", "0", "--redeliver-after", "5m")
	u := setupMesh(t, b, "vic", "flooda")
	vic, fa := u[0], u[1]
	vic.useDaemon = true
	var up struct {
		PID int `json:"pid"`
	}
	r := vic.run("daemon", "up", "--json", "--inbox-max-bytes", "1048576", "--web", "off")
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &up) != nil || up.PID <= 0 {
		t.Fatalf("daemon up: %s", r)
	}
	t.Cleanup(func() { killAndWait(up.PID) })
	vic.waitDaemonOpen()
	big := strings.Repeat("f", 60000)
	const n = 30
	for i := range n {
		fa.runIn(fmt.Sprintf("flooda %d ", i)+big, "send", "vic", "-", "-q")
	}
	type status struct {
		Inbox struct {
			OverShare []struct {
				Name    string `json:"name"`
				Waiting int    `json:"waiting"`
			} `json:"overShare"`
		} `json:"inbox"`
	}
	eventually(t, 30*time.Second, "flooda over its share with pushes waiting", func() bool {
		var st status
		vic.json(&st, "daemon", "status")
		return len(st.Inbox.OverShare) == 1 && st.Inbox.OverShare[0].Name == "flooda" && st.Inbox.OverShare[0].Waiting > 0
	})
	vic.ok("block", "flooda")
	eventually(t, 30*time.Second, "flooda no longer over its share, nothing of it new", func() bool {
		var st status
		vic.json(&st, "daemon", "status")
		return len(st.Inbox.OverShare) == 0 && len(vic.inbox("--unread")) == 0
	})
}
