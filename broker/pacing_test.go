package broker

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// TestUntilTokensIsAlwaysATrueWait: the retryAfterMs of a refusal is
// never negative or zero for a wait that is not over, even for a limit
// so slow that the wait overflows a Duration, and a count above the
// burst (which can never be taken at once) waits for a full bucket.
func TestUntilTokensIsAlwaysATrueWait(t *testing.T) {
	empty := func(r rate.Limit, burst int) *rate.Limiter {
		l := rate.NewLimiter(r, burst)
		l.AllowN(time.Now(), burst)
		return l
	}
	for _, tc := range []struct {
		name string
		lim  *rate.Limiter
		n    float64
		min  time.Duration
		max  time.Duration
	}{
		{"no limiter", nil, 500, 0, 0},
		{"unlimited", rate.NewLimiter(rate.Inf, 0), 500, 0, 0},
		{"tokens left", rate.NewLimiter(10, 10), 5, 0, 0},
		{"one token at 4/s", empty(4, 4), 1, 200 * time.Millisecond, 250 * time.Millisecond},
		{"overflowing wait", empty(5e-9, 1000), 500, maxRetryAfter, maxRetryAfter},
		{"above the burst", empty(100, 10), 500, 90 * time.Millisecond, 100 * time.Millisecond},
	} {
		if got := untilTokens(tc.lim, tc.n); got < tc.min || got > tc.max {
			t.Errorf("%s: untilTokens = %v, want %v to %v", tc.name, got, tc.min, tc.max)
		}
	}
}

// TestNonFiniteRatesRefused: --ack-rate inf made every ack of an id not
// in flight refused forever (the lookup budget's burst overflowed).
func TestNonFiniteRatesRefused(t *testing.T) {
	for _, v := range []float64{math.Inf(1), math.NaN(), -1} {
		cfg := testConfig(t)
		cfg.AckRate = v
		if b, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--ack-rate") {
			if b != nil {
				b.Close()
			}
			t.Fatalf("--ack-rate %v: %v, want it refused", v, err)
		}
	}
}

// TestJunkFramesArePaced: frames that are not JSON, or carry a bad reqId,
// are answered invalid_argument before their type is known; they spend
// the connection's frame budget (100/s, burst 500) like any other
// request, and past it the connection is read at that rate.
func TestJunkFramesArePaced(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "team", "alice")
	a := connect(t, b, alice, false, nil)
	const n = frameBurst + 100
	start := time.Now()
	for range n {
		if err := a.ws.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// Read every answer, however slow the machine: at each, no more than
	// the burst and the refill for the time so far may have been
	// answered (without pacing all 600 are answered at once), and a
	// reader that handles more than the refill rate must have paused.
	for answered := 0; answered < n; {
		if _, err := a.readErr(30 * time.Second); err != nil {
			t.Fatalf("after %d answers: %v", answered, err)
		}
		answered++
		elapsed := time.Since(start)
		if allowed := frameBurst + 1 + int(elapsed.Seconds()*frameRate); answered > allowed {
			t.Fatalf("%d junk frames answered in %v; want at most %d", answered, elapsed, allowed)
		}
	}
	waitFor(t, "read_paused counted", func() bool {
		return counterValue(t, b, "claudemesh_limits_tripped_total", "read_paused") > 0
	})
}
