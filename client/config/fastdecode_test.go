package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// written is config.json as Update writes it for meshes.
func written(t *testing.T, meshes ...Mesh) []byte {
	t.Helper()
	data, err := json.Marshal(Config{Version: CurrentVersion, Meshes: meshes}, jsontext.WithIndent("  "))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkAgrees fails when decodeFast accepts data and json.Unmarshal (Load's
// decoder before) gives another result or an error.
func checkAgrees(t *testing.T, data []byte) bool {
	t.Helper()
	fast, ok := decodeFast(data)
	if !ok {
		return false
	}
	var ref Config
	if err := json.Unmarshal(data, &ref, json.RejectUnknownMembers(true)); err != nil {
		t.Errorf("decodeFast accepted what json.Unmarshal refuses (%v):\n%s", err, data)
		return true
	}
	if !reflect.DeepEqual(fast, ref) {
		t.Errorf("decodeFast gave %+v, json.Unmarshal %+v, for:\n%s", fast, ref, data)
	}
	return true
}

// TestDecodeFastAgreesWithUnmarshal: Load's token decoder takes every
// config.json claudemesh writes, and whatever it takes it reads as
// json.Unmarshal does; anything else (including every byte-level damage
// of a written file that it cannot prove harmless) goes to json.Unmarshal,
// whose errors Load reports.
func TestDecodeFastAgreesWithUnmarshal(t *testing.T) {
	m1, m2 := mesh("m1", "acme"), mesh("m2", "beta")
	m2.BrokerURLs = []string{"wss://a.example/ws", "wss://b.example/ws"}
	m3 := mesh("m3", "gamma")
	m3.DisplayName = "é \"quoted\" \\ \u2028 <tag> \U0001F600"
	m3.BrokerURLs = []string{}
	files := [][]byte{
		written(t), written(t, m1), written(t, m1, m2, m3),
		[]byte(`{"version":1,"meshes":[]}`),
		[]byte(`{"meshes":[{"slug":"s","meshId":"m"}],"version":1}`),
		[]byte(" \n{\"version\" : 1 , \"meshes\" : [ ] }\n\t"),
		[]byte(`{"version":1,"meshes":[{"displayName":"\u00e9\ud83d\ude00\n","brokerUrls":[]}]}`),
	}
	for _, f := range files {
		if !checkAgrees(t, f) {
			t.Errorf("decodeFast refused a well-formed config.json:\n%s", f)
		}
	}
	for _, body := range []string{
		`{"version":1,"meshes":null}`, `{"version":null,"meshes":[]}`, `{"version":1.0,"meshes":[]}`,
		`{"version":1e0,"meshes":[]}`, `{"version":-0,"meshes":[]}`, `{"version":"1","meshes":[]}`,
		`{"version":1,"meshes":[{"slug":null}]}`, `{"version":1,"meshes":[{"brokerUrls":null}]}`,
		`{"version":1,"meshes":[{"brokerUrls":[1]}]}`, `{"version":1,"meshes":[{"slug":"a","slug":"b"}]}`,
		`{"version":1,"meshes":[{"Slug":"a"}]}`, `{"version":99999999999999999999,"meshes":[]}`,
		"{\"version\":1,\"meshes\":[{\"slug\":\"\xff\"}]}", `{"version":1,"meshes":[]}{}`, `[]`, ``,
	} {
		checkAgrees(t, []byte(body))
	}
	// Every deletion, and every replacement and insertion of a few
	// characters, at every byte of a written file.
	base := written(t, m2, m3)
	var n, accepted int
	for i := 0; i <= len(base); i++ {
		var variants [][]byte
		if i < len(base) {
			variants = append(variants, cat(base[:i], base[i+1:]))
		}
		for _, s := range []string{`"`, `,`, `}`, `]`, `0`, `-`, ` `, `\`, `n`, "\xff"} {
			variants = append(variants, cat(base[:i], []byte(s), base[i:]))
			if i < len(base) {
				variants = append(variants, cat(base[:i], []byte(s), base[i+1:]))
			}
		}
		for _, v := range variants {
			n++
			if checkAgrees(t, v) {
				accepted++
			}
		}
	}
	t.Logf("%d damaged files, %d taken by decodeFast (json.Unmarshal agreed)", n, accepted)
}

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// TestLoadStartsWithoutReflection: the first Load in a process decodes
// the config.json claudemesh wrote without json.Unmarshal, whose first use
// builds its decoders by reflection (a few hundred allocations, ~0.1 ms at
// every verb's start). It counts the allocations of that first Load in a
// child process (this test binary), as allocation counts, unlike times,
// do not depend on the machine's load.
func TestLoadStartsWithoutReflection(t *testing.T) {
	if home := os.Getenv("CLAUDEMESH_TEST_FIRST_LOAD"); home != "" {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c, err := Load(home)
		runtime.ReadMemStats(&after)
		if err != nil || len(c.Meshes) != 2 {
			t.Fatalf("Load: %+v, %v", c, err)
		}
		os.Stdout.WriteString("allocs=" + strconv.FormatUint(after.Mallocs-before.Mallocs, 10) + "\n")
		return
	}
	home := filepath.Join(t.TempDir(), "home")
	m2 := mesh("m2", "beta")
	m2.BrokerURLs = []string{"wss://a.example/ws", "wss://b.example/ws"}
	if err := Update(home, func(c *Config) error { c.Upsert(mesh("m1", "acme")); c.Upsert(m2); return nil }); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestLoadStartsWithoutReflection$", "-test.v")
	cmd.Env = append(os.Environ(), "CLAUDEMESH_TEST_FIRST_LOAD="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, rest, ok := strings.Cut(string(out), "allocs=")
	n, err := strconv.Atoi(strings.Fields(rest + " x")[0])
	if !ok || err != nil {
		t.Fatalf("child printed no allocation count:\n%s", out)
	}
	// json.Unmarshal's first use made ~300 allocations here; the token
	// decoder makes one per string and a few more.
	if n > 100 {
		t.Errorf("the first Load made %d allocations: config.json was decoded by reflection (decodeFast refused it?)", n)
	}
	t.Logf("the first Load made %d allocations", n)
}
