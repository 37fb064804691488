package broker

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/oklog/ulid/v2"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// The broker keeps counts and indexes up to date as it goes, under the
// mesh lock, instead of walking its state: connections per mesh and per
// member (--max-connections-per-*), each key's pushes in flight, session
// keys by member, member presences by member, connected control planes,
// topic creates under way, queue counts and quotas. One that drifts shows
// only after days (a key throttled forever, a member locked out of its own
// connections, a ban that misses a session). bookkeepingErr recomputes
// them from scratch; the tests below compare after every step of random
// work, once everything is closed, and after a restart.

// bookkeepingErr recomputes, under the mesh lock, what the mesh counts
// incrementally, and describes the first difference. These hold at every
// moment the lock is free, not only when the broker is quiet.
func bookkeepingErr(ms *meshState) error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	conns, members, inflight := 0, map[string]int{}, map[string]int{}
	for key, set := range ms.conns {
		if len(set) == 0 {
			return fmt.Errorf("an empty connection set is kept for %.8s", key)
		}
		for c := range set {
			switch {
			case c.pubkey != key:
				return fmt.Errorf("a connection of %.8s is filed under %.8s", c.pubkey, key)
			case c.closed:
				return fmt.Errorf("a detached connection of %.8s is still in ms.conns", key)
			}
			// Replaced by a takeover of its presence (and on its way
			// out) is exactly what takes a connection off the counts.
			if replaced := !c.transient && c.pres == nil; c.uncounted != replaced {
				return fmt.Errorf("a connection of %.8s: uncounted %v, replaced %v", key, c.uncounted, replaced)
			}
			if !c.uncounted {
				conns++
				members[c.mem.Pubkey]++
			}
			if n := len(c.inflight); n > 0 {
				inflight[key] += n
			}
			// A session connected and current is a known recipient
			// (else DMs to it are refused as unknown_recipient), unless
			// it is closing (its member banned or gone, for one).
			if c.pres != nil && !c.closeDecided.Load() && key != c.mem.Pubkey && ms.activeMember(c.mem.Pubkey) == c.mem && ms.sessions[key] == nil {
				return fmt.Errorf("session %.8s is connected and current, and not a known session", key)
			}
		}
	}
	if ms.connCount != conns {
		return fmt.Errorf("connCount %d, counted connections %d", ms.connCount, conns)
	}
	if !maps.Equal(ms.memberConns, members) {
		return fmt.Errorf("memberConns %v, the connections %v", shortKeys(ms.memberConns), shortKeys(members))
	}
	if !maps.Equal(ms.keyInflight, inflight) {
		return fmt.Errorf("keyInflight %v, the connections' windows %v", shortKeys(ms.keyInflight), shortKeys(inflight))
	}
	indexed := 0
	for memberID, keys := range ms.memberSessions {
		if len(keys) == 0 {
			return fmt.Errorf("an empty session index is kept for member %s", memberID)
		}
		for k := range keys {
			indexed++
			if s := ms.sessions[k]; s == nil || s.ParentMemberID != memberID {
				return fmt.Errorf("session %.8s indexed under member %s, record %+v", k, memberID, s)
			}
		}
	}
	if indexed != len(ms.sessions) {
		return fmt.Errorf("%d session keys indexed by member, %d known", indexed, len(ms.sessions))
	}
	control, byMember := map[string]int{}, 0
	for key, p := range ms.presences {
		if p.key != key {
			return fmt.Errorf("presence %s filed under %s", p.key, key)
		}
		if c := p.conn; c != nil && (c.pres != p || c.closed) {
			return fmt.Errorf("presence %s has a connection that is not its own (closed %v)", key, c.closed)
		}
		if p.session {
			continue
		}
		byMember++
		if ms.memberPresences[p.member.Pubkey][key] != p {
			return fmt.Errorf("member presence %s is not indexed under its member", key)
		}
		if p.conn != nil && p.role == wire.RoleControlPlane {
			control[p.member.Pubkey]++
		}
	}
	n := 0
	for m, idx := range ms.memberPresences {
		if len(idx) == 0 {
			return fmt.Errorf("an empty presence index is kept for %.8s", m)
		}
		n += len(idx)
	}
	if n != byMember {
		return fmt.Errorf("%d member presences indexed, %d listed", n, byMember)
	}
	if !maps.Equal(ms.controlPlanes, control) {
		return fmt.Errorf("controlPlanes %v, connected control-plane presences %v", shortKeys(ms.controlPlanes), shortKeys(control))
	}
	// A message waits for receipts while some are to come, from an open
	// connection that lists it (and only then: a long-lived one would
	// list every message it sent).
	for id, og := range ms.origin {
		_, listed := og.conn.origins[id]
		if og.waiting <= 0 || og.conn.closed || !listed {
			return fmt.Errorf("origin of %s: waiting %d, connection closed %v, listed %v", id, og.waiting, og.conn.closed, listed)
		}
	}
	for _, set := range ms.conns {
		for c := range set {
			for id := range c.origins {
				if og := ms.origin[id]; og == nil || og.conn != c {
					return fmt.Errorf("a connection of %.8s lists %s, which waits for no receipt of it", c.pubkey, id)
				}
			}
		}
	}
	// A mark of pushes left unacknowledged is for a recipient: a known
	// session or an active member (else it stays until --queue-ttl).
	for k := range ms.unacked {
		if ms.sessions[k] == nil && ms.activeMember(k) == nil {
			return fmt.Errorf("an unacked mark is kept for %.8s, neither a known session nor an active member", k)
		}
	}
	return nil
}

func shortKeys(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k[:min(len(k), 8)]] = v
	}
	return out
}

func checkBookkeeping(t testing.TB, b *Broker, meshID string) {
	t.Helper()
	if err := bookkeepingErr(b.hub.mesh(meshID)); err != nil {
		t.Fatal(err)
	}
}

// storeAgreesErr compares what the mesh keeps in memory with the store,
// which a quiet broker must agree with: the known session keys (and their
// members), and the queue counts and quotas (recomputed as a restart
// does).
func storeAgreesErr(b *Broker, ms *meshState) error {
	fresh := b.hub.newMeshState(store.Mesh{ID: ms.id})
	stored := map[string]string{}
	err := b.store.View(func(tx *store.Tx) error {
		if _, err := fresh.loadQueueCounts(tx, func(store.Corrupt) {}); err != nil {
			return err
		}
		return store.EachSession(tx, ms.id, func(s store.Session) error {
			stored[s.Pubkey] = s.ParentMemberID
			return nil
		}, func(store.Corrupt) {})
	})
	if err != nil {
		return err
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	known := map[string]string{}
	for k, s := range ms.sessions {
		known[k] = s.ParentMemberID
	}
	switch {
	case !maps.Equal(known, stored):
		parents := map[string]string{}
		for _, id := range stored {
			if m := ms.memberByID[id]; m != nil {
				parents[id] = fmt.Sprintf("%s revoked %d", m.DisplayName, m.RevokedAt)
			} else {
				parents[id] = "no such member"
			}
		}
		return fmt.Errorf("sessions known %v, stored %v (their members %v)", shortIDs(known), shortIDs(stored), parents)
	case !maps.Equal(ms.pending, fresh.pending):
		return fmt.Errorf("pending %v, the queues %v", shortKeys(ms.pending), shortKeys(fresh.pending))
	case !maps.Equal(ms.quota.share, fresh.quota.share) || !maps.Equal(ms.quota.senderBytes, fresh.quota.senderBytes) || ms.quota.meshBytes != fresh.quota.meshBytes:
		return fmt.Errorf("quota counts %+v, the queues %+v", ms.quota, fresh.quota)
	case len(ms.topicCreating) > 0:
		return fmt.Errorf("topic creates still reserved: %v", shortKeys(ms.topicCreating))
	case len(ms.sessionWrites) > 0:
		return fmt.Errorf("%d session records still waiting to be written", len(ms.sessionWrites))
	case len(ms.sessionForgets) > 0:
		return fmt.Errorf("%d session forgets still waiting to be committed", len(ms.sessionForgets))
	}
	return nil
}

func shortIDs(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k[:8]] = v
	}
	return out
}

// checkQuiet waits for every connection of the mesh to be detached, then
// for the memory to agree with the store, and checks the counts (all at
// zero now).
func checkQuiet(t *testing.T, b *Broker, meshID string) {
	t.Helper()
	ms := b.hub.mesh(meshID)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ms.mu.Lock()
		var left []string
		for key, set := range ms.conns {
			for c := range set {
				left = append(left, fmt.Sprintf("%.8s (member %s, transient %v, replaced %v, closing %v)", key, c.mem.DisplayName, c.transient, c.pres == nil, c.closeDecided.Load()))
			}
		}
		ms.mu.Unlock()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections never detached: %v", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
	checkBookkeeping(t, b, meshID)
	var last error
	deadline = time.Now().Add(30 * time.Second)
	for last = storeAgreesErr(b, ms); last != nil; last = storeAgreesErr(b, ms) {
		if time.Now().After(deadline) {
			t.Fatalf("memory and store still differ: %v", last)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.connCount != 0 || len(ms.memberConns)+len(ms.keyInflight)+len(ms.controlPlanes) != 0 {
		t.Fatalf("with no connections: connCount %d, memberConns %v, keyInflight %v, controlPlanes %v",
			ms.connCount, ms.memberConns, ms.keyInflight, ms.controlPlanes)
	}
}

// helloOutcome reads the answer to a hello: "" for hello_ack, else the
// refusal's code.
func (r *rawConn) helloOutcome() string {
	r.t.Helper()
	for {
		data, err := r.readErr(expectWithin)
		if err != nil {
			r.t.Fatalf("no answer to a hello: %v", err)
		}
		env, _ := wire.Peek(data)
		switch env.Type {
		case wire.TypeHelloAck:
			return ""
		case wire.TypeError:
			var e wire.Error
			wire.Decode(data, &e)
			return e.Code
		}
	}
}

// tryWrite writes a frame, reporting whether the connection took it (the
// broker may have closed it meanwhile).
func (r *rawConn) tryWrite(v any) bool {
	return r.ws.WriteMessage(websocket.TextMessage, wire.MustEncode(v)) == nil
}

// pushedIDs takes what has arrived so far and returns the ids it would
// ack: pushed messages and receipts.
func (r *rawConn) pushedIDs() (ids []string) {
	for {
		select {
		case data, ok := <-r.frames:
			if !ok {
				return ids
			}
			var f struct {
				Type      string `json:"type"`
				Subtype   string `json:"subtype"`
				MessageID string `json:"messageId"`
				ReceiptID string `json:"receiptId"`
			}
			if wire.Decode(data, &f) != nil {
				continue
			}
			switch {
			case f.Type == wire.TypePush && f.Subtype != wire.SubtypeSystem:
				ids = append(ids, f.MessageID)
			case f.Type == wire.TypeReceipt && f.ReceiptID != "":
				ids = append(ids, f.ReceiptID)
			}
		default:
			return ids
		}
	}
}

// bkMember is a member the random test acts as.
type bkMember struct {
	id       ident
	sessions []*cmcrypto.Identity // session keys it reuses (resumes)
	banned   bool                 // a ban was asked for (perhaps not yet applied)
}

func (m *bkMember) newSessions() {
	m.sessions = m.sessions[:0]
	for range 4 {
		k, _ := cmcrypto.GenerateIdentity()
		m.sessions = append(m.sessions, k)
	}
}

// bkConn is a connection the random test opened.
type bkConn struct {
	r   *rawConn
	m   *bkMember
	key string // the key it says hello with
}

// TestBookkeepingHoldsUnderRandomOperations: a seeded random sequence of
// what members and admins do (hellos of presences, sessions and one-shot
// connections, bursts of them at once, takeovers of presences still
// connected, resumed sessions, clean closes, dropped sockets, clients that
// stop reading, DMs, acks, kicks, disconnects, bans and unbans, leaves and
// operator removals with rejoins, topic creates near the caps) with tight
// caps, short grace, redelivery and queue expiry. After every step each
// incrementally kept count and index equals its value recomputed from the
// broker's state; once every connection is closed the memory agrees with
// the store and the counts are zero; after a restart the same holds for
// what is rebuilt from the store. BOOKKEEPING_SEED=n replays a seed
// (timing still varies).
func TestBookkeepingHoldsUnderRandomOperations(t *testing.T) {
	t.Parallel()
	rng := bookkeepingRand(t)
	steps := 300
	if testing.Short() {
		steps = 100
	}
	cfg := testConfig(t)
	bookkeepingConfig(&cfg)
	b := startWith(t, cfg)
	meshID := randomBookkeeping(t, rng, []*Broker{b}, steps)
	b.Close()
	b2 := startWith(t, cfg)
	checkBookkeeping(t, b2, meshID)
	if err := storeAgreesErr(b2, b2.hub.mesh(meshID)); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
}

// bookkeepingRand is the random test's source, its seed logged.
func bookkeepingRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BOOKKEEPING_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("BOOKKEEPING_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, 0x6d657368))
}

// bookkeepingConfig sets tight caps and short timers, so that a short
// random run reaches every limit and expiry.
func bookkeepingConfig(cfg *Config) {
	cfg.MaxConnsPerMesh, cfg.MaxConnsPerMember = 18, 5
	cfg.MaxSessionsPerMember = 3
	cfg.MaxTopicsPerMember, cfg.MaxTopicsPerMesh = 2, 5
	cfg.PresenceRate = 0
	cfg.Grace = 100 * time.Millisecond
	cfg.RedeliverAfter = 150 * time.Millisecond
	cfg.QueueTTL = 2 * time.Second
}

// randomBookkeeping runs steps random operations on the brokers (the
// nodes of one cluster, or one broker), each connection on a node picked
// at random, and checks every node's bookkeeping after each, then once
// everything is closed. It returns the mesh's id.
func randomBookkeeping(t *testing.T, rng *rand.Rand, bs []*Broker, steps int) string {
	t.Helper()
	b := bs[0]
	node := func() *Broker { return bs[rng.IntN(len(bs))] }
	alice := createMesh(t, b, "books", "alice")
	meshID := alice.meshID
	for _, n := range bs {
		waitMember(t, n, meshID, alice.pub())
	}
	owner := &bkMember{id: alice}
	owner.newSessions()
	admin := connect(t, b, alice, false, nil) // alice's admin console, open throughout
	members := []*bkMember{owner}
	var live []*bkConn
	drop := func(i int) *bkConn {
		c := live[i]
		live = slices.Delete(live, i, i+1)
		return c
	}
	pick := func() *bkMember { return members[rng.IntN(len(members))] }
	// start dials and writes a hello; finish reads its answer.
	start := func(m *bkMember) *bkConn {
		r := dial(t, node())
		c := &bkConn{r: r, m: m, key: m.id.pub()}
		switch k := rng.IntN(8); {
		case k == 0:
			r.write(r.helloFrame(m.id, func(h *wire.Hello) { h.Presence = ptr(false) }))
		case k < 4:
			sk := m.sessions[rng.IntN(len(m.sessions))]
			c.key = sk.PublicHex()
			name := "s" + c.key[:6]
			r.write(r.sessionHello(m.id, sk, func(h *wire.SessionHello) { h.SessionID, h.DisplayName = name, name }))
		default:
			sid, role := fmt.Sprint("p", rng.IntN(3)), ""
			if rng.IntN(3) == 0 {
				role = wire.RoleControlPlane
			}
			r.write(r.helloFrame(m.id, func(h *wire.Hello) { h.Presence, h.SessionID, h.Role = ptr(true), sid, role }))
		}
		return c
	}
	seen := map[string]int{} // what happened, for the log
	finish := func(c *bkConn) {
		code := c.r.helloOutcome()
		seen["hello "+code]++
		switch code {
		case "":
			live = append(live, c)
		case wire.CodeCapacity, wire.CodeRateLimited, wire.CodeRevoked, wire.CodeUnauthorized:
			c.r.ws.Close()
		default:
			t.Fatalf("hello refused %s", code)
		}
	}
	targets := func() []string {
		var out []string
		for _, m := range members {
			out = append(out, m.id.pub())
			for _, s := range m.sessions {
				out = append(out, s.PublicHex())
			}
		}
		return out
	}
	// ask sends an admin console request and waits for its answer (the
	// answers to requests not waited for are skipped).
	ask := func(frame map[string]any) []byte {
		id := "q" + ulid.Make().String()
		frame["reqId"] = id
		admin.write(frame)
		for {
			data := admin.read()
			if env, _ := wire.Peek(data); env.ReqID == id {
				return data
			}
		}
	}
	remove := func(m *bkMember) {
		req, _ := http.NewRequest("DELETE", b.HTTPURL()+"/v1/admin/meshes/books/members/"+m.id.pub(), nil)
		req.Header.Set("Authorization", "Bearer "+b.OperatorToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("operator removal of %s: %d", m.id.name, resp.StatusCode)
		}
	}
	// leave says mesh_leave on a connection of its own, if m may open one.
	leave := func(m *bkMember) bool {
		r := dial(t, node())
		r.write(r.helloFrame(m.id, func(h *wire.Hello) { h.Presence = ptr(false) }))
		if code := r.helloOutcome(); code != "" {
			r.ws.Close()
			return false
		}
		var ok wire.OK
		r.request(map[string]any{"type": wire.TypeMeshLeave}, &ok, wire.TypeOK)
		return true
	}
	// rejoin enrolls m (again) with a new key, invited on alice's console.
	rejoin := func(m *bkMember) {
		inv := &cmcrypto.Invite{V: 1, MeshID: meshID, MeshSlug: "books", MeshName: "Books",
			BrokerURL: b.URL(), BrokerPubkey: b.PublicKey(), InviteID: ulid.Make().String(), Role: "member",
			ExpiresAt: time.Now().Add(time.Hour).UnixMilli(), MaxUses: 1, IssuerPubkey: alice.pub()}
		if err := inv.Sign(alice.key); err != nil {
			t.Fatal(err)
		}
		token, err := inv.Token()
		if err != nil {
			t.Fatal(err)
		}
		if env, _ := wire.Peek(ask(map[string]any{"type": wire.TypeInviteCreate, "token": token})); env.Type != wire.TypeInvite {
			t.Fatalf("invite_create answered %s", env.Type)
		}
		st, body, id := join(t, b, token, m.id.name)
		if st != 200 {
			t.Fatalf("%s rejoins: %d %v", m.id.name, st, body)
		}
		for _, n := range bs {
			waitMember(t, n, meshID, id.pub())
		}
		m.id, m.banned = id, false
		m.newSessions()
	}
	for _, name := range []string{"bob", "carol"} {
		m := &bkMember{id: ident{name: name}}
		rejoin(m)
		members = append(members, m)
	}

	for step := range steps {
		switch op := rng.IntN(100); {
		case op < 22: // a hello
			finish(start(pick()))
		case op < 30: // a burst of hellos at once
			var cs []*bkConn
			for range 2 + rng.IntN(4) {
				cs = append(cs, start(pick()))
			}
			for _, c := range cs {
				finish(c)
			}
		case op < 40 && len(live) > 0: // a connection ends
			c := drop(rng.IntN(len(live)))
			switch rng.IntN(3) {
			case 0: // clean close: ends its presence at once
				c.r.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
			case 1: // the socket drops: grace
				c.r.ws.UnderlyingConn().Close()
			case 2: // the client stops reading and never answers a close
				c.r.ws.UnderlyingConn().(*net.TCPConn).CloseRead()
			}
		case op < 65 && len(live) > 0: // a DM
			c := live[rng.IntN(len(live))]
			to := targets()
			c.r.tryWrite(dm(t, c.m.id, to[rng.IntN(len(to))], "x"))
		case op < 78 && len(live) > 0: // acks of what arrived
			c := live[rng.IntN(len(live))]
			if ids := c.r.pushedIDs(); len(ids) > 0 {
				a := wire.ClientAck{Type: wire.TypeClientAck, MessageIDs: ids}
				if rng.IntN(2) == 0 {
					a.ReqID = "a" + ulid.Make().String()
				}
				c.r.tryWrite(a)
			}
		case op < 83: // kick or disconnect a member or one session
			m := pick()
			target := m.id.pub()
			if rng.IntN(2) == 0 {
				target = m.sessions[rng.IntN(len(m.sessions))].PublicHex()
			}
			ty := wire.TypeKick
			if rng.IntN(2) == 0 {
				ty = wire.TypeDisconnect
			}
			admin.tryWrite(map[string]any{"type": ty, "reqId": "k" + ulid.Make().String(), "target": target})
		case op < 87: // ban or unban bob or carol
			m := members[1+rng.IntN(len(members)-1)]
			ty := wire.TypeBan
			if m.banned {
				ty = wire.TypeUnban
			}
			m.banned = !m.banned
			admin.tryWrite(map[string]any{"type": ty, "reqId": "b" + ulid.Make().String(), "target": m.id.pub()})
		case op < 89: // bob or carol leaves, or the operator removes them; they rejoin
			m := members[1+rng.IntN(len(members)-1)]
			// The bans and unbans asked for before are applied first:
			// alice banning herself is skipped in commit order.
			ask(map[string]any{"type": wire.TypeBan, "target": alice.pub()})
			if m.banned || rng.IntN(2) == 0 || !leave(m) {
				remove(m)
			}
			rejoin(m)
		case op < 96 && len(live) > 0: // a topic create, near the caps
			c := live[rng.IntN(len(live))]
			c.r.tryWrite(wire.TopicCreate{Type: wire.TypeTopicCreate, ReqID: "t" + ulid.Make().String(),
				Name: fmt.Sprint("t", rng.IntN(8)), Encrypted: ptr(false)})
		default: // a client that stops reading
			if len(live) > 0 {
				c := drop(rng.IntN(len(live)))
				c.r.ws.UnderlyingConn().(*net.TCPConn).CloseRead()
			}
		}
		for i, n := range bs {
			if err := bookkeepingErr(n.hub.mesh(meshID)); err != nil {
				t.Fatalf("after step %d, node %d: %v", step, i+1, err)
			}
		}
		ms := b.hub.mesh(meshID)
		ms.mu.Lock()
		for _, n := range ms.memberConns {
			seen["most connections of a member"] = max(seen["most connections of a member"], n)
		}
		for _, n := range ms.keyInflight {
			seen["most pushes in flight to a key"] = max(seen["most pushes in flight to a key"], n)
		}
		seen["most sessions known"] = max(seen["most sessions known"], len(ms.sessions))
		ms.mu.Unlock()
	}

	for _, c := range live {
		c.r.ws.UnderlyingConn().Close()
	}
	admin.ws.UnderlyingConn().Close()
	t.Logf("%v", seen)
	for _, n := range bs {
		checkQuiet(t, n, meshID)
	}
	return meshID
}

// TestBanEndsASessionAcceptedAsItCommits: a ban is decided in a store
// transaction and applied to memory in its commit callback; a session
// hello of the member accepted between the two (its agent reconnecting as
// the admin bans it) was recorded in memory and, after the ban's commit,
// in the store. The ban's callback forgot only the sessions its
// transaction found, so that one stayed known, in memory and on disk, to
// come back with an unban (and after every restart). With an unban
// committed before the session's record is written, the record is written
// (its member is active again) and the ban's callback must still remove
// it: memory forgot it and the store kept it, so a restart brought it
// back. The commit callbacks are held here to open those windows for
// certain.
func TestBanEndsASessionAcceptedAsItCommits(t *testing.T) {
	t.Run("Ban", func(t *testing.T) { banWindow(t, false) })
	t.Run("BanUnban", func(t *testing.T) { banWindow(t, true) })
}

func banWindow(t *testing.T, unban bool) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "bans", "alice")
	bob := addMember(t, b, alice, "bans", "bob")
	ac := connect(t, b, alice, false, nil)
	ms := b.hub.mesh(alice.meshID)

	// Hold the commit callbacks (the store still commits).
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(held); <-release })
	<-held

	bobRevoked := func(want bool) func() bool {
		return func() bool {
			var revoked bool
			b.store.View(func(tx *store.Tx) error {
				m, err := store.GetMember(tx, alice.meshID, bob.memberID)
				revoked = err == nil && m.RevokedAt != 0
				return nil
			})
			return revoked == want
		}
	}
	ac.write(map[string]any{"type": wire.TypeBan, "reqId": "ban", "target": bob.pub()})
	waitFor(t, "the ban to be committed", bobRevoked(true))
	if unban {
		ac.write(map[string]any{"type": wire.TypeUnban, "reqId": "unban", "target": bob.pub()})
		waitFor(t, "the unban to be committed", bobRevoked(false))
	}
	// Memory does not know of the ban yet: bob's agent is let in.
	r := dial(t, b)
	sess, _ := cmcrypto.GenerateIdentity()
	r.write(r.sessionHello(bob, sess, func(h *wire.SessionHello) { h.SessionID = "late" }))
	if code := r.helloOutcome(); code != "" {
		t.Fatalf("session hello before the ban's callback: %s", code)
	}
	// An answer means its reader is past the hello, which has submitted
	// the session's record; a write submitted after it commits after it.
	var peers wire.Peers
	r.request(map[string]any{"type": wire.TypeListPeers}, &peers, wire.TypePeers)
	committed := make(chan struct{})
	b.store.Submit(func(*store.Tx) error { close(committed); return nil }, nil)
	<-committed

	free()
	var res wire.AdminResult
	ac.next(&res, wire.TypeAdminResult)
	if unban {
		ac.next(&res, wire.TypeAdminResult)
	}
	r.expectClose(wire.CloseBanned, wire.ReasonBanned)
	ms.mu.Lock()
	known := ms.sessions[sess.PublicHex()] != nil
	ms.mu.Unlock()
	if known {
		t.Fatalf("the ban's callback left bob's session known")
	}
	var last error
	deadline := time.Now().Add(expectWithin)
	for last = storeAgreesErr(b, ms); last != nil; last = storeAgreesErr(b, ms) {
		if time.Now().After(deadline) {
			t.Fatalf("memory and store still differ: %v", last)
		}
		time.Sleep(2 * time.Millisecond)
	}
	checkBookkeeping(t, b, alice.meshID)
}

// TestMemberRecordFields: member.setRecord copies every field of
// store.Member but ID and Pubkey; a new field must be added there.
func TestMemberRecordFields(t *testing.T) {
	var r store.Member
	v := reflect.ValueOf(&r).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x" + strconv.Itoa(i))
		case reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		default:
			t.Fatalf("store.Member.%s: a %s; teach this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	m := &member{Member: store.Member{ID: r.ID, Pubkey: r.Pubkey}}
	m.setRecord(r)
	if !reflect.DeepEqual(m.Member, r) {
		t.Fatalf("setRecord copied %+v of %+v", m.Member, r)
	}
}

// TestClusterBookkeepingHoldsUnderRandomOperations is the random run on a
// three-node cluster, each connection on a node picked at random: every
// node's counts and indexes hold after each step, with state arriving
// from the others (sessions, bans, removals, presences taken over across
// nodes), and agree with its replica of the store once all is closed.
func TestClusterBookkeepingHoldsUnderRandomOperations(t *testing.T) {
	t.Parallel()
	rng := bookkeepingRand(t)
	steps := 200
	if testing.Short() {
		steps = 60
	}
	bs := startCluster(t, "books", 3, bookkeepingConfig)
	randomBookkeeping(t, rng, bs, steps)
}

// TestGoneMemberLeavesNoUnackedMark: a member presence that closed with a
// push unacknowledged leaves a resume mark for the member's key; the
// member's ban or leave drops its queue, and the mark goes with it
// instead of staying until --queue-ttl.
func TestGoneMemberLeavesNoUnackedMark(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Ban", "Leave"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, nil)
			alice := createMesh(t, b, "marks", "alice")
			bob := addMember(t, b, alice, "marks", "bob")
			ac := connect(t, b, alice, false, nil)
			ms := b.hub.mesh(alice.meshID)
			r := connect(t, b, bob, true, nil)
			ac.sendAck(dm(t, alice, bob.pub(), "never acked"))
			r.nextPush()
			r.closeClean()
			marked := func() bool {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				_, ok := ms.unacked[bob.pub()]
				return ok
			}
			waitFor(t, "bob's unacked mark", marked)
			if how == "Ban" {
				ac.write(map[string]any{"type": wire.TypeBan, "reqId": "ban", "target": bob.pub()})
				var res wire.AdminResult
				ac.next(&res, wire.TypeAdminResult)
			} else {
				var ok wire.OK
				connect(t, b, bob, false, nil).request(map[string]any{"type": wire.TypeMeshLeave}, &ok, wire.TypeOK)
			}
			waitFor(t, "the mark forgotten with the member", func() bool { return !marked() })
			checkBookkeeping(t, b, alice.meshID)
		})
	}
}

// TestForgottenSessionLeavesNoUnackedMark: a session that closed with a
// push unacknowledged leaves a resume mark for its key (its next
// connection starts with the resume window); once the session is
// forgotten (here by its member's ban) the mark goes with it, instead of
// staying until --queue-ttl (issue 12: maps that only grow).
func TestForgottenSessionLeavesNoUnackedMark(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "marks", "alice")
	bob := addMember(t, b, alice, "marks", "bob")
	ac := connect(t, b, alice, false, nil)
	ms := b.hub.mesh(alice.meshID)
	r := dial(t, b)
	sess, _ := cmcrypto.GenerateIdentity()
	r.write(r.sessionHello(bob, sess, nil))
	if code := r.helloOutcome(); code != "" {
		t.Fatalf("session hello: %s", code)
	}
	ac.sendAck(dm(t, alice, sess.PublicHex(), "never acked"))
	r.nextPush()
	r.closeClean()
	marked := func() bool {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		_, ok := ms.unacked[sess.PublicHex()]
		return ok
	}
	waitFor(t, "the session's unacked mark", marked)
	ac.write(map[string]any{"type": wire.TypeBan, "reqId": "ban", "target": bob.pub()})
	var res wire.AdminResult
	ac.next(&res, wire.TypeAdminResult)
	waitFor(t, "the mark forgotten with the session", func() bool { return !marked() })
}

// TestClusterSessionForgottenOnAStaleNode: every node expires sessions
// (and evicts them at a hello) on its own view, which can be stale: node
// 2 forgets a session key that has just said hello again on node 1, in
// memory first and then in the store. Deleting by key, its write could
// commit after the new record and delete it, and, replicated, node 1
// forgot a session connected to it: DMs to it were refused as
// unknown_recipient and its queue was dropped until it reconnected.
// StaleRecord: node 2 forgets the recording it knew, and the store keeps
// the new one. CurrentRecord: node 2 forgets the current recording (it
// did not see the session connect), the deletion commits, and node 1,
// which holds its connection, keeps it and writes it again.
func TestClusterSessionForgottenOnAStaleNode(t *testing.T) {
	t.Parallel()
	bs := startCluster(t, "stale", 3, nil)
	alice := createMesh(t, bs[0], "stale", "alice")
	bob := addMember(t, bs[0], alice, "stale", "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, alice.pub())
		waitMember(t, b, alice.meshID, bob.pub())
	}
	ms1, ms2 := bs[0].hub.mesh(alice.meshID), bs[1].hub.mesh(alice.meshID)
	a := connect(t, bs[0], alice, true, nil)
	record := func(ms *meshState, key string) *store.Session {
		ms.mu.Lock()
		defer ms.mu.Unlock()
		return ms.sessions[key]
	}
	stored := func(b *Broker, key string) (s *store.Session) {
		b.store.View(func(tx *store.Tx) error {
			return store.EachSession(tx, alice.meshID, func(r store.Session) error {
				if r.Pubkey == key {
					s = &r
				}
				return nil
			}, func(store.Corrupt) {})
		})
		return s
	}
	for i, current := range []bool{false, true} {
		name := map[bool]string{false: "StaleRecord", true: "CurrentRecord"}[current]
		t.Run(name, func(t *testing.T) {
			sess, _ := cmcrypto.GenerateIdentity()
			key := sess.PublicHex()
			hello := func() *rawConn {
				r := dial(t, bs[0])
				r.write(r.sessionHello(bob, sess, func(h *wire.SessionHello) { h.SessionID = name }))
				if code := r.helloOutcome(); code != "" {
					t.Fatalf("session hello: %s", code)
				}
				return r
			}
			r := hello()
			waitFor(t, "node 2 to learn the session", func() bool { return record(ms2, key) != nil })
			forgotten := record(ms2, key)
			r.closeClean()
			// What node 2's expiry or eviction does: memory, then (below)
			// the store; the session says hello again on node 1 in
			// between, or (CurrentRecord) before.
			forget := func() {
				ms2.mu.Lock()
				forgotten = ms2.sessions[key]
				ms2.deleteSessionLocked(key)
				ms2.mu.Unlock()
			}
			if !current {
				forget()
			}
			r = hello()
			waitFor(t, "node 2 to store the new recording", func() bool {
				s, m := stored(bs[1], key), record(ms2, key)
				return s != nil && s.HelloAt != forgotten.HelloAt && m != nil && m.HelloAt == s.HelloAt
			})
			if current {
				forget()
			}
			bs[1].hub.forgetSessions(ms2, []*store.Session{forgotten})
			// A later write of node 2: once node 1 has it, it has the
			// forget too.
			mark := fmt.Sprintf("%064x", i+1)
			if err := bs[1].store.Update(func(tx *store.Tx) error {
				return store.PutGrants(tx, alice.meshID, mark, store.Grants{"x": {"y"}})
			}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "node 1 to apply node 2's writes", func() bool {
				ms1.mu.Lock()
				defer ms1.mu.Unlock()
				return ms1.grants[mark] != nil
			})
			checkBookkeeping(t, bs[0], alice.meshID)
			if ack := a.sendAck(dm(t, alice, key, "still here?")); ack.Error != nil {
				t.Fatalf("a DM to the session connected to node 1: %+v", ack.Error)
			}
			r.nextPush()
			for i, b := range bs {
				ms := b.hub.mesh(alice.meshID)
				waitFor(t, fmt.Sprintf("node %d to know and store the session", i+1), func() bool {
					s := stored(b, key)
					return s != nil && record(ms, key) != nil
				})
			}
			r.closeClean()
		})
	}
}

// TestClusterNodeLeavesASessionRecordedElsewhere: a node's view of the
// other nodes' presences may be stale (an "up" lost or late). Node 2,
// not seeing bob's first session connected to node 1, evicted it for
// bob's second over --max-sessions-per-member; node 1 kept the key (it
// holds the connection) but the forget had dropped its queue: the push in
// flight was settled expired, and its ack made no receipt. A recording is
// now forgotten only by the node that took its hello while that node
// runs: node 2 admits the second session over the cap instead.
func TestClusterNodeLeavesASessionRecordedElsewhere(t *testing.T) {
	t.Parallel()
	bs := startCluster(t, "elsewhere", 3, func(cfg *Config) { cfg.MaxSessionsPerMember = 1 })
	alice := createMesh(t, bs[0], "elsewhere", "alice")
	bob := addMember(t, bs[0], alice, "elsewhere", "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, alice.pub())
		waitMember(t, b, alice.meshID, bob.pub())
	}
	ms2 := bs[1].hub.mesh(alice.meshID)
	a := connect(t, bs[0], alice, true, nil)
	r1, s1 := connectSession(t, bs[0], bob, "one")
	key := s1.PublicHex()
	presenceOn2 := func() string {
		ms2.mu.Lock()
		defer ms2.mu.Unlock()
		return presenceKeyOfLocked(ms2, key)
	}
	waitFor(t, "node 2 to know the first session and its presence", func() bool {
		ms2.mu.Lock()
		known := ms2.sessions[key] != nil
		ms2.mu.Unlock()
		return known && presenceOn2() != ""
	})
	if ack := a.sendAck(dm(t, alice, key, "keep me")); ack.Error != nil {
		t.Fatalf("DM to the first session: %+v", ack.Error)
	}
	p := r1.nextPush()
	// Node 2 misses the session's presence.
	ms2.mu.Lock()
	delete(ms2.presences, presenceKeyOfLocked(ms2, key))
	ms2.mu.Unlock()
	r2, s2 := connectSession(t, bs[1], bob, "two")
	// A DM of the second session's, written by node 2 after its hello's
	// writes (an eviction's forget included): once alice has it, node 1
	// has applied them.
	if ack := r2.sendAck(dm(t, ident{key: s2, meshID: alice.meshID}, alice.pub(), "barrier")); ack.Error != nil {
		t.Fatalf("DM from the second session: %+v", ack.Error)
	}
	a.nextPush()
	r1.ack(p.MessageID)
	for deadline := time.Now().Add(expectWithin); ; {
		data, err := a.readErr(time.Until(deadline))
		if err != nil {
			t.Fatalf("no receipt for the push the first session acked (its delivery dropped?): %v", err)
		}
		var rc wire.Receipt
		if env, _ := wire.Peek(data); env.Type == wire.TypeReceipt && wire.Decode(data, &rc) == nil && rc.MessageID == p.MessageID {
			break
		}
	}
	ms2.mu.Lock()
	known := ms2.sessions[key] != nil
	ms2.mu.Unlock()
	if !known {
		t.Fatal("node 2 forgot the session connected to node 1")
	}
}

// presenceKeyOfLocked is the key of a presence of pubkey, "" if none.
// Caller holds ms.mu.
func presenceKeyOfLocked(ms *meshState, pubkey string) string {
	for pk, p := range ms.presences {
		if p.pubkey == pubkey {
			return pk
		}
	}
	return ""
}

// TestForgetCancelsTheSessionWrite: a session hello records the key in
// memory, unlocks, then submits the write of its record. A forget of the
// key in between (a ban's callback that found the session accepted
// before it applied, after an unban committed; an eviction) commits
// first, with nothing stored to delete; the record written after it was
// unknown to memory and came back at the next restart. Here the two are
// run in that order by hand: the hello's write must write nothing.
func TestForgetCancelsTheSessionWrite(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "cancel", "alice")
	bob := addMember(t, b, alice, "cancel", "bob")
	ms := b.hub.mesh(alice.meshID)
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	ms.mu.Lock()
	bobID := ms.members[bob.pub()].ID
	now := time.Now()
	rec := &store.Session{Pubkey: key, ParentMemberID: bobID, ParentPubkey: bob.pub(), SessionID: "late",
		LastSeenAt: now.UnixMilli(), HelloAt: now.UnixNano()}
	// admit, under the lock
	ms.putSessionLocked(key, rec)
	persist, written := ms.sessionWriteLocked(rec, true, nil)
	ms.mu.Unlock()
	// the ban's callback, between admit's unlock and its Submit
	ms.mu.Lock()
	late := ms.forgetMemberSessionsLocked(bobID)
	ms.mu.Unlock()
	done := make(chan struct{})
	b.store.Submit(func(tx *store.Tx) error {
		for _, s := range late {
			if _, _, err := store.ForgetSession(tx, ms.id, s); err != nil {
				return err
			}
		}
		return nil
	}, func(error) { close(done) })
	<-done
	// admit's Submit; then a write after it, so that it has committed
	b.hub.writeSession(persist, written)
	committed := make(chan struct{})
	b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(committed) })
	<-committed
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
}

// TestLaterHelloCancelsTheEarlierSessionWrite: two hellos of one session
// key (a reconnect, a takeover) each record it in memory, unlock, then
// submit the write of their record; the earlier one's could be submitted,
// and written, last, leaving the store with a recording memory had
// replaced (the later forget of memory's recording then left it alone).
// Here the two writes are submitted in that order by hand.
func TestLaterHelloCancelsTheEarlierSessionWrite(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "twice", "alice")
	bob := addMember(t, b, alice, "twice", "bob")
	ms := b.hub.mesh(alice.meshID)
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	ms.mu.Lock()
	bobID := ms.members[bob.pub()].ID
	recording := func(helloAt int64) *store.Session {
		return &store.Session{Pubkey: key, ParentMemberID: bobID, ParentPubkey: bob.pub(), SessionID: "twice",
			LastSeenAt: time.Now().UnixMilli(), HelloAt: helloAt}
	}
	first, second := recording(1), recording(2)
	ms.putSessionLocked(key, first)
	persist1, written1 := ms.sessionWriteLocked(first, true, nil)
	ms.putSessionLocked(key, second)
	persist2, written2 := ms.sessionWriteLocked(second, true, first)
	ms.mu.Unlock()
	b.hub.writeSession(persist2, written2)
	b.hub.writeSession(persist1, written1)
	committed := make(chan struct{})
	b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(committed) })
	<-committed
	var stored *store.Session
	b.store.View(func(tx *store.Tx) error {
		return store.EachSession(tx, alice.meshID, func(s store.Session) error {
			if s.Pubkey == key {
				stored = &s
			}
			return nil
		}, func(store.Corrupt) {})
	})
	if stored == nil || stored.HelloAt != second.HelloAt {
		t.Fatalf("stored %+v, memory's recording has HelloAt %d", stored, second.HelloAt)
	}
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
}

// TestForgetLeavesAKeySaidHelloWithAgain: a forget of a session key runs
// in memory first, then in the store (forgetSessions). A hello of the key
// in between records it again, and DMs to it are queued; its record's
// write may come after the forget's, which found no record of the key (or
// the one it forgot) and dropped the queue: messages the broker had
// accepted for a live key. Here: a hello's recording evicted before it
// was written, the key's next hello (its write still to come), a DM to
// it, then the eviction's forget, then the hello's write.
func TestForgetLeavesAKeySaidHelloWithAgain(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "again", "alice")
	bob := addMember(t, b, alice, "again", "bob")
	a := connect(t, b, alice, false, nil)
	ms := b.hub.mesh(alice.meshID)
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	ms.mu.Lock()
	bobID := ms.members[bob.pub()].ID
	recording := func(helloAt int64) *store.Session {
		return &store.Session{Pubkey: key, ParentMemberID: bobID, ParentPubkey: bob.pub(), SessionID: "again",
			LastSeenAt: time.Now().UnixMilli(), HelloAt: helloAt}
	}
	first, second := recording(time.Now().UnixNano()), recording(time.Now().UnixNano()+1)
	ms.putSessionLocked(key, first)
	ms.sessionWriteLocked(first, true, nil) // never submitted: the eviction cancels it
	ms.deleteSessionLocked(key)             // the eviction, in memory
	ms.putSessionLocked(key, second)
	persist, written := ms.sessionWriteLocked(second, true, nil)
	ms.mu.Unlock()
	if ack := a.sendAck(dm(t, alice, key, "queued for the live key")); ack.Error != nil {
		t.Fatalf("DM to the session: %+v", ack.Error)
	}
	b.hub.forgetSessions(ms, []*store.Session{first})
	b.hub.writeSession(persist, written)
	committed := make(chan struct{})
	b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(committed) })
	<-committed
	queued := 0
	b.store.View(func(tx *store.Tx) error {
		return store.ScanQueue(tx, alice.meshID, key, 0, func(uint64, *store.QueueEntry) bool { queued++; return true })
	})
	if queued != 1 {
		t.Fatalf("%d DMs queued for the session said hello with again, want 1", queued)
	}
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
	r := dial(t, b)
	r.write(r.sessionHello(bob, sess, func(h *wire.SessionHello) { h.SessionID = "again" }))
	if code := r.helloOutcome(); code != "" {
		t.Fatalf("session hello: %s", code)
	}
	if p := r.nextPush(); openPush(t, &p, ident{key: sess, meshID: alice.meshID}) != "queued for the live key" {
		t.Fatal("the session got another push")
	}
}

// TestGroupWriteCancelledByAForget: a session's join_group records its
// groups in memory, unlocks, then submits the write of its record, which
// did not register as a hello's write does (sessionWriteLocked): a forget
// of the key in between (a ban's callback finding the session accepted
// before the ban applied) committed first, and the write then stored a
// session memory had forgotten, back at the next restart. The hook runs
// the forget in that window.
func TestGroupWriteCancelledByAForget(t *testing.T) {
	t.Parallel()
	var hook atomic.Pointer[func()]
	b := startBroker(t, func(cfg *Config) {
		cfg.testHookProfileWrite = func() {
			if h := hook.Load(); h != nil {
				(*h)()
			}
		}
	})
	alice := createMesh(t, b, "groupwrite", "alice")
	bob := addMember(t, b, alice, "groupwrite", "bob")
	ms := b.hub.mesh(alice.meshID)
	r, sess := connectSession(t, b, bob, "grp")
	key := sess.PublicHex()
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
	forget := func() {
		ms.mu.Lock()
		forgotten := ms.sessions[key]
		ms.deleteSessionLocked(key)
		ms.mu.Unlock()
		b.hub.forgetSessions(ms, []*store.Session{forgotten})
		committed := make(chan struct{})
		b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(committed) })
		<-committed
	}
	hook.Store(&forget)
	var ok wire.OK
	r.request(map[string]any{"type": wire.TypeJoinGroup, "name": "builders"}, &ok, wire.TypeOK)
	hook.Store(nil)
	committed := make(chan struct{})
	b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(committed) })
	<-committed
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
}

// TestClusterDelayedHelloWriteLeavesALaterRecording: a hello's write can
// wait in a cluster's log for seconds. Written unconditionally, node 1's
// hello of a key (admitted over no recording, its write delayed) replaced
// node 2's recording of the key written meanwhile, on every node, and
// every node then said the session was node 1's, whatever the clocks
// (node 1's HelloAt is the greater here). The write is a compare-and-set
// over what node 1 knew at the hello: it writes nothing, and node 1 takes
// node 2's recording (the session is not connected to it). The same when
// a group change cancelled the hello's write and is written in its place.
// A change of the replaced recording does not bring it back either.
func TestClusterDelayedHelloWriteLeavesALaterRecording(t *testing.T) {
	t.Parallel()
	bs := startCluster(t, "staleput", 3, nil)
	alice := createMesh(t, bs[0], "staleput", "alice")
	bob := addMember(t, bs[0], alice, "staleput", "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, bob.pub())
	}
	ms1 := bs[0].hub.mesh(alice.meshID)
	ms1.mu.Lock()
	bobID := ms1.members[bob.pub()].ID
	ms1.mu.Unlock()
	marks := 0
	// mark writes a grants record through w, and waits until every other
	// node has applied it: every write w made before is applied
	// everywhere (a node's own writes do not come back to its memory).
	mark := func(w *Broker) {
		marks++
		key := fmt.Sprintf("%064x", 1000+marks)
		if err := w.store.Update(func(tx *store.Tx) error {
			return store.PutGrants(tx, alice.meshID, key, store.Grants{"x": {"y"}})
		}); err != nil {
			t.Fatal(err)
		}
		for i, b := range bs {
			if b == w {
				continue
			}
			ms := b.hub.mesh(alice.meshID)
			waitFor(t, fmt.Sprintf("node %d to apply mark %d", i+1, marks), func() bool {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				return ms.grants[key] != nil
			})
		}
	}
	for _, promoted := range []bool{false, true} {
		sess, _ := cmcrypto.GenerateIdentity()
		key := sess.PublicHex()
		recording := func(helloAt int64, node string) *store.Session {
			return &store.Session{Pubkey: key, ParentMemberID: bobID, ParentPubkey: bob.pub(), SessionID: node,
				LastSeenAt: time.Now().UnixMilli(), HelloAt: helloAt, Node: node}
		}
		storedOn := func(b *Broker) (stored *store.Session) {
			b.store.View(func(tx *store.Tx) error {
				return store.EachSession(tx, alice.meshID, func(s store.Session) error {
					if s.Pubkey == key {
						stored = &s
					}
					return nil
				}, func(store.Corrupt) {})
			})
			return stored
		}
		now := time.Now().UnixNano()
		theirs, mine := recording(now, "n2"), recording(now+int64(time.Hour), "n1")
		// Node 1's hello, its write still to come.
		ms1.mu.Lock()
		prev := ms1.sessions[key]
		ms1.putSessionLocked(key, mine)
		persist, written := ms1.sessionWriteLocked(mine, true, prev)
		if promoted {
			// A join_group before the hello's write: it cancels that
			// write and is written in its place.
			cp := *mine
			cp.Groups = []wire.Group{{Name: "builders"}}
			ms1.putSessionLocked(key, &cp)
			persist, written = ms1.sessionWriteLocked(&cp, false, nil)
		}
		ms1.mu.Unlock()
		// Node 2's hello of the key, written first.
		ms2 := bs[1].hub.mesh(alice.meshID)
		ms2.mu.Lock()
		ms2.putSessionLocked(key, theirs)
		ms2.mu.Unlock()
		if err := bs[1].store.Update(func(tx *store.Tx) error {
			_, err := store.PutSessionOver(tx, alice.meshID, theirs, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		mark(bs[1])
		done := make(chan struct{})
		bs[0].hub.writeSession(persist, func(err error) { written(err); close(done) })
		<-done
		mark(bs[0])
		// A change of node 1's replaced recording, written last.
		if err := bs[2].store.Update(func(tx *store.Tx) error { return store.UpdateSession(tx, alice.meshID, mine) }); err != nil {
			t.Fatal(err)
		}
		mark(bs[2])
		for i, b := range bs {
			ms := b.hub.mesh(alice.meshID)
			stored := storedOn(b)
			ms.mu.Lock()
			known := ms.sessions[key]
			ms.mu.Unlock()
			if stored == nil || !store.SameRecording(stored, theirs) || known == nil || !store.SameRecording(known, theirs) {
				t.Fatalf("promoted %v, node %d: stored %+v, known %+v; want node 2's recording", promoted, i+1, stored, known)
			}
		}
	}
}

// storeAgreesErrWait waits for storeAgreesErr to be nil, returning its
// last error after a deadline.
func storeAgreesErrWait(b *Broker, ms *meshState) error {
	deadline := time.Now().Add(expectWithin)
	for {
		err := storeAgreesErr(b, ms)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestOriginsForgottenWhenSettled: a transient connection that sends with
// receipts waits for them (ms.origin, c.origins) until every recipient
// has acked; a long-lived one (an MCP server's) kept every message id it
// sent in c.origins, and an origin whose delivery expired or was dropped
// (a ban, a forgotten session) waited for a receipt that never comes,
// until the sender disconnected.
func TestOriginsForgottenWhenSettled(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Acked", "Expired", "Banned"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := startBroker(t, func(cfg *Config) {
				if how == "Expired" {
					cfg.QueueTTL = 500 * time.Millisecond
				}
			})
			alice := createMesh(t, b, "origins", "alice")
			bob := addMember(t, b, alice, "origins", "bob")
			ms := b.hub.mesh(alice.meshID)
			a := connect(t, b, alice, false, nil)
			var bc *rawConn
			if how == "Acked" {
				bc = connect(t, b, bob, true, nil)
			}
			if ack := a.sendAck(dm(t, alice, bob.pub(), "receipt, please")); ack.Error != nil {
				t.Fatalf("send: %+v", ack.Error)
			}
			waiting := func() (origins, listed int) {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				for c := range ms.conns[alice.pub()] {
					listed += len(c.origins)
				}
				return len(ms.origin), listed
			}
			if o, l := waiting(); o != 1 || l != 1 {
				t.Fatalf("after the send: %d origins, %d listed", o, l)
			}
			switch how {
			case "Acked":
				p := bc.nextPush()
				bc.ack(p.MessageID)
				var r wire.Receipt
				a.next(&r, wire.TypeReceipt)
			case "Banned":
				a.write(map[string]any{"type": wire.TypeBan, "reqId": "ban", "target": bob.pub()})
				var res wire.AdminResult
				a.next(&res, wire.TypeAdminResult)
			}
			waitFor(t, "the origin forgotten while its sender is connected", func() bool {
				o, l := waiting()
				return o == 0 && l == 0
			})
			checkBookkeeping(t, b, alice.meshID)
		})
	}
}

// TestRemovalDropsALateSessionsQueue: a session hello of a member accepted
// between its removal's commit and the removal's callback (the member
// still active in memory) is forgotten by the callback; DMs sent to it
// meanwhile were queued, and stayed until --queue-ttl, counted against
// their senders' quotas: only a ban handed such sessions to
// forgetSessions. The commit callbacks are held to open the window.
func TestRemovalDropsALateSessionsQueue(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := createMesh(t, b, "late", "alice")
	bob := addMember(t, b, alice, "late", "bob")
	ac := connect(t, b, alice, false, nil)
	ms := b.hub.mesh(alice.meshID)

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	b.store.Submit(func(*store.Tx) error { return nil }, func(error) { close(held); <-release })
	<-held

	removed := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("DELETE", b.HTTPURL()+"/v1/admin/meshes/late/members/"+bob.pub(), nil)
		req.Header.Set("Authorization", "Bearer "+b.OperatorToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			removed <- 0
			return
		}
		resp.Body.Close()
		removed <- resp.StatusCode
	}()
	waitFor(t, "the removal to be committed", func() bool {
		var gone bool
		b.store.View(func(tx *store.Tx) error {
			_, err := store.GetMember(tx, alice.meshID, bob.memberID)
			gone = errors.Is(err, store.ErrNotFound)
			return nil
		})
		return gone
	})
	// Memory does not know of the removal yet: bob's agent is let in,
	// and alice's DM to it is queued.
	r := dial(t, b)
	sess, _ := cmcrypto.GenerateIdentity()
	r.write(r.sessionHello(bob, sess, func(h *wire.SessionHello) { h.SessionID = "late" }))
	if code := r.helloOutcome(); code != "" {
		t.Fatalf("session hello before the removal's callback: %s", code)
	}
	ac.write(dm(t, alice, sess.PublicHex(), "to a session about to go"))
	queued := func() (n int) {
		b.store.View(func(tx *store.Tx) error {
			return store.ScanQueue(tx, alice.meshID, sess.PublicHex(), 0, func(uint64, *store.QueueEntry) bool { n++; return true })
		})
		return n
	}
	waitFor(t, "the DM to the late session to be queued", func() bool { return queued() == 1 })

	free()
	if st := <-removed; st != 200 {
		t.Fatalf("operator removal: %d", st)
	}
	waitFor(t, "the late session's queue dropped", func() bool {
		ms.mu.Lock()
		pending := ms.pending[sess.PublicHex()]
		ms.mu.Unlock()
		return queued() == 0 && pending == 0
	})
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
	checkBookkeeping(t, b, alice.meshID)
}

// TestClusterLaterHelloWinsWhateverTheClocks: which of two recordings of
// a session key is the later is the order of their writes in the log. It
// was their HelloAt, each stamped by its node's wall clock: a session that
// said hello on a node whose clock was ahead, then (after a reconnect) on
// a node whose clock was behind, kept its first recording in the store and
// in the first node's memory, which then took itself for the node that
// forgets the key (and its queue) while it was connected elsewhere.
func TestClusterLaterHelloWinsWhateverTheClocks(t *testing.T) {
	t.Parallel()
	node := 0
	bs := startCluster(t, "skew", 3, func(c *Config) {
		if node == 0 {
			c.clockSkew = time.Hour // node 1's clock is an hour ahead
		}
		node++
	})
	alice := createMesh(t, bs[0], "skew", "alice")
	bob := addMember(t, bs[0], alice, "skew", "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, bob.pub())
	}
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	stored := func(b *Broker) (rec *store.Session) {
		b.store.View(func(tx *store.Tx) error {
			return store.EachSession(tx, alice.meshID, func(s store.Session) error {
				if s.Pubkey == key {
					rec = &s
				}
				return nil
			}, func(store.Corrupt) {})
		})
		return rec
	}
	hello := func(b *Broker) *rawConn {
		r := dial(t, b)
		r.write(r.sessionHello(bob, sess, func(h *wire.SessionHello) { h.SessionID = "skew" }))
		if code := r.helloOutcome(); code != "" {
			t.Fatalf("session hello on %s: %s", b.nodeID(), code)
		}
		return r
	}
	r1 := hello(bs[0])
	for _, b := range bs {
		waitFor(t, "every node to store node 1's recording", func() bool {
			s := stored(b)
			return s != nil && s.Node == "n1"
		})
	}
	r1.closeClean()
	hello(bs[1])
	ms2 := bs[1].hub.mesh(alice.meshID)
	waitFor(t, "node 2's write of its recording", func() bool {
		ms2.mu.Lock()
		defer ms2.mu.Unlock()
		return ms2.sessionWrites[key] == nil
	})
	// A write of node 2's after it: once a node has it, it has applied
	// node 2's recording.
	mark := fmt.Sprintf("%064x", 9)
	if err := bs[1].store.Update(func(tx *store.Tx) error {
		return store.PutGrants(tx, alice.meshID, mark, store.Grants{"x": {"y"}})
	}); err != nil {
		t.Fatal(err)
	}
	for i, b := range bs {
		ms := b.hub.mesh(alice.meshID)
		if i != 1 { // node 2 wrote them
			waitFor(t, fmt.Sprintf("node %d to apply node 2's writes", i+1), func() bool {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				return ms.grants[mark] != nil
			})
		}
		s := stored(b)
		ms.mu.Lock()
		known := ms.sessions[key]
		ms.mu.Unlock()
		if s == nil || s.Node != "n2" || known == nil || known.Node != "n2" {
			t.Fatalf("node %d: stored %+v, known %+v; want node 2's recording, the later hello", i+1, s, known)
		}
	}
}

// TestEvictionForgetsTheStoredEarlierRecording: a session key said hello
// with again is recorded anew in memory (a later HelloAt), and its
// record's write waits its turn in the store. Evicted before that write
// ran (makeRoomForSession, the member at --max-sessions-per-member), the
// write was cancelled and the forget found the earlier recording in the
// store, not the one memory forgot, and left it: a session memory no
// longer knew stayed in the store (and its queue, until a restart
// brought it back). The store's committer is held here to keep the
// write waiting.
func TestEvictionForgetsTheStoredEarlierRecording(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(cfg *Config) { cfg.MaxSessionsPerMember = 3 })
	alice := createMesh(t, b, "evict", "alice")
	bob := addMember(t, b, alice, "evict", "bob")
	ms := b.hub.mesh(alice.meshID)
	connectSession(t, b, bob, "one") // two sessions present throughout
	connectSession(t, b, bob, "two")
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	hello := func() {
		r := dial(t, b)
		r.write(r.sessionHello(bob, sess, func(h *wire.SessionHello) { h.SessionID = "again" }))
		if code := r.helloOutcome(); code != "" {
			t.Fatalf("session hello: %s", code)
		}
		r.closeClean()
		waitFor(t, "the session's presence to end", func() bool {
			ms.mu.Lock()
			defer ms.mu.Unlock()
			return ms.presences[key] == nil
		})
	}
	hello()
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}

	// Hold the committer: the next hello's write waits behind this one.
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)
	b.store.Submit(func(*store.Tx) error { close(held); <-release; return nil }, nil)
	<-held
	hello()
	connectSession(t, b, bob, "three") // evicts the key, the least recently seen not present
	ms.mu.Lock()
	evicted := ms.sessions[key] == nil
	ms.mu.Unlock()
	if !evicted {
		t.Fatal("the session said hello with again was not evicted")
	}
	free()
	if err := storeAgreesErrWait(b, ms); err != nil {
		t.Fatal(err)
	}
}
