package daemon

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/time/rate"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// The directory is each mesh's members and presences as last known, which
// sends resolve names, prefixes and groups against (03-daemon "Outbox"
// step 3). It is fetched whole at every hello_ack, then kept current from
// the broker's system pushes themselves: member_changed for the member
// list, peer_joined / peer_returned / peer_left for presences. A burst of
// presence events never costs a list_peers each (issue 12 item 6): they
// are applied in memory, the copy in daemon.db is written at most once per
// persistEvery, and one full list_peers — for what the events do not carry
// (groups, status) — follows refreshDelay after the first event, and at
// most once per refreshMinInterval (Options; 2 s and 10 s).
const (
	persistEvery = time.Second
	// Defaults of Options.refreshDelay and refreshMinInterval.
	defaultRefreshDelay       = 2 * time.Second
	defaultRefreshMinInterval = 10 * time.Second
	// fetchTimeout bounds one members_list + list_peers exchange.
	fetchTimeout = 10 * time.Second
)

// errNotConnected: the broker cannot be asked right now.
var errNotConnected = errors.New("the mesh is not connected")

// dirState is the directory's bookkeeping in meshRT (guarded by meshRT.mu,
// except fetchMu, which serialises fetches).
type dirState struct {
	cache meshCache
	// resolver is cache indexed for resolving targets, made when first
	// needed after each change (resolver()): each send used to index the
	// whole mesh again, ~2 ms in a mesh of 1,000 members.
	resolver *client.Directory
	// names is cache's member names indexed for senderMarks, made when
	// first needed after each change (like resolver).
	names *memberNames
	// dirDirty: the cache changed since it was last written to daemon.db.
	dirDirty bool
	// refreshDue is when presence events asked for a full list_peers
	// (zero: none pending); lastRefresh when the last full fetch ended.
	refreshDue, lastRefresh time.Time
	// lastFetchStart lets concurrent misses share one fetch.
	lastFetchStart time.Time
	// fetchLimit paces the fetches of liveDirectory (liveFetchRate).
	fetchLimit *rate.Limiter
	// failedFetchStart and failedFetchErr: the last fetch that failed,
	// for the callers that waited for it (liveDirectory).
	failedFetchStart time.Time
	failedFetchErr   error
	fetchMu          sync.Mutex
	dirWake          chan struct{}
	// fetches counts full fetches, for the tests that check presence
	// churn costs no list_peers each.
	fetches atomic.Int64
	// fetching counts running fetches; journal holds the events applied
	// while one runs, to replay on its snapshot.
	fetching int
	journal  []func(*meshCache)
}

// refreshDirectory runs at every hello_ack, before the mesh reports open:
// it fetches the whole directory, so an open mesh never resolves against
// an old one. (The connection pushes are acked on is recorded earlier, by
// DialOptions.OnReady.)
func (m *meshRT) refreshDirectory(ctx context.Context, c *client.Conn) {
	if err := m.fetchDirectory(ctx, c); err != nil {
		m.d.log.Warn("directory", "mesh", m.cfg.Slug, "err", err)
	}
}

// fetchDirectory replaces the directory with the broker's current one.
//
// Events keep arriving while the answers are on their way, and an event
// applied before the snapshot lands would be undone by it (a peer that
// left during the fetch would come back for good). So every event applied
// while a fetch runs is also journaled, and replayed in order on top of
// the snapshot: each event sets the state of its key, so replaying the
// ones the snapshot already reflects changes nothing, and the later ones
// are kept.
func (m *meshRT) fetchDirectory(ctx context.Context, c *client.Conn) error {
	m.fetches.Add(1)
	m.mu.Lock()
	m.fetching++
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.fetching--; m.fetching == 0 {
			m.journal = nil
		}
		m.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	members, err := c.MembersList(ctx)
	if err != nil {
		return err
	}
	peers, err := c.ListPeers(ctx)
	if err != nil {
		return err
	}
	m.setDirectory(members, peers)
	return nil
}

// setDirectory replaces the cached directory (replaying the events of a
// running fetch, see fetchDirectory) and persists it, for sends while the
// broker is away (and after a restart).
func (m *meshRT) setDirectory(members []wire.Member, peers []wire.Peer) {
	now := time.Now()
	mc := meshCache{Members: members, Peers: peers, UpdatedAt: now.UnixMilli()}
	m.mu.Lock()
	for _, apply := range m.journal {
		apply(&mc)
	}
	m.cache = mc
	m.resolver, m.names = nil, nil
	m.dirDirty = false
	m.lastRefresh = now
	m.refreshDue = time.Time{}
	m.mu.Unlock()
	m.d.db.Submit(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bCache), []byte(m.cfg.MeshID), &mc) }, nil)
}

// directoryResolver is the cached directory indexed for resolving
// targets; it stays valid for sends while the directory does not change.
func (m *meshRT) directoryResolver() *client.Directory {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.resolver == nil {
		m.resolver = client.NewDirectory(m.cache.Members, m.cache.Peers)
	}
	return m.resolver
}

func (m *meshRT) directory() ([]wire.Member, []wire.Peer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cache.Members, m.cache.Peers
}

// liveDirectory is the directory as the broker has it now: for a read of
// it, and for a send that the cached one cannot resolve (a member who
// joined a moment ago, a group joined since the last full fetch).
// Concurrent callers share one fetch: a fetch that started after since is
// as good as a new one; fetches start within liveFetchRate. It fails when
// the mesh is not open.
func (m *meshRT) liveDirectory(ctx context.Context, since time.Time) ([]wire.Member, []wire.Peer, error) {
	m.fetchMu.Lock()
	defer m.fetchMu.Unlock()
	m.mu.Lock()
	fresh, failed, ferr := m.lastFetchStart.After(since), m.failedFetchStart.After(since), m.failedFetchErr
	m.mu.Unlock()
	if fresh {
		members, peers := m.directory()
		return members, peers, nil
	}
	if failed {
		// A fetch that started after this caller arrived failed: that
		// is its answer too. Fetching again in turn made each queued
		// caller wait out its own fetchTimeout behind a broker that does
		// not answer.
		return nil, nil, ferr
	}
	if err := m.fetchLimit.Wait(ctx); err != nil {
		return nil, nil, err
	}
	c := m.conn()
	if c == nil {
		return nil, nil, errNotConnected
	}
	if err := m.fetchHeld(ctx, c); err != nil {
		return nil, nil, err
	}
	members, peers := m.directory()
	return members, peers, nil
}

// fetchHeld fetches the directory for a caller holding fetchMu, and notes
// when it started, so that callers waiting for fetchMu take its result
// (liveDirectory): the directory if it succeeded, its error if not (never
// the cache).
func (m *meshRT) fetchHeld(ctx context.Context, c *client.Conn) error {
	start := time.Now()
	m.mu.Lock()
	m.lastFetchStart = start
	m.mu.Unlock()
	err := m.fetchDirectory(ctx, c)
	if err != nil {
		m.mu.Lock()
		m.lastFetchStart = time.Time{}
		if ctx.Err() == nil {
			// The broker's failure answers the waiters; the fetching
			// caller going away (a CLI interrupted) is not theirs.
			m.failedFetchStart, m.failedFetchErr = start, err
		}
		m.mu.Unlock()
	}
	return err
}

// liveFetchRate and liveFetchBurst limit the fetches liveDirectory starts
// (a caller past them waits). A read of the directory (GET /v1/peers,
// /v1/members) is one such fetch, and so is a send to a @group; each is
// two frames on the member's connection, and they used to start at once:
// a script listing peers in a loop (e2e TestAgentSessionsLaunchAndScope on
// a fast machine) spent that connection's frame budget, and the broker
// answered everything the daemon sent on it rate_limited. 20 a second (40
// frames) stays well inside the broker's 100, and the burst lets the
// occasional group of reads or group sends go at once.
const (
	liveFetchRate  = 20
	liveFetchBurst = 10
)

// onSystem applies the broker's system pushes to the directory and passes
// them on as daemon events. It runs on the connection's reader goroutine,
// so it only changes memory and wakes the directory worker.
func (m *meshRT) onSystem(p *wire.Push) {
	if m.topics.onEvent(p) {
		return // topic key management (topics.go), not a presence change
	}
	kind := localapi.EventSystem
	switch p.Event {
	case wire.EventPeerJoined:
		kind = localapi.EventPeerJoined
	case wire.EventPeerLeft:
		kind = localapi.EventPeerLeft
	case wire.EventPeerReturned:
		kind = localapi.EventPeerReturned
	}
	m.d.publishAsync(kind, m.cfg.MeshID, map[string]any{"mesh": m.cfg.Slug, "event": p.Event, "data": p.EventData})
	var apply func(*meshCache)
	switch p.Event {
	case wire.EventMemberChanged:
		var ev wire.MemberEvent
		if decodeEventData(p.EventData, &ev) != nil || ev.Member.Pubkey == "" {
			m.d.log.Warn("undecodable member_changed", "mesh", m.cfg.Slug)
			return
		}
		if ev.Member.Pubkey == m.cfg.Pubkey && ev.Change != wire.MemberLeft && ev.Change != wire.MemberBanned {
			m.noteRole(ev.Member.MemberRole) // rare: a role change or a transfer
		}
		apply = func(mc *meshCache) { applyMember(mc, ev) }
	case wire.EventPeerJoined, wire.EventPeerReturned, wire.EventPeerLeft:
		var ev wire.PeerEvent
		if decodeEventData(p.EventData, &ev) != nil || ev.Pubkey == "" {
			m.d.log.Warn("undecodable presence event", "mesh", m.cfg.Slug, "event", p.Event)
			return
		}
		present, at := p.Event != wire.EventPeerLeft, time.Now().UnixMilli()
		apply = func(mc *meshCache) { applyPeer(mc, present, ev, at) }
	case wire.EventPeersChanged:
		// Presence events the broker folded into one: nothing to apply;
		// the refresh scheduled below brings the directory up to date.
		apply = func(*meshCache) {}
	default:
		return
	}
	m.mu.Lock()
	apply(&m.cache)
	m.resolver, m.names = nil, nil
	if m.fetching > 0 {
		m.journal = append(m.journal, apply)
	}
	m.dirDirty = true
	if p.Event != wire.EventMemberChanged && m.refreshDue.IsZero() {
		// What presence events do not carry (groups, status, summary)
		// comes with the next full list, at most once per
		// refreshMinInterval.
		m.refreshDue = time.Now().Add(m.d.opts.refreshDelay)
	}
	m.mu.Unlock()
	m.pokeDirectory()
}

// decodeEventData reads a system push's eventData (decoded generically
// with the frame) into its type.
func decodeEventData(data any, v any) error {
	raw, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// applyMember inserts or replaces a member by memberId; a member that left
// is removed with its presences, a banned one loses its presences. The
// cache's slices are replaced, never changed in place: callers of
// directory() may still be reading the old ones.
func applyMember(mc *meshCache, ev wire.MemberEvent) {
	members := make([]wire.Member, 0, len(mc.Members)+1)
	found := false
	for _, old := range mc.Members {
		if old.MemberID == ev.Member.MemberID || old.Pubkey == ev.Member.Pubkey {
			found = true
			if ev.Change != wire.MemberLeft {
				members = append(members, ev.Member)
			}
			continue
		}
		members = append(members, old)
	}
	if !found && ev.Change != wire.MemberLeft {
		members = append(members, ev.Member)
	}
	mc.Members = members
	if ev.Change == wire.MemberLeft || ev.Change == wire.MemberBanned {
		mc.Peers = dropPeers(mc.Peers, func(p *wire.Peer) bool { return p.MemberPubkey == ev.Member.Pubkey })
		return
	}
	// A rename or role change shows on the member's presences too.
	peers := append([]wire.Peer(nil), mc.Peers...)
	for i := range peers {
		if p := &peers[i]; p.MemberPubkey == ev.Member.Pubkey {
			p.MemberRole = ev.Member.MemberRole
			if p.Role != wire.RoleSession {
				p.DisplayName = ev.Member.DisplayName
			}
		}
	}
	mc.Peers = peers
}

// applyPeer adds (or marks online) the presence an event names, or removes
// it. A presence is identified by its key and sessionId: member presences
// share the member key. at is when the event came (a new presence's
// connectedAt until the next full list).
func applyPeer(mc *meshCache, present bool, ev wire.PeerEvent, at int64) {
	same := func(p *wire.Peer) bool { return p.Pubkey == ev.Pubkey && p.SessionID == ev.SessionID }
	if !present {
		mc.Peers = dropPeers(mc.Peers, same)
		return
	}
	peers := append([]wire.Peer(nil), mc.Peers...)
	i := -1
	for j := range peers {
		if same(&peers[j]) {
			i = j
			break
		}
	}
	if i < 0 {
		p := wire.Peer{Pubkey: ev.Pubkey, MemberPubkey: ev.MemberPubkey, SessionID: ev.SessionID,
			Groups: []wire.Group{}, Status: wire.StatusIdle, Visible: true, ConnectedAt: at}
		for _, mem := range mc.Members {
			if mem.Pubkey == ev.MemberPubkey {
				p.MemberID, p.MemberRole = mem.MemberID, mem.MemberRole
			}
		}
		peers = append(peers, p)
		i = len(peers) - 1
	}
	p := &peers[i]
	p.DisplayName, p.Role, p.PeerType, p.Online = ev.DisplayName, ev.Role, ev.PeerType, true
	mc.Peers = peers
}

// dropPeers returns peers without those drop matches, in a new slice (the
// old one may be held by a caller of directory()).
func dropPeers(peers []wire.Peer, drop func(*wire.Peer) bool) []wire.Peer {
	out := make([]wire.Peer, 0, len(peers))
	for i := range peers {
		if !drop(&peers[i]) {
			out = append(out, peers[i])
		}
	}
	return out
}

func (m *meshRT) pokeDirectory() {
	select {
	case m.dirWake <- struct{}{}:
	default:
	}
}

// dirLoop is a mesh's directory worker: it writes the event-updated
// directory to daemon.db at most once per persistEvery, and runs the one
// coalesced list_peers that follows presence events.
func (m *meshRT) dirLoop(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var lastPersist time.Time
	for {
		now := time.Now()
		m.mu.Lock()
		next := time.Duration(-1)
		persistAt, refreshAt := time.Time{}, time.Time{}
		if m.dirDirty {
			persistAt = lastPersist.Add(persistEvery)
		}
		if !m.refreshDue.IsZero() {
			refreshAt = m.refreshDue
			if floor := m.lastRefresh.Add(m.d.opts.refreshMinInterval); floor.After(refreshAt) {
				refreshAt = floor
			}
		}
		mc := m.cache
		m.mu.Unlock()
		doPersist := !persistAt.IsZero() && !persistAt.After(now)
		doRefresh := !refreshAt.IsZero() && !refreshAt.After(now)
		if doPersist {
			lastPersist = now
			m.mu.Lock()
			m.dirDirty = false
			m.mu.Unlock()
			mc.UpdatedAt = now.UnixMilli()
			m.d.db.Submit(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bCache), []byte(m.cfg.MeshID), &mc) }, nil)
		}
		if doRefresh {
			if c := m.conn(); c != nil {
				m.fetchMu.Lock()
				if err := m.fetchHeld(ctx, c); err != nil {
					m.d.log.Warn("directory refresh", "mesh", m.cfg.Slug, "err", err)
				}
				m.fetchMu.Unlock()
			}
			m.mu.Lock()
			// Done, or not connected: the next hello_ack fetches it all.
			m.refreshDue, m.lastRefresh = time.Time{}, time.Now()
			m.mu.Unlock()
		}
		if doPersist || doRefresh {
			continue
		}
		for _, at := range []time.Time{persistAt, refreshAt} {
			if !at.IsZero() {
				if d := at.Sub(now); next < 0 || d < next {
					next = d
				}
			}
		}
		if next < 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-m.dirWake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
