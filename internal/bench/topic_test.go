package bench

import (
	"os"
	"testing"
)

// TestTopicRun runs --topic small: every post reaches every other member
// live and the SSE stream, verified; a history page is timed; the child
// broker's memory is reported.
func TestTopicRun(t *testing.T) {
	var warnings []string
	res, err := RunTopic(testContext(t), Config{Topic: true, Peers: 4, Messages: 6, TopicRate: 200, TopicHistory: 120, Payload: 64,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"},
		Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 18 || res.Expected != 18 || res.Unverified != 0 {
		t.Fatalf("delivered %d of %d, %d unverified", res.Delivered, res.Expected, res.Unverified)
	}
	for name, l := range map[string]Latency{"ack": res.AckMs, "live": res.LiveMs, "sse": res.SSEMs, "history": res.HistoryPageMs} {
		if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s latency not ordered and positive: %+v", name, l)
		}
	}
	if res.BrokerPeakRssMB == nil || res.PrefillPerSec <= 0 {
		t.Errorf("RSS %v, prefill %.1f/s", res.BrokerPeakRssMB, res.PrefillPerSec)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
}
