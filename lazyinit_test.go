package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// initLine is one line of GODEBUG=inittrace=1: a package initialiser and
// what it allocated.
type initLine struct {
	pkg           string
	bytes, allocs int
}

// initTrace is the GODEBUG=inittrace=1 trace of this test binary, which
// links what claudemesh links, run once with no test: its package
// initialisers in the order they ran. Allocation counts, unlike clock
// times, are the same on every machine and under any load.
var initTrace = sync.OnceValues(func() ([]initLine, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	var lines []initLine
	for _, line := range strings.Split(stderr.String(), "\n") {
		// init PKG @0.1 ms, 0.02 ms clock, 1234 bytes, 5 allocs
		f := strings.Fields(line)
		if len(f) != 11 || f[0] != "init" || f[8] != "bytes," || f[10] != "allocs" {
			continue
		}
		b, err1 := strconv.Atoi(f[7])
		a, err2 := strconv.Atoi(f[9])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("unreadable inittrace line %q", line)
		}
		lines = append(lines, initLine{pkg: f[1], bytes: b, allocs: a})
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("no inittrace lines in:\n%s", stderr.String())
	}
	return lines, nil
})

// initCosts is initTrace by package.
func initCosts(t *testing.T) map[string]initLine {
	t.Helper()
	lines, err := initTrace()
	if err != nil {
		t.Fatal(err)
	}
	costs := make(map[string]initLine, len(lines))
	for _, l := range lines {
		costs[l.pkg] = l
	}
	return costs
}

// TestPatchedModulesStartLazily: the cluster engine's and the MCP server's
// modules are the patched copies in third_party/ (go.mod's replace
// directives), whose package-level work (regular expressions, the
// Castagnoli CRC table, the process sampler, the id generators' seeding,
// the JSON schema package's field tables, encoding/gob, expvar, the CLI
// library's flag-name expression, the MCP SDK's method tables) waits for first use
// or is gone instead of running in every claudemesh process. Upstream's initialisers allocated
// what each limit's comment says; a module updated without its patch, or a
// replace directive dropped, fails here.
func TestPatchedModulesStartLazily(t *testing.T) {
	costs := initCosts(t)
	limits := []struct {
		pkg    string
		allocs int  // upstream's count in a comment
		none   bool // patched, the package has no initialiser left to trace
	}{
		{"github.com/nats-io/nats-server/v2/server", 135, false},     // 1,856; patched 125 (errors, option tables): one lost regular expression adds 15-150, the JetStream error table 230, the build info read 20, the fmt-made errors 29
		{"github.com/nats-io/nats%2ego", 20, false},                  // 229
		{"github.com/nats-io/nats.go/jetstream", 20, false},          // 178
		{"github.com/nats-io/nkeys", 20, false},                      // 84
		{"github.com/nats-io/jwt/v2", 20, false},                     // 90
		{"github.com/nats-io/nuid", 10, true},                        // 18
		{"github.com/google/jsonschema-go/jsonschema", 30, false},    // 296: reflection over Schema, a regular expression
		{"github.com/modelcontextprotocol/go-sdk/mcp", 30, false},    // 183: the method tables
		{"github.com/modelcontextprotocol/go-sdk/oauthex", 5, false}, // 27: an HTTP transport
		{"github.com/klauspost/compress/flate", 10, false},           // 15 (42 KB): the Huffman-only offset encoder
		{"github.com/urfave/cli/v2", 4, false},                       // 33: a regular expression, fmt.Sprintf, an error made with fmt
		{"github.com/oklog/ulid/v2", 0, true},                        // 6 (9.7 KB): a seeded math/rand source
	}
	for _, l := range limits {
		c, ok := costs[l.pkg]
		switch {
		case !ok && !l.none:
			t.Errorf("no initialiser of %s traced: the row checks nothing (a misspelt path, or claudemesh no longer links it)", l.pkg)
		case c.allocs > l.allocs:
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
	// net/http/pprof's initialiser registered its handlers on
	// http.DefaultServeMux; nats-server no longer imports it.
	if c, ok := costs["net/http/pprof"]; ok {
		t.Errorf("net/http/pprof is linked again (its initialiser made %d allocations): see third_party/README.md", c.allocs)
	}
	// encoding/gob's initialiser (~370 allocations of type tables) ran
	// because the MCP SDK and nats.go imported the package; patched, nothing
	// claudemesh links does.
	if c, ok := costs["encoding/gob"]; ok {
		t.Errorf("encoding/gob is linked again (its initialiser made %d allocations): see third_party/README.md", c.allocs)
	}
	// expvar's initialiser registered /debug/vars on http.DefaultServeMux
	// and published its variables; nats-server no longer imports it.
	if c, ok := costs["expvar"]; ok {
		t.Errorf("expvar is linked again (its initialiser made %d allocations): see third_party/README.md", c.allocs)
	}
	if _, ok := costs["github.com/nats-io/nats-server/v2/server"]; !ok {
		t.Errorf("no initialiser of github.com/nats-io/nats-server/v2/server traced: the test no longer sees the cluster engine")
	}
}
