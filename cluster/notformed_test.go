package cluster

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"claudemesh/internal/lockedbuf"
)

// TestNoClusterFormedIsSaid: a node whose peers never start gives up at
// the start's deadline saying that no cluster formed, which routes did not
// answer and what to check, not NATS's stream error; and the route
// dialler's failures, one every few milliseconds, are logged once per
// route with a count.
func TestNoClusterFormedIsSaid(t *testing.T) {
	t.Parallel()
	var log lockedbuf.Buffer
	self, a, b := freePort(t), freePort(t), freePort(t)
	node, err := Start(Config{Name: "lone", NodeID: "n1", Listen: self, Routes: []string{self, a, b},
		DataDir: t.TempDir(), Replicas: 3, RouteSecret: testSecret,
		Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Close)
	_, err = OpenEngine(node, EngineOptions{Path: filepath.Join(t.TempDir(), "broker.db"), PublishTimeout: time.Second, CatchUpTimeout: 3 * time.Second})
	var nf *NotFormedError
	if !errors.As(err, &nf) {
		t.Fatalf("OpenEngine without peers: %v (%T), want a NotFormedError", err, err)
	}
	msg := err.Error()
	for _, want := range []string{"no cluster formed within 3s", "none of the other nodes (" + a + ", " + b + ")", "--cluster-routes"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error %q does not say %q", msg, want)
		}
	}
	if strings.Contains(msg, "create stream") || strings.Contains(msg, "err_code") {
		t.Errorf("the error names NATS internals: %q", msg)
	}
	dials := strings.Count(log.String(), "Error trying to connect to route")
	if dials == 0 || dials > 4 {
		t.Errorf("the route dialler's failures were logged %d times in 3 s (want once per route): %s", dials, log.String())
	}
}
