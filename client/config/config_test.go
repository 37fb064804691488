package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"claudemesh/internal/fsutil"
)

func mesh(id, slug string) Mesh {
	return Mesh{
		MeshID: id, MemberID: "mem-" + id, Slug: slug, Name: strings.ToUpper(slug),
		Pubkey: strings.Repeat("ab", 32), SecretKey: strings.Repeat("cd", 64),
		BrokerURL: "wss://broker.example.com/ws", BrokerPubkey: strings.Repeat("ef", 32),
		Role: "member", DisplayName: "alice", JoinedAt: "2026-11-25T18:00:00Z",
	}
}

func TestResolveHome(t *testing.T) {
	t.Setenv(HomeEnv, "")
	t.Setenv("HOME", "/home/tester")
	got, err := ResolveHome("")
	if err != nil || got != "/home/tester/.claudemesh" {
		t.Fatalf("default: %q, %v", got, err)
	}
	t.Setenv(HomeEnv, "/env/home")
	if got, _ := ResolveHome(""); got != "/env/home" {
		t.Fatalf("env: %q", got)
	}
	if got, _ := ResolveHome("/flag/home"); got != "/flag/home" {
		t.Fatalf("flag beats env: %q", got)
	}
	if got, _ := ResolveHome("~/alt"); got != "/home/tester/alt" {
		t.Fatalf("tilde: %q", got)
	}
	wd, _ := os.Getwd()
	if got, _ := ResolveHome("rel"); got != filepath.Join(wd, "rel") {
		t.Fatalf("relative: %q", got)
	}
}

func TestLoadMissingIsEmpty(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "nowhere"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 || c.Meshes == nil || len(c.Meshes) != 0 {
		t.Fatalf("got %+v", c)
	}
}

func TestUpdateWritesPrivateFileAndRoundTrips(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	want := mesh("m1", "acme")
	if err := Update(home, func(c *Config) error { c.Upsert(want); return nil }); err != nil {
		t.Fatal(err)
	}
	for path, perm := range map[string]os.FileMode{home: 0o700, Path(home): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != perm {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), perm)
		}
	}
	raw, err := os.ReadFile(Path(home))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"version": 1`, `"meshId"`, `"memberId"`, `"slug"`, `"name"`, `"pubkey"`,
		`"secretKey"`, `"brokerUrl"`, `"brokerPubkey"`, `"role"`, `"displayName"`, `"joinedAt"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("config.json lacks %s:\n%s", key, raw)
		}
	}
	c, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Meshes) != 1 || !reflect.DeepEqual(c.Meshes[0], want) {
		t.Fatalf("round trip: %+v", c.Meshes)
	}
}

func TestUpdateTightensHome(t *testing.T) {
	home := t.TempDir()
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Update(home, func(*Config) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(home)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("home mode %04o", fi.Mode().Perm())
	}
}

func TestUpdateFnErrorWritesNothing(t *testing.T) {
	home := t.TempDir()
	boom := errors.New("boom")
	err := Update(home, func(c *Config) error { c.Upsert(mesh("m1", "acme")); return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(Path(home)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("config.json written despite error: %v", err)
	}
}

func TestUpdateRefusesInvalid(t *testing.T) {
	home := t.TempDir()
	err := Update(home, func(c *Config) error {
		c.Meshes = append(c.Meshes, mesh("m1", "acme"), mesh("m2", "acme"))
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "slug") {
		t.Fatalf("duplicate slug accepted: %v", err)
	}
}

func TestLoadRefusesWidePermissions(t *testing.T) {
	home := t.TempDir()
	if err := Update(home, func(c *Config) error { c.Upsert(mesh("m1", "acme")); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(Path(home), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(home)
	var ipe *fsutil.InsecurePermError
	if !errors.As(err, &ipe) {
		t.Fatalf("err = %v, want *fsutil.InsecurePermError", err)
	}
	if !strings.Contains(err.Error(), "chmod 600 "+Path(home)) {
		t.Fatalf("message lacks chmod hint: %v", err)
	}
	// Update must not silently rewrite (and thereby "fix") it either.
	if err := Update(home, func(*Config) error { return nil }); !errors.As(err, &ipe) {
		t.Fatalf("Update err = %v", err)
	}
}

func TestLoadStrict(t *testing.T) {
	for name, body := range map[string]string{
		"unknown member":   `{"version":1,"meshes":[],"extra":true}`,
		"duplicate member": `{"version":1,"version":1,"meshes":[]}`,
		"wrong case":       `{"Version":1,"meshes":[]}`,
		"unknown version":  `{"version":2,"meshes":[]}`,
		"missing version":  `{"meshes":[]}`,
		"trailing garbage": `{"version":1,"meshes":[]} x`,
		"mesh unknown key": `{"version":1,"meshes":[{"meshId":"m","slug":"s","secret":"x"}]}`,
		"empty file":       ``,
	} {
		t.Run(name, func(t *testing.T) {
			home := t.TempDir()
			if err := os.WriteFile(Path(home), []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			if c, err := Load(home); err == nil {
				t.Fatalf("accepted %s: %+v", body, c)
			}
		})
	}
	home := t.TempDir()
	if err := os.WriteFile(Path(home), []byte(`{"version":1,"meshes":null}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(home)
	if err != nil || c.Meshes == nil {
		t.Fatalf("null meshes: %+v, %v", c, err)
	}
}

func TestConcurrentUpdateLosesNothing(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	const n = 24
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Update(home, func(c *Config) error {
				c.Upsert(mesh(fmt.Sprintf("m%02d", i), fmt.Sprintf("mesh-%02d", i)))
				return nil
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	c, err := Load(home)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Meshes) != n {
		t.Fatalf("%d meshes after %d concurrent joins", len(c.Meshes), n)
	}
	for i := range n {
		if _, ok := c.Find(fmt.Sprintf("mesh-%02d", i)); !ok {
			t.Errorf("mesh-%02d lost", i)
		}
	}
}

func TestUpsertFindRemove(t *testing.T) {
	c := &Config{Version: 1}
	c.Upsert(mesh("m1", "acme"))
	c.Upsert(mesh("m2", "beta"))
	renamed := mesh("m1", "acme2")
	c.Upsert(renamed)
	if len(c.Meshes) != 2 || c.Meshes[0].Slug != "acme2" {
		t.Fatalf("upsert by meshId: %+v", c.Meshes)
	}
	if _, ok := c.Find("acme"); ok {
		t.Fatal("old slug still found")
	}
	if m, ok := c.Find("beta"); !ok || m.MeshID != "m2" {
		t.Fatal("Find(beta)")
	}
	if !c.Remove("acme2") || c.Remove("acme2") {
		t.Fatal("Remove")
	}
	if got := c.Slugs(); len(got) != 1 || got[0] != "beta" {
		t.Fatalf("Slugs = %v", got)
	}
}

func TestChoose(t *testing.T) {
	var sel *SelectionError
	empty := &Config{Version: 1, Meshes: []Mesh{}}
	if _, err := empty.Choose(""); !errors.As(err, &sel) || sel.ErrorCode() != "not_joined" {
		t.Fatalf("none joined: %v", err)
	}
	if _, err := empty.Choose("acme"); !errors.As(err, &sel) || sel.ErrorCode() != "mesh_not_found" {
		t.Fatalf("named, none joined: %v", err)
	}

	one := &Config{Version: 1, Meshes: []Mesh{mesh("m1", "acme")}}
	if m, err := one.Choose(""); err != nil || m.Slug != "acme" {
		t.Fatalf("only mesh: %v, %v", m, err)
	}

	two := &Config{Version: 1, Meshes: []Mesh{mesh("m1", "acme"), mesh("m2", "beta")}}
	_, err := two.Choose("")
	if !errors.As(err, &sel) || sel.ErrorCode() != "mesh_required" {
		t.Fatalf("several: %v", err)
	}
	if len(sel.Choices) != 2 || !strings.Contains(err.Error(), "acme, beta") {
		t.Fatalf("choices not listed: %v %v", sel.Choices, err)
	}
	if m, err := two.Choose("beta"); err != nil || m.MeshID != "m2" {
		t.Fatalf("named: %v, %v", m, err)
	}
	_, err = two.Choose("gamma")
	if !errors.As(err, &sel) || sel.ErrorCode() != "mesh_not_found" || sel.Slug != "gamma" {
		t.Fatalf("unknown: %v", err)
	}
	if sel.ErrorHint() == "" {
		t.Fatal("no hint")
	}
}

// TestLoadRefusesAHomeOthersCanWrite (a new user's trial): a home of mode
// 0777 was used by every verb and by the daemon, though any local user
// could replace its config.json (0600 does not stop an unlink and a
// create beside it) with one naming their own broker and keys. Load
// refuses it with the chmod that fixes it; a home others can only list
// is still used.
func TestLoadRefusesAHomeOthersCanWrite(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if err := Update(home, func(c *Config) error { c.Upsert(mesh("m1", "acme")); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(home, 0o777); err != nil {
		t.Fatal(err)
	}
	_, err := Load(home)
	var ipe *fsutil.InsecurePermError
	if !errors.As(err, &ipe) || !strings.Contains(err.Error(), "chmod 700 "+home) {
		t.Fatalf("Load of a home of mode 0777: %v, want an insecure_permissions error with chmod 700", err)
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(home); err != nil {
		t.Fatalf("Load of a home of mode 0755: %v", err)
	}
}

// A slug names directories (sessions/<slug>/) and is printed: a
// config.json whose slug is not one (written by a broker's answer before
// joins checked it, or by hand) is refused before anything uses it.
func TestValidateRefusesASlugThatIsNotOne(t *testing.T) {
	for _, slug := range []string{"../../pwn", "acme\x1b[41m", "Acme", "-acme", strings.Repeat("a", 33)} {
		c := &Config{Version: CurrentVersion, Meshes: []Mesh{mesh("01JTEST", slug)}}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "not a slug") {
			t.Fatalf("slug %q: %v", slug, err)
		}
	}
	if err := (&Config{Version: CurrentVersion, Meshes: []Mesh{mesh("01JTEST", "acme-2")}}).Validate(); err != nil {
		t.Fatal(err)
	}
}
