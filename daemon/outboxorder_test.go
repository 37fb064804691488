package daemon

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// TestOneSendersOrderSurvivesRefusals: messages refused for a while (the
// recipient's queue holds all this sender may have in it) came back to
// the outbox with their own backoffs and went out in any order, behind
// the ones accepted after them (a new user's trial: QF-1, 2, 3, 9, 7, 6,
// 10, 4, 8, 5). The first refused row now holds its line: the rest wait
// behind it and go in the order they were accepted.
func TestOneSendersOrderSurvivesRefusals(t *testing.T) {
	e := newEnv(t)
	bob := e.join("bob")
	e.b.Close()
	e.bCfg.MaxPendingPerSender = 3
	e.b = startBroker(t, &e.bCfg)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	ctx := context.Background()
	const n = 10
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprint("m", i)
		var res localapi.SendResponse
		if _, err := alice.api.Do(ctx, "POST", "/v1/send", localapi.SendRequest{To: bob.Pubkey, Message: want[i]}, &res); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a row refused", func() bool {
		var rows []localapi.OutboxRow
		alice.api.Do(ctx, "GET", "/v1/outbox", nil, &rows)
		return slices.ContainsFunc(rows, func(r localapi.OutboxRow) bool { return r.Attempts > 0 })
	})
	bobd := e.daemon("bob")
	bobd.waitOpen(t)
	var rows []localapi.InboxRow
	waitFor(t, 60*time.Second, "bob has all ten", func() bool {
		rows = nil
		bobd.api.Do(ctx, "GET", "/v1/inbox?limit=100", nil, &rows)
		return len(rows) == n
	})
	// The broker's message ids grow in the order it took the messages,
	// which is the order it delivers them to bob.
	if got := bodiesByID(rows, func(r localapi.InboxRow) (string, string) { return r.MessageID, r.Body }); !slices.Equal(got, want) {
		t.Fatalf("bob has alice's messages in the order %q, want the order they were sent %q", got, want)
	}
	alice.checkCounts(t)
}

// TestTopicPostsSealedAgainKeepTheirOrder: posts accepted during an outage
// and refused as stale_key_gen after a rotation were each sealed again as
// its refusal came back, and reached the topic in that order (a new user's
// trial: 5, 2, 3, 4, 1). They keep the order they were accepted in.
func TestTopicPostsSealedAgainKeepTheirOrder(t *testing.T) {
	e := newEnv(t)
	alice, bob := e.openPair(t)
	ctx := context.Background()
	opsShared(t, alice, bob)

	e.b.Close()
	waitFor(t, 5*time.Second, "bob sees the broker gone", func() bool { return bob.d.meshBySlug("team").conn() == nil })
	const n = 6
	want := make([]string, n)
	for i := range n {
		want[i] = fmt.Sprint("post ", i)
		if resp := bob.post(t, "ops", want[i]); resp.Status != localapi.StatusAccepted {
			t.Fatalf("post during the outage: %+v", resp)
		}
	}
	bob.stop()
	e.b = startBroker(t, &e.bCfg)
	alice.waitOpen(t)
	if _, err := alice.api.Do(ctx, "POST", "/v1/topics/ops/rotate", localapi.TopicMeshRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	bob = e.daemon("bob")
	var page localapi.TopicMessages
	waitFor(t, 30*time.Second, "bob's posts in #ops", func() bool {
		page = alice.messages(t, "ops")
		return len(page.Messages) == n
	})
	if got := bodiesByID(page.Messages, func(m localapi.TopicMessage) (string, string) { return m.ID, m.Body }); !slices.Equal(got, want) {
		t.Fatalf("#ops has bob's posts in the order %q, want the order they were accepted %q", got, want)
	}
}

// bodiesByID returns the bodies of rows in the order of their broker ids,
// which grow in the order the broker took the messages.
func bodiesByID[T any](rows []T, idBody func(T) (id, body string)) []string {
	rows = slices.Clone(rows)
	slices.SortFunc(rows, func(a, b T) int {
		ia, _ := idBody(a)
		ib, _ := idBody(b)
		return strings.Compare(ia, ib)
	})
	out := make([]string, len(rows))
	for i, r := range rows {
		_, out[i] = idBody(r)
	}
	return out
}
