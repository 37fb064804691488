package e2e

import (
	"strings"
	"testing"
)

// TestBrokerRefusesNegativeLimits: a negative limit, rate or timer is a
// usage error naming the flag (exit 2), where the broker read it as 0 and
// `--rate -5` turned the per-member send rate limit off; and an address
// that does not parse is not reported as a busy port (a new user's trial).
func TestBrokerRefusesNegativeLimits(t *testing.T) {
	t.Parallel()
	op := newUser(t, "op")
	data := t.TempDir()
	for _, flag := range [][]string{{"--rate", "-5"}, {"--max-frame", "-1"}, {"--max-pending", "-3"}, {"--burst", "-1"}, {"--grace", "-1s"}, {"--ack-rate", "-0.5"}} {
		args := append([]string{"broker", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data", data}, flag...)
		e := op.fails(2, "usage", args...)
		if !strings.Contains(e.Error.Message, flag[0]+" must not be negative") {
			t.Errorf("%v: %q", flag, e.Error.Message)
		}
	}
	// Values that made a broker refusing everything, or a text in Go's
	// words.
	for _, c := range []struct {
		flag []string
		want string
	}{
		{[]string{"--queue-ttl", "0s"}, "--queue-ttl must be positive"},
		// 0 quietly meant the default (--max-groups 0 kept 32).
		{[]string{"--max-groups", "0"}, "--max-groups must be at least 1: it cannot be turned off"},
		{[]string{"--max-pending", "0"}, "--max-pending must be at least 1"},
		{[]string{"--max-handshakes-per-ip", "0"}, "--max-handshakes-per-ip must be at least 1"},
		{[]string{"--max-queued-bytes-per-mesh", "0"}, "--max-queued-bytes-per-mesh must be at least 1"},
		{[]string{"--http-idle-timeout", "0s"}, "--http-idle-timeout must be positive"},
		{[]string{"--max-frame", "10"}, "--max-frame must be at least 65536"},
		{[]string{"--send-buffer", "1000"}, "--send-buffer must be at least 262144 (256 KiB)"},
		{[]string{"--public-url", "notaurl"}, "--public-url: broker URL \"notaurl\" is not a ws:// or wss:// URL"},
		{[]string{"--log-level", "loud"}, "--log-level is debug, info, warn or error, not \"loud\""},
		{[]string{"--topic-retention", "forever"}, "give a number and a unit"},
	} {
		args := append([]string{"broker", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data", data}, c.flag...)
		e := op.fails(2, "usage", args...)
		if !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("%v: %q, want %q", c.flag, e.Error.Message, c.want)
		}
	}
	r := op.run("broker", "--listen", "nonsense", "--metrics-listen", "off", "--data", data)
	if r.code == 0 || !strings.Contains(r.stderr+r.stdout, "HOST:PORT") || strings.Contains(r.stderr+r.stdout, "another process uses the port") {
		t.Fatalf("--listen nonsense: %s", r)
	}
}
