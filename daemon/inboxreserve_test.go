package daemon

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// Four members flooding one recipient together filled its inbox (each
// within its share, half the cap: four shares are twice the cap, the hard
// limit), after which nobody else's messages were stored until it read (a
// new user's trial). A member that holds almost nothing of the inbox is
// still stored past the hard limit, within a reserve; the flooders are not.
func TestFloodersTogetherLeaveRoomForANewcomer(t *testing.T) {
	const limit = 200_000 // share 100 KB, hard limit 400 KB
	e := newEnv(t)
	floods := []string{"f1", "f2", "f3", "f4"}
	for _, name := range append([]string{"vic"}, floods...) {
		e.join(name)
	}
	vic := e.daemonWith("vic", Options{InboxMaxBytes: limit})
	alice := e.daemon("alice")
	vic.waitOpen(t)
	alice.waitOpen(t)
	ctx := context.Background()
	body := strings.Repeat("f", 30000)
	var wg sync.WaitGroup
	for _, name := range floods {
		f := e.daemon(name)
		f.waitOpen(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 6 {
				if _, err := f.api.Send(ctx, localapi.SendRequest{To: "vic", Message: fmt.Sprintf("%s-%d %s", name, i, body)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, 30*time.Second, "vic's inbox full of the flood", func() bool { return vic.status(t).Inbox.Full })
	perSender, reserve := vic.d.newcomerRoom()
	if _, err := alice.api.Send(ctx, localapi.SendRequest{To: "vic", Message: "from alice"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "alice's DM stored in the full inbox", func() bool {
		for _, r := range vic.inbox(t) {
			if r.Body == "from alice" {
				return true
			}
		}
		return false
	})
	// The flooders got none of the reserve: each holds more than a
	// newcomer may, and the inbox stays within the hard limit plus it.
	st := vic.status(t)
	if max := 2*limit + reserve; st.Inbox.Bytes > max {
		t.Fatalf("vic's inbox holds %d bytes, past the hard limit and the reserve (%d)", st.Inbox.Bytes, max)
	}
	held := map[string]int64{}
	for _, r := range vic.inbox(t) {
		if name, _, ok := strings.Cut(r.Body, "-"); ok && strings.HasPrefix(name, "f") {
			held[name] += int64(len(r.Body))
		}
	}
	for _, name := range floods {
		if held[name] <= perSender {
			t.Fatalf("%s holds %d bytes of vic's inbox, no more than a newcomer may (%d): the test floods too little (%v)", name, held[name], perSender, held)
		}
	}
}
