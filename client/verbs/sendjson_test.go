package verbs

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"claudemesh/internal/cliui"
)

// sendJSONPlain is sendJSON without its methods: json.Marshal encodes it
// by reflection over its fields, as it encoded sendJSON.
type sendJSONPlain sendJSON

// TestSendJSONAsReflection: `send --json` prints, byte for byte, what
// json.Marshal's reflection over sendJSON's fields printed (every member
// present and omitted, odd strings, invalid UTF-8).
func TestSendJSONAsReflection(t *testing.T) {
	yes, no := true, false
	odd := []string{"", "x", "é \"q\" \\ </channel> & \u2028 \u202e \x85", "\xff\xfe bad", "tab\t\x00\x1f", strings.Repeat("z", 300)}
	var docs []sendJSON
	for i, s := range odd {
		o := odd[(i+1)%len(odd)]
		docs = append(docs,
			sendJSON{OK: true, MessageID: s, ClientMessageID: o, Status: s, Via: o,
				Target: targetJSON{Kind: s, TargetSpec: o, DisplayName: s, Online: &yes, Status: o}, Duplicate: true},
			sendJSON{ClientMessageID: s, Target: targetJSON{Online: &no, DisplayName: o}},
			sendJSON{OK: true, Status: "accepted", Via: "daemon", Target: targetJSON{Kind: "box", TargetSpec: s}})
	}
	for _, d := range docs {
		var got, want, errs bytes.Buffer
		if err := cliui.NewOut(&got, &errs, true, false, false).JSON(d); err != nil {
			t.Fatal(err)
		}
		if err := cliui.NewOut(&want, &errs, true, false, false).JSON(sendJSONPlain(d)); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("send --json printed\n%s\nreflection printed\n%s", got.Bytes(), want.Bytes())
		}
	}
}

// TestSendJSONStartsWithoutReflection: the first `send --json` document a
// process prints is encoded without json.Marshal, whose first use builds
// its encoders by reflection (~0.1 ms of every agent's send). It counts
// the allocations of that first document in a child process (this test
// binary); counts, unlike times, do not depend on the machine's load.
func TestSendJSONStartsWithoutReflection(t *testing.T) {
	if os.Getenv("CLAUDEMESH_TEST_FIRST_SEND_JSON") != "" {
		no := false
		d := sendJSON{OK: true, ClientMessageID: "01M961ERPK6KDVC4JGN34E1EJ9", Status: "accepted", Via: "daemon",
			Target: targetJSON{Kind: "box", TargetSpec: strings.Repeat("3d", 32), DisplayName: "bob", Online: &no}}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := cliui.NewOut(io.Discard, io.Discard, true, false, false).JSON(d)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("allocs=" + strconv.FormatUint(after.Mallocs-before.Mallocs, 10) + "\n")
		return
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSendJSONStartsWithoutReflection$", "-test.v")
	cmd.Env = append(os.Environ(), "CLAUDEMESH_TEST_FIRST_SEND_JSON=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, rest, ok := strings.Cut(string(out), "allocs=")
	n, err := strconv.Atoi(strings.Fields(rest + " x")[0])
	if !ok || err != nil {
		t.Fatalf("child printed no allocation count:\n%s", out)
	}
	if n > 100 { // 162 with json.Marshal, 60 without
		t.Errorf("the first send --json document made %d allocations: it went through json.Marshal's reflection", n)
	}
	t.Logf("the first send --json document made %d allocations", n)
}
