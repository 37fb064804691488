package e2e

// What the CLI says to a user who gets something wrong or meets an odd
// state: the same answer and exit code on both paths, true, and free of
// Go package names.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSendToAnInvalidKeyIsNoMember: a 64-hex target that is no valid
// public key (all zeros: small order; all f: not canonical) was answered
// with the crypto check's wording ("crypto: invalid key: point of small
// order"), exit 1 through the daemon and exit 2 on the direct path; it is
// nobody in the mesh, as the broker says of a key it does not know:
// unknown_recipient, exit 3, on both.
func TestSendToAnInvalidKeyIsNoMember(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice", "bob")[0]
	alice.startDaemon()
	alice.waitDaemonOpen()
	for _, key := range []string{strings.Repeat("0", 64), strings.Repeat("f", 64), strings.Repeat("F", 64)} {
		for _, path := range [][]string{nil, {"--no-daemon"}} {
			e := alice.fails(3, "unknown_recipient", append([]string{"send", key, "hi"}, path...)...)
			if !strings.Contains(e.Error.Message, "no member or session of this mesh has key "+strings.ToLower(key[:8])) {
				t.Fatalf("%s %v: %+v", key[:8], path, e)
			}
			if r := alice.run(append([]string{"send", key, "hi"}, path...)...); r.code != 3 || strings.Contains(r.stderr, "crypto:") {
				t.Fatalf("human %s %v: %s", key[:8], path, r)
			}
		}
	}
	var rows []map[string]any
	alice.json(&rows, "daemon", "outbox", "list")
	if len(rows) != 0 {
		t.Fatalf("something was queued: %v", rows)
	}
}

// TestEmptySummaryClearsItOnBothPaths: `status summary ""` through the
// daemon said "summary updated" and changed nothing (the local API's
// request dropped an empty summary as if none was given), while the
// direct path cleared it. Both clear it now.
func TestEmptySummaryClearsItOnBothPaths(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	users := setupMesh(t, b, "alice", "bob")
	alice, bob := users[0], users[1]
	alice.startDaemon()
	alice.waitDaemonOpen()
	summaryOf := func() string {
		var rows []peerRow
		bob.json(&rows, "peer", "list", "--all")
		for _, r := range rows {
			if r.Pubkey == alice.pubkey {
				return r.Summary
			}
		}
		t.Fatalf("alice is not in bob's peer list: %+v", rows)
		return ""
	}
	for _, path := range [][]string{nil, {"--no-daemon"}} {
		alice.ok(append([]string{"status", "summary", "reviewing PR 412"}, path...)...)
		if s := summaryOf(); s != "reviewing PR 412" {
			t.Fatalf("%v: summary after setting it: %q", path, s)
		}
		alice.ok(append([]string{"status", "summary", ""}, path...)...)
		if s := summaryOf(); s != "" {
			t.Fatalf("%v: summary after clearing it: %q", path, s)
		}
	}
}

// TestCorruptConfigSaysWhatAndWhere: a config.json that is not JSON was
// reported with the JSON package's prefix ("jsontext: invalid character
// …") as an internal error, with no word of what to do; it is
// config_invalid now, naming the file, the problem and the way out.
func TestCorruptConfigSaysWhatAndWhere(t *testing.T) {
	t.Parallel()
	u := newUser(t, "corrupt")
	if err := os.MkdirAll(u.home, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(u.home, "config.json")
	for body, want := range map[string]string{
		`{bad json`:                           "not valid JSON: invalid character 'b' at start of value (at byte 1)",
		`{"version":1,"meshes":[],"extra":1}`: "unknown object member name at /extra",
		`{"version":9,"meshes":[]}`:           "it is version 9, and this claudemesh understands 1",
	} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		e := u.fails(1, "config_invalid", "peer", "list")
		if e.Error.Message != path+" cannot be used: "+want {
			t.Fatalf("%s: %+v", body, e)
		}
		r := u.run("peer", "list")
		if r.code != 1 || strings.Contains(r.stderr, "jsontext") || strings.Contains(r.stderr, "json:") || !strings.Contains(r.stderr, "→ ") {
			t.Fatalf("%s (human): %s", body, r)
		}
	}
}

// TestSmallRefusalsSayTheTruth: `peer verify` of yourself printed a
// "safety number with alice" and told alice to ask herself to compare;
// `broker compact` of a data directory that does not exist exited 1 (a
// failure) with the stat error, where a missing thing is exit 3.
func TestSmallRefusalsSayTheTruth(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	alice := setupMesh(t, b, "alice", "bob")[0]
	for _, who := range []string{"alice", alice.pubkey[:8]} {
		if e := alice.fails(2, "invalid_argument", "peer", "verify", who); !strings.Contains(e.Error.Message, " is you (") {
			t.Fatalf("peer verify %s: %+v", who, e)
		}
	}
	alice.ok("peer", "verify", "bob")
	missing := filepath.Join(t.TempDir(), "nope")
	if e := alice.fails(3, "not_found", "broker", "compact", "--data", missing); !strings.Contains(e.Error.Message, "does not exist: nothing to compact") {
		t.Fatalf("compact: %+v", e)
	}
}

// TestLaunchNameRefusalHasNoPackagePrefix: an invalid `launch --name`
// said "invalid --name: crypto: invalid field: name contains …".
func TestLaunchNameRefusalHasNoPackagePrefix(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	bob := setupMesh(t, b, "alice", "bob")[1]
	bob = bob.withEnv("CLAUDE_BIN=" + standInClaude(t))
	e := bob.fails(2, "usage", "launch", "--name", "x\u202ey")
	if e.Error.Message != "invalid --name: name contains the invisible or direction-changing character U+202E" {
		t.Fatalf("%+v", e)
	}
}
