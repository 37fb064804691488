package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"claudemesh/daemon/localapi"
)

// Event streams are capped per caller: a session may hold
// maxSessionStreams open, the member's own callers maxMemberStreams
// together; one more is refused 429 too_many_streams, saying so, and a
// stream closed makes room again. One caller at its cap does not take
// another's.
func TestEventStreamsAreCappedPerCaller(t *testing.T) {
	e := newEnv(t)
	alice := e.daemon("alice")
	alice.waitOpen(t)
	p1, p2 := standIn(t), standIn(t)
	s1, _ := register(t, alice, e.homes["alice"], "sess-one", "one", p1.Process.Pid)
	s2, _ := register(t, alice, e.homes["alice"], "sess-two", "two", p2.Process.Pid)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	open := func(c *localapi.Client, n int) []*localapi.EventStream {
		t.Helper()
		var out []*localapi.EventStream
		for range n {
			st, err := c.Events(ctx, "", "")
			if err != nil {
				t.Fatalf("stream %d of %d: %v", len(out)+1, n, err)
			}
			out = append(out, st)
		}
		return out
	}
	refused := func(c *localapi.Client, who string) {
		t.Helper()
		st, err := c.Events(ctx, "", "")
		var ae *localapi.APIError
		if err == nil {
			st.Close()
			t.Fatalf("%s: a stream past the cap was opened", who)
		}
		if !errors.As(err, &ae) || ae.HTTPStatus != 429 || ae.Body.Code != "too_many_streams" {
			t.Fatalf("%s: a stream past the cap: %v, want 429 too_many_streams", who, err)
		}
	}

	s1Streams := open(s1, maxSessionStreams)
	refused(s1, "session one")
	open(s2, 1) // another session has its own
	open(alice.api, maxMemberStreams)
	refused(alice.api, "the member")
	// A stream closed makes room.
	s1Streams[0].Close()
	waitFor(t, 10*time.Second, "a closed stream's place free again", func() bool {
		st, err := s1.Events(ctx, "", "")
		if err != nil {
			return false
		}
		s1Streams[0] = st
		return true
	})
	refused(s1, "session one again")
}
