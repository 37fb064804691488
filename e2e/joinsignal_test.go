package e2e

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestJoinSurvivesASignal: a `join` signalled while the broker answers
// its enrolment keeps waiting for that answer and saves the key the
// broker enrolled. It used to abandon the request at the first signal:
// the broker had enrolled the new key and spent the invite's use, and
// the key was never saved, so the member existed with a key nobody held.
// A proxy in front of the broker lets the enrolment through, then
// signals the joining process before it hands back the answer.
func TestJoinSurvivesASignal(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, t.TempDir(), "127.0.0.1:0", "--public-url", "ws://"+ln.Addr().String()+"/ws")
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: b.addr})
	joining := make(chan *exec.Cmd, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/join" {
			rp.ServeHTTP(w, r)
			return
		}
		// The broker enrols the key whatever the client does next.
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		(<-joining).Process.Signal(syscall.SIGTERM)
		// A client that abandons the request on the signal is gone at
		// once; one that waits for the answer gets it.
		select {
		case <-r.Context().Done():
			return
		case <-time.After(2 * time.Second):
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	alice := newUser(t, "alice")
	alice.createMesh(b, "Test Mesh", "test")
	link := alice.invite().Link
	bob := newUser(t, "bob")
	cmd := exec.Command(bin, "--home", bob.home, "join", link, "--name", "bob", "--json")
	cmd.Env = bob.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	joining <- cmd
	err = cmd.Wait()
	if got := bob.whoami().Meshes; len(got) != 1 {
		t.Fatalf("bob's join, signalled while the broker answered: %v; stdout %q, stderr %q; his config holds %d meshes, but the broker enrolled his key",
			err, out.String(), errb.String(), len(got))
	}
}
