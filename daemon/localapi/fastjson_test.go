package localapi

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"

	json "github.com/go-json-experiment/json"
)

// sendRequestPlain is SendRequest without its methods: json.Marshal encodes
// it by reflection, as it encoded SendRequest.
type sendRequestPlain SendRequest

var oddStrings = []string{"", "bob", "é \"quoted\" \\ back", "\u2028\u2029 <tag> & \U0001F600", "tab\tnew\nline\x00\x1f\x7f",
	"#deploys", "@dev", strings.Repeat("x", 5000), "\xff invalid", "a\xed\xa0\x80"}

// TestSendRequestEncodesAsMarshal: the request a send writes is the bytes
// json.Marshal wrote for it, and a string json.Marshal refuses (not
// UTF-8) still gets json.Marshal's error.
func TestSendRequestEncodesAsMarshal(t *testing.T) {
	var reqs []SendRequest
	for i, s := range oddStrings {
		reqs = append(reqs,
			SendRequest{To: s, Message: oddStrings[(i+1)%len(oddStrings)]},
			SendRequest{To: "bob", Message: s, Mesh: s, Priority: s, ClientMessageID: s, ReplyToID: s},
			SendRequest{To: "bob", Message: "m", Mentions: []string{s, "bob"}},
			SendRequest{To: "bob", Message: "m", Mentions: []string{}})
	}
	for _, r := range reqs {
		want, werr := json.Marshal(sendRequestPlain(r))
		got, ok := r.encodeFast()
		if werr != nil {
			if ok {
				t.Errorf("encodeFast wrote %s for %+v, which json.Marshal refuses (%v)", got, r, werr)
			}
			continue
		}
		if !ok || !bytes.Equal(got, want) {
			t.Errorf("encodeFast(%+v) = %s, %v; json.Marshal wrote %s", r, got, ok, want)
		}
	}
}

// sendResponsePlain is SendResponse without its methods.
type sendResponsePlain SendResponse

// TestSendResponseDecodesAsUnmarshal: every answer the token reader takes
// reads as json.Unmarshal reads it, and it takes what the daemon writes.
func TestSendResponseDecodesAsUnmarshal(t *testing.T) {
	yes, no := true, false
	answers := []SendResponse{
		{ClientMessageID: "01M961ERPK6KDVC4JGN34E1EJ9", Mesh: "ps", Status: "accepted",
			Target: Target{Kind: "box", TargetSpec: strings.Repeat("3d", 32), DisplayName: "bob", Online: &no}, MeshState: "open"},
		{ClientMessageID: "c", MessageID: "m", Mesh: "é", Status: "failed", Duplicate: true, Error: "<x> \u2028", ErrorCode: "delivery_expired",
			Target: Target{Kind: "topic", TargetSpec: "#t", Online: &yes, Status: "dnd"}},
		{},
	}
	check := func(data []byte) bool {
		var got SendResponse
		if !got.decodeFast(data) {
			return false
		}
		var want sendResponsePlain
		if err := json.Unmarshal(data, &want); err != nil {
			t.Errorf("decodeFast took %s, which json.Unmarshal refuses: %v", data, err)
			return true
		}
		if !reflect.DeepEqual(got, SendResponse(want)) {
			t.Errorf("decodeFast read %+v, json.Unmarshal %+v, from %s", got, want, data)
		}
		return true
	}
	var base []byte
	for _, a := range answers {
		data, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		if !check(data) {
			t.Errorf("decodeFast refused the daemon's answer %s", data)
		}
		base = data
	}
	for _, body := range []string{`{"status":null}`, `{"duplicate":1}`, `{"target":{"online":null}}`, `{"target":null}`,
		`{"mesh":"a","mesh":"b"}`, `{"Mesh":"a"}`, `{"other":1}`, `{}{}`, `[]`, `{"status":"\xff"}`, ` {"status" : "a"} `} {
		check([]byte(body))
	}
	base = []byte(`{"clientMessageId":"c","messageId":"m","mesh":"ps","status":"accepted","target":{"kind":"box","targetSpec":"ab","displayName":"bob","online":true,"status":"idle"},"duplicate":true,"error":"e","errorCode":"x","meshState":"open"}`)
	if !check(base) {
		t.Fatalf("decodeFast refused %s", base)
	}
	for i := 0; i <= len(base); i++ {
		if i < len(base) {
			check(append(append([]byte{}, base[:i]...), base[i+1:]...))
		}
		for _, s := range []string{`"`, `,`, `}`, `]`, `0`, `t`, ` `, `\`, "\xff"} {
			check(append(append(append([]byte{}, base[:i]...), s...), base[i:]...))
		}
	}
}

// TestSendStartsWithoutReflection: a process's first Send (Connect's
// connection, the request written, the answer read) encodes and decodes
// without json.Marshal and json.Unmarshal, whose first use builds their
// encoders and decoders by reflection (a few hundred allocations, ~0.1 ms
// of every `claudemesh send`). It counts the allocations of the first
// Send in a child process (this test binary), talking to a daemon socket
// served here; counts do not depend on the machine's load, as times do.
func TestSendStartsWithoutReflection(t *testing.T) {
	if home := os.Getenv("CLAUDEMESH_TEST_FIRST_SEND"); home != "" {
		ctx := context.Background()
		c, err := Connect(ctx, home, false)
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		res, err := c.Send(ctx, SendRequest{To: "bob", Message: "hi", Mesh: "ps"})
		runtime.ReadMemStats(&after)
		if err != nil || res.Status != "accepted" || res.Target.Online == nil {
			t.Fatalf("send: %+v, %v", res, err)
		}
		os.Stdout.WriteString("allocs=" + strconv.FormatUint(after.Mallocs-before.Mallocs, 10) + "\n")
		return
	}
	no := false
	answer, err := json.Marshal(SendResponse{ClientMessageID: "01M961ERPK6KDVC4JGN34E1EJ9", Mesh: "ps", Status: "accepted",
		Target: Target{Kind: "box", TargetSpec: strings.Repeat("3d", 32), DisplayName: "bob", Online: &no}, MeshState: "open"})
	if err != nil {
		t.Fatal(err)
	}
	home, _ := fakeHome(t, func(w http.ResponseWriter, r *http.Request) {
		var req SendRequest
		if err := json.UnmarshalRead(r.Body, &req, json.RejectUnknownMembers(true)); err != nil || req.To != "bob" || req.Mesh != "ps" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		w.Write(answer)
	})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestSendStartsWithoutReflection$", "-test.v")
	cmd.Env = append(os.Environ(), "CLAUDEMESH_TEST_FIRST_SEND="+home)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	_, rest, ok := strings.Cut(string(out), "allocs=")
	n, err := strconv.Atoi(strings.Fields(rest + " x")[0])
	if !ok || err != nil {
		t.Fatalf("child printed no allocation count:\n%s", out)
	}
	// With json.Marshal and json.Unmarshal the first Send made ~280
	// allocations here.
	if n > 150 {
		t.Errorf("the first Send made %d allocations: its request or answer went through json's reflection", n)
	}
	t.Logf("the first Send made %d allocations", n)
}
