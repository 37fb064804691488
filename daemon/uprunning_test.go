package daemon

import (
	"bytes"
	"strings"
	"testing"

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
