package daemon

import (
	"fmt"
	"strings"
	"time"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// A broker cluster without a quorum of its nodes keeps its connections
// open but refuses every write `unavailable`; the daemon retries the rows
// as for an outage, silently, so daemon status said "open" with rows
// "being sent" for minutes and the log said nothing. The mesh now
// remembers the refusal: daemon status shows it (meshErrors, on an open
// mesh) and the log says when it began and when it cleared.

// writesRefusedBy records a send refused `unavailable` by the node at via
// (the URL of the connection it went on); the first of a run is logged.
func (m *meshRT) writesRefusedBy(err error, via string) {
	why := client.MessageOf(err, "the broker could not make the message durable")
	m.mu.Lock()
	first := m.writesRefused.IsZero()
	if first {
		m.writesRefused = time.Now()
	}
	m.writesRefusedWhy, m.writesRefusedVia = why, via
	m.mu.Unlock()
	if first {
		m.d.log.Warn("the broker is up but refuses writes (unavailable: its cluster has no quorum, or this node is catching up); accepted messages wait and are sent when it accepts writes again",
			"mesh", m.cfg.Slug, "url", via, "broker", why)
	}
}

// writesAccepted records a send the broker acked: a run of refusals ends,
// which is logged with its length.
func (m *meshRT) writesAccepted() {
	m.mu.Lock()
	since := m.writesRefused
	m.writesRefused, m.writesRefusedWhy, m.writesRefusedVia = time.Time{}, "", ""
	m.mu.Unlock()
	if !since.IsZero() {
		m.d.log.Info("the broker accepts writes again", "mesh", m.cfg.Slug, "refusedFor", time.Since(since).Round(time.Second).String())
	}
}

// writesProblem is daemon status's word on an open mesh whose broker
// refuses writes (nil when it accepts them).
func (m *meshRT) writesProblem() *localapi.Error {
	m.mu.Lock()
	since, via := m.writesRefused, m.writesRefusedVia
	m.mu.Unlock()
	if since.IsZero() {
		return nil
	}
	if via == "" {
		// Not known (never so for a send on a connection).
		via = strings.Join(m.cfg.URLs(), " or ")
	}
	// The node that refused, not every node of the cluster: the daemon
	// knows which one its connection is on.
	return &localapi.Error{Code: wire.CodeUnavailable,
		Message: fmt.Sprintf("mesh %s: the broker at %s is up but has refused every message since %s (unavailable): a cluster without a quorum of its nodes, or a node catching up; accepted messages wait and go out by themselves once it accepts them (the daemon log says when)",
			m.cfg.Slug, via, sinceText(since, time.Now())),
		Hint: "nothing accepted is lost; the broker's operator brings the cluster's nodes back (its /health/ready says no quorum meanwhile)"}
}

// sinceText is when a state began, for a status line: the time of day
// with its zone today, with the date too from an earlier day (a cluster
// that lost its quorum last night said "since 23:10:04", read as
// tonight's), and how long ago.
func sinceText(since, now time.Time) string {
	layout := "15:04:05 MST"
	if y, m, d := since.Date(); y != now.Year() || m != now.Month() || d != now.Day() {
		layout = "2006-01-02 15:04:05 MST"
	}
	return since.Format(layout) + ", " + now.Sub(since).Round(time.Second).String() + " ago"
}
