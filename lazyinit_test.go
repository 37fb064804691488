package main

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// initCost is one line of GODEBUG=inittrace=1: what a package's
// initialiser allocated.
type initCost struct {
	bytes, allocs int
}

// initCosts runs this test binary, which links what claudemesh links, with
// GODEBUG=inittrace=1 and no test, and returns each package initialiser's
// allocations. Allocation counts, unlike clock times, are the same on every
// machine and under any load.
func initCosts(t *testing.T) map[string]initCost {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	costs := map[string]initCost{}
	for _, line := range strings.Split(stderr.String(), "\n") {
		// init PKG @0.1 ms, 0.02 ms clock, 1234 bytes, 5 allocs
		f := strings.Fields(line)
		if len(f) != 11 || f[0] != "init" || f[8] != "bytes," || f[10] != "allocs" {
			continue
		}
		b, err1 := strconv.Atoi(f[7])
		a, err2 := strconv.Atoi(f[9])
		if err1 != nil || err2 != nil {
			t.Fatalf("unreadable inittrace line %q", line)
		}
		costs[f[1]] = initCost{bytes: b, allocs: a}
	}
	if len(costs) == 0 {
		t.Fatalf("no inittrace lines in:\n%s", stderr.String())
	}
	return costs
}

// TestPatchedModulesStartLazily: the cluster engine's and the MCP server's
// modules are the patched copies in third_party/ (go.mod's replace
// directives), whose package-level work (regular expressions, the
// Castagnoli CRC table, the process sampler, the id generator's seeding,
// the JSON schema package's field tables, encoding/gob) waits for first use
// or is gone instead of running in every claudemesh process. Upstream's initialisers allocated
// what each limit's comment says; a module updated without its patch, or a
// replace directive dropped, fails here.
func TestPatchedModulesStartLazily(t *testing.T) {
	costs := initCosts(t)
	limits := []struct {
		pkg    string
		allocs int // upstream's count in a comment
	}{
		{"github.com/nats-io/nats-server/v2/server", 600},  // 1,856: 22 regular expressions; the rest are error and option tables
		{"github.com/nats-io/nats%2ego", 20},               // 229
		{"github.com/nats-io/nats.go/jetstream", 20},       // 178
		{"github.com/nats-io/nkeys", 20},                   // 84
		{"github.com/nats-io/jwt/v2", 20},                  // 90
		{"github.com/nats-io/nuid", 10},                    // 18
		{"github.com/google/jsonschema-go/jsonschema", 30}, // 296: reflection over Schema, a regular expression
	}
	for _, l := range limits {
		if c, ok := costs[l.pkg]; ok && c.allocs > l.allocs {
			t.Errorf("%s's initialiser made %d allocations (at most %d with third_party/'s patch): see third_party/README.md", l.pkg, c.allocs, l.allocs)
		}
	}
	// The sampler's initialiser read /proc/self/stat and started a timer;
	// patched, the package has no initialiser left.
	if c, ok := costs["github.com/nats-io/nats-server/v2/server/pse"]; ok {
		t.Errorf("github.com/nats-io/nats-server/v2/server/pse has an initialiser again (%d allocations): see third_party/README.md", c.allocs)
	}
	// s2 made the 9 KiB Castagnoli tables (~0.15 ms of CPU) at start.
	if c := costs["github.com/klauspost/compress/s2"]; c.bytes > 1024 {
		t.Errorf("github.com/klauspost/compress/s2's initialiser allocated %d bytes (the CRC table is made at start again): see third_party/README.md", c.bytes)
	}
	// encoding/gob's initialiser (~370 allocations of type tables) ran
	// because the MCP SDK and nats.go imported the package; patched, nothing
	// claudemesh links does.
	if c, ok := costs["encoding/gob"]; ok {
		t.Errorf("encoding/gob is linked again (its initialiser made %d allocations): see third_party/README.md", c.allocs)
	}
	if _, ok := costs["github.com/nats-io/nats-server/v2/server"]; !ok {
		t.Errorf("no initialiser of github.com/nats-io/nats-server/v2/server traced: the test no longer sees the cluster engine")
	}
}
