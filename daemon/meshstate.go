package daemon

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"

	bolt "go.etcd.io/bbolt"
)

// What a request that needs a mesh's broker is told when the mesh is not
// open: the state, why, and what to do — the same words in `daemon
// status`, in every verb on that mesh and in the local API.

// connectWait is how long a request waits for a mesh that is still making
// its first connection (a daemon started by this very command).
const connectWait = 3 * time.Second

// stateOf returns the mesh's state and the error that led to it.
func (m *meshRT) stateOf() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.stateErr
}

// openConn is the open connection, after waiting up to connectWait for a
// mesh that is still connecting; nil with the reason otherwise.
func (m *meshRT) openConn() (*client.Conn, *apiError) {
	if s, _ := m.stateOf(); s == localapi.MeshConnecting {
		m.waitOpen(connectWait)
	}
	if c := m.conn(); c != nil {
		return c, nil
	}
	return nil, m.unavailable()
}

// unavailable is the error for a request that needs the broker of m while
// m is not open.
func (m *meshRT) unavailable() *apiError { return m.unavailableAfter(nil) }

// unavailableAfter is unavailable for a request whose connection ended
// under it with lost (nil: none). The mesh's state is told of a change
// after the presence has made it (onState): a connection that just ended
// leaves the mesh showing open for a moment, and the presence's own
// state, or while it has not noticed either the request's error, says
// why instead (it said "mesh test is open" to a request refused for want
// of a connection).
func (m *meshRT) unavailableAfter(lost error) *apiError {
	state, err := m.stateOf()
	if p := m.presence.Load(); state == localapi.MeshOpen && p != nil {
		s, perr := p.State()
		state, err = string(s), perr
		if s == client.StateOpen && lost != nil {
			state, err = string(client.StateReconnecting), lost
		}
	}
	p := m.problem(state, err)
	if p == nil {
		// Open again already.
		p = &localapi.Error{Code: client.CodeUnreachable,
			Message: fmt.Sprintf("mesh %s: the connection to the broker at %s was down for this request, and is open again", m.cfg.Slug, strings.Join(m.cfg.URLs(), " or ")),
			Hint:    "try again"}
	}
	status := http.StatusServiceUnavailable
	switch p.Code {
	case client.CodeBrokerKeyMismatch:
		status = http.StatusBadGateway
	case wire.ReasonKicked, wire.ReasonRemoved, wire.CodeBanned, wire.CodeRevoked, wire.ReasonLeft, wire.CodeUnauthorized:
		status = http.StatusForbidden
	case wire.ReasonReplaced:
		status = http.StatusConflict
	}
	return &apiError{status: status, code: p.Code, msg: p.Message, hint: p.Hint}
}

// refusesSends is the error for a send to a mesh that will never drain in
// this run (a final state): accepting it would promise what cannot happen.
// A mesh that is only reconnecting accepts sends: they go out when it is
// back.
func (m *meshRT) refusesSends() *apiError {
	state, _ := m.stateOf()
	switch client.State(state) {
	case client.StateBrokerKeyMismatch, client.StateKicked, client.StateRemoved, client.StateBanned, client.StateClosed:
		return m.unavailable()
	}
	return nil
}

// removedSettleAfter is how many refusals of this member as unknown in a
// row (MeshRemoved) fail the rows accepted before: more than a cluster
// node that has not yet learnt of a member's join gives (it catches up
// within a second or two, and the presence's backoff spaces the attempts
// 1, 2, 4 s apart).
const removedSettleAfter = 3

// removedSettleEnv overrides removedSettleDefault (a duration; tests).
const removedSettleEnv = "CLAUDEMESH_REMOVED_AFTER"

// removedSettleDefault is how long the broker must have refused this
// member as unknown before the rows accepted earlier fail: refusals alone
// are not the operator's word (its close is, and fails them at once). A
// broker started for a moment on a wrong data directory, or a cluster node
// behind the log, refuses every member for seconds, and failing the rows
// a user was told were accepted would be a loss; a member really removed
// stays refused.
const removedSettleDefault = 10 * time.Minute

func removedSettleWait() time.Duration {
	if d, err := time.ParseDuration(os.Getenv(removedSettleEnv)); err == nil && d >= 0 {
		return d
	}
	return removedSettleDefault
}

// takeSettleRemoved reports, once, that the broker has refused this member
// as unknown removedSettleAfter times in a row since the last call.
func (m *meshRT) takeSettleRemoved() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.settleRemoved && m.state == localapi.MeshRemoved
	m.settleRemoved = false
	return t
}

// rearmSettleRemoved asks for another failRemoved (rows were being sent).
func (m *meshRT) rearmSettleRemoved() {
	m.mu.Lock()
	m.settleRemoved = true
	m.mu.Unlock()
}

// failRemoved fails the accepted rows of a mesh whose member was removed
// (MeshRemoved: the operator's close, or removedSettleAfter refusals at
// hello): the member's and its sessions' rows can never be sent as this
// member, and the way back (a new invite, joined as a new member) forgets
// them.
func (m *meshRT) failRemoved() {
	_, err := m.stateOf()
	why := fmt.Sprintf("%s: the broker at %s no longer knows this member (%s): it was removed from the mesh, or the mesh is gone from that broker, so this message can never be sent",
		localapi.CodeMemberRemoved, strings.Join(m.cfg.URLs(), " or "), client.MessageOf(err, "no such member in this mesh"))
	if client.CodeOf(err) != wire.CodeUnauthorized {
		why = localapi.CodeMemberRemoved + ": the broker's operator removed this member from the mesh, so this message can never be sent"
	}
	var seqs []uint64
	prefix := append([]byte(m.cfg.MeshID), 0)
	m.d.db.View(func(tx *bolt.Tx) error {
		for _, b := range []*bolt.Bucket{tx.Bucket(bOutboxPending), tx.Bucket(bOutboxRetry)} {
			c := b.Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				seqs = append(seqs, seqOf(k))
			}
		}
		return nil
	})
	failed := 0
	for _, seq := range seqs {
		ran := m.d.failUnlessSending(m, seq, func() {
			m.d.updateRow(seq, func(cur *outboxRow) bool {
				if cur.State != statePending || cur.MeshID != m.cfg.MeshID {
					return false
				}
				cur.State, cur.ErrorCode, cur.LastError = stateDead, localapi.CodeMemberRemoved, why
				failed++
				return true
			})
		})
		if !ran {
			// Its outcome is recorded by the drain, which wakes this
			// loop again when it is: try it then.
			m.rearmSettleRemoved()
		}
	}
	if failed > 0 {
		m.d.log.Warn("this member was removed from the mesh; accepted messages failed", "mesh", m.cfg.Slug, "rows", failed)
	}
}

// problem describes a mesh that is not open (nil when it is open, or
// connecting for the first time with nothing to report yet).
func (m *meshRT) problem(state string, err error) *localapi.Error {
	why := ""
	if err != nil {
		why = err.Error()
	}
	// A clustered broker is reached at any of its URLs.
	url := strings.Join(m.cfg.URLs(), " or ")
	// The commands name this daemon's home, always (the daemon's
	// environment need not be the reader's shell's): run as printed they
	// restart this daemon, not another identity's.
	cm := config.InvocationWithHome(m.d.home)
	switch client.State(state) {
	case client.StateOpen:
		return nil
	case client.StateConnecting:
		return &localapi.Error{Code: client.CodeUnreachable,
			Message: fmt.Sprintf("mesh %s: still connecting to the broker at %s", m.cfg.Slug, url),
			Hint:    "try again in a moment; claudemesh daemon status shows the connection"}
	case client.StateBrokerKeyMismatch:
		if why == "" {
			why = "the server cannot prove it holds the pinned broker key " + m.cfg.BrokerPubkey
		}
		return &localapi.Error{Code: client.CodeBrokerKeyMismatch,
			Message: fmt.Sprintf("mesh %s: %s; nothing is sent to that mesh (messages already in the outbox stay there) while the daemon checks the broker again every few minutes, and every connection must prove the pinned key", m.cfg.Slug, client.MessageOf(err, why)),
			Hint: "if the mesh's operator really replaced the broker key, join again with a new invite; otherwise something at " + url +
				" is impersonating the broker, or another server stood in for it: once the real broker answers there again the daemon reconnects by itself within minutes (" +
				cm + " daemon down && " + cm + " daemon up tries at once)"}
	case client.StateKicked:
		return &localapi.Error{Code: wire.ReasonKicked, Message: fmt.Sprintf("mesh %s: this member was kicked (%s)", m.cfg.Slug, why),
			Hint: "run " + cm + " daemon up to reconnect (messages already in the outbox are kept and go out then), or ask the mesh owner why; " +
				"if the member was removed from the mesh, the broker refuses it from now on: ask the mesh owner or an admin for a new invite (claudemesh invite --mesh " +
				config.ShellQuote(m.cfg.Slug) + "), then " + rejoin(cm, m.cfg.Slug)}
	case client.StateRemoved:
		if client.CodeOf(err) == wire.CodeUnauthorized {
			break // refused at hello (below): the daemon keeps trying
		}
		return &localapi.Error{Code: wire.ReasonRemoved,
			Message: fmt.Sprintf("mesh %s: this member was removed from the mesh by the broker's operator; the daemon stopped connecting to it, and the broker refuses it from now on (messages accepted and not yet sent failed: %s)", m.cfg.Slug, localapi.CodeMemberRemoved),
			Hint: "to come back, ask the mesh owner or an admin for a new invite (they run: claudemesh invite --mesh " + config.ShellQuote(m.cfg.Slug) +
				"), then " + rejoin(cm, m.cfg.Slug)}
	case client.StateBanned:
		// The broker's words for a ban (01-protocol §3) say "removed",
		// which is another state here (the operator's removal, for good):
		// a ban is said as a ban.
		return &localapi.Error{Code: wire.CodeBanned, Message: fmt.Sprintf("mesh %s: this member is banned from the mesh: the broker closed its connections and refuses it until the mesh owner or an admin lifts the ban", m.cfg.Slug),
			Hint: "ask the mesh owner or an admin to run: claudemesh unban " + config.ShellQuote(m.cfg.DisplayName) + " --mesh " + config.ShellQuote(m.cfg.Slug) +
				"; then run " + cm + " daemon up to reconnect (messages already in the outbox are kept)"}
	case client.StateClosed:
		if client.CodeOf(err) == wire.ReasonReplaced {
			return replacedProblem(m.cfg.Slug, cm, client.MessageOf(err, ""))
		}
		return &localapi.Error{Code: wire.ReasonLeft, Message: fmt.Sprintf("mesh %s: the connection was closed for good (%s)", m.cfg.Slug, why),
			Hint: "restart the daemon (" + cm + " daemon down && " + cm + " daemon up)"}
	}
	if client.CodeOf(err) == wire.CodeUnauthorized {
		// The broker answered: it does not know this member (removed by
		// the operator, or the mesh is gone from it). A cluster node may
		// not know a member that joined through another node for a
		// moment, so the daemon keeps trying; the words say what to do.
		return &localapi.Error{Code: wire.CodeUnauthorized,
			Message: fmt.Sprintf("mesh %s: the broker at %s refuses this member (%s): it was removed from the mesh, or the mesh is gone from that broker", m.cfg.Slug, url, why),
			Hint: "to come back, ask the mesh owner or an admin for a new invite (they run: claudemesh invite --mesh " + config.ShellQuote(m.cfg.Slug) +
				"), then " + rejoin(cm, m.cfg.Slug) + "; the daemon keeps trying meanwhile"}
	}
	msg := fmt.Sprintf("mesh %s: the broker at %s cannot be reached", m.cfg.Slug, url)
	if r := client.NetReason(err); r != "" {
		// "the connection was reset", not Go's "connection_closed: read
		// tcp 127.0.0.1:55688->127.0.0.1:19400: read: connection reset
		// by peer".
		why = r
	}
	if why != "" {
		msg += " (" + why + ")"
	}
	hint := "the daemon keeps retrying; sends are kept in its outbox until the broker is back"
	if h := client.HintOf(err); h != "" {
		// An untrusted certificate, a hung server: what fixes it.
		hint = h + "; meanwhile " + hint
	}
	return &localapi.Error{Code: client.CodeUnreachable, Message: msg, Hint: hint}
}

// replacedProblem is a mesh whose connection another process with this
// member's keys took over (session_replaced): a second daemon for this
// home, or a daemon on a copy of it. This daemon stops connecting (the
// presence's verdict), so the two do not take the connection from each
// other in a loop; restarting it would take the connection back and close
// the other's, which is what the advice must not hide. brokerText is the
// broker's error frame before the close ("another connection with this
// identity connected from host "h" (address a) and took over: …"), "" from
// a broker that sends none.
func replacedProblem(slug, cm, brokerText string) *localapi.Error {
	from := ""
	if rest, ok := strings.CutPrefix(brokerText, "another connection with this identity connected from "); ok {
		if i := strings.Index(rest, " and took over"); i > 0 {
			from = " from " + rest[:i]
		}
	}
	return &localapi.Error{Code: wire.ReasonReplaced,
		Message: fmt.Sprintf("mesh %s: another daemon with this identity is connected%s and took this daemon's connection over "+
			"(two daemons hold this member's keys: one on a copy of this home, or a second one started for it); "+
			"this daemon stopped connecting to the mesh, so that the two do not take the connection from each other in a loop, and sends to it are refused here", slug, from),
		Hint: "keep one daemon per identity. If the other is the one to keep, use it (and stop this one: " + cm + " daemon down). " +
			"If this one is, stop the other first (claudemesh daemon down, run for that home or on that host), then " + cm + " daemon down && " + cm + " daemon up; " +
			"restarting this one while the other runs takes the connection back and closes the other's. " +
			"A copied home shares this member's keys and needs an identity of its own: do not run mesh leave in the copy " +
			"(the broker would remove the member both homes share, and drop what is queued for it); stop the copy's daemon, " +
			"delete the copied home, and join with a new invite into a new one (claudemesh --home DIR join LINK)"}
}

// rejoin is the advice for a member the broker no longer knows: the mesh
// must leave this home before a new invite can be joined into it.
func rejoin(cm, slug string) string {
	return "run " + cm + " mesh leave " + slug + " and " + cm + " join LINK"
}

// meshProblems lists the meshes that are not open, with their problem.
func (d *Daemon) meshProblems() map[string]localapi.Error {
	out := map[string]localapi.Error{}
	for _, m := range d.meshList() {
		state, err := m.stateOf()
		if state == localapi.MeshOpen || (state == localapi.MeshConnecting && err == nil) {
			continue
		}
		if p := m.problem(state, err); p != nil {
			out[m.cfg.Slug] = *p
		}
	}
	return out
}
