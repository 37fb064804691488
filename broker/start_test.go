package broker

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"claudemesh/internal/testcert"
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

// TestUnreadableTLSFilesRefuseToStart: a broker given a --tls-cert it
// cannot read said it was listening and stayed up serving nothing (the
// file was read by ServeTLS, whose error went to the log). It now fails
// before it binds or creates anything; with readable files it serves
// HTTPS.
func TestUnreadableTLSFilesRefuseToStart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "fresh")
	cfg.TLSCert, cfg.TLSKey = filepath.Join(t.TempDir(), "missing-cert.pem"), filepath.Join(t.TempDir(), "missing-key.pem")
	err := Run(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "cannot use --tls-cert "+cfg.TLSCert) {
		t.Fatalf("Run with a missing certificate: %v", err)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Fatalf("the data dir was created: %v", err)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot use --tls-cert") {
		t.Fatalf("Start with a missing certificate: %v", err)
	}

	cert, key, pool := testcert.SelfSigned(t)
	cfg = testConfig(t)
	cfg.TLSCert, cfg.TLSKey = cert, key
	b2 := startWith(t, cfg)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + b2.Addr() + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/health over HTTPS: %d", resp.StatusCode)
	}
}
