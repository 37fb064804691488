package cluster

import (
	"strings"
	"testing"
	"time"
)

func TestValidName(t *testing.T) {
	for s, ok := range map[string]bool{
		"prod": true, "node-1": true, "A_b-9": true, strings.Repeat("x", 32): true,
		"": false, strings.Repeat("x", 33): false, "a.b": false, "a b": false, "nœud": false, "a/b": false,
	} {
		if validName(s) != ok {
			t.Errorf("validName(%q) = %v, want %v", s, !ok, ok)
		}
	}
}

// TestClientPassword: the embedded server's loopback password is drawn
// once per process (the server and its in-process client must agree),
// 24 random bytes in hex.
func TestClientPassword(t *testing.T) {
	p := clientPassword()
	if len(p) != 48 || strings.Trim(p, "0123456789abcdef") != "" {
		t.Fatalf("password %q", p)
	}
	if clientPassword() != p {
		t.Fatal("a second call drew another password")
	}
}

// TestInProcessConnectWaitsForALoadedStart: the node's connection to its
// own embedded server has the time a loaded start needs (review: nats.go's
// 2 s default failed a start on a busy host with "read pipe: i/o
// timeout", and flaked the cluster tests).
func TestInProcessConnectWaitsForALoadedStart(t *testing.T) {
	t.Parallel()
	node, err := Start(Config{Name: "c", NodeID: "n1", Listen: freePort(t), DataDir: t.TempDir(), Replicas: 1, RouteSecret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	if got := node.Conn().Opts.Timeout; got < 30*time.Second {
		t.Fatalf("the in-process connect's timeout is %s, want at least 30s", got)
	}
}
