package verbs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	cmcrypto "claudemesh/crypto"
)

// An invite's meshId is chosen by whoever signs the link: a join must not
// let it name a file. "../config" once replaced the home's config.json
// (every key of the home) and "../../x" wrote outside the home.
func TestPendingJoinKeyNeverLetsTheMeshIdNameAFile(t *testing.T) {
	parent := t.TempDir()
	home := filepath.Join(parent, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(home, "config.json")
	want := []byte(`{"keep":"me"}`)
	if err := os.WriteFile(config, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"../config", "../../outside", "/etc/x", "a/b", ".", ".."} {
		key, resumed, err := pendingJoinKey(home, id, "bob")
		if err != nil || key == nil || resumed {
			t.Fatalf("meshId %q: key %v resumed %v err %v", id, key != nil, resumed, err)
		}
		again, resumed, err := pendingJoinKey(home, id, "bob")
		if err != nil || !resumed || again.PublicHex() != key.PublicHex() {
			t.Fatalf("meshId %q: a second join does not find the saved key (resumed %v, err %v)", id, resumed, err)
		}
	}
	if got, _ := os.ReadFile(config); !bytes.Equal(got, want) {
		t.Fatalf("config.json was rewritten: %s", got)
	}
	if _, err := os.Stat(filepath.Join(parent, "outside.json")); err == nil {
		t.Fatal("a file was written outside the home")
	}
	entries, err := os.ReadDir(filepath.Join(home, "join-pending"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 6 {
		t.Fatalf("join-pending holds %d files, want one per mesh id (6)", len(entries))
	}
	for _, e := range entries {
		if e.IsDir() || len(e.Name()) != 32+len(".json") || !strings.HasSuffix(e.Name(), ".json") {
			t.Fatalf("unexpected entry %q in join-pending", e.Name())
		}
	}
	for _, id := range []string{"../config", "../../outside"} {
		dropPendingJoin(home, id)
	}
	if _, err := os.Stat(config); err != nil {
		t.Fatalf("dropping a pending join removed config.json: %v", err)
	}
}

// A key saved by the earlier build (join-pending/<meshId>.json) is found
// after an upgrade.
func TestPendingJoinKeyAdoptsTheEarlierFileName(t *testing.T) {
	home := t.TempDir()
	const id = "01JABCDEFGHJKMNPQRSTVWXYZ0"
	first, _, err := pendingJoinKey(home, id, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pendingJoinPath(home, id), filepath.Join(home, "join-pending", id+".json")); err != nil {
		t.Fatal(err)
	}
	again, resumed, err := pendingJoinKey(home, id, "bob")
	if err != nil || !resumed || again.PublicHex() != first.PublicHex() {
		t.Fatalf("the earlier file was not adopted (resumed %v, err %v)", resumed, err)
	}
}

// A broker is trusted with routing, not with the home's files or the
// terminal: a join answer's slug "../../pwn\x1b[41m" made the daemon write
// session keys outside the home and coloured the terminal. Found by a
// review.
func TestJoinStoresTheSignedSlugAndOnlyNamesThatAreNames(t *testing.T) {
	inv := &cmcrypto.Invite{MeshSlug: "acme", MeshName: "Acme", Role: "member"}
	slug, name, role, display := joinedAs(inv, "Acme\x1b[41mRED", "root", "bob\x1b]52;c;x\a", "bob")
	if slug != "acme" || name != "Acme" || role != "member" || display != "bob" {
		t.Fatalf("stored slug %q name %q role %q display %q", slug, name, role, display)
	}
	slug, name, role, display = joinedAs(inv, "Acme Corp", "admin", "Bob", "bob")
	if slug != "acme" || name != "Acme Corp" || role != "admin" || display != "Bob" {
		t.Fatalf("a sound answer was not kept: slug %q name %q role %q display %q", slug, name, role, display)
	}
}
