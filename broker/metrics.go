package broker

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics is the broker's own registry (01-protocol §10). No label carries
// a peer, topic or mesh: cardinality stays bounded whatever the traffic, and
// the operator's dashboards never become a directory of who talks to whom.
type metrics struct {
	registry          *prometheus.Registry
	connsActive       prometheus.Gauge
	connsTotal        prometheus.Counter
	connsRejected     *prometheus.CounterVec
	routed            *prometheus.CounterVec
	rejected          *prometheus.CounterVec
	droppedByGrant    *prometheus.CounterVec
	pending           prometheus.Gauge
	redeliveries      prometheus.Counter
	expired           prometheus.Counter
	sendAck           prometheus.Histogram
	storeCommit       prometheus.Histogram
	slowConsumerDrops prometheus.Counter
	// limitTripped counts refusals by one of the broker's abuse limits
	// (docs/security.md "Limits"), by limit name: the operator sees which
	// limit is biting, and whether to raise it or look for an abuser.
	limitTripped *prometheus.CounterVec
}

func newMetrics() *metrics {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		connsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "claudemesh_connections_active", Help: "Authenticated WebSocket connections open now."}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "claudemesh_connections_total", Help: "Connections that completed the handshake."}),
		connsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudemesh_connections_rejected_total", Help: "Connections refused, by reason code."}, []string{"reason"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudemesh_messages_routed_total", Help: "Messages accepted and queued."}, []string{"kind", "priority"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudemesh_messages_rejected_total", Help: "Sends refused, by error code."}, []string{"reason"}),
		droppedByGrant: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudemesh_messages_dropped_by_grant_total", Help: "Deliveries dropped by a recipient's grants."}, []string{"cap"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "claudemesh_deliveries_pending", Help: "Delivery records waiting for a client_ack."}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "claudemesh_redeliveries_total", Help: "Pushes re-sent because no ack came in time."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "claudemesh_deliveries_expired_total", Help: "Deliveries dropped after --queue-ttl."}),
		sendAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "claudemesh_send_ack_seconds", Help: "From a send frame read to its ack queued (durable).", Buckets: latency}),
		storeCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "claudemesh_store_commit_seconds", Help: "Duration of one group commit (including fsync).", Buckets: latency}),
		slowConsumerDrops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "claudemesh_slow_consumer_disconnects_total", Help: "Connections closed 4008 because their send buffer overflowed."}),
		limitTripped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "claudemesh_limits_tripped_total", Help: "Requests, frames or connections refused by an abuse limit, by limit."}, []string{"limit"}),
	}
	m.registry.MustRegister(m.connsActive, m.connsTotal, m.connsRejected, m.routed, m.rejected,
		m.droppedByGrant, m.pending, m.redeliveries, m.expired, m.sendAck, m.storeCommit, m.slowConsumerDrops, m.limitTripped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
