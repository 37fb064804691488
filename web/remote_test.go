package web

import (
	"strings"
	"testing"
)

// TestRemoteWarning (a new user's trial): with --web 0.0.0.0:0
// --web-allow-remote the page listened on every interface while daemon
// up, daemon status and the log showed only a loopback URL and never
// warned. The warning names where it listens and the port it got.
func TestRemoteWarning(t *testing.T) {
	for _, c := range []struct{ addr, url, want string }{
		{"127.0.0.1:7901", "http://127.0.0.1:7901", ""},
		{"localhost:0", "http://127.0.0.1:40001", ""},
		{"[::1]:7901", "http://[::1]:7901", ""},
		{"0.0.0.0:0", "https://127.0.0.1:34707", "listens on every interface, port 34707, reachable from the network"},
		{":7901", "https://127.0.0.1:7901", "listens on every interface, port 7901"},
		{"192.0.2.10:7901", "https://192.0.2.10:7901", "listens on 192.0.2.10, port 7901"},
	} {
		got := RemoteWarning(c.addr, c.url)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("RemoteWarning(%q, %q) = %q, want %q", c.addr, c.url, got, c.want)
		}
	}
}
