package cluster

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Turns: fairness between writers. A write is published only if the log
// still ends where the node's copy does; when another node appended first,
// the node applies that entry, runs its batch again and retries. Two nodes
// writing all the time do not take turns on their own: the one that learns
// of the other's entries later (its consumer delivers them a few
// milliseconds after they were written) or whose batch takes longer to run
// again loses every race. Measured on three nodes under load: batches that
// conflicted 60–200 times in a row and took 3–12 s, while the batch kept
// growing with the writes queued behind it (BENCHMARKS.md).
//
// So a node whose batch conflicted twice in a row asks for a turn: it
// publishes its name and how long it needs on the cluster's turn subject
// (core NATS, nothing stored), and every other node holds its next
// publishes until that node's entry reaches it or the time is up. Two
// nodes that ask at once: the one with the smaller name goes first (the
// other keeps holding for it while it waits for its own turn).

const (
	// turnAfter: consecutive conflicts of one batch before it asks.
	turnAfter = 2
	// turnMin and turnMax bound the hold a node asks for: twice what its
	// last attempt took.
	turnMin = 50 * time.Millisecond
	turnMax = time.Second
)

func turnSubject(cluster string) string { return "claudemesh." + cluster + ".turn" }

// turns is one node's side of it.
type turns struct {
	mu      sync.Mutex
	self    string
	holdFor string    // the node this one holds its publishes for
	until   time.Time // until then at most
	asking  bool      // this node asked for a turn and has not written yet
	wake    chan struct{}
	sub     *nats.Subscription
	asked   uint64 // turns this node asked for
	held    uint64 // holds this node honoured
}

func newTurns(self string) *turns { return &turns{self: self, wake: make(chan struct{}, 1)} }

// start subscribes to the other nodes' requests.
func (t *turns) start(nc *nats.Conn, cluster string) error {
	sub, err := nc.Subscribe(turnSubject(cluster), func(m *nats.Msg) {
		node, ms, ok := strings.Cut(string(m.Data), " ")
		d, err := strconv.Atoi(ms)
		if !ok || err != nil || node == t.self || d <= 0 {
			return
		}
		t.onRequest(node, min(time.Duration(d)*time.Millisecond, turnMax))
	})
	if err != nil {
		return err
	}
	t.sub = sub
	return nil
}

func (t *turns) stop() {
	if t.sub != nil {
		t.sub.Unsubscribe()
	}
}

func (t *turns) onRequest(node string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.asking && t.self < node {
		return // this node asked too and goes first
	}
	t.holdFor, t.until = node, time.Now().Add(d)
	t.held++
}

// ask publishes this node's request for a turn of d.
func (t *turns) ask(nc *nats.Conn, cluster string, d time.Duration) {
	d = min(max(d, turnMin), turnMax)
	t.mu.Lock()
	t.asking = true
	t.asked++
	t.mu.Unlock()
	nc.Publish(turnSubject(cluster), []byte(t.self+" "+strconv.FormatInt(d.Milliseconds(), 10)))
}

// wrote ends this node's request: its entry is in the log.
func (t *turns) wrote() {
	t.mu.Lock()
	t.asking = false
	t.mu.Unlock()
}

// applied notes an entry of node: a hold for it ends.
func (t *turns) applied(node string) {
	t.mu.Lock()
	if node != "" && node == t.holdFor {
		t.holdFor, t.until = "", time.Time{}
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
	t.mu.Unlock()
}

// holding reports how long this node should still hold its publishes.
func (t *turns) holding() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.holdFor == "" {
		return 0
	}
	d := time.Until(t.until)
	if d <= 0 {
		t.holdFor = ""
		return 0
	}
	return d
}

// writerOf is the node that wrote an entry, from its message id
// (node-start-seq; node names may contain '-', the other two parts not).
func writerOf(msgID string) string {
	i := strings.LastIndexByte(msgID, '-')
	if i <= 0 {
		return ""
	}
	j := strings.LastIndexByte(msgID[:i], '-')
	if j <= 0 {
		return ""
	}
	return msgID[:j]
}
