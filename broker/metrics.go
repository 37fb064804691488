package broker

import (
	cmmetrics "claudemesh/internal/metrics"
)

// metrics is the broker's own registry (01-protocol §10). No label carries
// a peer, topic or mesh: cardinality stays bounded whatever the traffic, and
// the operator's dashboards never become a directory of who talks to whom.
type metrics struct {
	registry          *cmmetrics.Registry
	connsActive       *cmmetrics.Gauge
	connsTotal        *cmmetrics.Counter
	connsRejected     *cmmetrics.CounterVec
	routed            *cmmetrics.CounterVec
	rejected          *cmmetrics.CounterVec
	droppedByGrant    *cmmetrics.CounterVec
	pending           *cmmetrics.Gauge
	redeliveries      *cmmetrics.Counter
	expired           *cmmetrics.Counter
	sendAck           *cmmetrics.Histogram
	storeCommit       *cmmetrics.Histogram
	slowConsumerDrops *cmmetrics.Counter
	// limitTripped counts refusals by one of the broker's abuse limits
	// (docs/security.md "Limits"), by limit name: the operator sees which
	// limit is biting, and whether to raise it or look for an abuser.
	limitTripped *cmmetrics.CounterVec
	sseStreams   *cmmetrics.Gauge
}

func newMetrics() *metrics {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	r := cmmetrics.NewRegistry().WithRuntime()
	return &metrics{
		registry:          r,
		connsActive:       r.NewGauge("claudemesh_connections_active", "Authenticated WebSocket connections open now."),
		connsTotal:        r.NewCounter("claudemesh_connections_total", "Connections that completed the handshake."),
		connsRejected:     r.NewCounterVec("claudemesh_connections_rejected_total", "Connections refused, by reason code.", "reason"),
		routed:            r.NewCounterVec("claudemesh_messages_routed_total", "Messages accepted and queued.", "kind", "priority"),
		rejected:          r.NewCounterVec("claudemesh_messages_rejected_total", "Sends refused, by error code.", "reason"),
		droppedByGrant:    r.NewCounterVec("claudemesh_messages_dropped_by_grant_total", "Deliveries dropped by a recipient's grants.", "cap"),
		pending:           r.NewGauge("claudemesh_deliveries_pending", "Delivery records waiting for a client_ack."),
		redeliveries:      r.NewCounter("claudemesh_redeliveries_total", "Pushes re-sent because no ack came in time."),
		expired:           r.NewCounter("claudemesh_deliveries_expired_total", "Deliveries dropped after --queue-ttl."),
		sendAck:           r.NewHistogram("claudemesh_send_ack_seconds", "From a send frame read to its ack queued (durable).", latency),
		storeCommit:       r.NewHistogram("claudemesh_store_commit_seconds", "Duration of one group commit (including fsync).", latency),
		slowConsumerDrops: r.NewCounter("claudemesh_slow_consumer_disconnects_total", "Connections closed 4008 because their send buffer overflowed."),
		limitTripped:      r.NewCounterVec("claudemesh_limits_tripped_total", "Requests, frames or connections refused by an abuse limit, by limit.", "limit"),
		sseStreams:        r.NewGauge("claudemesh_sse_streams_active", "Topic SSE streams (GET /v1/topics/{name}/stream) open now."),
	}
}
