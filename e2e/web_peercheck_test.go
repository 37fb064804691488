package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestWebAnyLocalUserIsLoudAndTrue: the page's check that a connection is
// its user's refuses a browser behind a relay (WSL2's localhost
// forwarding, a proxy run by root) and every browser where /proc/net/tcp
// lists no sockets (WSL1, gVisor), and there was no way out. `daemon up
// --web-any-local-user` turns it off; `daemon up`, `daemon status` and
// `claudemesh ui` say so every time, and a running daemon started without
// it says the flag was not applied rather than pretend.
func TestWebAnyLocalUserIsLoudAndTrue(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice")[0] // a home that joined no mesh gets no daemon
	alice.useDaemon = true
	r := alice.run("daemon", "up", "--web", "127.0.0.1:0", "--web-any-local-user", "--json")
	var up struct {
		PID int `json:"pid"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &up) != nil || up.PID <= 0 {
		t.Fatalf("%s", r)
	}
	t.Cleanup(func() { killAndWait(up.PID) })
	if r := alice.ok("daemon", "up", "--web", "127.0.0.1:0", "--web-any-local-user"); !strings.Contains(r.stderr, "does not check which local user connects") || strings.Contains(r.stderr, "not applied") {
		t.Fatalf("daemon up again, with the check off: %s", r)
	}
	var st struct {
		Web struct {
			State, URL, PeerCheck string
		} `json:"web"`
	}
	alice.json(&st, "daemon", "status")
	if st.Web.State != "serving" || st.Web.PeerCheck != "off" {
		t.Fatalf("status: %+v", st)
	}
	if r := alice.ok("daemon", "status"); !strings.Contains(r.stdout, "does not check which local user connects") {
		t.Fatalf("daemon status does not say the check is off: %s", r)
	}
	if r := alice.ok("ui", "--no-open"); !strings.Contains(r.stderr, "does not check which local user connects") || !strings.Contains(r.stdout, "/login?token=") {
		t.Fatalf("ui: %s", r)
	}
	var login struct {
		URL, PeerCheck string
	}
	alice.json(&login, "ui", "--no-open")
	if login.PeerCheck != "off" {
		t.Fatalf("ui --json: %+v", login)
	}

	bob := newUser(t, "bob")
	bob.createMesh(b, "Bob's", "bobs")
	bob.useDaemon = true
	bob.extraEnv = []string{"CLAUDEMESH_WEB=127.0.0.1:0"}
	bob.startDaemon()
	bob.json(&st, "daemon", "status")
	if st.Web.PeerCheck != "on" {
		t.Fatalf("bob's status: %+v", st)
	}
	if r := bob.ok("ui", "--no-open"); strings.Contains(r.stderr, "local user") {
		t.Fatalf("ui with the check on: %s", r)
	}
	if r := bob.ok("daemon", "up", "--web-any-local-user"); !strings.Contains(r.stderr, "--web-any-local-user not applied") ||
		strings.Contains(r.stderr, "does not check which local user connects") {
		t.Fatalf("daemon up --web-any-local-user on a running daemon that checks: %s", r)
	}
}
