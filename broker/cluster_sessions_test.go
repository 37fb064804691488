package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// sessionCluster is a three-node cluster with a mesh of alice and bob,
// every node knowing both, and helpers to read a session key's
// recording in a node's memory and in its copy of the store.
type sessionCluster struct {
	t          *testing.T
	bs         []*Broker
	alice, bob ident
	bobID      string
}

func newSessionCluster(t *testing.T, name string) *sessionCluster {
	bs := startCluster(t, name, 3, nil)
	alice := createMesh(t, bs[0], name, "alice")
	bob := addMember(t, bs[0], alice, name, "bob")
	for _, b := range bs {
		waitMember(t, b, alice.meshID, bob.pub())
	}
	sc := &sessionCluster{t: t, bs: bs, alice: alice, bob: bob}
	ms := sc.ms(0)
	ms.mu.Lock()
	sc.bobID = ms.members[bob.pub()].ID
	ms.mu.Unlock()
	return sc
}

func (sc *sessionCluster) ms(i int) *meshState { return sc.bs[i].hub.mesh(sc.alice.meshID) }

// known is node i's recording of key in memory.
func (sc *sessionCluster) known(i int, key string) *store.Session {
	ms := sc.ms(i)
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return ms.sessions[key]
}

// stored is node i's recording of key in its copy of the store.
func (sc *sessionCluster) stored(i int, key string) (rec *store.Session) {
	sc.bs[i].store.View(func(tx *store.Tx) error {
		return store.EachSession(tx, sc.alice.meshID, func(s store.Session) error {
			if s.Pubkey == key {
				rec = &s
			}
			return nil
		}, func(store.Corrupt) {})
	})
	return rec
}

// handedOver returns once node i's hub has been handed every entry its
// copy holds and every callback of its writes submitted so far (an
// Update's answer comes after them, in log order).
func (sc *sessionCluster) handedOver(i int) {
	if err := sc.bs[i].store.Update(func(*store.Tx) error { return nil }); err != nil {
		sc.t.Fatal(err)
	}
}

// holdCallbacks holds node i's callbacks and its hub's share of the log
// (the engine's dispatcher) until the returned func is called; the node
// still applies the log to its copy and runs its writes there.
func (sc *sessionCluster) holdCallbacks(i int) (release func()) {
	held, ch := make(chan struct{}), make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	sc.t.Cleanup(release)
	sc.bs[i].store.Submit(func(*store.Tx) error { return nil }, func(error) { close(held); <-ch })
	<-held
	return release
}

// sessionHello says hello with sess on node i as bob, and returns the
// connection.
func (sc *sessionCluster) sessionHello(i int, sess *cmcrypto.Identity, name string) *rawConn {
	r := dial(sc.t, sc.bs[i])
	r.write(r.sessionHello(sc.bob, sess, func(h *wire.SessionHello) { h.SessionID = name }))
	if code := r.helloOutcome(); code != "" {
		sc.t.Fatalf("session hello on node %d: %s", i+1, code)
	}
	return r
}

// TestClusterLogForgetLeavesAHelloWriteToCome: a node's copy of the store
// is ahead of its hub by the entries the engine's dispatcher has not
// handed over yet, and the node's own writes run on the copy. Node 2
// forgot its recording of a session key (its expiry or eviction) as the
// session said hello on node 1: node 1's write of its recording ran on
// its copy after the forget and recorded the key, then the forget reached
// node 1's hub, which forgot the key (the session had left already) and
// cancelled a write that had run. The store kept node 1's recording on
// every node, and node 1, the one node that forgets it, no longer knew
// it: it stayed until a restart (TestClusterBookkeepingHoldsUnderRandom-
// Operations saw this once, "sessions known map[], stored map[...]"). A
// deletion from the log leaves a key whose write is still to come: that
// write is later in the log.
func TestClusterLogForgetLeavesAHelloWriteToCome(t *testing.T) {
	t.Parallel()
	sc := newSessionCluster(t, "logforget")
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	sc.sessionHello(1, sess, "first").closeClean()
	for i := range sc.bs {
		waitFor(t, fmt.Sprintf("node %d to know and store node 2's recording", i+1), func() bool {
			k, s := sc.known(i, key), sc.stored(i, key)
			return k != nil && s != nil && k.Node == "n2" && s.Node == "n2"
		})
	}
	release := sc.holdCallbacks(0)
	// Node 2's expiry or eviction: memory, then the store.
	ms2 := sc.ms(1)
	ms2.mu.Lock()
	forgotten := ms2.sessions[key]
	ms2.deleteSessionLocked(key)
	ms2.mu.Unlock()
	sc.bs[1].hub.forgetSessions(ms2, []*store.Session{forgotten})
	waitFor(t, "node 1's copy to apply node 2's forget", func() bool { return sc.stored(0, key) == nil })
	// The session says hello on node 1 (its hub still knows node 2's
	// recording) and leaves; the hello's write runs on node 1's copy.
	sc.sessionHello(0, sess, "second").closeClean()
	waitFor(t, "node 1's write of its recording in its copy", func() bool {
		s := sc.stored(0, key)
		return s != nil && s.Node == "n1"
	})
	release()
	sc.handedOver(0)
	k, s := sc.known(0, key), sc.stored(0, key)
	if k == nil || s == nil || !store.SameRecording(k, s) {
		t.Fatalf("node 1 knows %+v, stores %+v; want its own recording in both", k, s)
	}
	for i, b := range sc.bs {
		if err := storeAgreesErrWait(b, sc.ms(i)); err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
}

// TestClusterEvictionAdoptsTheRecordingItLeaves: node 1 admitted a hello
// of a session key whose write was still to come when node 2's recording
// of the key arrived from the log, and did not take it (its own write,
// later in the log, was to replace it). Node 1 then evicted the key (or
// expired it): the eviction cancelled that write, and the forget left
// node 2's recording in the store (another node's). Node 1's memory knew
// no recording of a key the store holds: DMs sent through node 1 to the
// session connected to node 2 were refused as unknown_recipient. The
// forget's callback takes the recording it left.
func TestClusterEvictionAdoptsTheRecordingItLeaves(t *testing.T) {
	t.Parallel()
	sc := newSessionCluster(t, "evictadopt")
	sess, _ := cmcrypto.GenerateIdentity()
	key := sess.PublicHex()
	rec := func(node string, helloAt int64) *store.Session {
		return &store.Session{Pubkey: key, ParentMemberID: sc.bobID, ParentPubkey: sc.bob.pub(), SessionID: node,
			LastSeenAt: time.Now().UnixMilli(), HelloAt: helloAt, Node: node}
	}
	now := time.Now().UnixNano()
	mine := rec("n1", now)
	// Node 1's hello, its write still to come.
	ms1 := sc.ms(0)
	ms1.mu.Lock()
	ms1.putSessionLocked(key, mine)
	persist, written := ms1.sessionWriteLocked(mine, true, nil)
	ms1.mu.Unlock()
	// Node 2's hello of the key, and its connection: written first.
	r := sc.sessionHello(1, sess, "theirs")
	waitFor(t, "node 1 to apply node 2's recording (and leave it)", func() bool {
		s := sc.stored(0, key)
		return s != nil && s.Node == "n2"
	})
	sc.handedOver(0)
	if k := sc.known(0, key); k == nil || !store.SameRecording(k, mine) {
		t.Fatalf("node 1 knows %+v; want its own recording, its write still to come", k)
	}
	theirs := sc.stored(0, key)
	// Node 1 evicts the key (makeRoomForSession's caller: memory, then
	// the store); the write runs after, cancelled.
	ms1.mu.Lock()
	ms1.deleteSessionLocked(key)
	ms1.mu.Unlock()
	sc.bs[0].hub.forgetSessions(ms1, []*store.Session{mine})
	done := make(chan struct{})
	sc.bs[0].hub.writeSession(persist, func(err error) { written(err); close(done) })
	<-done
	sc.handedOver(0)
	if k, s := sc.known(0, key), sc.stored(0, key); k == nil || s == nil || !store.SameRecording(k, theirs) || !store.SameRecording(s, theirs) {
		t.Fatalf("node 1 knows %+v, stores %+v; want node 2's recording in both", k, s)
	}
	// A DM through node 1 reaches the session on node 2.
	a := connect(t, sc.bs[0], sc.alice, false, nil)
	if ack := a.sendAck(dm(t, sc.alice, key, "through node 1")); ack.Error != nil {
		t.Fatalf("a DM through node 1 to the session on node 2: %+v", ack.Error)
	}
	r.nextPush()
	for i, b := range sc.bs {
		if err := storeAgreesErrWait(b, sc.ms(i)); err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
}
