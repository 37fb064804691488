package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// mesh is the running daemon's runtime of the test mesh.
func (rd *runningDaemon) mesh(t *testing.T) *meshRT {
	t.Helper()
	m := rd.d.meshBySlug("team")
	if m == nil {
		t.Fatal("no mesh team")
	}
	return m
}

// knows reports whether the daemon's directory holds a member called name.
func (m *meshRT) knows(name string) bool {
	members, _ := m.directory()
	for _, mem := range members {
		if mem.DisplayName == name {
			return true
		}
	}
	return false
}

func apiCode(err error) string {
	var ae *localapi.APIError
	if errors.As(err, &ae) {
		return ae.Body.Code
	}
	return ""
}

// TestNewMemberIsReachableByNameAtOnce (issue 11 item 1): a member who
// joins while alice's daemon runs is in its directory from the broker's
// member_changed push, without any list call; and a name the directory
// does not know is looked up on the broker before a send is refused.
func TestNewMemberIsReachableByNameAtOnce(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	m := alice.mesh(t)
	before := m.fetches.Load()
	e.join("tina")
	waitFor(t, 5*time.Second, "tina in alice's directory", func() bool { return m.knows("tina") })
	if n := m.fetches.Load(); n != before {
		t.Fatalf("the directory was fetched %d times; the event alone should do", n-before)
	}
	resp, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "tina", Message: "welcome"})
	if err != nil || resp.Target.DisplayName != "tina" || resp.MeshState != localapi.MeshOpen {
		t.Fatalf("send to tina: %+v %v", resp, err)
	}

	// A name the directory missed (the event lost, say) is looked up.
	e.join("uma")
	waitFor(t, 5*time.Second, "uma in alice's directory", func() bool { return m.knows("uma") })
	m.mu.Lock()
	m.cache.Members = dropMember(m.cache.Members, "uma")
	m.mu.Unlock()
	resp, err = alice.api.Send(context.Background(), localapi.SendRequest{To: "uma", Message: "hello"})
	if err != nil || resp.Target.DisplayName != "uma" {
		t.Fatalf("send to a member the cache missed: %+v %v", resp, err)
	}
	// And a name nobody has is refused by the broker's word, not the cache's.
	before = m.fetches.Load()
	_, err = alice.api.Send(context.Background(), localapi.SendRequest{To: "nobody", Message: "hello"})
	if apiCode(err) != wire.CodeUnknownTarget {
		t.Fatalf("unknown name: %v", err)
	}
	if m.fetches.Load() != before+1 {
		t.Fatalf("unknown name refused without asking the broker")
	}
}

func dropMember(members []wire.Member, name string) []wire.Member {
	var out []wire.Member
	for _, mem := range members {
		if mem.DisplayName != name {
			out = append(out, mem)
		}
	}
	return out
}

// TestMemberEventsKeepTheDirectory: role changes, bans and leaves reach
// the directory from the events.
func TestMemberEventsKeepTheDirectory(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	m := alice.mesh(t)
	carol := e.join("carol")
	waitFor(t, 5*time.Second, "carol", func() bool { return m.knows("carol") })
	ownerKey, _ := cmcrypto.ParseSecretKey(e.owner.SecretKey)
	c, err := client.Dial(context.Background(), client.MeshIdentity{MeshID: e.owner.MeshID, MemberID: e.owner.MemberID,
		BrokerURL: e.owner.BrokerURL, BrokerPubkey: e.owner.BrokerPubkey, Member: ownerKey}, client.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	member := func(pub string) *wire.Member {
		members, _ := m.directory()
		for i := range members {
			if members[i].Pubkey == pub {
				return &members[i]
			}
		}
		return nil
	}
	if _, err := c.Admin(context.Background(), &wire.AdminRequest{Type: wire.TypeSetRole, Target: "carol", Role: wire.MemberAdmin}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "carol an admin", func() bool { mem := member(carol.Pubkey); return mem != nil && mem.MemberRole == wire.MemberAdmin })
	if _, err := c.Admin(context.Background(), &wire.AdminRequest{Type: wire.TypeBan, Target: "carol"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "carol banned", func() bool { mem := member(carol.Pubkey); return mem != nil && mem.RevokedAt != 0 })
	_, err = alice.api.Send(context.Background(), localapi.SendRequest{To: "carol", Message: "are you there?"})
	if apiCode(err) != wire.CodeUnknownTarget {
		t.Fatalf("a banned member must not resolve: %v", err)
	}
}

// churn opens n presences of member m (as another daemon, inbox --follow
// or a bot would) and returns them.
func (e *env) churn(t *testing.T, name string, n int) []*client.Conn {
	t.Helper()
	mesh := e.meshes[name]
	key, _ := cmcrypto.ParseSecretKey(mesh.SecretKey)
	id := client.MeshIdentity{MeshID: mesh.MeshID, MemberID: mesh.MemberID, BrokerURL: mesh.BrokerURL, BrokerPubkey: mesh.BrokerPubkey, Member: key}
	conns := make([]*client.Conn, n)
	for i := range conns {
		c, err := client.Dial(context.Background(), id, client.DialOptions{Presence: true, SessionID: fmt.Sprintf("churn-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns
}

// churnPresent reports whether the directory lists want online churn
// presences.
func (m *meshRT) churnPresent(want int) func() bool {
	return func() bool {
		_, peers := m.directory()
		got := 0
		for _, p := range peers {
			if strings.HasPrefix(p.SessionID, "churn-") && p.Online {
				got++
			}
		}
		return got == want
	}
}

// TestPresenceChurnCostsNoListPeersEach (issue 12 item 6): a burst of
// presence events is applied to the directory from the events themselves,
// with no list_peers at all (here the coalesced refresh is held off).
func TestPresenceChurnCostsNoListPeersEach(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemonWith("alice", Options{refreshDelay: time.Hour})
	alice.waitOpen(t)
	m := alice.mesh(t)
	before := m.fetches.Load()
	const n = 30
	conns := e.churn(t, "bob", n)
	waitFor(t, 5*time.Second, "all churn presences in the directory", m.churnPresent(n))
	for _, c := range conns {
		c.Close() // a clean close ends the presence at once: peer_left
	}
	waitFor(t, 5*time.Second, "no churn presence left in the directory", m.churnPresent(0))
	if got := m.fetches.Load() - before; got != 0 {
		t.Fatalf("%d fetches for %d presence events", got, 2*n)
	}
}

// TestPresenceEventsBringOneCoalescedRefresh: after a burst of presence
// events one full list follows (for groups and status, which events do
// not carry), not one per event.
func TestPresenceEventsBringOneCoalescedRefresh(t *testing.T) {
	e := newEnv(t)
	e.join("bob")
	alice := e.daemonWith("alice", Options{refreshDelay: 200 * time.Millisecond, refreshMinInterval: time.Hour})
	alice.waitOpen(t)
	m := alice.mesh(t)
	m.mu.Lock()
	m.lastRefresh = time.Time{} // the hello_ack fetch does not count here
	m.mu.Unlock()
	before := m.fetches.Load()
	conns := e.churn(t, "bob", 10)
	waitFor(t, 5*time.Second, "the coalesced refresh", func() bool { return m.fetches.Load() > before })
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, 5*time.Second, "the events applied", m.churnPresent(0))
	if got := m.fetches.Load() - before; got != 1 {
		t.Fatalf("%d refreshes, want 1 (the next waits refreshMinInterval)", got)
	}
}

// TestFirstSendWithBrokerDown (issue 11 item 2): a daemon that never
// reached its broker answers a send by name with unreachable and the
// broker URL, not "no member called"; a full pubkey is accepted into the
// outbox, as promised.
func TestFirstSendWithBrokerDown(t *testing.T) {
	e := newEnv(t)
	bob := e.join("bob")
	e.b.Close()
	alice := e.daemon("alice")
	_, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: "hi"})
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.HTTPStatus != 503 || ae.Body.Code != client.CodeUnreachable ||
		!strings.Contains(ae.Body.Message, e.owner.BrokerURL) || !strings.Contains(ae.Body.Message, `"bob"`) {
		t.Fatalf("send by name with the broker down: %v", err)
	}
	resp, err := alice.api.Send(context.Background(), localapi.SendRequest{To: bob.Pubkey, Message: "queued for later"})
	if err != nil || resp.Status != localapi.StatusAccepted || resp.MeshState == localapi.MeshOpen {
		t.Fatalf("send to a full pubkey: %+v %v", resp, err)
	}
	// Reads that need the broker say it cannot be reached.
	_, err = alice.api.Do(context.Background(), "GET", "/v1/peers?mesh=team", nil, nil)
	if !errors.As(err, &ae) || ae.Body.Code != client.CodeUnreachable || !strings.Contains(ae.Body.Message, e.owner.BrokerURL) {
		t.Fatalf("peers with the broker down: %v", err)
	}
}

// TestReadAsTheBrokerGoes: the mesh's state is told of a change after the
// presence has made it (onState). A read that needs the broker in between
// found no connection and the mesh still open, and answered "mesh team is
// open" (a daemon under load, its broker just stopped): it says the
// broker cannot be reached, and where. The hook holds onState to open the
// window.
func TestReadAsTheBrokerGoes(t *testing.T) {
	e := newEnv(t)
	held, release := make(chan struct{}), make(chan struct{})
	var armed atomic.Bool
	alice := e.daemonWith("alice", Options{testHookState: func(s client.State) {
		if s != client.StateOpen && armed.CompareAndSwap(true, false) {
			close(held)
			<-release
		}
	}})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the daemon's stop, which waits for the presence
	alice.waitOpen(t)
	armed.Store(true)
	e.b.Close()
	select {
	case <-held:
	case <-time.After(minWaitDeadline):
		t.Fatal("the presence never left open")
	}
	if s, _ := alice.mesh(t).stateOf(); s != localapi.MeshOpen {
		t.Fatalf("mesh %s while onState is held", s)
	}
	for _, path := range []string{"/v1/peers?mesh=team", "/v1/members?mesh=team"} {
		_, err := alice.api.Do(context.Background(), "GET", path, nil, nil)
		var ae *localapi.APIError
		if !errors.As(err, &ae) || ae.HTTPStatus != 503 || ae.Body.Code != client.CodeUnreachable || !strings.Contains(ae.Body.Message, e.owner.BrokerURL) {
			t.Fatalf("%s as the broker goes: %v", path, err)
		}
	}
	free()
}

// TestImpostorBrokerIsRefused (issue 11 item 3): a server on the pinned
// URL that presents another broker key puts the mesh in
// broker_key_mismatch: slow rechecks, both keys and what to do in status,
// sends refused, queued rows kept until the real broker is back, which the
// daemon then reaches by itself.
func TestImpostorBrokerIsRefused(t *testing.T) {
	e := newEnv(t)
	bob := e.join("bob")
	alice := e.daemon("alice")
	alice.waitOpen(t)
	e.b.Close()
	waitFor(t, 5*time.Second, "alice sees the broker gone", func() bool {
		s, _ := alice.mesh(t).stateOf()
		return s != localapi.MeshOpen
	})
	// Queued while the broker is away.
	if _, err := alice.api.Send(context.Background(), localapi.SendRequest{To: "bob", Message: "kept", ClientMessageID: "kept-1"}); err != nil {
		t.Fatal(err)
	}
	// Another broker (its own key) takes the address.
	impostorCfg := e.bCfg
	impostorCfg.DataDir = t.TempDir()
	impostor := startBroker(t, &impostorCfg)
	var st localapi.Status
	waitFor(t, 10*time.Second, "broker_key_mismatch", func() bool {
		alice.api.Do(context.Background(), "GET", "/v1/status", nil, &st)
		return st.Meshes["team"] == localapi.MeshBrokerKeyMismatch
	})
	p := st.MeshErrors["team"]
	if p.Code != client.CodeBrokerKeyMismatch || !strings.Contains(p.Message, impostor.PublicKey()) ||
		!strings.Contains(p.Message, e.owner.BrokerPubkey) || !strings.Contains(p.Hint, "join again") {
		t.Fatalf("status error: %+v", p)
	}
	if st.Outbox.Pending != 1 {
		t.Fatalf("the queued row is gone: %+v", st.Outbox)
	}
	_, err := alice.api.Send(context.Background(), localapi.SendRequest{To: bob.Pubkey, Message: "refused"})
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.Body.Code != client.CodeBrokerKeyMismatch || !strings.Contains(ae.Body.Message, impostor.PublicKey()) {
		t.Fatalf("send to an impostor: %v", err)
	}
	for _, path := range []string{"/v1/peers?mesh=team", "/v1/members?mesh=team", "/v1/messages/" + client.NewID() + "?mesh=team"} {
		if _, err := alice.api.Do(context.Background(), "GET", path, nil, nil); apiCode(err) != client.CodeBrokerKeyMismatch {
			t.Fatalf("%s: %v", path, err)
		}
	}
	// It checks again (slowly; the test's backoff cap shortens the
	// waits), and stays mismatched while the impostor answers.
	pres := alice.mesh(t).presence.Load()
	for range 2 {
		select {
		case <-pres.Changed(): // a recheck met the impostor again
		case <-time.After(10 * time.Second):
			t.Fatal("no recheck of the broker in 10 s")
		}
		if s, _ := alice.mesh(t).stateOf(); s != localapi.MeshBrokerKeyMismatch {
			t.Fatalf("mesh %s while the impostor answers", s)
		}
	}
	// The real broker back: the daemon reconnects by itself (a new
	// user's trial), and the kept row goes out.
	impostor.Close()
	e.b = startBroker(t, &e.bCfg)
	waitFor(t, 10*time.Second, "the mesh open again", func() bool {
		s, _ := alice.mesh(t).stateOf()
		return s == localapi.MeshOpen
	})
	bobd := e.daemon("bob")
	waitFor(t, 10*time.Second, "the kept row delivered", func() bool {
		rows := bobd.inbox(t)
		return len(rows) == 1 && rows[0].Body == "kept"
	})
}

// TestEventsDuringAFetchSurviveItsSnapshot: a presence event applied while
// a full fetch is on its way is not undone when the fetch's older snapshot
// lands (a peer that left during the fetch must not come back for good).
func TestEventsDuringAFetchSurviveItsSnapshot(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	m := alice.mesh(t)
	ghost := wire.PeerEvent{Pubkey: strings.Repeat("7", 64), MemberPubkey: e.meshes["bob"].Pubkey, DisplayName: "bob",
		SessionID: "cli-ghost", Role: wire.RoleCLI, PeerType: wire.PeerHuman}
	members, peers := m.directory()
	stale := append(append([]wire.Peer(nil), peers...), wire.Peer{Pubkey: ghost.Pubkey, MemberPubkey: ghost.MemberPubkey,
		SessionID: ghost.SessionID, Role: ghost.Role, Online: true})
	m.mu.Lock()
	m.fetching++ // a fetch whose answer (stale) was taken before the event
	m.mu.Unlock()
	m.onSystem(&wire.Push{Subtype: wire.SubtypeSystem, Event: wire.EventPeerLeft, EventData: ghost})
	m.setDirectory(members, stale)
	m.mu.Lock()
	m.fetching--
	m.mu.Unlock()
	_, now := m.directory()
	for _, p := range now {
		if p.SessionID == ghost.SessionID {
			t.Fatalf("the peer that left came back with the snapshot: %+v", p)
		}
	}
}

// TestPeerListsShareFetches: each read of the directory is answered by a
// fetch that started after it arrived, but reads that arrive together
// share one and fetches start within liveFetchRate, so a script
// listing peers as fast as it can no longer spends the member
// connection's frame budget (each read was two frames at once, and the
// broker answered the daemon's sends on that connection rate_limited). A
// group joined through this daemon is in the very next read.
func TestPeerListsShareFetches(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	m := alice.mesh(t)
	ctx := context.Background()
	read := func() {
		var peers []localapi.Peer
		if _, err := alice.api.Do(ctx, "GET", "/v1/peers?mesh=team", nil, &peers); err != nil || len(peers) == 0 {
			t.Errorf("peer list: %d peers, %v", len(peers), err)
		}
	}
	check := func(what string, reads int, start time.Time, fetches int64) {
		t.Helper()
		elapsed := time.Since(start)
		if bound := int64(elapsed.Seconds()*liveFetchRate) + liveFetchBurst + 1; fetches > bound {
			t.Fatalf("%d %s reads fetched the directory %d times in %s; at most %d", reads, what, fetches, elapsed.Round(time.Millisecond), bound)
		}
	}
	before, start := m.fetches.Load(), time.Now()
	for range 40 {
		read()
	}
	check("serial", 40, start, m.fetches.Load()-before)

	before, start = m.fetches.Load(), time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 10 {
				read()
			}
		})
	}
	wg.Wait()
	check("concurrent", 100, start, m.fetches.Load()-before)

	// Read your own change at once.
	var ok localapi.OK
	if _, err := alice.api.Do(ctx, "POST", "/v1/groups", localapi.GroupRequest{Mesh: "team", Op: "join", Name: "reviewers"}, &ok); err != nil {
		t.Fatal(err)
	}
	var peers []localapi.Peer
	if _, err := alice.api.Do(ctx, "GET", "/v1/peers?mesh=team", nil, &peers); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		if p.IsThisSession && slices.ContainsFunc(p.Groups, func(g wire.Group) bool { return g.Name == "reviewers" }) {
			return
		}
	}
	t.Fatalf("the group just joined is not in the next peer list: %+v", peers)
}

// TestAFailedFetchAnswersItsWaiters: a caller that waited for a fetch
// which started after it arrived and failed gets that fetch's error, not
// the cache (the background refresh used to leave its start time behind
// on failure, and queued readers were answered 200 from a stale cache)
// and not a fetch of its own (each queued reader waited out its own
// fetchTimeout behind a broker that did not answer). A caller arriving
// after the failure fetches anew. A fetch that failed because its own
// caller went away (a cancelled context) is no answer for the others.
func TestAFailedFetchAnswersItsWaiters(t *testing.T) {
	e := newEnv(t)
	alice, _ := e.openPair(t)
	m := alice.mesh(t)

	arrived := time.Now()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	m.fetchMu.Lock()
	cerr := m.fetchHeld(cancelled, m.conn())
	m.fetchMu.Unlock()
	if cerr == nil {
		t.Fatal("a fetch with a cancelled context succeeded")
	}
	if _, _, err := m.liveDirectory(context.Background(), arrived); err != nil {
		t.Fatalf("a caller that waited for a fetch its own caller cancelled got %v, want a fetch of its own", err)
	}

	// A fetch the broker's side failed: on a connection that is closed.
	mesh := e.meshes["alice"]
	key, _ := cmcrypto.ParseSecretKey(mesh.SecretKey)
	id := client.MeshIdentity{MeshID: mesh.MeshID, MemberID: mesh.MemberID, BrokerURL: mesh.BrokerURL, BrokerPubkey: mesh.BrokerPubkey, Member: key}
	closed, err := client.Dial(context.Background(), id, client.DialOptions{SessionID: "closed"})
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	arrived = time.Now()
	m.fetchMu.Lock()
	ferr := m.fetchHeld(context.Background(), closed)
	m.fetchMu.Unlock()
	if ferr == nil {
		t.Fatal("a fetch on a closed connection succeeded")
	}
	before := m.fetches.Load()
	if _, _, err := m.liveDirectory(context.Background(), arrived); !errors.Is(err, ferr) {
		t.Fatalf("a caller that waited for the failed fetch got %v, want its error %v", err, ferr)
	}
	if n := m.fetches.Load() - before; n != 0 {
		t.Fatalf("the waiter fetched again (%d)", n)
	}
	if _, _, err := m.liveDirectory(context.Background(), time.Now()); err != nil {
		t.Fatalf("a caller after the failure: %v", err)
	}
	if n := m.fetches.Load() - before; n != 1 {
		t.Fatalf("a caller after the failure fetched %d times, want 1", n)
	}
}
