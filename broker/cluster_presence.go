package broker

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"claudemesh/wire"
)

// Presence across the nodes of a cluster (issue 14).
//
// Presence is not in the replicated log: it changes with every connect and
// profile frame, and a node that dies takes its connections with it. Each
// node instead tells the others, over one core NATS subject, of the
// presences its connections hold: "up" when one starts, re-attaches,
// drops into its grace period or changes its session profile, "end" when it
// ends. Every node keeps the whole mesh's presences, each tagged with the
// node that owns it, so list_peers, members_list's online and the
// peer_joined / peer_left events are the same on every node.
//
//   - Order and loss: a node numbers what it publishes (seq); one
//     publisher's messages reach a subscriber in order, so a gap means
//     loss, and the receiver then asks the owner for its whole table
//     (a snapshot) and reconciles. Heartbeats carry the owner's seq too,
//     so a lost last message is noticed within a heartbeat.
//   - One presence per identity across nodes: a node that attaches an
//     identity another node holds takes the presence over silently (as a
//     re-attach within the grace period on one node) with a newer stamp;
//     the old owner closes its connection with session_replaced. When two
//     nodes attach the same identity at once, the newer stamp wins on both.
//   - A dead node: one silent for clusterDeadAfter heartbeats is taken
//     for dead, and its presences get the grace period (--grace); one that
//     reconnects elsewhere within it is taken over, the others end with
//     peer_left. A node that comes back is asked for its table, which
//     cancels the grace of what it still holds. A node that restarted
//     (another epoch) holds nothing of its former self: the presences of
//     its former epoch are left to their grace.
//   - Causality: an "up" carries the log sequence its owner had applied, so
//     a receiver first applies the log that far (the member may have
//     joined on that node a moment ago).

const (
	clusterDeadAfter   = 4 // heartbeats missed
	clusterSyncTimeout = 3 * time.Second
	clusterWaitLog     = 5 * time.Second
)

// presMsg is one message on the presence subject.
type presMsg struct {
	Kind   string   `json:"k"` // up, end, hb
	Node   string   `json:"n"`
	Epoch  string   `json:"e"`
	Seq    uint64   `json:"s"`
	LogSeq uint64   `json:"l,omitempty"`
	Mesh   string   `json:"m,omitempty"`
	P      *presDTO `json:"p,omitempty"`
}

// presSnapshot is a node's answer to a sync request: every presence it
// owns, as of its seq.
type presSnapshot struct {
	Node    string      `json:"n"`
	Epoch   string      `json:"e"`
	Seq     uint64      `json:"s"`
	LogSeq  uint64      `json:"l"`
	Entries []presEntry `json:"p"`
}

type presEntry struct {
	Mesh string   `json:"m"`
	P    *presDTO `json:"p"`
}

// presDTO is a presence as the other nodes need it.
type presDTO struct {
	Key          string            `json:"key"`
	ID           string            `json:"id"`
	Pubkey       string            `json:"pubkey"`
	MemberPubkey string            `json:"member"`
	Session      bool              `json:"session,omitempty"`
	Role         string            `json:"role,omitempty"`
	SessionID    string            `json:"sessionId,omitempty"`
	DisplayName  string            `json:"displayName,omitempty"`
	PeerType     string            `json:"peerType,omitempty"`
	Channel      string            `json:"channel,omitempty"`
	Model        string            `json:"model,omitempty"`
	Cwd          string            `json:"cwd,omitempty"`
	Hostname     string            `json:"hostname,omitempty"`
	Pid          int               `json:"pid,omitempty"`
	Groups       []wire.Group      `json:"groups,omitempty"`
	Status       string            `json:"status,omitempty"`
	StatusAt     int64             `json:"statusAt,omitempty"`
	Summary      string            `json:"summary,omitempty"`
	Hidden       bool              `json:"hidden,omitempty"`
	Attestation  *wire.Attestation `json:"attestation,omitempty"`
	ConnectedAt  int64             `json:"connectedAt"`
	Stamp        int64             `json:"stamp"`
	Connected    bool              `json:"connected,omitempty"`
}

// peerNode is what this node knows of another.
type peerNode struct {
	epoch     string
	seq       uint64
	lastHeard time.Time
	dead      bool
	needSync  bool
}

// clusterPresence is this node's part of the cluster's presence table.
type clusterPresence struct {
	b       *Broker
	node    string
	epoch   string
	subject string
	nc      *nats.Conn
	hb      time.Duration

	pubMu sync.Mutex // orders seq with publishing
	seq   uint64

	in    chan *nats.Msg
	subs  []*nats.Subscription
	nodes map[string]*peerNode // owned by run
	// aliveN is how many of them are not taken for dead, for metrics;
	// running says which are (recordedElsewhere).
	aliveMu  sync.Mutex
	aliveN   int
	running  map[string]bool
	started  time.Time
	stop     chan struct{}
	done     chan struct{}
	beatDone chan struct{} // closed when beat returns
}

func presenceSubject(cluster string) string { return "claudemesh." + cluster + ".presence" }
func presenceSyncSubject(cluster, node string) string {
	return "claudemesh." + cluster + ".presence.sync." + node
}

// startClusterPresence subscribes and starts the heartbeat. The hub must
// be loaded.
func (b *Broker) startClusterPresence() error {
	cc := b.cfg.Cluster
	hb := b.cfg.ClusterHeartbeat
	if hb <= 0 {
		hb = time.Second
	}
	cp := &clusterPresence{
		b: b, node: cc.NodeID, epoch: newID(), subject: presenceSubject(cc.Name),
		nc: b.node.Conn(), hb: hb, in: make(chan *nats.Msg, 1<<16),
		nodes: map[string]*peerNode{}, stop: make(chan struct{}), done: make(chan struct{}),
		beatDone: make(chan struct{}), started: time.Now(),
	}
	sub, err := cp.nc.ChanSubscribe(cp.subject, cp.in)
	if err != nil {
		return err
	}
	// A slow node drops messages rather than stall the connection: the
	// gap is noticed and repaired with a snapshot.
	sub.SetPendingLimits(1<<16, 256<<20)
	syncSub, err := cp.nc.Subscribe(presenceSyncSubject(cc.Name, cc.NodeID), cp.answerSync)
	if err != nil {
		sub.Unsubscribe()
		return err
	}
	cp.subs = []*nats.Subscription{sub, syncSub}
	b.cpres = cp
	go cp.run()
	go cp.beat()
	// Others learn of this node (and ask for its table) from its first
	// heartbeat; send one now rather than in a second.
	cp.publish(&presMsg{Kind: "hb"})
	return nil
}

func (cp *clusterPresence) close() {
	if cp == nil {
		return
	}
	for _, s := range cp.subs {
		s.Unsubscribe()
	}
	close(cp.stop)
	<-cp.done
	<-cp.beatDone
}

// publish numbers and sends one message. Callers may hold a mesh lock.
func (cp *clusterPresence) publish(m *presMsg) {
	m.Node, m.Epoch = cp.node, cp.epoch
	if cp.b.engine != nil {
		m.LogSeq = cp.b.engine.Applied()
	}
	cp.pubMu.Lock()
	defer cp.pubMu.Unlock()
	if m.Kind != "hb" {
		cp.seq++
	}
	m.Seq = cp.seq
	data, err := json.Marshal(m)
	if err != nil {
		return
	}
	if err := cp.nc.Publish(cp.subject, data); err != nil {
		cp.b.log.Debug("cluster: presence not published", "err", err)
	}
}

// up tells the cluster of a local presence. Caller holds ms.mu.
func (cp *clusterPresence) up(ms *meshState, p *presence) {
	if cp == nil || p.node != "" {
		return
	}
	cp.publish(&presMsg{Kind: "up", Mesh: ms.id, P: presOut(p)})
}

// end tells the cluster a local presence ended. Caller holds ms.mu.
func (cp *clusterPresence) end(ms *meshState, p *presence) {
	if cp == nil || p.node != "" {
		return
	}
	cp.publish(&presMsg{Kind: "end", Mesh: ms.id, P: &presDTO{Key: p.key, Stamp: p.stamp}})
}

func presOut(p *presence) *presDTO {
	return &presDTO{
		Key: p.key, ID: p.id, Pubkey: p.pubkey, MemberPubkey: p.member.Pubkey, Session: p.session,
		Role: p.role, SessionID: p.sessionID, DisplayName: p.displayName, PeerType: p.peerType,
		Channel: p.channel, Model: p.model, Cwd: p.cwd, Hostname: p.hostname, Pid: p.pid,
		Groups: p.groups, Status: p.status, StatusAt: p.statusAt.UnixMilli(), Summary: p.summary,
		Hidden: p.hidden, Attestation: p.attestation, ConnectedAt: p.connectedAt, Stamp: p.stamp,
		Connected: p.conn != nil,
	}
}

// answerSync sends this node's table.
func (cp *clusterPresence) answerSync(m *nats.Msg) {
	snap := presSnapshot{Node: cp.node, Epoch: cp.epoch}
	if cp.b.engine != nil {
		snap.LogSeq = cp.b.engine.Applied()
	}
	// The seq first: anything published while the table is read is in
	// the snapshot and will be replayed too, which is harmless (up and
	// end are idempotent).
	cp.pubMu.Lock()
	snap.Seq = cp.seq
	cp.pubMu.Unlock()
	for _, ms := range cp.b.hub.meshList() {
		ms.mu.Lock()
		for _, p := range ms.presences {
			if p.node == "" {
				snap.Entries = append(snap.Entries, presEntry{Mesh: ms.id, P: presOut(p)})
			}
		}
		ms.mu.Unlock()
	}
	data, err := json.Marshal(&snap)
	if err == nil {
		m.Respond(data)
	}
}

// beat publishes this node's heartbeat every interval, on its own
// goroutine: run may wait for the log (apply) or for another node (sync)
// for seconds, and a node busy that way is still alive — were the beat on
// run's loop, the other nodes would take it for dead and end its
// presences (seen after a node was killed: the two survivors took each
// other for silent).
func (cp *clusterPresence) beat() {
	defer close(cp.beatDone)
	tick := time.NewTicker(cp.hb)
	defer tick.Stop()
	for {
		select {
		case <-cp.stop:
			return
		case <-tick.C:
			cp.publish(&presMsg{Kind: "hb"})
		}
	}
}

// run applies the other nodes' messages in order and watches for dead
// nodes.
func (cp *clusterPresence) run() {
	defer close(cp.done)
	tick := time.NewTicker(cp.hb)
	defer tick.Stop()
	for {
		select {
		case <-cp.stop:
			return
		case <-tick.C:
			// Read what already arrived before judging who is silent: a
			// loop that was busy (waiting for the log or a sync) must not
			// take a node for dead on heartbeats still in its queue.
			cp.drain()
			cp.checkNodes(time.Now())
		case m := <-cp.in:
			cp.handle(m)
		}
	}
}

// drain handles the messages that were already queued when it started
// (not those arriving meanwhile, so a busy subject cannot keep it going).
func (cp *clusterPresence) drain() {
	for n := len(cp.in); n > 0; n-- {
		cp.handle(<-cp.in)
	}
}

// handle applies one message from the presence subject.
func (cp *clusterPresence) handle(m *nats.Msg) {
	var pm presMsg
	if json.Unmarshal(m.Data, &pm) != nil || pm.Node == cp.node || pm.Node == "" {
		return
	}
	cp.receive(&pm)
}

// receive applies one message from another node.
func (cp *clusterPresence) receive(m *presMsg) {
	n := cp.nodes[m.Node]
	if n == nil {
		n = &peerNode{epoch: m.Epoch, needSync: true}
		cp.nodes[m.Node] = n
	} else if n.epoch != m.Epoch {
		// The node restarted: what its former self held is gone, except
		// what reconnects within the grace period.
		cp.graceOf(m.Node, n.epoch)
		*n = peerNode{epoch: m.Epoch, needSync: true}
	}
	n.lastHeard = time.Now()
	if n.dead {
		n.dead, n.needSync = false, true
	}
	if !cp.isUp(m.Node) {
		cp.countAlive()
	}
	switch {
	case n.needSync:
	case m.Kind == "hb":
		n.needSync = m.Seq != n.seq
	case m.Seq <= n.seq:
		return // replayed by a snapshot already
	case m.Seq != n.seq+1:
		n.needSync = true
	default:
		n.seq = m.Seq
		cp.apply(m.Node, m.Epoch, m.Kind, m.Mesh, m.LogSeq, m.P)
		return
	}
	if n.needSync {
		cp.sync(m.Node, n)
	}
}

// sync asks a node for its table and reconciles with it.
func (cp *clusterPresence) sync(node string, n *peerNode) {
	reply, err := cp.nc.Request(presenceSyncSubject(cp.b.cfg.Cluster.Name, node), nil, clusterSyncTimeout)
	if err != nil {
		cp.b.log.Debug("cluster: presence sync", "node", node, "err", err)
		return // asked again at its next message
	}
	var snap presSnapshot
	if json.Unmarshal(reply.Data, &snap) != nil {
		return
	}
	if snap.Epoch != n.epoch {
		cp.graceOf(node, n.epoch)
		n.epoch = snap.Epoch
	}
	n.seq, n.needSync = snap.Seq, false
	held := map[string]map[string]bool{}
	for _, e := range snap.Entries {
		if held[e.Mesh] == nil {
			held[e.Mesh] = map[string]bool{}
		}
		held[e.Mesh][e.P.Key] = true
		cp.apply(node, snap.Epoch, "up", e.Mesh, snap.LogSeq, e.P)
	}
	// What the node no longer holds ended while this node missed it.
	for _, ms := range cp.b.hub.meshList() {
		ms.mu.Lock()
		for key, p := range ms.presences {
			// (Those of a former epoch are left to their grace.)
			if p.node == node && p.epoch == snap.Epoch && !held[ms.id][key] {
				ms.endPresence(p)
			}
		}
		ms.mu.Unlock()
	}
}

// apply applies an up or an end from node.
func (cp *clusterPresence) apply(node, epoch, kind, meshID string, logSeq uint64, d *presDTO) {
	if d == nil || d.Key == "" {
		return
	}
	b := cp.b
	// Visible, not only applied: what follows reads the hub (the member's
	// record), which the dispatcher fills after the file.
	if kind == "up" && b.engine != nil && !b.engine.WaitVisible(logSeq, clusterWaitLog) {
		b.log.Warn("cluster: a presence refers to log entries this node has not applied", "node", node, "logSeq", logSeq)
	}
	ms := b.hub.mesh(meshID)
	if ms == nil {
		return
	}
	var replaced *conn
	ms.mu.Lock()
	p := ms.presences[d.Key]
	switch kind {
	case "end":
		if p != nil && p.node == node && p.stamp <= d.Stamp {
			ms.endPresence(p)
		}
	case "up":
		mem := ms.members[d.MemberPubkey]
		if mem == nil || mem.RevokedAt != 0 {
			break
		}
		if p != nil && (d.Stamp < p.stamp || (d.Stamp == p.stamp && p.node == "" && node < cp.node)) {
			break // this node's (or another's) attach is newer
		}
		fresh := p == nil
		if fresh {
			p = &presence{key: d.Key}
			ms.presences[d.Key] = p
			if !d.Session {
				idx := ms.memberPresences[mem.Pubkey]
				if idx == nil {
					idx = map[string]*presence{}
					ms.memberPresences[mem.Pubkey] = idx
				}
				idx[d.Key] = p
			}
		} else {
			if p.grace != nil {
				p.grace.Stop()
				p.grace = nil
			}
			if p.node == "" && p.conn != nil {
				// The one-presence rule across nodes: the identity
				// attached on another node since.
				replaced = p.conn
				replaced.pres = nil
				ms.setConnLocked(p, nil)
				// Off this node's connection counts now, as a
				// takeover here does (uncountConnLocked).
				ms.uncountConnLocked(replaced)
			}
		}
		p.node, p.epoch, p.stamp, p.remoteUp = node, epoch, d.Stamp, d.Connected
		p.id, p.pubkey, p.member, p.session = d.ID, d.Pubkey, mem, d.Session
		p.role, p.sessionID, p.displayName, p.peerType = d.Role, d.SessionID, d.DisplayName, d.PeerType
		p.channel, p.model, p.cwd, p.hostname, p.pid = d.Channel, d.Model, d.Cwd, d.Hostname, d.Pid
		p.groups, p.status, p.statusAt, p.summary, p.hidden = d.Groups, d.Status, time.UnixMilli(d.StatusAt), d.Summary, d.Hidden
		p.attestation, p.connectedAt = d.Attestation, d.ConnectedAt
		if fresh {
			event := wire.EventPeerJoined
			if _, ok := ms.history[d.Key]; ok {
				event = wire.EventPeerReturned
			}
			ms.history[d.Key] = time.Now().UnixMilli()
			ms.broadcastSystem(event, p)
		}
	}
	host := ""
	if p != nil {
		host = p.hostname
	}
	ms.mu.Unlock()
	if replaced != nil {
		replaced.closeExplained(wire.CloseNormal, wire.ReasonReplaced, wire.ReasonReplaced, replacedText(host, ""))
	}
}

// checkNodes takes a node silent for clusterDeadAfter heartbeats for dead.
func (cp *clusterPresence) checkNodes(now time.Time) {
	defer cp.countAlive()
	for id, n := range cp.nodes {
		if !n.dead && now.Sub(n.lastHeard) > clusterDeadAfter*cp.hb {
			n.dead = true
			cp.b.log.Warn("cluster: node silent; its presences end after the grace period unless they reconnect", "node", id)
			cp.graceOf(id, "")
		}
	}
}

// countAlive records which nodes are not taken for dead. Run by run.
func (cp *clusterPresence) countAlive() {
	up := make(map[string]bool, len(cp.nodes))
	for id, p := range cp.nodes {
		up[id] = !p.dead
	}
	cp.aliveMu.Lock()
	cp.aliveN, cp.running = 0, up
	for _, u := range up {
		if u {
			cp.aliveN++
		}
	}
	cp.aliveMu.Unlock()
}

func (cp *clusterPresence) isUp(node string) bool {
	cp.aliveMu.Lock()
	defer cp.aliveMu.Unlock()
	return cp.running[node]
}

// recordedElsewhere reports whether a session recording (store.Session's
// Node) is another node's that runs: that node alone knows for sure
// whether a connection of it is open, and forgets it (expiry, eviction).
// This node's view of the others' presences may be stale (an "up" lost
// or late), and forgetting a session connected there dropped its queue.
// A node not heard from yet counts as running for as long as it takes to
// be taken for dead after a start.
func (cp *clusterPresence) recordedElsewhere(node string) bool {
	if cp == nil || node == "" || node == cp.node {
		return false
	}
	cp.aliveMu.Lock()
	defer cp.aliveMu.Unlock()
	if up, heard := cp.running[node]; heard {
		return up
	}
	return time.Since(cp.started) <= clusterDeadAfter*cp.hb
}

// graceOf starts the grace period of every presence a node (of one
// epoch, or any) owns.
func (cp *clusterPresence) graceOf(node, epoch string) {
	grace := cp.b.cfg.Grace
	for _, ms := range cp.b.hub.meshList() {
		ms.mu.Lock()
		for _, p := range ms.presences {
			if p.node != node || (epoch != "" && p.epoch != epoch) || p.grace != nil {
				continue
			}
			p.remoteUp = false
			p.grace = time.AfterFunc(grace, func() {
				ms.mu.Lock()
				defer ms.mu.Unlock()
				if ms.presences[p.key] == p && p.node == node && p.grace != nil {
					ms.endPresence(p)
				}
			})
		}
		ms.mu.Unlock()
	}
}

// online reports whether a presence has a live connection, on this node or
// (as its owner last said) on another.
func (p *presence) online() bool {
	if p.node != "" {
		return p.remoteUp
	}
	return p.conn != nil
}

// attachStamp orders the attaches of one identity across nodes: newer than
// any this node knows of it, and than the clock.
func attachStamp(prev *presence) int64 {
	s := time.Now().UnixNano()
	if prev != nil && prev.stamp >= s {
		s = prev.stamp + 1
	}
	return s
}

// cluster is the broker's presence exchange, nil on a single broker (and
// in tests that build a meshState by hand). Its methods accept nil.
func (ms *meshState) cluster() *clusterPresence {
	if ms.hub == nil {
		return nil
	}
	return ms.hub.b.cpres
}

// alive counts the nodes this one heard from lately, itself included.
func (cp *clusterPresence) alive() int {
	if cp == nil {
		return 0
	}
	cp.aliveMu.Lock()
	defer cp.aliveMu.Unlock()
	return 1 + cp.aliveN
}

// nodeID is this cluster node's id, "" on a single broker.
func (b *Broker) nodeID() string {
	if b.cfg.Cluster == nil {
		return ""
	}
	return b.cfg.Cluster.NodeID
}
