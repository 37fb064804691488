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
	"strings"
	"sync/atomic"
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
	ln, b := brokerBehindListener(t)
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
	err := cmd.Wait()
	if got := bob.whoami().Meshes; len(got) != 1 {
		t.Fatalf("bob's join, signalled while the broker answered: %v; stdout %q, stderr %q; his config holds %d meshes, but the broker enrolled his key",
			err, out.String(), errb.String(), len(got))
	}
}

// brokerBehindListener starts a broker whose public URL is a loopback
// listener the test serves (a proxy in front of the broker), and returns
// both.
func brokerBehindListener(t *testing.T) (net.Listener, *brokerProc) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln, startBroker(t, t.TempDir(), "127.0.0.1:0", "--public-url", "ws://"+ln.Addr().String()+"/ws")
}

// answerHolder is a proxy in front of a broker's REST API. Armed, it lets
// the next POST to path reach the broker (which acts on it whatever the
// client does next), signals the client (SIGTERM) and holds the broker's
// answer until the test releases it, or until the client is gone.
type answerHolder struct {
	url   string // http://host:port of the proxy
	path  string
	armed atomic.Pointer[heldAnswer]
}

// heldAnswer is one armed hold: the test sends the client's process on
// proc once started, closes release to hand the answer over, and gone is
// closed if the client gave up the request instead.
type heldAnswer struct {
	proc          chan *signalledSend
	release, gone chan struct{}
}

// newAnswerHolder serves the proxy on ln, in front of the broker at
// brokerAddr.
func newAnswerHolder(t *testing.T, ln net.Listener, brokerAddr, path string) *answerHolder {
	a := &answerHolder{url: "http://" + ln.Addr().String(), path: path}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: brokerAddr})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := a.armed.Load()
		if r.Method != http.MethodPost || r.URL.Path != a.path || h == nil || !a.armed.CompareAndSwap(h, nil) {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		(<-h.proc).cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-h.release:
		case <-r.Context().Done():
			close(h.gone)
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return a
}

// arm holds the answer to the next request (see answerHolder).
func (a *answerHolder) arm() *heldAnswer {
	h := &heldAnswer{proc: make(chan *signalledSend, 1), release: make(chan struct{}), gone: make(chan struct{})}
	a.armed.Store(h)
	return h
}

// throughHeldAnswer runs the CLI with args as u while proxy holds the
// broker's answer, signals it once the request is out, and waits for the
// note it must print. Then it releases the answer, or (second) signals
// again; it returns the process and its exit code.
func throughHeldAnswer(t *testing.T, proxy *answerHolder, second bool, u *user, note string, args ...string) (*signalledSend, int) {
	t.Helper()
	h := proxy.arm()
	s := startSend(t, u, args...)
	h.proc <- s
	s.waitLine(note)
	if !second {
		close(h.release)
		return s, s.wait()
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	code := s.wait()
	<-h.gone
	t.Logf("stderr: %s", s.errText())
	return s, code
}

// TestJoinSaysWhatASignalWaitsFor: a join signalled while the broker
// answers its enrolment says on stderr, at the first signal, what it
// waits for (the broker may have enrolled the key, which must be saved)
// and saves the key when the answer comes. A second signal stops waiting
// with an error (exit 130) that says the key may have been enrolled and
// is saved in the home (before the enrolment is asked); what it suggests
// is checked: the same join asks again with the saved key and completes
// (it was refused name_taken, the key lost, before). Join used to wait
// silently, and a second signal killed it without a word.
func TestJoinSaysWhatASignalWaitsFor(t *testing.T) {
	t.Parallel()
	ln, b := brokerBehindListener(t)
	proxy := newAnswerHolder(t, ln, b.addr, "/v1/join")
	alice := newUser(t, "alice")
	alice.createMesh(b, "Test Mesh", "test")

	for _, second := range []bool{false, true} {
		t.Run(map[bool]string{false: "answered", true: "abandoned"}[second], func(t *testing.T) {
			link := alice.invite("--uses", "2").Link
			joiner := newUser(t, map[bool]string{false: "bob", true: "carol"}[second])
			s, code := throughHeldAnswer(t, proxy, second, joiner, "interrupted: waiting up to 30 s for the broker's answer, so that the key it may already have enrolled (spending the invite's use) is saved; a second Ctrl-C stops waiting",
				"join", link, "--name", joiner.name)
			if !second {
				if code != 0 || !strings.Contains(s.stdout.String(), "joined Test Mesh (test) as bob") || len(joiner.whoami().Meshes) != 1 {
					t.Fatalf("join exited %d; stdout %q, stderr %q: want the key saved and the join printed", code, s.stdout.String(), s.errText())
				}
				return
			}
			errText := s.errText()
			if code != 130 || !strings.Contains(errText, "may or may not have enrolled your new key in test as carol; the key is saved here") ||
				!strings.Contains(errText, "run the same join again from this home") {
				t.Fatalf("join exited %d; stderr %q: want 130 and an error that says the key may be enrolled and is saved", code, errText)
			}
			if n := len(joiner.whoami().Meshes); n != 0 {
				t.Fatalf("carol's config holds %d meshes after the abandoned join", n)
			}
			// What the hint says: the same join asks again with the
			// saved key, which the broker had enrolled, and completes:
			// carol is the member it enrolled, not a ghost beside a
			// refused retry (it said name_taken, the use spent on a key
			// nobody held).
			var m meshJSON
			joiner.json(&m, "join", link, "--name", "carol")
			if m.Slug != "test" {
				t.Fatalf("the same join again: %+v", m)
			}
			var peers []struct {
				DisplayName string `json:"displayName"`
			}
			alice.json(&peers, "peer", "list", "--all")
			carols := 0
			for _, p := range peers {
				if strings.HasPrefix(p.DisplayName, "carol") {
					carols++
				}
			}
			if carols != 1 {
				t.Fatalf("alice's peer list --all has %d carols, want the one enrolled: %+v", carols, peers)
			}
		})
	}
}

// TestMeshCreateSaysWhatASignalWaitsFor: mesh create signalled while the
// broker answers the creation says on stderr, at the first signal, what
// it waits for and saves the mesh when the answer comes. A second signal
// stops waiting with an error (exit 130) that says the mesh may have been
// created and nothing was saved, and how to find out; the same mesh
// create is then refused as slug_taken, as the hint says. Mesh create
// used to wait silently, and a second signal killed it without a word.
func TestMeshCreateSaysWhatASignalWaitsFor(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	proxy := newAnswerHolder(t, ln, b.addr, "/v1/admin/meshes")

	for _, second := range []bool{false, true} {
		t.Run(map[bool]string{false: "answered", true: "abandoned"}[second], func(t *testing.T) {
			u := newUser(t, "alice")
			slug := map[bool]string{false: "held", true: "lost"}[second]
			args := []string{"mesh", "create", "Held Mesh", "--slug", slug, "--broker", proxy.url,
				"--operator-token-file", b.tokenFile(), "--name", "alice"}
			s, code := throughHeldAnswer(t, proxy, second, u, "interrupted: waiting for the broker to create the mesh and prove its key (up to 30 s each), so that the owner key of a mesh it may already have created is saved; a second Ctrl-C stops waiting",
				args...)
			if !second {
				if code != 0 || !strings.Contains(s.stdout.String(), "created mesh Held Mesh (held)") || len(u.whoami().Meshes) != 1 {
					t.Fatalf("mesh create exited %d; stdout %q, stderr %q: want the mesh saved and printed", code, s.stdout.String(), s.errText())
				}
				return
			}
			errText := s.errText()
			if code != 130 || !strings.Contains(errText, "may or may not have created mesh Held Mesh, and nothing was saved here") ||
				!strings.Contains(errText, "run the same mesh create again") {
				t.Fatalf("mesh create exited %d; stderr %q: want 130 and an error that says the mesh may exist and nothing was saved", code, errText)
			}
			if n := len(u.whoami().Meshes); n != 0 {
				t.Fatalf("the config holds %d meshes after the abandoned mesh create", n)
			}
			u.fails(6, "slug_taken", args...)
		})
	}
}

// A broker whose --public-url is wrong (a new user's trial): the mesh it creates
// is proven and saved with the URL given with --broker, with a warning that
// names the announced URL, instead of being left on the broker with an
// owner key nobody holds; the mesh then works (an invite and a join).
func TestMeshCreateWithAWrongPublicURL(t *testing.T) {
	t.Parallel()
	wrong := "ws://" + freeAddr(t) + "/ws"
	b := startBroker(t, t.TempDir(), "127.0.0.1:0", "--public-url", wrong)
	given := "ws://" + b.addr + "/ws"
	alice := newUser(t, "alice")
	r := alice.ok("mesh", "create", "Pub", "--slug", "pub", "--broker", given, "--operator-token-file", b.tokenFile(), "--name", "alice")
	if !strings.Contains(r.stderr, wrong) || !strings.Contains(r.stderr, "--public-url") || !strings.Contains(r.stdout, "created mesh Pub") {
		t.Fatalf("mesh create with a wrong --public-url:\n%s", r)
	}
	if w := alice.whoami(); len(w.Meshes) != 1 || w.Meshes[0].BrokerURL != given || w.Meshes[0].Role != "owner" {
		t.Fatalf("saved: %+v", w)
	}
	bob := newUser(t, "bob")
	if m := bob.join(alice.invite().Link); m.Slug != "pub" {
		t.Fatalf("bob's join: %+v", m)
	}
}
