package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/broker"
	"claudemesh/client"
	"claudemesh/client/verbs"
	"claudemesh/daemon"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// childEnvVar makes this test binary act as `claudemesh` (the broker, the
// daemon and the verbs), so the bench can start it as its child broker,
// its daemon and its `send` processes exactly as the real binary starts
// itself — `daemon up` re-executes it too, with the variable inherited.
const childEnvVar = "CLAUDEMESH_BENCH_TEST_AS_CLAUDEMESH"

func TestMain(m *testing.M) {
	if os.Getenv(childEnvVar) == "1" {
		cmds := append(verbs.Commands(), daemon.Command(), broker.Command(), Command())
		app := cliui.NewApp("claudemesh", "bench test child", cmds)
		os.Exit(cliui.Run(app, os.Args, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// checkPerfect asserts a run delivered everything it should have, once,
// with plausible latencies.
func checkPerfect(t *testing.T, res *Result, sends, deliveries int64) {
	t.Helper()
	if res.Delivered != deliveries || res.Expected != deliveries || res.DeliveredPct != 100 {
		t.Errorf("delivered %d of %d expected (%.2f %%), want %d (100 %%)", res.Delivered, res.Expected, res.DeliveredPct, deliveries)
	}
	if res.Sends != sends || res.Refused != 0 || res.Undecryptable != 0 || res.Late != 0 {
		t.Errorf("sends %d (want %d), refused %d, undecryptable %d, late %d", res.Sends, sends, res.Refused, res.Undecryptable, res.Late)
	}
	for name, l := range map[string]Latency{"ack": res.AckMs, "e2e": res.E2eMs} {
		if !(l.P50 > 0 && l.P50 <= l.P95 && l.P95 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s latency not ordered and positive: %+v", name, l)
		}
	}
	if res.DurationSec <= 0 || res.MsgsPerSec <= 0 {
		t.Errorf("duration %.3f s, throughput %.1f msgs/s", res.DurationSec, res.MsgsPerSec)
	}
}

// TestChildBroker runs the default mode: a child broker process, whose
// peak RSS is reported and which is gone when Run returns.
func TestChildBroker(t *testing.T) {
	var warnings []string
	res, err := Run(testContext(t), Config{Peers: 3, Messages: 5, Window: 1, Payload: 64,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"},
		Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res, 15, 15)
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if res.BrokerPeakRssMB == nil || *res.BrokerPeakRssMB <= 0 {
		t.Errorf("no broker peak RSS: %v", res.BrokerPeakRssMB)
	}
	if res.BrokerPID == 0 || res.BrokerPID == os.Getpid() {
		t.Fatalf("broker pid %d", res.BrokerPID)
	}
	if err := syscall.Kill(res.BrokerPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child broker %d still exists after Run (kill 0: %v)", res.BrokerPID, err)
	}
}

// TestSegments splits a run into parts in write order: each part has its
// own latencies and the broker's RSS and store size when it ended.
func TestSegments(t *testing.T) {
	res, err := Run(testContext(t), Config{Peers: 3, Messages: 12, Window: 1, Payload: 64, Segments: 4,
		Executable: os.Args[0], childEnv: []string{childEnvVar + "=1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkPerfect(t, res, 36, 36)
	if len(res.Segments) != 4 {
		t.Fatalf("%d segments, want 4: %+v", len(res.Segments), res.Segments)
	}
	for i, sg := range res.Segments {
		if sg.Index != i || sg.E2eMs.P50 <= 0 || sg.E2eMs.P99 < sg.E2eMs.P50 || sg.BrokerRssMB <= 0 || sg.BrokerAnonMB <= 0 || sg.BrokerAnonMB > sg.BrokerRssMB || sg.StoreMB <= 0 {
			t.Errorf("segment %d: %+v", i, sg)
		}
		if i > 0 && sg.Written < res.Segments[i-1].Written {
			t.Errorf("segment %d ended at %d written, before segment %d (%d)", i, sg.Written, i-1, res.Segments[i-1].Written)
		}
		if want := int64(36 * (i + 1) / 4); sg.Written < want {
			t.Errorf("segment %d sampled at %d written, before its end (%d)", i, sg.Written, want)
		}
	}
	if last := res.Segments[3].Written; last != 36 {
		t.Errorf("the last segment ended at %d written, want 36", last)
	}
}

// TestExistingBroker runs against an in-process broker (--broker URL):
// DMs with a window and idle connections, then a broadcast.
func TestExistingBroker(t *testing.T) {
	cfg := broker.DefaultConfig()
	cfg.Listen, cfg.MetricsListen, cfg.DataDir = "127.0.0.1:0", "off", t.TempDir()
	cfg.Rate, cfg.MaxConnsPerMesh = 0, 0
	b, err := broker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	t.Run("dm", func(t *testing.T) {
		var notes, warnings []string
		res, err := Run(testContext(t), Config{Peers: 4, Messages: 6, Window: 3, Payload: 300, IdleConnections: 5,
			BrokerURL: b.URL(), OperatorToken: b.OperatorToken(),
			Note: func(m string) { notes = append(notes, m) }, Warn: func(m string) { warnings = append(warnings, m) }})
		if err != nil {
			t.Fatal(err)
		}
		checkPerfect(t, res, 24, 24)
		if res.BrokerPeakRssMB != nil {
			t.Errorf("RSS of a broker that is not a child: %v", *res.BrokerPeakRssMB)
		}
		// The run removed the members it enrolled (it left them, and
		// their queues, on the broker), and says what stays.
		var list struct {
			Meshes []struct {
				Slug    string `json:"slug"`
				Members int    `json:"members"`
			} `json:"meshes"`
		}
		req, _ := http.NewRequest("GET", client.RESTBase(b.URL())+"/v1/admin/meshes", nil)
		req.Header.Set("Authorization", "Bearer "+b.OperatorToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Meshes) != 1 {
			t.Fatalf("meshes on the broker: %+v (%v)", list, err)
		}
		if m := list.Meshes[0]; !strings.HasPrefix(m.Slug, "bench-") || m.Members != 1 {
			t.Fatalf("after the run its mesh %s holds %d members, want its owner alone", m.Slug, m.Members)
		}
		if len(warnings) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "removed the bench's 4 members") ||
			!strings.Contains(notes[0], list.Meshes[0].Slug+" stays there") {
			t.Fatalf("notes %q, warnings %q", notes, warnings)
		}
	})
	t.Run("broadcast", func(t *testing.T) {
		res, err := Run(testContext(t), Config{Peers: 4, Messages: 3, Window: 1, Payload: 100, Broadcast: true,
			BrokerURL: b.URL(), OperatorToken: b.OperatorToken()})
		if err != nil {
			t.Fatal(err)
		}
		checkPerfect(t, res, 3, 12)
	})
	t.Run("wrong token", func(t *testing.T) {
		_, err := Run(testContext(t), Config{Peers: 2, Messages: 1, Window: 1, Payload: 1,
			BrokerURL: b.URL(), OperatorToken: "nope"})
		if err == nil {
			t.Fatal("a wrong operator token was accepted")
		}
	})
}

// benchJSON runs `claudemesh bench ARGS --json` end to end and returns the
// document, its top-level keys (sorted) and its text. Nothing may go to
// stderr under --json.
func benchJSON(t *testing.T, args ...string) (map[string]any, []string, string) {
	t.Helper()
	t.Setenv(childEnvVar, "1") // inherited by the child broker
	app := cliui.NewApp("claudemesh", "test", []*cli.Command{Command()})
	var stdout, stderr bytes.Buffer
	argv := append(append([]string{"claudemesh", "bench"}, args...), "--json")
	if code := cliui.RunContext(testContext(t), app, argv, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout.String(), stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr under --json: %q", stderr.String())
	}
	doc, keys := jsonKeys(t, stdout.Bytes())
	return doc, keys, stdout.String()
}

// TestCommandJSON runs `claudemesh bench --json` end to end and checks
// that the document has exactly the fields 05-quality names.
func TestCommandJSON(t *testing.T) {
	doc, keys, text := benchJSON(t, "--peers", "3", "--messages", "5", "--payload", "32")
	want := []string{"ackMs", "brokerPeakRssMB", "delivered", "deliveredPct", "durationSec", "e2eMs",
		"messages", "msgsPerSec", "peers", "schemaVersion", "window"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	if doc["schemaVersion"] != 1.0 || doc["delivered"] != 15.0 || doc["deliveredPct"] != 100.0 || doc["peers"] != 3.0 {
		t.Errorf("document: %s", text)
	}
	for _, k := range []string{"ackMs", "e2eMs"} {
		l, _ := doc[k].(map[string]any)
		if len(l) != 4 || l["p50"] == nil || l["p95"] == nil || l["p99"] == nil || l["max"] == nil {
			t.Errorf("%s = %v", k, doc[k])
		}
	}
}

// TestCommandJSONBroadcastCPU: with --broadcast the document adds the CPU
// both processes used while sending (a broadcast's p99 moves with it), and
// only then.
func TestCommandJSONBroadcastCPU(t *testing.T) {
	doc, keys, text := benchJSON(t, "--broadcast", "--peers", "3", "--messages", "4", "--payload", "32")
	for _, k := range []string{"brokerCpuSec", "benchCpuSec"} {
		if !slices.Contains(keys, k) {
			t.Fatalf("keys %q lack %s", keys, k)
		}
		if s, ok := doc[k].(float64); !ok || s < 0 {
			t.Errorf("%s = %v in %s", k, doc[k], text)
		}
	}
	if doc["delivered"] != 12.0 {
		t.Errorf("document: %s", text)
	}
}

// TestCommandJSONIdleConnect: with --idle-connections the document adds
// how long they took to connect (issue 13's presences row), and only then.
func TestCommandJSONIdleConnect(t *testing.T) {
	doc, keys, _ := benchJSON(t, "--peers", "2", "--messages", "0", "--idle-connections", "20")
	if !slices.Contains(keys, "idleConnectSec") {
		t.Fatalf("keys %q lack idleConnectSec", keys)
	}
	if s, _ := doc["idleConnectSec"].(float64); s <= 0 {
		t.Errorf("idleConnectSec = %v", doc["idleConnectSec"])
	}
}

func TestCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		exit int
		code string
	}{
		{[]string{"--via-daemon", "--peers", "3"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--via-daemon", "--broadcast"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--via-daemon", "--clients", "0"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--via-daemon", "--accepts", "0"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--sends", "3"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--peers", "1"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--window", "0"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--payload", "70000"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--broker", "ws://127.0.0.1:1/ws"}, cliui.ExitUsage, cliui.CodeUsage}, // no token
		{[]string{"--broker", "http://127.0.0.1:1"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--operator-token-file", "/dev/null"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--segments", "-1"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--segments", "5", "--messages", "4"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--segments", "2", "--broadcast"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--failover"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "2", "--failover"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "-1"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "3", "--topic"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "3", "--kill", "leader"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "3", "--failover", "--kill", "nope"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "3", "--failover", "--broadcast"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--cluster", "3", "--segments", "2"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--broker-exe", "/nonexistent/claudemesh"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--rounds", "3"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--attacked-broker-args", "--ack-rate 0"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--adversary", "--rounds", "0"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--adversary", "--honest-rate", "-1"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--broadcast", "--honest-rate", "10"}, cliui.ExitUsage, cliui.CodeUsage},
		{[]string{"--topic", "--honest-rate", "10"}, cliui.ExitUsage, cliui.CodeUsage},
	} {
		t.Setenv(envOperatorToken, "")
		app := cliui.NewApp("claudemesh", "test", []*cli.Command{Command()})
		var stdout, stderr bytes.Buffer
		argv := append([]string{"claudemesh", "bench", "--json"}, tc.args...)
		code := cliui.RunContext(context.Background(), app, argv, &stdout, &stderr)
		var doc struct {
			OK    bool `json:"ok"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		json.Unmarshal(stdout.Bytes(), &doc)
		if code != tc.exit || doc.Error.Code != tc.code {
			t.Errorf("%q: exit %d code %q, want %d %q (%s)", tc.args, code, doc.Error.Code, tc.exit, tc.code, stdout.String())
		}
	}
}

func TestSummarize(t *testing.T) {
	samples := make([]int64, 0, 1000)
	for i := 1000; i >= 1; i-- {
		samples = append(samples, int64(i)*int64(time.Millisecond))
	}
	got := summarize(samples)
	want := Latency{P50: 500, P95: 950, P99: 990, Max: 1000}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if (summarize(nil) != Latency{}) {
		t.Error("no samples must give zeros")
	}
}

func TestSendID(t *testing.T) {
	id := sendID(12, 345)
	if seq, ok := parseSendID(id, 12); !ok || seq != 345 {
		t.Errorf("parseSendID(%q, 12) = %d, %v", id, seq, ok)
	}
	if !wire.ValidULID(id) {
		t.Errorf("sendID(12, 345) = %q is not a ULID, as client ids are", id)
	}
	if a, b := sendID(1, 1), sendID(1, 2); a == b {
		t.Errorf("two sends got the same id %q", a)
	}
	for _, bad := range []string{sendID(1, 345), "p12.345", "", strings.ToLower(id) + "0", "01ARZ3NDEKTSV4RRFFQ69G5FA"} {
		if _, ok := parseSendID(bad, 12); ok {
			t.Errorf("parseSendID(%q, 12) accepted", bad)
		}
	}
}

// jsonKeys decodes a --json document and returns it with its sorted keys.
func jsonKeys(t *testing.T, out []byte) (map[string]any, []string) {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return doc, keys
}

// keyOf keeps ids apart: the same id gives the same key, ids that differ
// in a byte or in length (a prefix of another) do not, and one too long to
// copy is hashed.
func TestMsgKeyKeepsIDsApart(t *testing.T) {
	ids := []string{"01KBXQ3V7Z2M4N5P6Q7R8S9T0V", "01KBXQ3V7Z2M4N5P6Q7R8S9T0W", "01KBXQ3V7Z2M4N5P6Q7R8S9T0", "", "a",
		strings.Repeat("x", 31), strings.Repeat("x", 32), strings.Repeat("x", 33)}
	keys := map[msgKey]string{}
	for _, id := range ids {
		if other, dup := keys[keyOf(id)]; dup {
			t.Fatalf("ids %q and %q have one key", id, other)
		}
		keys[keyOf(id)] = id
		if keyOf(id) != keyOf(string([]byte(id))) {
			t.Fatalf("id %q gives two keys", id)
		}
	}
}
