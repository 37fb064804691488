package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"claudemesh/client"
)

// Fail-over (`bench --cluster N --failover`, issue 14): once a third of the
// sends are acked, the last node is killed with SIGKILL, as a machine that
// dies. Every peer that was connected to it finds its connection gone and
// dials the other nodes' URLs in turn (the next one after the node it was
// on first), waiting before each dial the jittered backoff a client's
// presence waits after a drop (client.Backoff: 1 s ± 20 %, then 2, 4, …,
// capped by CLAUDEMESH_BACKOFF_MAX). Its sender sends again, with the same
// ids, whatever was not acked; its recipient gets what was queued for it
// there. The run measures, per affected client, the time from the kill
// until its new connection's hello_ack, and checks that every acked send
// reached its recipient exactly once: one message id per send however often
// it was pushed.
//
// This build's clients know one broker URL (MeshIdentity.BrokerURL), so
// the bench redials the node list itself, as a client with several broker
// URLs would; the report says so.

// The node --failover kills (Config.Kill).
const (
	KillLeader   = "leader"
	KillFollower = "follower"
)

// RedialPolicy describes, in the report, how the bench's clients fail over.
const RedialPolicy = "the bench redials the other nodes' URLs in turn, waiting client.Backoff before each dial (1 s ± 20 % first; cap CLAUDEMESH_BACKOFF_MAX or 30 s); this build's clients hold one broker URL and do not fail over themselves"

// FailoverResult is what the fail-over part of a run measured.
type FailoverResult struct {
	KilledNode string `json:"killedNode"`
	// KilledRole is "leader" when the killed node led the replicated log,
	// "follower" when it did not ("unknown" if the nodes did not say).
	KilledRole string `json:"killedRole"`
	// KilledAtSec is when the node was killed, from the first send.
	KilledAtSec     float64 `json:"killedAtSec"`
	AckedBeforeKill int64   `json:"ackedBeforeKill"`
	// Clients were connected to the killed node; Reconnected of them were
	// connected to another node by the end.
	Clients     int `json:"clients"`
	Reconnected int `json:"reconnected"`
	// ReconnectMs is, per affected client, the time from the kill until
	// the hello_ack of its new connection; DetectMs until its old
	// connection was seen to be gone.
	ReconnectMs Percentiles `json:"reconnectMs"`
	DetectMs    Percentiles `json:"detectMs"`
	// WritesBackMs is the time from the kill until the first ack of a send
	// made after it: how long the cluster took writes nowhere (a dead
	// leader's election); 0 if no send was made after the kill.
	WritesBackMs float64 `json:"writesBackMs"`
	// AfterKillPushMs is send→push of the sends made after the kill, to
	// the killed node's clients (Affected) and to the others (Others): a
	// client that came back can lag behind the live traffic.
	AfterKillPushMs struct {
		Affected Percentiles `json:"affected"`
		Others   Percentiles `json:"others"`
	} `json:"afterKillPushMs"`
	// Dials counts the affected clients' dials, failed ones included.
	Dials int64 `json:"dials"`
	// Resent counts sends sent again (same id) on a new connection because
	// the old one died before their ack.
	Resent int64 `json:"resent"`
	// Acked sends, of which Lost never reached their recipient and
	// Doubled reached it under two message ids. Both must be 0.
	Acked   int64 `json:"acked"`
	Lost    int64 `json:"lost"`
	Doubled int64 `json:"doubled"`
	// OtherDrops counts connections to live nodes that dropped (and were
	// redialed too); a healthy run has none.
	OtherDrops int64 `json:"otherDrops"`
	// BackoffMaxMs is the backoff cap the redials used.
	BackoffMaxMs float64 `json:"backoffMaxMs"`
	Policy       string  `json:"policy"`
}

// liveConn is a peer's current connection in a fail-over run, which the
// redialer replaces when it dies.
type liveConn struct {
	mu      sync.Mutex
	conn    *client.Conn
	node    int
	changed chan struct{} // closed when conn is replaced
	all     []*client.Conn

	// Owned by the redialer; read after shutdown.
	dropNs, backNs int64 // of the last drop and reconnection
	dials          int64
	drops          int64
}

func newLiveConn(c *client.Conn, node int) *liveConn {
	return &liveConn{conn: c, node: node, changed: make(chan struct{}), all: []*client.Conn{c}}
}

func (l *liveConn) get() (*client.Conn, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn, l.changed
}

func (l *liveConn) set(c *client.Conn, node int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conn, l.node = c, node
	l.all = append(l.all, c)
	close(l.changed)
	l.changed = make(chan struct{})
}

// conns is every connection the peer has had, for shutdown.
func (l *liveConn) conns() []*client.Conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*client.Conn(nil), l.all...)
}

// connNow is the peer's current connection.
func (p *peer) connNow() *client.Conn {
	if p.live != nil {
		c, _ := p.live.get()
		return c
	}
	return p.conn
}

// awaitNewConn waits until the peer's connection is no longer old; false
// when the run is shutting down or ctx ends first.
func (r *run) awaitNewConn(ctx context.Context, p *peer, old *client.Conn) bool {
	for {
		c, changed := p.live.get()
		if c != old {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-r.redialCtx.Done():
			return false
		}
	}
}

// backoffMax is the redial backoff cap: the config's, else what a
// client's presence uses.
func (r *run) backoffMax() time.Duration {
	if d := r.cfg.FailoverBackoffMax; d > 0 {
		return d
	}
	if d := client.BackoffMaxFromEnv(); d > 0 {
		return d
	}
	return client.DefaultBackoffMax
}

// redial keeps peer p connected for the rest of the run: each time its
// connection ends it dials the next node's URL after a backoff, as a
// client's presence does after a drop.
func (r *run) redial(p *peer) {
	defer r.redialers.Done()
	ctx := r.redialCtx
	for {
		c, _ := p.live.get()
		select {
		case <-c.Done():
		case <-ctx.Done():
			return
		}
		drop := r.now()
		p.live.mu.Lock()
		node := p.live.node
		p.live.mu.Unlock()
		for attempt := 0; ; attempt++ {
			if sleep(ctx, client.Backoff(attempt, r.backoffMax())) != nil {
				return
			}
			node = (node + 1) % len(r.nodes)
			id := p.ident
			id.BrokerURL = r.nodeURL(node)
			p.live.dials++
			nc, err := client.Dial(ctx, id, p.dialOpts)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				continue
			}
			p.live.dropNs, p.live.backNs = drop, r.now()
			p.live.drops++
			p.live.set(nc, node)
			break
		}
	}
}

// startKiller kills a node once a third of totalSends are acked (at once
// if there are none) and returns a wait for it: the node that leads the
// replicated log (KillLeader, the default: every write goes through it, so
// its death stalls writes for a RAFT election) or the last node that does
// not (KillFollower).
func (r *run) startKiller(ctx context.Context, totalSends int64) (wait func()) {
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for r.acked.Load() < totalSends/3 {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			case <-r.redialCtx.Done():
				return
			}
		}
		victim, role := r.fo.victim, r.fo.role
		if role == KillLeader {
			// The leader chosen before the clock started, unless the
			// nodes now say another one leads.
			if l, ok := r.logLeader(ctx); ok {
				victim = l
			}
		}
		r.fo.ackedBeforeKill = r.acked.Load()
		r.fo.killNs = r.now()
		r.fo.victim = victim
		for _, p := range r.peers {
			if r.nodeOf(p.idx) == victim {
				r.fo.affected = append(r.fo.affected, p)
			}
		}
		r.killNode(victim)
		r.killed.Store(true)
		r.progressf("node %s killed", nodeID(victim))
	})
	return wg.Wait
}

// planVictim chooses, before the clock starts, the node to kill
// (startKiller checks again, without waiting, that the leader is the
// same).
func (r *run) planVictim(ctx context.Context) {
	r.progressf("asking the nodes which one leads the log")
	r.fo.victim, r.fo.role = r.pickVictim(ctx)
}

// pickVictim finds the node to kill from the nodes' claudemesh_cluster_log_leader
// gauges (polled by each node every 2 s, so it waits up to half a minute
// for exactly one leader). Without an answer it takes the last node, role
// "unknown".
func (r *run) pickVictim(ctx context.Context) (int, string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, ok := r.logLeader(ctx)
		if ok {
			if r.cfg.Kill != KillFollower {
				return leader, KillLeader
			}
			for i := len(r.nodes) - 1; i >= 0; i-- {
				if i != leader {
					return i, KillFollower
				}
			}
		}
		if time.Now().After(deadline) || sleep(ctx, 100*time.Millisecond) != nil {
			r.warnf("could not tell which node leads the log; killing the last one")
			return len(r.nodes) - 1, "unknown"
		}
	}
}

// logLeader is the node whose metrics say it leads the log, when exactly
// one of the live nodes says so.
func (r *run) logLeader(ctx context.Context) (int, bool) {
	leader, n := -1, 0
	for i, c := range r.nodes {
		if r.nodeRes[i].Killed || c.metrics == "" {
			continue
		}
		v, err := metricValue(ctx, c.metrics, "claudemesh_cluster_log_leader")
		if err != nil {
			return -1, false
		}
		if v == 1 {
			leader, n = i, n+1
		}
	}
	return leader, n == 1
}

// metricValue reads one unlabelled metric from a node's /metrics.
func metricValue(ctx context.Context, addr, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s has no %s", addr, name)
}

// failoverState is what the killer recorded; written before the kill,
// read after the killer is done.
type failoverState struct {
	victim          int
	role            string
	killNs          int64
	ackedBeforeKill int64
	affected        []*peer
}

// collectFailover summarises the fail-over, after shutdown.
func (r *run) collectFailover(res *Result, startNs int64) {
	if r.fo.killNs == 0 {
		r.warnf("no node was killed: the run ended before a third of its sends were acked")
		res.Failover = &FailoverResult{Policy: RedialPolicy, BackoffMaxMs: nsToMs(int64(r.backoffMax()))}
		return
	}
	fr := &FailoverResult{KilledNode: nodeID(r.fo.victim), KilledRole: r.fo.role, KilledAtSec: round(time.Duration(r.fo.killNs-startNs).Seconds(), 3),
		AckedBeforeKill: r.fo.ackedBeforeKill, Clients: len(r.fo.affected),
		BackoffMaxMs: nsToMs(int64(r.backoffMax())), Policy: RedialPolicy}
	var back, detect []int64
	affected := map[*peer]bool{}
	for _, p := range r.fo.affected {
		affected[p] = true
		fr.Dials += p.live.dials
		if p.live.backNs > 0 {
			fr.Reconnected++
			back = append(back, p.live.backNs-r.fo.killNs)
			detect = append(detect, p.live.dropNs-r.fo.killNs)
		}
	}
	var afterAffected, afterOthers []int64
	for _, p := range r.peers {
		if !affected[p] {
			fr.OtherDrops += p.live.drops
			afterOthers = append(afterOthers, p.afterKillNs...)
		} else {
			afterAffected = append(afterAffected, p.afterKillNs...)
		}
		fr.Resent += p.resent
	}
	fr.AfterKillPushMs.Affected, fr.AfterKillPushMs.Others = summarize(afterAffected).short(), summarize(afterOthers).short()
	fr.ReconnectMs, fr.DetectMs = summarize(back).short(), summarize(detect).short()
	if at := r.writesBack.Load(); at > 0 {
		fr.WritesBackMs = nsToMs(at - r.fo.killNs)
	}
	if fr.Reconnected < fr.Clients {
		r.warnf("%d of the %d clients of the killed node never connected again", fr.Clients-fr.Reconnected, fr.Clients)
	}
	if fr.OtherDrops > 0 {
		r.warnf("%d connections to nodes that were not killed dropped too (and were redialed)", fr.OtherDrops)
	}
	// Every acked send must have reached its target, under one message id.
	for _, s := range r.senders {
		for seq, ok := range s.ackedSeq {
			if !ok {
				continue
			}
			fr.Acked++
			ids := r.peers[s.targets[seq]].bySend[sendKey(s.idx, seq)]
			switch {
			case len(ids) == 0:
				fr.Lost++
			case len(ids) > 1:
				fr.Doubled++
			}
		}
	}
	if fr.Lost > 0 || fr.Doubled > 0 {
		r.warnf("of %d acked sends, %d never arrived and %d arrived under two message ids", fr.Acked, fr.Lost, fr.Doubled)
	}
	res.Failover = fr
}

// sendKey names send seq of peer idx in a recipient's bySend.
func sendKey(idx, seq int) uint64 { return uint64(idx)<<32 | uint64(seq) }
