package broker

import (
	"log/slog"
	"net"
	"net/netip"
	"time"

	"claudemesh/cluster"
	"claudemesh/store"
)

// Config holds every knob of 01-protocol §8. Each timer is a field so tests
// run the real broker with sub-second timers instead of waiting minutes.
type Config struct {
	Listen        string // public port: /ws, /v1, /health
	MetricsListen string // Prometheus; "" or "off" disables
	DataDir       string // broker.db, broker.key, operator.token
	PublicURL     string // returned as brokerUrl; derived from Listen when empty
	// PublicURLs are the public URLs of every node of a cluster
	// (--public-urls): returned as brokerUrls, PublicURL first, by mesh
	// creation and join and in every hello_ack, so clients fail over
	// between the nodes. Empty: brokerUrls is [PublicURL] and hello_ack
	// carries none.
	PublicURLs      []string
	TLSCert, TLSKey string

	MaxFrame        int64 // client→broker frame limit (bytes)
	MaxConnsPerMesh int   // 0 = unlimited
	// MaxConnsPerMember caps the authenticated connections of one member
	// (its own key and its sessions') in a mesh, on this broker node
	// (--max-connections-per-member; 0 = unlimited), so that one member
	// cannot hold the mesh's --max-connections-per-mesh against the others.
	MaxConnsPerMember int
	// MaxTopicsPerMesh and MaxTopicsPerMember bound the topics a mesh
	// holds and the share of them one member may create, so that one
	// member cannot use up the mesh's topics (no flags: fixed limits,
	// lowered in tests).
	MaxTopicsPerMesh, MaxTopicsPerMember int
	MaxPending                           int // per recipient
	// MaxPendingPerSender caps the places of one recipient's queue one
	// sending member may hold; MaxQueuedBytesPerSender and
	// MaxQueuedBytesPerMesh cap the undelivered bytes one member, and a
	// whole mesh, keep in the broker (quota.go). 0 takes the default.
	MaxPendingPerSender     int
	MaxQueuedBytesPerSender int64
	MaxQueuedBytesPerMesh   int64
	Rate                    float64
	Burst                   int
	// ByteRate and ByteBurst limit the bytes of send frames one member
	// (member key and sessions together) may send per second, and at
	// once (sendrate.go); ByteRate 0 disables. The burst is at least
	// MaxFrame.
	ByteRate       int64
	ByteBurst      int64
	QueueTTL       time.Duration
	SendBuffer     int // per-connection outbound bytes before 4008
	PingInterval   time.Duration
	PongTimeout    time.Duration
	Grace          time.Duration
	RedeliverAfter time.Duration
	// AckDefer is how long a client_ack without a reqId may wait for
	// other writes to share its commit (--ack-defer; 0 commits at once).
	AckDefer      time.Duration
	HelloTimeout  time.Duration
	AuditMessages bool
	// TopicRetention deletes topic posts older than this; 0 keeps them
	// (--topic-retention, default keep).
	TopicRetention time.Duration
	// SSEHeartbeat is the comment line interval of topic streams (15 s).
	SSEHeartbeat       time.Duration
	MaxHandshakes      int // unauthenticated connections open at once
	MaxHandshakesPerIP int
	// PresenceRate and PresenceBurst limit how fast one member may start
	// new presences (each one a peer_joined to every presence of the
	// mesh, and a peer_left later); 0 disables.
	PresenceRate  float64
	PresenceBurst int
	// HelloRefusalRate and HelloRefusalBurst are each member's budget of
	// hellos refused after their signature verified, past which its
	// hellos are refused before any check of a signature
	// (hellobudget.go); 0 disables.
	HelloRefusalRate  float64
	HelloRefusalBurst int
	// ResumeWindow is the push window, in messages, of a connection whose
	// recipient key left pushes unacknowledged on another connection
	// (closed, or still open beside it); each ack widens it by one, back
	// to the full window (deliver.go). 0 disables: every connection gets
	// the full window at once.
	ResumeWindow int
	// LineHold is how long a send refused with a code to send it again
	// holds its line, the connection's later sends to the same target,
	// unless it comes again sooner (sendorder.go). 0 disables.
	LineHold time.Duration
	// FetchRate limits the bytes of fetch_queued answers one member (its
	// key and sessions together) may be sent per second, with a burst of
	// eight seconds' worth (fetchrate.go); 0 disables.
	FetchRate int64
	// MaxSessionsPerMember caps the session keys the broker remembers per
	// member (the least recently connected, absent one is forgotten to
	// make room); 0 disables.
	MaxSessionsPerMember int
	// AckRate caps client_ack frames per connection per second (burst
	// the same); 0 disables. Honest clients batch up to 500 ids a frame.
	AckRate float64
	// refusalRate and refusalBurst, when set (tests), replace the member's
	// budget of rate_limited answers (refusalRate, refusalBurst in conn.go).
	refusalRate  float64
	refusalBurst int
	// sendClock, when set (tests), is the clock of the members' send
	// budgets (--rate, --byte-rate): a test moves it, so what a budget
	// takes back does not depend on how fast a loaded machine runs it.
	sendClock func() time.Time
	// clusterCatchUp, when set (tests), replaces the minute a cluster
	// node waits at start for the cluster to form and for its copy to
	// catch up with the log (cluster.EngineOptions.CatchUpTimeout).
	clusterCatchUp time.Duration
	// clockSkew, when set (tests), is added to this broker's clock where
	// a session's hello is stamped (store.Session's HelloAt): a cluster
	// node whose clock is off.
	clockSkew time.Duration
	// testHookProfileWrite, when set (tests), runs after a profile
	// frame's handler unlocked the mesh and before it submits its write.
	testHookProfileWrite func()
	// testHookRefillLoad, when set (tests), runs each time a refill
	// loads a queued message to push it.
	testHookRefillLoad func()
	// testHookBeforeRefill, when set (tests), runs on a connection's
	// writer before each refill, with the connection's key.
	testHookBeforeRefill func(pubkey string)
	// MaxConnsPerIP caps the TCP connections one address (an IPv6 /64)
	// holds open that are not an authenticated WebSocket: HTTP keep-alive,
	// REST calls and upgrades waiting for their hello. 0 disables it.
	MaxConnsPerIP int
	// HandshakeFailureRate and HandshakeFailureBurst are each address's
	// budget of failed WebSocket handshakes (junk or nothing before the
	// hello, a refused hello; not one refused rate_limited or capacity);
	// past it the address's new connections are answered 429 until the
	// budget refills (strikes.go).
	// Rate 0 disables it; loopback and IPLimitExempt are exempt.
	HandshakeFailureRate  float64
	HandshakeFailureBurst int
	// DeferAccept keeps a connection that has sent nothing in the kernel,
	// out of the broker's sight, for about this long (TCP_DEFER_ACCEPT,
	// Linux; listen). 0 turns it off.
	DeferAccept time.Duration
	// MaxRefusalsPerIP caps the connections over MaxConnsPerIP that one
	// address has open at a time while each is given a second to hear
	// its 429; more are closed as they are accepted, unanswered. Without
	// it a stranger dialling in a loop held a descriptor and a goroutine
	// per connection for that second, however fast it dialled. 0 is
	// unlimited (every such connection is answered), as MaxConnsPerIP 0.
	MaxRefusalsPerIP int
	// IPLimitExempt are addresses the per-address limits do not apply to
	// (nil means loopback: a reverse proxy on the same host, whose address
	// every client shares).
	IPLimitExempt []netip.Prefix
	// TrustedProxies are reverse proxies whose X-Forwarded-For the broker
	// believes (clientaddr.go): a request from one is limited by the
	// client address the proxies report instead of the proxy's own.
	// Empty (the default) believes no header.
	TrustedProxies []netip.Prefix
	// HTTP timeouts of every route: headers and body must arrive within
	// HTTPReadTimeout, a response must make progress within
	// HTTPWriteTimeout, and an idle keep-alive connection is closed after
	// HTTPIdleTimeout.
	HTTPReadTimeout  time.Duration
	HTTPWriteTimeout time.Duration
	HTTPIdleTimeout  time.Duration
	// MaxGroups caps the groups a member holds in total (join_group and
	// every hello's groups together) and the groups of one session: each
	// group is in every list_peers entry of its holder, so the cap is what
	// keeps one member from inflating everyone's peer list.
	MaxGroups int
	// WorkingDecay is how long `working` lasts without a refresh before it
	// reads as `idle` (01-protocol §4: 10 minutes).
	WorkingDecay time.Duration
	// Init lets the broker make a new database where broker.db is empty
	// (0 bytes) or missing beside an existing broker.key; without it the
	// broker refuses to start there (storeRefusal).
	Init bool
	// Version is reported as brokerVersion in every challenge.
	Version string
	Logger  *slog.Logger
	// Listener and MetricsListener, when set, are used instead of binding
	// Listen and MetricsListen in Start: `claudemesh broker` binds its
	// ports before it creates anything in the data directory, so a busy
	// port fails before a first start writes a key and a token.
	Listener, MetricsListener net.Listener
	// Cluster, when set, makes this broker a node of a cluster that keeps
	// its records in NATS JetStream (cluster.go); nil is a single broker
	// on its own bbolt file.
	Cluster *cluster.Config
	// ClusterPublishTimeout bounds the wait for a quorum of the cluster
	// to store a write; past it the write is refused `unavailable`.
	ClusterPublishTimeout time.Duration
	// ClusterHeartbeat is how often a node tells the others it is alive
	// (1 s); one silent for 4 of them is taken for dead and its presences
	// end after Grace unless they reconnect elsewhere.
	ClusterHeartbeat time.Duration
	// ClusterSnapshotEvery: the node that leads the log stores a snapshot
	// of its copy once this many entries were applied since the newest
	// one, and purges the log behind it (log compaction; 0 never does).
	// ClusterSnapshotInterval is how often that is checked, and
	// ClusterLogKeep how many entries before the snapshot a purge keeps.
	ClusterSnapshotEvery    uint64
	ClusterSnapshotInterval time.Duration
	ClusterLogKeep          uint64
}

// DefaultConfig returns the defaults of 01-protocol §8.
func DefaultConfig() Config {
	return Config{
		Listen:                  "127.0.0.1:7900",
		MetricsListen:           "127.0.0.1:9790",
		DataDir:                 "./claudemesh-data",
		MaxFrame:                1 << 20,
		MaxConnsPerMesh:         10000,
		MaxConnsPerMember:       256,
		MaxTopicsPerMesh:        1000,
		MaxTopicsPerMember:      100,
		MaxPending:              10000,
		MaxPendingPerSender:     2500,
		MaxQueuedBytesPerSender: 128 << 20,
		MaxQueuedBytesPerMesh:   1 << 30,
		Rate:                    200,
		Burst:                   1000,
		ByteRate:                1 << 20,
		ByteBurst:               2 << 20,
		QueueTTL:                168 * time.Hour,
		SendBuffer:              8 << 20,
		PingInterval:            30 * time.Second,
		PongTimeout:             75 * time.Second,
		Grace:                   90 * time.Second,
		RedeliverAfter:          30 * time.Second,
		AckDefer:                20 * time.Millisecond,
		HelloTimeout:            10 * time.Second,
		MaxHandshakes:           1024,
		MaxHandshakesPerIP:      32,
		MaxGroups:               store.MaxGroups,
		MaxConnsPerIP:           128,
		MaxRefusalsPerIP:        8,
		DeferAccept:             10 * time.Second,
		HandshakeFailureRate:    1,
		HandshakeFailureBurst:   20,
		AckRate:                 1000,
		PresenceRate:            5,
		PresenceBurst:           100,
		HelloRefusalRate:        1,
		HelloRefusalBurst:       30,
		ResumeWindow:            1,
		LineHold:                2 * time.Second,
		FetchRate:               4 << 20,
		MaxSessionsPerMember:    1000,
		IPLimitExempt:           LoopbackPrefixes(),
		HTTPReadTimeout:         10 * time.Second,
		HTTPWriteTimeout:        30 * time.Second,
		HTTPIdleTimeout:         30 * time.Second,
		WorkingDecay:            10 * time.Minute,
		SSEHeartbeat:            15 * time.Second,
		ClusterSnapshotEvery:    10000,
		ClusterSnapshotInterval: 5 * time.Minute,
		ClusterLogKeep:          10000,
		Version:                 "dev",
	}
}

// LoopbackPrefixes is the default of --ip-limit-exempt.
func LoopbackPrefixes() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// Protocol limits that are not flags.
const (
	maxCiphertext    = 65552   // 64 KiB plaintext + MAC (02-crypto)
	maxMultiKeys     = 1000    // recipients per multi envelope
	maxAckIDs        = 500     // ids per client_ack
	maxFetch         = 500     // messages per fetch_queued
	maxFetchBytes    = 8 << 20 // a queued frame stops growing here (or at half the send buffer)
	maxInflight      = 256     // unacked pushes per connection
	maxInflightBytes = 4 << 20 // or a quarter of the send buffer
	// minSendBuffer is the smallest --send-buffer: a push of the largest
	// message (64 KiB of plaintext is ~88 KB of base64 in its frame) must
	// fit in the half of it a fetch_queued reply may use.
	minSendBuffer     = 256 << 10
	timestampSkew     = 60 * time.Second
	maxAttestationTTL = 24 * time.Hour
	frameRate         = 100 // non-send frames per second per connection
	frameBurst        = 500
	restBodyLimit     = 1 << 20
	writeTimeout      = 10 * time.Second
	// helloFrameBase and helloFramePerGroup size the limit on frames
	// before hello_ack (Config.helloFrameLimit): what the largest legal
	// hello can take, so a stranger gets to send one such frame, not
	// --max-frame. Every field of a hello but its groups, each at its
	// limit and escaped the worst way a JSON encoder does (Go's turns <
	// into \u003c: six bytes for one), comes to about 10 KB: cwd 1,024
	// bytes (6 KiB escaped), hostname 255 (1.5 KiB), model, channel, a
	// 64-rune display name, keys, signatures and an attestation. A group
	// is at most 4 × 32 characters of name ('/' escaped: 262 bytes), a
	// 32-byte role (192 escaped) and its JSON: under 512 bytes.
	helloFrameBase     = 12 << 10
	helloFramePerGroup = 512
	// helloFrameSwallow is how much of a frame over the limit is read
	// and dropped before the hello, so that a hello a little too large
	// still sees its 1009 frame_too_big close (a socket closed with
	// unread data sends a RST); a stranger's larger junk is cut.
	helloFrameSwallow = 4 << 10
	maxSummaryRunes   = 280
)

// peersPageBytes is how much of a list_peers answer one frame carries: an
// eighth of the send buffer, between 64 KiB and 1 MiB, so the answer never
// crowds out the pushes queued beside it.
func (c Config) peersPageBytes() int {
	return min(max(c.SendBuffer/8, 64<<10), 1<<20)
}

// windowBytes is the replay window of one connection in bytes and
// fetchBytes the largest fetch_queued reply: 01-protocol's 4 MiB and 8 MiB,
// clamped so that both fit in the connection's send buffer together with
// the frames that are not flow-controlled (responses, receipts, events). A
// broker run with a small --send-buffer would otherwise push a backlog
// faster than the buffer can hold it and cut its own recipients off with
// 4008 on every reconnect.
// helloFrameLimit bounds every frame before hello_ack: the largest legal
// hello at --max-groups (28 KiB at the default 32). bench --adversary's
// junk (64 KiB frames from a stranger before any hello) was read whole
// at 64 KiB.
func (c Config) helloFrameLimit() int64 {
	return helloFrameBase + int64(max(c.MaxGroups, 0))*helloFramePerGroup
}

func (c Config) windowBytes() int { return min(maxInflightBytes, c.SendBuffer/4) }
func (c Config) fetchBytes() int  { return min(maxFetchBytes, c.SendBuffer/2) }
