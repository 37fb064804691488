package broker

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSecondBrokerOnADataDirInUse: a second broker on a data dir another
// one holds is told at once which process holds it, instead of a bbolt
// timeout.
func TestSecondBrokerOnADataDirInUse(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	cfg := b.cfg
	cfg.Listen, cfg.MetricsListen, cfg.Listener, cfg.MetricsListener = "127.0.0.1:0", "off", nil, nil
	_, err := New(cfg)
	if err == nil {
		t.Fatal("a second broker opened a data dir in use")
	}
	want := "another broker (pid " + strconv.Itoa(os.Getpid()) + ") holds " + cfg.DataDir
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q, want %q", err, want)
	}
}

// TestBusyPortCreatesNothing: `claudemesh broker` on a port in use fails
// before it creates the data dir, its key or its token.
func TestBusyPortCreatesNothing(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "fresh")
	cfg.Listen = b.Addr()
	err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "cannot listen on "+b.Addr()) {
		t.Fatalf("Run on a busy port: %v", err)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Fatalf("the data dir was created: %v", err)
	}
}
