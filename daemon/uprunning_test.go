package daemon

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"claudemesh/broker"
	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
)

// `daemon up` with a daemon running says how each mesh its reload started
// came out, each state in its own words: a mesh whose broker could not
// prove its key was said to be "refused again" by the broker, with the
// hint about a ban, though nothing refused this member (the daemon refused
// a server that may not be the broker at all).
func TestUpRunningSaysEachStateTruly(t *testing.T) {
	say := func(states map[string]string) string {
		var stdout, stderr bytes.Buffer
		out := cliui.NewOut(&stdout, &stderr, false, false, false)
		var started []string
		for slug := range states {
			started = append(started, slug)
		}
		if err := reportRunning(out, "claudemesh", 42, started, states); err != nil {
			t.Fatal(err)
		}
		return stdout.String() + stderr.String()
	}
	for _, c := range []struct {
		state     string
		want, not []string
	}{
		{localapi.MeshBrokerKeyMismatch,
			[]string{"the server at acme's broker address could not prove the broker's key (not the broker you joined?)", "daemon status says why", "join again with a new invite"},
			[]string{"refused", "unban", "ban"}},
		{localapi.MeshBanned,
			[]string{"the broker refused acme (banned) again", "an admin must unban this member first"},
			[]string{"could not prove"}},
		{localapi.MeshRemoved,
			[]string{"the broker refused acme (removed) again", "join with a new invite"},
			[]string{"unban"}},
		{localapi.MeshKicked,
			[]string{"the broker refused acme (kicked) again"},
			[]string{"unban"}},
		{localapi.MeshClosed,
			[]string{"acme is closed", "daemon status says why"},
			[]string{"refused", "unban"}},
		{localapi.MeshOpen,
			[]string{"connected acme"},
			[]string{"refused", "unban", "daemon status"}},
	} {
		got := say(map[string]string{"acme": c.state})
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: %q missing from:\n%s", c.state, w, got)
			}
		}
		for _, n := range c.not {
			if strings.Contains(got, n) {
				t.Errorf("%s: %q in:\n%s", c.state, n, got)
			}
		}
	}
}

// `daemon up` waits for the meshes its reload started on /v1/health, not
// on /v1/status, which reads the whole inbox at every poll (every 50 ms
// for up to 3 s). The real daemon's routes are served on a second socket
// that counts the requests by route.
func TestUpWaitsForStartedMeshesOnHealthNotStatus(t *testing.T) {
	e := newEnv(t)
	// A second mesh on a broker that is gone: it stays connecting.
	cfg2 := broker.DefaultConfig()
	cfg2.Listen, cfg2.MetricsListen, cfg2.DataDir = "127.0.0.1:0", "off", t.TempDir()
	b2 := startBroker(t, &cfg2)
	key, _ := cmcrypto.GenerateIdentity()
	res, err := client.CreateMesh(context.Background(), b2.URL(), b2.OperatorToken(), client.CreateMeshRequest{Name: "Ops", Slug: "ops", OwnerPubkey: key.PublicHex(), OwnerDisplayName: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	e.save("alice", config.Mesh{MeshID: res.MeshID, MemberID: res.MemberID, Slug: "ops", Name: "Ops", Pubkey: key.PublicHex(),
		SecretKey: key.SecretKeyHex(), BrokerURL: res.BrokerURL, BrokerPubkey: res.BrokerPubkey, Role: "owner", DisplayName: "alice",
		JoinedAt: time.Now().UTC().Format(time.RFC3339)})
	b2.Close()
	alice := e.daemon("alice")

	var mu sync.Mutex
	hits := map[string]int{}
	routes := alice.d.routes()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil { // the client checks the socket's directory
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "c.sock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ln.Addr().String(), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		routes.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	states := startedOutcome(context.Background(), localapi.New(ln.Addr().String()), []string{"ops"})
	if s := states["ops"]; s == "" || s == localapi.MeshOpen {
		t.Fatalf("the state of a mesh whose broker is gone: %q (asked %v)", s, hits)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits["/v1/status"] != 0 || hits["/v1/health"] == 0 {
		t.Fatalf("up's wait asked %v", hits)
	}
}
