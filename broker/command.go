package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"claudemesh/cluster"
	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
	"claudemesh/internal/gcfloor"
	"claudemesh/wire"
)

// Command is `claudemesh broker`: run a broker until SIGTERM or SIGINT.
func Command() *cli.Command {
	def := DefaultConfig()
	return &cli.Command{
		Name:  "broker",
		Usage: "run a broker (routes ciphertext, keeps presence, queues for offline peers)",
		Description: cliui.WithExamples(
			"Runs the broker in the foreground with JSON logs on stderr. On first start it creates the data directory\n"+
				"with broker.db, broker.key and operator.token (all 0600); the token's path is in the start-up log.\n"+
				"Put a TLS proxy in front, or give --tls-cert and --tls-key.\n"+
				"With --cluster the broker is one node of a cluster: its records are replicated through NATS JetStream\n"+
				"(an embedded server whose files are in <data>/jetstream, or --nats), every node must have the same\n"+
				"broker.key (copy it from the first node before starting the others), and writes are refused while\n"+
				"a quorum of the nodes is unreachable. See docs/operating-a-broker.md \"Running a cluster\".",
			"claudemesh broker",
			"claudemesh broker --listen :7900 --data /var/lib/claudemesh --public-url wss://mesh.example.com/ws",
			"claudemesh broker --tls-cert /etc/claudemesh/cert.pem --tls-key /etc/claudemesh/key.pem --listen :443",
			"claudemesh broker --cluster prod --node b1 --cluster-listen 10.0.0.1:7901 --cluster-routes 10.0.0.1:7901,10.0.0.2:7901,10.0.0.3:7901",
			"claudemesh broker --cluster prod --node b1 --nats nats://user:pass@nats.internal:4222",
		),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: def.Listen, Usage: "public `ADDR` for /ws, /v1 and /health"},
			&cli.StringFlag{Name: "metrics-listen", Value: def.MetricsListen, Usage: "Prometheus `ADDR` (\"off\" disables)"},
			&cli.StringFlag{Name: "data", Value: def.DataDir, Usage: "data `DIR` (broker.db, broker.key, operator.token)"},
			&cli.StringFlag{Name: "public-url", Usage: "`URL` returned to clients as brokerUrl (default ws://<listen>/ws)"},
			&cli.StringFlag{Name: "public-urls", Usage: "comma-separated public `URLS` of every node (ws:// or wss://, at most 16), returned to clients as brokerUrls so they fail over between the nodes; needs --public-url"},
			&cli.StringFlag{Name: "tls-cert", Usage: "TLS certificate `FILE`"},
			&cli.StringFlag{Name: "tls-key", Usage: "TLS key `FILE`"},
			&cli.Int64Flag{Name: "max-frame", Value: def.MaxFrame, Usage: "largest client frame in `BYTES`"},
			&cli.IntFlag{Name: "max-connections-per-mesh", Value: def.MaxConnsPerMesh, Usage: "connection cap per mesh (0 = unlimited)"},
			&cli.IntFlag{Name: "max-connections-per-member", Value: def.MaxConnsPerMember, Usage: "connections one member (its key and its sessions together) may hold open in a mesh on this node, so that it cannot take the mesh's whole cap; a refusal spends its --hello-refusal-burst, and a hello taking over its own connected presence is let through (0 = unlimited)"},
			&cli.IntFlag{Name: "max-pending", Value: def.MaxPending, Usage: "undelivered messages per recipient before recipient_queue_full"},
			&cli.IntFlag{Name: "max-pending-per-sender", Value: def.MaxPendingPerSender, Usage: "undelivered messages one member may have in one recipient's queue before recipient_queue_full"},
			&cli.Int64Flag{Name: "max-queued-bytes-per-sender", Value: def.MaxQueuedBytesPerSender, Usage: "undelivered `BYTES` one member (all its sessions together) may have queued in a mesh before quota_exceeded"},
			&cli.Int64Flag{Name: "max-queued-bytes-per-mesh", Value: def.MaxQueuedBytesPerMesh, Usage: "undelivered `BYTES` queued in one mesh in total before quota_exceeded"},
			&cli.Float64Flag{Name: "rate", Value: def.Rate, Usage: "sends per second per member (0 disables)"},
			&cli.IntFlag{Name: "burst", Value: def.Burst, Usage: "sends a member may make at once above --rate"},
			&cli.Int64Flag{Name: "byte-rate", Value: def.ByteRate, Usage: "`BYTES` of send frames per second per member (0 disables)"},
			&cli.Int64Flag{Name: "byte-burst", Value: def.ByteBurst, Usage: "`BYTES` of send frames a member may send at once above --byte-rate (at least --max-frame)"},
			&cli.DurationFlag{Name: "queue-ttl", Value: def.QueueTTL, Usage: "how long undelivered messages are kept"},
			&cli.IntFlag{Name: "send-buffer", Value: def.SendBuffer, Usage: "per-connection outbound `BYTES` before 4008 slow_consumer"},
			&cli.DurationFlag{Name: "ping-interval", Value: def.PingInterval, Usage: "how often every connection is pinged"},
			&cli.DurationFlag{Name: "pong-timeout", Value: def.PongTimeout, Usage: "a connection with no pong (or frame) for this long is dropped"},
			&cli.DurationFlag{Name: "grace", Value: def.Grace, Usage: "how long a dropped presence stays listed"},
			&cli.DurationFlag{Name: "redeliver-after", Value: def.RedeliverAfter, Usage: "an unacknowledged push is sent again after this long"},
			&cli.DurationFlag{Name: "ack-defer", Value: def.AckDefer, Usage: "a client_ack nobody waits for (no reqId) may wait this long for other writes to share its commit (0 = commit at once)"},
			&cli.DurationFlag{Name: "hello-timeout", Value: def.HelloTimeout, Usage: "a connection must say hello within this long (else 1008 hello_timeout)"},
			&cli.BoolFlag{Name: "audit-messages", Usage: "also audit message sends"},
			&cli.BoolFlag{Name: "init", Usage: "make a new, empty broker.db where it is empty or missing beside an existing broker.key (every mesh is lost)"},
			&cli.IntFlag{Name: "max-groups", Value: def.MaxGroups, Usage: "groups one member (or one session) may hold in total"},
			&cli.Float64Flag{Name: "presence-rate", Value: def.PresenceRate, Usage: "new presences per second per member, each announced to the mesh (0 = unlimited)"},
			&cli.IntFlag{Name: "presence-burst", Value: def.PresenceBurst, Usage: "presence burst per member"},
			&cli.Float64Flag{Name: "hello-refusal-rate", Value: def.HelloRefusalRate, Usage: "hellos per second per member that may be refused after their signature verified; past --hello-refusal-burst of them the member's hellos are refused before any signature check (0 = unlimited)"},
			&cli.IntFlag{Name: "hello-refusal-burst", Value: def.HelloRefusalBurst, Usage: "refused hellos a member may have at once above --hello-refusal-rate"},
			&cli.IntFlag{Name: "resume-window", Value: def.ResumeWindow, Usage: "pushes in flight at first to a connection whose recipient left pushes unacknowledged on another connection; each ack widens it by one up to the full window (0 = the full window at once)"},
			&cli.Int64Flag{Name: "fetch-rate", Value: def.FetchRate, Usage: "`BYTES` of fetch_queued answers per second per member, with a burst of eight seconds' worth (0 = unlimited)"},
			&cli.IntFlag{Name: "max-sessions-per-member", Value: def.MaxSessionsPerMember, Usage: "session keys remembered per member; the least recently connected is forgotten (0 = unlimited)"},
			&cli.Float64Flag{Name: "ack-rate", Value: def.AckRate, Usage: "client_ack frames per connection per second (0 = unlimited)"},
			&cli.IntFlag{Name: "max-handshakes", Value: def.MaxHandshakes, Usage: "upgraded connections waiting for their hello, in total"},
			&cli.IntFlag{Name: "max-handshakes-per-ip", Value: def.MaxHandshakesPerIP, Usage: "upgraded connections waiting for their hello, per address (IPv6: per /64)"},
			&cli.IntFlag{Name: "max-conns-per-ip", Value: def.MaxConnsPerIP, Usage: "open connections per address that are not an authenticated WebSocket (0 = unlimited)"},
			&cli.IntFlag{Name: "max-refusals-per-ip", Value: def.MaxRefusalsPerIP, Usage: "connections over --max-conns-per-ip one address may hold while they are answered 429; more are closed unanswered (0 = unlimited: each holds a descriptor and a goroutine for up to a second)"},
			&cli.Float64Flag{Name: "handshake-failure-rate", Value: def.HandshakeFailureRate, Usage: "failed WebSocket handshakes per second per address (IPv6: per /64); past --handshake-failure-burst of them the address's connections are answered 429 (0 = unlimited)"},
			&cli.IntFlag{Name: "handshake-failure-burst", Value: def.HandshakeFailureBurst, Usage: "failed handshakes an address may have at once above --handshake-failure-rate"},
			&cli.DurationFlag{Name: "defer-accept", Value: def.DeferAccept, Usage: "Linux: the kernel holds a connection that has sent nothing for about this long before the broker accepts it (TCP_DEFER_ACCEPT; 0 = off)"},
			&cli.StringFlag{Name: "trusted-proxies", Usage: "comma-separated `CIDRS` of reverse proxies whose X-Forwarded-For names the client the per-address limits apply to (none by default)"},
			&cli.StringFlag{Name: "ip-limit-exempt", Value: prefixList(def.IPLimitExempt), Usage: "comma-separated `CIDRS` the per-address limits skip (a reverse proxy's address); \"\" for none"},
			&cli.DurationFlag{Name: "http-read-timeout", Value: def.HTTPReadTimeout, Usage: "time to send a request's headers and body"},
			&cli.DurationFlag{Name: "http-write-timeout", Value: def.HTTPWriteTimeout, Usage: "time a response may go without progress"},
			&cli.DurationFlag{Name: "http-idle-timeout", Value: def.HTTPIdleTimeout, Usage: "how long an idle keep-alive connection stays open"},
			&cli.StringFlag{Name: "topic-retention", Value: "keep", Usage: "delete topic posts older than this `DUR` (e.g. 30d); keep = never"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "cluster", Usage: "run as a node of the cluster `NAME` (records replicated through NATS JetStream; every node shares broker.key)"},
			&cli.StringFlag{Name: "node", Usage: "this node's `ID`, unique in the cluster (with --cluster)"},
			&cli.StringFlag{Name: "cluster-listen", Usage: "`ADDR` of the embedded NATS server's route port, which the other nodes dial"},
			&cli.StringFlag{Name: "cluster-routes", Usage: "comma-separated route `ADDRS` of every node (this one may be listed); none = a one-node cluster"},
			&cli.StringFlag{Name: "nats", Usage: "connect to the existing NATS (JetStream) system at `URL` instead of embedding a server"},
			&cli.IntFlag{Name: "cluster-replicas", Usage: "replicas of the replicated log: 1, 3 or 5 (default 3, or 1 for an embedded node without routes)"},
			&cli.DurationFlag{Name: "cluster-write-timeout", Value: 5 * time.Second, Usage: "how long a write waits for a quorum of the cluster before it is refused (unavailable)"},
			&cli.Uint64Flag{Name: "cluster-snapshot-every", Value: def.ClusterSnapshotEvery, Usage: "log compaction: snapshot the records into JetStream once this many log `ENTRIES` were written since the last snapshot, then purge the log behind it (0 = never; the log then grows with every write)"},
			&cli.DurationFlag{Name: "cluster-snapshot-interval", Value: def.ClusterSnapshotInterval, Usage: "how often the node that leads the log checks whether a snapshot is due (at most one snapshot per `DUR`)"},
			&cli.Uint64Flag{Name: "cluster-log-keep", Value: def.ClusterLogKeep, Usage: "log `ENTRIES` kept before a snapshot when the log is purged, so a node a little behind catches up from the log instead of restoring the snapshot"},
		},
		Subcommands: []*cli.Command{compactCommand(), clusterRestoreCommand()},
		Action: func(c *cli.Context) error {
			if name := negativeFlag(c); name != "" {
				return cliui.UsageErrorf("--%s must not be negative", name)
			}
			// Timers the broker cannot run at 0 (New refuses them, naming
			// no flag).
			for _, name := range []string{"queue-ttl", "ping-interval", "pong-timeout", "grace", "redeliver-after", "hello-timeout"} {
				if c.Duration(name) <= 0 {
					return cliui.UsageErrorf("--%s must be positive", name)
				}
			}
			// Limits with no "off": New reads 0 as the default, which a
			// broker started with --max-groups 0 did quietly (it kept
			// 32, not "none" nor "unlimited").
			for _, name := range []string{"max-pending", "max-pending-per-sender", "max-queued-bytes-per-sender", "max-queued-bytes-per-mesh", "max-groups", "max-handshakes", "max-handshakes-per-ip"} {
				if c.IsSet(name) && c.Int64(name) == 0 {
					return cliui.UsageErrorf("--%s must be at least 1: it cannot be turned off (leave the flag out for its default)", name)
				}
			}
			for _, name := range []string{"http-read-timeout", "http-write-timeout", "http-idle-timeout"} {
				if c.IsSet(name) && c.Duration(name) == 0 {
					return cliui.UsageErrorf("--%s must be positive", name)
				}
			}
			if c.IsSet("max-frame") && c.Int64("max-frame") < minMaxFrame {
				return cliui.UsageErrorf("--max-frame must be at least %d (64 KiB): below it the broker refuses hellos and ordinary messages", minMaxFrame)
			}
			if c.IsSet("send-buffer") && c.Int("send-buffer") < minSendBuffer {
				return cliui.UsageErrorf("--send-buffer must be at least %d (256 KiB): the largest push must fit in it", minSendBuffer)
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return cliui.UsageErrorf("--log-level is debug, info, warn or error, not %q", c.String("log-level"))
			}
			if u := c.String("public-url"); u != "" {
				if err := wire.CheckBrokerURL(u); err != nil {
					return cliui.UsageErrorf("--public-url: %v", err)
				}
			}
			retention, err := topicRetentionFlag(c.String("topic-retention"))
			if err != nil {
				return err
			}
			if (c.String("tls-cert") == "") != (c.String("tls-key") == "") {
				return cliui.UsageErrorf("give both --tls-cert and --tls-key, or neither")
			}
			exempt, err := parsePrefixes(c.String("ip-limit-exempt"))
			if err != nil {
				return cliui.UsageErrorf("--ip-limit-exempt: %v", err)
			}
			trusted, err := parsePrefixes(c.String("trusted-proxies"))
			if err != nil {
				return cliui.UsageErrorf("--trusted-proxies: %v", err)
			}
			cc, err := clusterFlags(c)
			if err != nil {
				return err
			}
			publicURLs, err := publicURLsFlag(c.String("public-url"), c.String("public-urls"))
			if err != nil {
				return err
			}
			cfg := Config{
				Listen: c.String("listen"), MetricsListen: c.String("metrics-listen"), DataDir: c.String("data"),
				PublicURL: c.String("public-url"), PublicURLs: publicURLs, TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"),
				MaxFrame: c.Int64("max-frame"), MaxConnsPerMesh: c.Int("max-connections-per-mesh"), MaxConnsPerMember: c.Int("max-connections-per-member"),
				MaxPending: c.Int("max-pending"), MaxPendingPerSender: c.Int("max-pending-per-sender"),
				MaxQueuedBytesPerSender: c.Int64("max-queued-bytes-per-sender"), MaxQueuedBytesPerMesh: c.Int64("max-queued-bytes-per-mesh"), Rate: c.Float64("rate"), Burst: c.Int("burst"),
				ByteRate: c.Int64("byte-rate"), ByteBurst: c.Int64("byte-burst"),
				QueueTTL: c.Duration("queue-ttl"), SendBuffer: c.Int("send-buffer"),
				PingInterval: c.Duration("ping-interval"), PongTimeout: c.Duration("pong-timeout"),
				Grace: c.Duration("grace"), RedeliverAfter: c.Duration("redeliver-after"), AckDefer: c.Duration("ack-defer"),
				HelloTimeout: c.Duration("hello-timeout"), AuditMessages: c.Bool("audit-messages"), TopicRetention: retention,
				MaxHandshakes: c.Int("max-handshakes"), MaxHandshakesPerIP: c.Int("max-handshakes-per-ip"),
				Init: c.Bool("init"), AckRate: c.Float64("ack-rate"), PresenceRate: c.Float64("presence-rate"), PresenceBurst: c.Int("presence-burst"),
				HelloRefusalRate: c.Float64("hello-refusal-rate"), HelloRefusalBurst: c.Int("hello-refusal-burst"), ResumeWindow: c.Int("resume-window"), FetchRate: c.Int64("fetch-rate"),
				MaxSessionsPerMember: c.Int("max-sessions-per-member"), MaxGroups: c.Int("max-groups"), MaxConnsPerIP: c.Int("max-conns-per-ip"), MaxRefusalsPerIP: c.Int("max-refusals-per-ip"), IPLimitExempt: exempt, TrustedProxies: trusted, DeferAccept: c.Duration("defer-accept"),
				HandshakeFailureRate: c.Float64("handshake-failure-rate"), HandshakeFailureBurst: c.Int("handshake-failure-burst"),
				HTTPReadTimeout: c.Duration("http-read-timeout"), HTTPWriteTimeout: c.Duration("http-write-timeout"),
				HTTPIdleTimeout: c.Duration("http-idle-timeout"),
				WorkingDecay:    def.WorkingDecay, Version: buildinfo.Version,
				Logger:  slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
				Cluster: cc, ClusterPublishTimeout: c.Duration("cluster-write-timeout"),
				ClusterSnapshotEvery: c.Uint64("cluster-snapshot-every"), ClusterSnapshotInterval: c.Duration("cluster-snapshot-interval"),
				ClusterLogKeep: c.Uint64("cluster-log-keep"),
			}
			return Run(c.Context, cfg)
		},
	}
}

// clusterFlags reads the cluster flags: nil (a single broker on its own
// bbolt file, exactly as without them) unless --cluster is given.
func clusterFlags(c *cli.Context) (*cluster.Config, error) {
	name := c.String("cluster")
	if name == "" {
		for _, f := range []string{"node", "cluster-listen", "cluster-routes", "nats", "cluster-replicas", "cluster-snapshot-every", "cluster-snapshot-interval", "cluster-log-keep"} {
			if c.IsSet(f) {
				return nil, cliui.UsageErrorf("--%s needs --cluster NAME", f)
			}
		}
		return nil, nil
	}
	cc := &cluster.Config{Name: name, NodeID: c.String("node"), Listen: c.String("cluster-listen"), NATSURL: c.String("nats"), Replicas: c.Int("cluster-replicas")}
	if cc.NodeID == "" {
		return nil, cliui.UsageErrorf("--cluster needs --node ID, unique in the cluster")
	}
	for _, r := range strings.Split(c.String("cluster-routes"), ",") {
		if r = strings.TrimSpace(r); r != "" {
			cc.Routes = append(cc.Routes, r)
		}
	}
	if cc.NATSURL != "" {
		if cc.Listen != "" || len(cc.Routes) > 0 {
			return nil, cliui.UsageErrorf("--nats connects to an existing NATS system: give it without --cluster-listen and --cluster-routes")
		}
	} else {
		if len(cc.Routes) > 0 && cc.Listen == "" {
			return nil, cliui.UsageErrorf("--cluster-routes needs --cluster-listen ADDR (this node's route port, which the others dial)")
		}
		if cc.Listen == "" {
			// A one-node cluster: no other node dials in.
			cc.Listen = "127.0.0.1:0"
		}
	}
	if cc.Replicas == 0 {
		cc.Replicas = 3
		if cc.NATSURL == "" && len(cc.Routes) == 0 {
			cc.Replicas = 1
		}
	}
	if cc.NATSURL == "" && len(cc.Routes) == 0 && cc.Replicas != 1 {
		return nil, cliui.UsageErrorf("--cluster-replicas %d needs --cluster-routes (a node without routes is alone)", cc.Replicas)
	}
	if err := cc.Validate(); err != nil {
		return nil, cliui.UsageErrorf("%v", err)
	}
	return cc, nil
}

// publicURLsFlag reads --public-urls: nil when absent; else the list,
// which needs --public-url (this node's own URL, which every answer of
// this node names first).
// minMaxFrame is the smallest --max-frame the command takes: the largest
// hello at the default group cap is about 28 KiB, and a message of a few
// KiB of plaintext must fit beside it.
const minMaxFrame = 64 << 10

func publicURLsFlag(self, list string) ([]string, error) {
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	if len(urls) == 0 {
		return nil, nil
	}
	if self == "" {
		return nil, cliui.UsageErrorf("--public-urls needs --public-url (this node's own public URL, returned first)")
	}
	if _, err := publicURLList(self, urls); err != nil {
		return nil, cliui.UsageErrorf("%v", err)
	}
	return urls, nil
}

// parsePrefixes reads a comma-separated list of CIDRs or bare addresses
// (a bare address is its own /32 or /128). The result is never nil, so an
// empty list means "exempt nothing".
func parsePrefixes(s string) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
				// Addresses are compared unmapped (addrOf): an
				// IPv4-mapped prefix would never match.
				p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR nor an address", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// negativeFlag names the first number or duration given on the command
// line below zero. Every limit, rate and timer of the broker is 0 or more,
// and the broker read a negative one as 0: `--rate -5` turned the
// per-member send rate limit off without a word.
func negativeFlag(c *cli.Context) string {
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if !c.IsSet(name) {
			continue
		}
		var bad bool
		switch f.(type) {
		case *cli.IntFlag:
			bad = c.Int(name) < 0
		case *cli.Int64Flag:
			bad = c.Int64(name) < 0
		case *cli.Float64Flag:
			v := c.Float64(name)
			bad = v < 0 || math.IsNaN(v)
		case *cli.DurationFlag:
			bad = c.Duration(name) < 0
		}
		if bad {
			return name
		}
	}
	return ""
}

// listenHint says why a listener could not open: an address that does not
// parse is not a busy port.
func listenHint(addr string, err error) string {
	if _, _, perr := net.SplitHostPort(addr); perr != nil {
		return "give --listen as HOST:PORT (127.0.0.1:7900, or :7900 for every interface)"
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return "another process uses the port; choose another with --listen"
	}
	return "check the address (an address of this machine, a port you may bind)"
}

// Run starts a broker and blocks until ctx ends or SIGTERM/SIGINT arrives,
// then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	// From the start: a cluster node can wait a minute in NewContext for
	// its cluster to form, and a signal meanwhile must stop it.
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The certificate and the ports first: neither an unreadable file nor
	// a busy port may be reported only after a first start created the
	// data dir, its key and its token.
	if _, err := loadTLS(cfg); err != nil {
		return cliui.Errorf("broker_start", "%v", err).
			WithHint("check both paths, that the files are a PEM certificate and its private key, and that this user can read them")
	}
	if cfg.Listener == nil {
		ln, err := listen(cfg.Listen, cfg.DeferAccept)
		if err != nil {
			return cliui.Errorf("broker_start", "cannot listen on %s: %v", cfg.Listen, err).
				WithHint(listenHint(cfg.Listen, err))
		}
		cfg.Listener = ln
	}
	if cfg.MetricsListener == nil && cfg.MetricsListen != "" && cfg.MetricsListen != "off" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			cfg.Listener.Close()
			return cliui.Errorf("broker_start", "cannot listen on %s for metrics: %v", cfg.MetricsListen, err).
				WithHint("choose another address with --metrics-listen, or --metrics-listen off")
		}
		cfg.MetricsListener = mln
	}
	b, err := NewContext(ctx, cfg)
	if err != nil {
		cfg.Listener.Close()
		if cfg.MetricsListener != nil {
			cfg.MetricsListener.Close()
		}
		if ctx.Err() != nil {
			// SIGTERM or SIGINT while it started: a clean stop.
			cfg.Logger.Info("stopped before it started", "err", err)
			return nil
		}
		return cliui.Errorf("broker_start", "%v", err)
	}
	if err := b.Start(ctx); err != nil {
		b.Close()
		return cliui.Errorf("broker_start", "%v", err)
	}
	// The heap goal stays at least gcHeadroom above the live heap: under
	// load the broker's live heap is small and its allocation rate high,
	// and GOGC=100 made it collect many times a second (internal/gcfloor).
	// GOGC in the environment turns this off.
	defer gcfloor.Start(gcHeadroom)()
	// CLAUDEMESH_BROKER_CPUPROFILE=FILE writes a pprof CPU profile of the
	// whole run, for `claudemesh bench` investigations (the bench's child
	// broker inherits the environment).
	if path := os.Getenv("CLAUDEMESH_BROKER_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
	// CLAUDEMESH_BROKER_TRACE=FILE writes a runtime execution trace of the
	// whole run (`go tool trace`; -pprof=sync or =sched for where
	// goroutines waited), for latency that a CPU profile does not show.
	if path := os.Getenv("CLAUDEMESH_BROKER_TRACE"); path != "" {
		if f, err := os.Create(path); err == nil {
			if trace.Start(f) == nil {
				defer func() { trace.Stop(); f.Close() }()
			}
		}
	}
	// CLAUDEMESH_BROKER_MUTEXPROFILE=FILE writes, at shutdown, where
	// contended mutexes were released (so which holders made others
	// wait), sampling every contention event.
	mutexProfile := os.Getenv("CLAUDEMESH_BROKER_MUTEXPROFILE")
	if mutexProfile != "" {
		runtime.SetMutexProfileFraction(1)
	}
	<-ctx.Done()
	if mutexProfile != "" {
		if f, err := os.Create(mutexProfile); err == nil {
			pprof.Lookup("mutex").WriteTo(f, 0)
			f.Close()
		}
	}
	// CLAUDEMESH_BROKER_MEMPROFILE=FILE writes a heap profile at shutdown
	// (what is live just before the connections close).
	if path := os.Getenv("CLAUDEMESH_BROKER_MEMPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			pprof.Lookup("heap").WriteTo(f, 0)
			f.Close()
		}
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		os.WriteFile(path+".txt", fmt.Appendf(nil, "heapInuse %d\nheapAlloc %d\nstackInuse %d\nsys %d\ngoroutines %d\nheapIdle %d\nheapReleased %d\nnumGC %d\n",
			m.HeapInuse, m.HeapAlloc, m.StackInuse, m.Sys, runtime.NumGoroutine(), m.HeapIdle, m.HeapReleased, m.NumGC), 0o600)
	}
	cfg.Logger.Info("shutting down")
	if err := b.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	cfg.Logger.Info("stopped")
	return nil
}

// gcHeadroom is how far above the live heap the broker's next collection
// is set at least (internal/gcfloor): 64 MiB, small beside the memory
// targets (a 100-peer load's heap goal goes from ~30 to ~80 MB), and no
// change once thousands of connections make the live heap larger.
const gcHeadroom = 64 << 20
