package broker

import (
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"claudemesh/store"
	"claudemesh/wire"
)

// hub is the in-memory view of every mesh: members, known sessions,
// presences and live connections. The store is the truth for membership; the
// hub caches it so the send path never opens a read transaction to route.
type hub struct {
	b       *Broker
	corrupt int // records skipped at start-up because they did not decode
	mu      sync.RWMutex
	meshes  map[string]*meshState
	conns   map[*conn]struct{} // every authenticated connection, for shutdown
	// loadedSeq is the cluster log entry the hub was loaded at (0 on a
	// single broker).
	loadedSeq uint64
	// seen holds the last-seen times of ended connections waiting to be
	// written (lastseen.go).
	seen lastSeen
}

// meshState is one mesh. Its mutex guards everything below it, including
// each connection's delivery bookkeeping (conn.inflight), so routing one
// mesh never contends with another.
type meshState struct {
	id, slug, name string
	hub            *hub

	mu         sync.Mutex
	members    map[string]*member        // by pubkey
	memberByID map[string]*member        // by memberId
	sessions   map[string]*store.Session // known session keys
	// memberSessions indexes the known session keys by parent memberId
	// (putSessionLocked, deleteSessionLocked), so a session hello's
	// --max-sessions-per-member check walks its member's sessions, not
	// the whole mesh's.
	memberSessions map[string]map[string]struct{}
	// sessionWrites are the session records submitted to the store and
	// not yet written, by key (sessionWriteLocked).
	sessionWrites map[string]*sessionWrite
	// sessionForgets are the forgets of session keys submitted to the
	// store and not yet committed, by key (forgetSessions).
	sessionForgets map[string]*sessionForget
	presences      map[string]*presence // by presence key
	// memberPresences indexes the member (non-session) presences of each
	// member pubkey, so targeting a member is O(its presences).
	memberPresences map[string]map[string]*presence
	conns           map[string]map[*conn]struct{} // identity → live conns
	pending         map[string]int                // recipient → undelivered messages
	quota           quotaCounts                   // queue quotas (quota.go)
	history         map[string]int64              // presence key → when it last started or ended (ms); pruned after historyTTL
	// unacked marks the recipient keys whose connection closed with
	// pushes unacknowledged (unix ms when it did): their next connection
	// starts with --resume-window (deliver.go). Pruned after --queue-ttl.
	unacked   map[string]int64
	connCount int
	// memberConns counts each member's authenticated connections, its
	// sessions' included, by member pubkey (memberconns.go).
	memberConns map[string]int
	// keyInflight counts the pushes in flight on all connections of each
	// recipient key, so a new connection or an ack need not walk the key's
	// other connections (deliver.go).
	keyInflight map[string]int
	// controlPlanes counts each member's connected control-plane
	// presences (setConnLocked).
	controlPlanes map[string]int
	// eventLog holds presence events until they are handed out (events.go).
	eventLog eventLog
	// origin remembers the transient connection a message came from, so its
	// receipts reach a `send --wait` that is still listening, until every
	// recipient has acked.
	origin map[string]*origin
	// topics is the mesh's topic index (topics.go), loaded on first use.
	topics *topicIndex
	// topicCreating counts the topics each member is creating now on this
	// node (checked against the caps, not yet in the index), so that
	// concurrent creates cannot pass them together (reserveTopicLocked).
	topicCreating map[string]int
	// grants are each recipient member's explicit grants (grants.go),
	// replaced whole on change, never edited in place.
	grants map[string]store.Grants
	// credChanged is closed when a member record or an API key changes
	// (credwatch.go); nil until a stream watches. Guarded by mu.
	credChanged chan struct{}
}

// origin is a transient sender waiting for receipts.
type origin struct {
	conn    *conn
	waiting int   // receipts still to come
	at      int64 // when the message was sent (unix ms)
}

// receiptCameLocked counts one of a message's deliveries settled, by an
// ack (whose receipt is on its way) or, never to have one, by its expiry
// or drop; the last forgets the origin. Caller holds ms.mu.
func (ms *meshState) receiptCameLocked(messageID string) *origin {
	og := ms.origin[messageID]
	if og == nil {
		return nil
	}
	if og.waiting--; og.waiting <= 0 {
		ms.forgetOriginLocked(messageID, og)
	}
	return og
}

// forgetOriginLocked stops waiting for a message's receipts. Caller holds
// ms.mu.
func (ms *meshState) forgetOriginLocked(messageID string, og *origin) {
	delete(ms.origin, messageID)
	delete(og.conn.origins, messageID)
}

// pruneOriginsLocked forgets origins older than --queue-ttl: each of
// their deliveries has been acked (its receipt went out then) or has
// expired by now. An expiry on another node of a cluster is only a
// queue entry deleted here, like an ack's, so it is not counted as it
// happens. Caller holds ms.mu.
func (ms *meshState) pruneOriginsLocked(now time.Time, ttl time.Duration) {
	cutoff := now.Add(-ttl).UnixMilli()
	for id, og := range ms.origin {
		if og.at < cutoff {
			ms.forgetOriginLocked(id, og)
		}
	}
}

// member is a store.Member plus what only lives in memory: its send rate
// limiter and when its status was last set (for `working` decay).
type member struct {
	store.Member
	limiter *rate.Limiter
	// bytes limits the bytes of its send frames (--byte-rate,
	// sendrate.go); nil when unlimited.
	bytes *rate.Limiter
	// retryBytes is the allowance, as large as bytes, that retries of
	// stored messages are counted against instead (chargeSend): they
	// store nothing, but the broker still reads and answers them.
	retryBytes *rate.Limiter
	// sendClock is the clock of limiter, bytes and retryBytes
	// (Config.sendClock): nil, time.Now.
	sendClock   func() time.Time
	statusSetAt time.Time
	// presenceLimiter limits how fast the member starts presences
	// (--presence-rate): each is an event to the whole mesh.
	presenceLimiter *rate.Limiter
	// ackLookups is the member's budget of acked ids that are not in
	// flight and need a store read (settleable).
	ackLookups *rate.Limiter
	// fetches limits the bytes of its fetch_queued answers (--fetch-rate,
	// fetchrate.go); nil when unlimited.
	fetches *rate.Limiter
	// refusals are the rate_limited answers the member's connections may
	// get before the one that gets another is closed (refusedForRate):
	// per member, so reconnecting does not buy a fresh budget.
	refusals *rate.Limiter
	// helloRefusals is its budget of hellos refused after their
	// signature verified (hellobudget.go); nil when unlimited.
	helloRefusals *rate.Limiter
	// refundMu serialises refundBytes; restCredits are its REST posts'
	// credits (sendrate.go).
	refundMu    sync.Mutex
	restCredits sendCredits
}

// presence is one listed peer: a member presence (daemon, inbox --follow,
// bot) or a session presence. It outlives its connection for the grace
// period, so a reconnect re-attaches silently.
type presence struct {
	key         string
	id          string
	pubkey      string // the key that addresses it
	member      *member
	session     bool
	role        string
	sessionID   string
	displayName string
	peerType    string
	channel     string
	model       string
	cwd         string
	hostname    string
	pid         int
	groups      []wire.Group // session presences only; members use member.Groups
	status      string       // session presences only
	statusAt    time.Time
	summary     string
	hidden      bool
	attestation *wire.Attestation
	connectedAt int64
	conn        *conn
	grace       *time.Timer
	// In a cluster (cluster_presence.go): the node that holds the
	// presence's connection ("" = this one) and its epoch, whether it said
	// the connection is up, and the stamp ordering attaches across nodes.
	node, epoch string
	remoteUp    bool
	stamp       int64
}

func newHub(b *Broker) (*hub, error) {
	h := &hub{b: b, meshes: map[string]*meshState{}, conns: map[*conn]struct{}{}}
	var total int
	// A record that does not decode is skipped and reported, not fatal:
	// one bad member must not keep every mesh offline.
	var corrupt []store.Corrupt
	bad := func(c store.Corrupt) { corrupt = append(corrupt, c) }
	err := b.store.View(func(tx *store.Tx) error {
		// In a cluster, the log entry this read is at: the feed of the
		// other nodes' writes skips what it already contains.
		h.loadedSeq = store.LogSeq(tx)
		return store.EachMesh(tx, func(m store.Mesh) error {
			ms, n, err := h.loadMeshTx(tx, m, bad)
			if err != nil {
				return err
			}
			total += n
			h.meshes[m.ID] = ms
			return nil
		}, bad)
	})
	for _, c := range corrupt {
		b.log.Error("corrupt record skipped; restore broker.db from a backup to get it back", "mesh", c.MeshID, "bucket", c.Bucket, "key", recordKey(c.Key), "err", c.Err)
	}
	h.corrupt = len(corrupt)
	b.metrics.pending.Set(float64(total))
	return h, err
}

// loadMeshTx reads one mesh's members, sessions, grants and pending counts
// into a new meshState; n is its undelivered messages.
func (h *hub) loadMeshTx(tx *store.Tx, m store.Mesh, bad func(store.Corrupt)) (ms *meshState, n int, err error) {
	b := h.b
	ms = h.newMeshState(m)
	err = store.EachMember(tx, m.ID, func(mem store.Member) error {
		// The store's migration trimmed every record to the
		// default cap; an operator may have set a lower one.
		mem.Groups, _ = store.TrimGroups(mem.Groups, b.cfg.MaxGroups)
		ms.addMember(mem, b.cfg)
		return nil
	}, bad)
	if err != nil {
		return nil, 0, err
	}
	err = store.EachSession(tx, m.ID, func(sess store.Session) error {
		sess.Groups, _ = store.TrimGroups(sess.Groups, b.cfg.MaxGroups)
		if _, isMember := ms.members[sess.Pubkey]; isMember {
			// Written before session keys were checked against
			// member keys: never let it route.
			b.log.Warn("ignoring a session record that holds a member key", "mesh", m.Slug, "pubkey", sess.Pubkey)
			return nil
		}
		ms.putSessionLocked(sess.Pubkey, &sess)
		return nil
	}, bad)
	if err != nil {
		return nil, 0, err
	}
	if ms.grants, err = store.ListGrants(tx, m.ID); err != nil {
		return nil, 0, err
	}
	if n, err = ms.loadQueueCounts(tx, bad); err != nil {
		return nil, 0, err
	}
	return ms, n, nil
}

// loadMesh adds a mesh another cluster node created, as it is now.
func (h *hub) loadMesh(id string) error {
	var ms *meshState
	var n int
	err := h.b.store.View(func(tx *store.Tx) error {
		m, err := store.GetMesh(tx, id)
		if err != nil {
			return err
		}
		ms, n, err = h.loadMeshTx(tx, *m, func(c store.Corrupt) {
			h.b.log.Error("corrupt record skipped", "mesh", c.MeshID, "bucket", c.Bucket, "key", recordKey(c.Key), "err", c.Err)
		})
		return err
	})
	if err != nil {
		return err
	}
	h.mu.Lock()
	if h.meshes[id] == nil {
		h.meshes[id] = ms
		h.b.metrics.pending.Add(float64(n))
	}
	h.mu.Unlock()
	return nil
}

func (h *hub) newMeshState(m store.Mesh) *meshState {
	return &meshState{
		id: m.ID, slug: m.Slug, name: m.Name, hub: h,
		members:         map[string]*member{},
		memberByID:      map[string]*member{},
		sessions:        map[string]*store.Session{},
		memberSessions:  map[string]map[string]struct{}{},
		sessionWrites:   map[string]*sessionWrite{},
		sessionForgets:  map[string]*sessionForget{},
		presences:       map[string]*presence{},
		memberPresences: map[string]map[string]*presence{},
		conns:           map[string]map[*conn]struct{}{},
		pending:         map[string]int{},
		controlPlanes:   map[string]int{},
		history:         map[string]int64{},
		unacked:         map[string]int64{},
		memberConns:     map[string]int{},
		topicCreating:   map[string]int{},
		keyInflight:     map[string]int{},
		origin:          map[string]*origin{},
		grants:          map[string]store.Grants{},
	}
}

// addMesh registers a mesh created over REST.
func (h *hub) addMesh(m store.Mesh, owner store.Member) {
	ms := h.newMeshState(m)
	ms.addMember(owner, h.b.cfg)
	h.mu.Lock()
	h.meshes[m.ID] = ms
	h.mu.Unlock()
}

func (h *hub) mesh(id string) *meshState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.meshes[id]
}

func (h *hub) meshList() []*meshState {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*meshState, 0, len(h.meshes))
	for _, ms := range h.meshes {
		out = append(out, ms)
	}
	return out
}

// addMember inserts or refreshes a member. Caller holds ms.mu (or owns ms).
func (ms *meshState) addMember(m store.Member, cfg Config) *member {
	if old, ok := ms.memberByID[m.ID]; ok {
		old.setRecord(m)
		ms.members[m.Pubkey] = old
		return old
	}
	var lim *rate.Limiter
	if cfg.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(cfg.Rate), max(cfg.Burst, 1))
	}
	mem := &member{Member: m, limiter: lim, bytes: newByteLimiter(cfg), retryBytes: newByteLimiter(cfg), refusals: newRefusalLimiter(cfg),
		helloRefusals: newHelloRefusals(cfg), fetches: newFetchLimiter(cfg), sendClock: cfg.sendClock}
	if cfg.AckRate > 0 {
		// At least one full frame: below --ack-rate 25 the burst was
		// under 500 ids, and a daemon acking a fetched backlog in
		// 500-id frames was refused forever.
		mem.ackLookups = rate.NewLimiter(rate.Limit(5*cfg.AckRate), max(int(20*cfg.AckRate), maxAckIDs))
	}
	if cfg.PresenceRate > 0 {
		mem.presenceLimiter = rate.NewLimiter(rate.Limit(cfg.PresenceRate), max(cfg.PresenceBurst, 1))
	}
	ms.members[m.Pubkey] = mem
	ms.memberByID[m.ID] = mem
	return mem
}

// setRecord replaces the member's record with r, a newer one of the same
// member, field by field but for ID and Pubkey: those never change, and a
// connection's goroutines read them without ms.mu (c.mem.ID, c.mem.Pubkey
// in detach, in an admin transaction), so writing them again, even the
// same values, was a data race (a cluster node replaces the record at
// every replicated change of it, each other node's detach included).
// TestMemberRecordFields fails when store.Member gains a field this does
// not copy. Caller holds ms.mu.
func (m *member) setRecord(r store.Member) {
	m.DisplayName, m.NameKey, m.Role = r.DisplayName, r.NameKey, r.Role
	m.JoinedAt, m.LastSeenAt, m.RevokedAt = r.JoinedAt, r.LastSeenAt, r.RevokedAt
	m.BanReason, m.BannedBy, m.BannedByRole = r.BanReason, r.BannedBy, r.BannedByRole
	m.InviteID, m.Status, m.Summary, m.Hidden, m.Groups = r.InviteID, r.Status, r.Summary, r.Hidden, r.Groups
}

// removeMember forgets a member that left or was removed, with its mark
// of pushes left unacknowledged (deliver.go). Caller holds ms.mu.
func (ms *meshState) removeMember(m *member) {
	ms.credentialsChangedLocked()
	delete(ms.members, m.Pubkey)
	delete(ms.memberByID, m.ID)
	delete(ms.unacked, m.Pubkey)
}

// activeMember returns the non-revoked member with this key.
func (ms *meshState) activeMember(pubkey string) *member {
	m := ms.members[pubkey]
	if m == nil || m.RevokedAt != 0 {
		return nil
	}
	return m
}

// knownRecipient reports whether a key may receive DMs: an active member or
// a known session of an active member.
func (ms *meshState) knownRecipient(pubkey string) bool {
	if ms.activeMember(pubkey) != nil {
		return true
	}
	if ms.members[pubkey] != nil {
		return false // a revoked member's key, whoever attested it since
	}
	s := ms.sessions[pubkey]
	if s == nil {
		return false
	}
	parent := ms.memberByID[s.ParentMemberID]
	return parent != nil && parent.RevokedAt == 0
}

// effectiveGroups is member groups ∪ session groups (01-protocol §4).
func (ms *meshState) effectiveGroups(pubkey string) []wire.Group {
	if m := ms.members[pubkey]; m != nil {
		return m.Groups
	}
	var out []wire.Group
	if p := ms.presences[pubkey]; p != nil {
		out = append(out, p.groups...)
	} else if s := ms.sessions[pubkey]; s != nil {
		out = append(out, s.Groups...)
	}
	if s := ms.sessions[pubkey]; s != nil {
		if parent := ms.memberByID[s.ParentMemberID]; parent != nil {
			out = append(out, parent.Groups...)
		}
	}
	return out
}

// inGroup reports whether groups contain name or a subgroup name/….
func inGroup(groups []wire.Group, name string) bool {
	for _, g := range groups {
		if g.Name == name || strings.HasPrefix(g.Name, name+"/") {
			return true
		}
	}
	return false
}

// targets are the connections a delivery to identity pubkey is pushed to:
// a session's own connection; for a member, its control-plane presence if
// one is online, else its other member presences (01-protocol §4).
func (ms *meshState) targets(pubkey string) []*conn {
	if p := ms.presences[pubkey]; p != nil && p.session {
		if p.conn != nil {
			return []*conn{p.conn}
		}
		return nil
	}
	var control, others []*conn
	for _, p := range ms.memberPresences[pubkey] {
		if p.conn == nil {
			continue
		}
		if p.role == wire.RoleControlPlane {
			control = append(control, p.conn)
		} else {
			others = append(others, p.conn)
		}
	}
	if len(control) > 0 {
		return control
	}
	return others
}

// status returns a presence's effective status, with `working` decaying to
// `idle` after cfg.WorkingDecay without a refresh.
func (ms *meshState) status(p *presence, decay time.Duration) string {
	st, at := p.status, p.statusAt
	if !p.session {
		st, at = p.member.Status, p.member.statusSetAt
	}
	if st == "" {
		return wire.StatusIdle
	}
	if st == wire.StatusWorking && time.Since(at) > decay {
		return wire.StatusIdle
	}
	return st
}

// peer renders a presence for list_peers.
func (ms *meshState) peer(p *presence, decay time.Duration) wire.Peer {
	groups, summary, hidden := p.groups, p.summary, p.hidden
	if !p.session {
		groups, summary, hidden = p.member.Groups, p.member.Summary, p.member.Hidden
	}
	if groups == nil {
		groups = []wire.Group{}
	}
	cwd := p.cwd
	if cwd != "" {
		cwd = path.Base(strings.ReplaceAll(cwd, "\\", "/"))
	}
	return wire.Peer{
		Pubkey:       p.pubkey,
		MemberPubkey: p.member.Pubkey,
		MemberID:     p.member.ID,
		DisplayName:  p.displayName,
		Role:         p.role,
		MemberRole:   p.member.Role,
		Status:       ms.status(p, decay),
		Summary:      summary,
		Groups:       groups,
		SessionID:    p.sessionID,
		Cwd:          cwd,
		Hostname:     p.hostname,
		PeerType:     p.peerType,
		Channel:      p.channel,
		Model:        p.model,
		ConnectedAt:  p.connectedAt,
		Online:       p.online(),
		Visible:      !hidden,
		Attestation:  p.attestation,
	}
}

// listPeers returns the presences visible to viewer (hidden presences are
// shown only to their own member), oldest first.
func (ms *meshState) listPeers(viewer *member, decay time.Duration) []wire.Peer {
	out := make([]wire.Peer, 0, len(ms.presences))
	for _, p := range ms.presences {
		if p.member.RevokedAt != 0 {
			// Banned: its connections are closing (the close frame is
			// out, the presence ends when the reader sees the answer),
			// and a list asked for after the ban must not show it.
			continue
		}
		hidden := p.hidden
		if !p.session {
			hidden = p.member.Hidden
		}
		if hidden && p.member != viewer {
			continue
		}
		out = append(out, ms.peer(p, decay))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ConnectedAt != out[j].ConnectedAt {
			return out[i].ConnectedAt < out[j].ConnectedAt
		}
		return out[i].Pubkey+out[i].SessionID < out[j].Pubkey+out[j].SessionID
	})
	return out
}

// online reports whether a member has at least one live connection.
func (ms *meshState) online(pubkey string) bool { return len(ms.conns[pubkey]) > 0 }

// broadcastSystem pushes a presence event to every presence connection of
// the mesh except the subject's own. System pushes are not queued.
func (ms *meshState) broadcastSystem(event string, p *presence) {
	if event == wire.EventPeerLeft && ms.eventLog.cancelStartLocked(p) {
		return // it came and went between two flushes, unannounced
	}
	// Encoded when first handed out (eventLog.frameLocked), not here:
	// most starts of a presence churn are cancelled by its end before
	// any receiver is handed them, and the encoding was done under the
	// mesh lock every send of the mesh waits on.
	push := &wire.Push{
		Type: wire.TypePush, Subtype: wire.SubtypeSystem, Event: event,
		MessageID: newID(), CreatedAt: time.Now().UnixMilli(),
		EventData: wire.PeerEvent{Pubkey: p.pubkey, MemberPubkey: p.member.Pubkey, DisplayName: p.displayName, SessionID: p.sessionID, Role: p.role, PeerType: p.peerType},
	}
	hidden := p.hidden
	if !p.session {
		hidden = p.member.Hidden
	}
	var onlyFor *member
	if hidden {
		onlyFor = p.member // an invisible presence is announced only to its own member
	}
	ms.logLocked(loggedEvent{push: push, subject: p, onlyFor: onlyFor, starts: event != wire.EventPeerLeft})
}

// closeAll closes every connection for shutdown (1001 shutting_down).
func (h *hub) closeAll() {
	h.mu.RLock()
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.RUnlock()
	for _, c := range conns {
		c.closeWith(wire.CloseGoingAway, wire.ReasonShutdown)
	}
	for _, c := range conns {
		c.waitClosed(2 * time.Second)
	}
}

// recordKey shows a store key in a log: as text when it is printable (ids),
// else in hex (raw pubkeys, sequence numbers).
func recordKey(k []byte) string {
	for _, c := range k {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", k)
		}
	}
	return string(k)
}
