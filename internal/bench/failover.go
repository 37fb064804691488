package bench

import (
	"context"
	"errors"
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
// sends are acked, one node is killed with SIGKILL, as a machine that dies.
// Each peer is connected through a client.Presence, the reconnecting
// connection the daemon keeps per mesh: the one whose node died fails over
// to the other nodes' URLs (learned from hello_ack; the nodes run with
// --public-urls) after client.FailoverBackoff, as every client of this
// build does. Its sender sends again, with the same ids, whatever was not
// acked; its recipient gets what was queued for it there. The run measures,
// per affected client, the time from the kill until its presence is open
// again on another node, and checks that every acked send reached its
// recipient exactly once: one message id per send however often it was
// pushed.

// The node --failover kills (Config.Kill).
const (
	KillLeader   = "leader"
	KillFollower = "follower"
)

// RedialPolicy describes, in the report, how the bench's clients fail over.
const RedialPolicy = "client.Presence, as the daemon runs it: the other nodes' URLs from hello_ack; after a drop client.FailoverBackoff (uniform in [0, 1 s] first, cap CLAUDEMESH_BACKOFF_MAX or 30 s), then the other URLs from a random one (or the one that last worked in this process), the dropped one last"

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
	// Resent counts sends sent again (same id) on a new connection because
	// the old one died before their ack.
	Resent int64 `json:"resent"`
	// Acked sends, of which Lost never reached their recipient and
	// Doubled reached it under two message ids. Both must be 0.
	Acked   int64 `json:"acked"`
	Lost    int64 `json:"lost"`
	Doubled int64 `json:"doubled"`
	// LostQueued of the lost were still in their recipient's queue on the
	// node it was connected to when the run ended (fetch_queued): stored,
	// but never pushed. LostExamples describe a few lost sends.
	LostQueued   int64    `json:"lostQueued,omitempty"`
	LostExamples []string `json:"lostExamples,omitempty"`
	// DuplicateAcks counts acked sends the broker answered as duplicates
	// (sent again after a connection died before their ack, and stored
	// the first time); DuplicateAckExamples describe a few, with when the
	// send first reached its recipient.
	DuplicateAcks        int64    `json:"duplicateAcks"`
	DuplicateAckExamples []string `json:"duplicateAckExamples,omitempty"`
	// Accepted is the deliveries the drain waited for (deliveriesOf the
	// acks), DeliveredAtDrainEnd how many had arrived when it stopped
	// waiting, DrainTimedOut whether it stopped because the drain window
	// ended.
	Accepted            int64 `json:"accepted"`
	DeliveredAtDrainEnd int64 `json:"deliveredAtDrainEnd"`
	DrainTimedOut       bool  `json:"drainTimedOut,omitempty"`
	// OtherDrops counts connections to live nodes that dropped (and were
	// redialed too); a healthy run has none.
	OtherDrops int64 `json:"otherDrops"`
	// BackoffMaxMs is the backoff cap the redials used.
	BackoffMaxMs float64 `json:"backoffMaxMs"`
	Policy       string  `json:"policy"`
}

// liveConn is a peer's connection in a fail-over run: a client.Presence,
// the reconnecting connection the daemon keeps per mesh, which fails over
// to the other nodes' URLs when its node dies.
type liveConn struct {
	pres *client.Presence

	mu             sync.Mutex
	open, everOpen bool
	dropNs, backNs int64 // of the last drop and reconnection
	drops          int64 // reconnections after a drop
}

// startLive connects peer p through a presence and waits until it is open.
// Its identity names only the peer's own node: the presence learns the
// others from hello_ack (the nodes run with --public-urls), as a client
// whose invite named one URL does, so the peers stay spread round-robin
// however the presence orders URLs it has seen work.
func (r *run) startLive(ctx context.Context, p *peer, id client.MeshIdentity, opts client.DialOptions) (*client.Conn, error) {
	l := &liveConn{}
	p.live = l
	l.pres = client.StartPresence(r.presCtx, id, opts, client.PresenceOptions{
		BackoffMax: r.backoffMax(),
		OnState:    func(s client.State, _ error) { l.onState(r, s) },
	})
	st, err := l.pres.WaitState(ctx, client.StateOpen)
	if st != client.StateOpen {
		if err == nil {
			err = fmt.Errorf("presence %s", st)
		}
		return nil, err
	}
	if c := l.pres.Conn(); c != nil {
		return c, nil
	}
	return nil, errors.New("the presence closed as soon as it opened")
}

// onState records drops and reconnections (it runs on the presence's
// goroutine).
func (l *liveConn) onState(r *run, s client.State) {
	if r.stopping.Load() {
		return
	}
	now := r.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case client.StateReconnecting:
		if l.open {
			l.open, l.dropNs = false, now
		}
	case client.StateOpen:
		if l.everOpen {
			l.backNs = now
			l.drops++
		}
		l.open, l.everOpen = true, true
	}
}

func (l *liveConn) times() (dropNs, backNs, drops int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropNs, l.backNs, l.drops
}

// connNow is the peer's current connection (nil while its presence
// reconnects).
func (p *peer) connNow() *client.Conn {
	if p.live != nil {
		return p.live.pres.Conn()
	}
	return p.conn
}

// awaitNewConn waits until the peer's presence has an open connection
// other than old; false when the run is shutting down or ctx ends first.
func (r *run) awaitNewConn(ctx context.Context, p *peer, old *client.Conn) bool {
	for {
		changed := p.live.pres.Changed()
		if c := p.live.pres.Conn(); c != nil && c != old {
			return true
		}
		select {
		case <-changed:
		case <-p.live.pres.Done():
			return false
		case <-ctx.Done():
			return false
		case <-r.redialCtx.Done():
			return false
		}
	}
}

// backoffMax is the presences' backoff cap: the config's, else what a
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
	// What the drain saw when it stopped waiting (measure).
	accepted, deliveredAtDrainEnd int64
	drainTimedOut                 bool
}

// sendNote is what a sender learned of one send in a fail-over run, for
// describing it if it is lost.
type sendNote struct {
	id    string // its clientMessageId (every attempt's)
	tries []int  // the nodes it was handed to, in order
	// Of the ack: the node that sent it (-1 none), the message id, and
	// its duplicate flag and pending count (-1 absent).
	ackNode   int
	ackNs     int64 // when (ns since base)
	messageID string
	duplicate bool
	pending   int
}

// describe is the note for a report.
func (n *sendNote) describe() string {
	var tries []string
	for i := 0; i < len(n.tries); {
		j := i + 1
		for j < len(n.tries) && n.tries[j] == n.tries[i] {
			j++
		}
		t := nodeName(n.tries[i])
		if j-i > 1 {
			t += fmt.Sprintf(" ×%d", j-i)
		}
		tries = append(tries, t)
		i = j
	}
	kind := "a fresh ack"
	if n.duplicate {
		kind = "a duplicate ack (stored before)"
	}
	return fmt.Sprintf("id %s, sent to %s, %s from %s: message %s, pending %d",
		n.id, strings.Join(tries, ","), kind, nodeName(n.ackNode), n.messageID, n.pending)
}

// nodeOfConn is the node a connection is to (-1 if none matches).
func (r *run) nodeOfConn(c *client.Conn) int {
	u := c.Identity().BrokerURL
	for i, n := range r.nodes {
		if n.url == u {
			return i
		}
	}
	return -1
}

func nodeName(i int) string {
	if i < 0 {
		return "?"
	}
	return nodeID(i)
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
		BackoffMaxMs: nsToMs(int64(r.backoffMax())), Policy: RedialPolicy,
		Accepted: r.fo.accepted, DeliveredAtDrainEnd: r.fo.deliveredAtDrainEnd, DrainTimedOut: r.fo.drainTimedOut}
	var back, detect []int64
	affected := map[*peer]bool{}
	for _, p := range r.fo.affected {
		affected[p] = true
		if dropNs, backNs, _ := p.live.times(); backNs > dropNs && dropNs >= r.fo.killNs {
			fr.Reconnected++
			back = append(back, backNs-r.fo.killNs)
			detect = append(detect, dropNs-r.fo.killNs)
		}
	}
	var afterAffected, afterOthers []int64
	for _, p := range r.peers {
		if !affected[p] {
			_, _, drops := p.live.times()
			fr.OtherDrops += drops
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
			to := r.peers[s.targets[seq]]
			if n := &s.notes[seq]; n.duplicate {
				fr.DuplicateAcks++
				if len(fr.DuplicateAckExamples) < 10 {
					pushed := "never pushed"
					if at, ok := to.firstPushNs[sendKey(s.idx, seq)]; ok {
						pushed = fmt.Sprintf("first pushed %+.3f s from the kill", time.Duration(at-r.fo.killNs).Seconds())
					}
					fr.DuplicateAckExamples = append(fr.DuplicateAckExamples, fmt.Sprintf("peer %d send %d → peer %d: acked %+.3f s from the kill, %s; %s",
						s.idx, seq, to.idx, time.Duration(n.ackNs-r.fo.killNs).Seconds(), pushed, n.describe()))
				}
			}
			ids := to.bySend[sendKey(s.idx, seq)]
			switch {
			case len(ids) == 0:
				fr.Lost++
				_, queued := to.leftover[sendKey(s.idx, seq)]
				if queued {
					fr.LostQueued++
				}
				if len(fr.LostExamples) < 10 {
					where := "not in its queue at the end"
					switch {
					case queued:
						where = "still queued for it at the end"
					case to.leftover == nil:
						where = "its queue was not read at the end"
					}
					fr.LostExamples = append(fr.LostExamples, fmt.Sprintf(
						"peer %d (%s%s) → peer %d (%s%s), send %d, sent %+.3f s from the kill; %s; %s",
						s.idx, nodeID(r.nodeOf(s.idx)), movedNote(affected[s]), to.idx, nodeID(r.nodeOf(to.idx)), movedNote(affected[to]),
						seq, time.Duration(s.sendAt[seq].Load()-r.fo.killNs).Seconds(), s.notes[seq].describe(), where))
				}
			case len(ids) > 1:
				fr.Doubled++
			}
		}
	}
	if fr.Lost > 0 || fr.Doubled > 0 {
		r.warnf("of %d acked sends, %d never arrived and %d arrived under two message ids (the drain waited for %d deliveries and stopped with %d delivered%s): %s",
			fr.Acked, fr.Lost, fr.Doubled, fr.Accepted, fr.DeliveredAtDrainEnd, map[bool]string{true: ", timed out"}[fr.DrainTimedOut],
			strings.Join(fr.LostExamples, " | "))
	}
	res.Failover = fr
}

func movedNote(moved bool) string {
	if moved {
		return ", moved"
	}
	return ""
}

// fetchLeftovers asks, when deliveries are missing after the drain, every
// peer's node for what is still queued for it (fetch_queued, nothing
// settled), so collectFailover can tell a message stored but never pushed
// from one that is gone.
func (r *run) fetchLeftovers(ctx context.Context, accepted int64) {
	// Every acked send is one DM (a fail-over run sends no broadcasts):
	// fewer deliveries than acked sends is a miss too, whatever the acks
	// counted.
	if d := r.delivered.Load(); d >= accepted && d >= r.acked.Load() {
		return
	}
	var wg sync.WaitGroup
	for _, p := range r.peers {
		c := p.connNow()
		if c == nil {
			continue
		}
		p.leftover = map[uint64]struct{}{}
		wg.Go(func() {
			for range 40 {
				fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				res, err := c.FetchQueued(fctx, 500)
				cancel()
				if err != nil {
					return
				}
				for _, m := range res.Messages {
					if m.Push == nil {
						continue
					}
					if sender := r.byPubkey[m.Push.SenderPubkey]; sender != nil {
						if seq, ok := parseSendID(m.Push.ClientMessageID, sender.idx); ok {
							p.leftover[sendKey(sender.idx, seq)] = struct{}{}
						}
					}
				}
				if !res.More {
					return
				}
			}
		})
	}
	wg.Wait()
}

// sendKey names send seq of peer idx in a recipient's bySend.
func sendKey(idx, seq int) uint64 { return uint64(idx)<<32 | uint64(seq) }
