package broker

import (
	"fmt"
	"strings"
	"testing"

	"claudemesh/wire"
)

// TestFetchRateLimitsRefetching: a member fetching its queue over and
// over without acking (each fetch_queued answers up to 4 MiB and settles
// nothing) runs out of its --fetch-rate budget and gets rate_limited with
// retryAfterMs; --fetch-rate 0 leaves it unlimited.
func TestFetchRateLimitsRefetching(t *testing.T) {
	t.Parallel()
	for _, fetchRate := range []int64{64 << 10, 0} {
		b := startBroker(t, func(c *Config) {
			c.Rate = 0
			// 64 KiB/s refills a fraction of what each fetch takes,
			// however slowly a loaded machine runs the loop below.
			c.FetchRate = fetchRate
		})
		alice := createMesh(t, b, "team", "alice")
		bob := addMember(t, b, alice, "team", "bob")
		a := connect(t, b, alice, false, nil)
		const n = 20 // 20 × ~80 KB frames: ~1.6 MB an answer
		for range n {
			if ack := a.sendAck(dm(t, alice, bob.pub(), strings.Repeat("x", 60<<10))); ack.Error != nil {
				t.Fatalf("ack %+v", ack.Error)
			}
		}
		bc := connect(t, b, bob, false, nil)
		refusedAt := 0
		for i := 1; i <= 20 && refusedAt == 0; i++ {
			var raw map[string]any
			bc.write(map[string]any{"type": "fetch_queued", "reqId": fmt.Sprintf("f%d", i), "limit": 500})
			env := bc.next(&raw, wire.TypeQueued, wire.TypeError)
			switch env.Type {
			case wire.TypeQueued:
				// The whole queue, or (a budget running low) a part of
				// it that says there is more: never nothing.
				msgs, _ := raw["messages"].([]any)
				if len(msgs) == 0 || len(msgs) > n || (len(msgs) < n && raw["more"] != true) {
					t.Fatalf("fetch %d: %d messages (more %v) of %d", i, len(msgs), raw["more"], n)
				}
			case wire.TypeError:
				if raw["code"] != wire.CodeRateLimited || raw["retryAfterMs"] == nil || !strings.Contains(raw["message"].(string), "--fetch-rate") {
					t.Fatalf("fetch %d refused with %v", i, raw)
				}
				refusedAt = i
			}
		}
		switch {
		case fetchRate > 0 && refusedAt == 0:
			t.Fatalf("--fetch-rate %d: 20 fetches of ~1.6 MB each, none acked, and none refused", fetchRate)
		case fetchRate == 0 && refusedAt != 0:
			t.Fatalf("--fetch-rate 0: fetch %d refused", refusedAt)
		}
		if fetchRate > 0 && counterValue(t, b, "claudemesh_limits_tripped_total", "fetch_rate") != 1 {
			t.Fatal("limits_tripped{fetch_rate} not counted")
		}
	}
}
