package broker

import (
	"log/slog"
	"time"

	"claudemesh/store"
)

// Config holds every knob of 01-protocol §8. Each timer is a field so tests
// run the real broker with sub-second timers instead of waiting minutes.
type Config struct {
	Listen          string // public port: /ws, /v1, /health
	MetricsListen   string // Prometheus; "" or "off" disables
	DataDir         string // broker.db, broker.key, operator.token
	PublicURL       string // returned as brokerUrl; derived from Listen when empty
	TLSCert, TLSKey string

	MaxFrame           int64 // client→broker frame limit (bytes)
	MaxConnsPerMesh    int   // 0 = unlimited
	MaxPending         int   // per recipient
	Rate               float64
	Burst              int
	QueueTTL           time.Duration
	SendBuffer         int // per-connection outbound bytes before 4008
	PingInterval       time.Duration
	PongTimeout        time.Duration
	Grace              time.Duration
	RedeliverAfter     time.Duration
	HelloTimeout       time.Duration
	AuditMessages      bool
	MaxHandshakes      int // unauthenticated connections open at once
	MaxHandshakesPerIP int
	// MaxGroups caps the groups a member holds in total (join_group and
	// every hello's groups together) and the groups of one session: each
	// group is in every list_peers entry of its holder, so the cap is what
	// keeps one member from inflating everyone's peer list.
	MaxGroups int
	// WorkingDecay is how long `working` lasts without a refresh before it
	// reads as `idle` (01-protocol §4: 10 minutes).
	WorkingDecay time.Duration
	// Version is reported as brokerVersion in every challenge.
	Version string
	Logger  *slog.Logger
}

// DefaultConfig returns the defaults of 01-protocol §8.
func DefaultConfig() Config {
	return Config{
		Listen:             "127.0.0.1:7900",
		MetricsListen:      "127.0.0.1:9790",
		DataDir:            "./claudemesh-data",
		MaxFrame:           1 << 20,
		MaxConnsPerMesh:    10000,
		MaxPending:         10000,
		Rate:               200,
		Burst:              1000,
		QueueTTL:           168 * time.Hour,
		SendBuffer:         8 << 20,
		PingInterval:       30 * time.Second,
		PongTimeout:        75 * time.Second,
		Grace:              90 * time.Second,
		RedeliverAfter:     30 * time.Second,
		HelloTimeout:       10 * time.Second,
		MaxHandshakes:      1024,
		MaxHandshakesPerIP: 32,
		MaxGroups:          store.MaxGroups,
		WorkingDecay:       10 * time.Minute,
		Version:            "dev",
	}
}

// Protocol limits that are not flags.
const (
	maxCiphertext     = 65552   // 64 KiB plaintext + MAC (02-crypto)
	maxMultiKeys      = 1000    // recipients per multi envelope
	maxAckIDs         = 500     // ids per client_ack
	maxFetch          = 500     // messages per fetch_queued
	maxFetchBytes     = 8 << 20 // a queued frame stops growing here
	maxInflight       = 256     // unacked pushes per connection
	maxInflightBytes  = 4 << 20
	timestampSkew     = 60 * time.Second
	maxAttestationTTL = 24 * time.Hour
	frameRate         = 100 // non-send frames per second per connection
	frameBurst        = 500
	restBodyLimit     = 1 << 20
	writeTimeout      = 10 * time.Second
	maxSummaryRunes   = 280
)

// peersPageBytes is how much of a list_peers answer one frame carries: an
// eighth of the send buffer, between 64 KiB and 1 MiB, so the answer never
// crowds out the pushes queued beside it.
func (c Config) peersPageBytes() int {
	return min(max(c.SendBuffer/8, 64<<10), 1<<20)
}
