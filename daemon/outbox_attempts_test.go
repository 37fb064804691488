package daemon

import (
	"testing"

	"claudemesh/wire"
)

// TestFailuresThatCountAsAttempts: a cluster without quorum (unavailable)
// and a dropped connection never count toward the attempts that make a
// row dead, however long they last; a refusal on an open connection does.
func TestFailuresThatCountAsAttempts(t *testing.T) {
	for _, c := range []struct {
		code            string
		cancelled       bool
		counted, outage bool
	}{
		{wire.CodeUnavailable, false, false, true},
		{"connection_closed", false, false, false},
		{"unreachable", false, false, false},
		{"canceled", false, false, false},
		{wire.CodeRateLimited, true, false, false},
		{wire.CodeRateLimited, false, true, false},
		{"timeout", false, true, false},
	} {
		counted, outage := classifyFailure(c.code, c.cancelled)
		if counted != c.counted || outage != c.outage {
			t.Errorf("%s (cancelled %v): counted %v outage %v, want %v %v", c.code, c.cancelled, counted, outage, c.counted, c.outage)
		}
	}
}
