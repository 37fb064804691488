package daemon

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/buildinfo"
	"claudemesh/wire"
)

// apiError is an error answer of the local API.
type apiError struct {
	status     int
	code, msg  string
	hint       string
	candidates []wire.Candidate
	rowStatus  string
}

func badRequest(code, msg string) *apiError { return &apiError{status: 400, code: code, msg: msg} }

func meshNotFound(slug string) *apiError {
	return &apiError{status: 404, code: "mesh_not_found", msg: "not joined to a mesh called " + slug}
}

func internalError(err error) *apiError {
	return &apiError{status: 500, code: "internal", msg: err.Error()}
}

// clientError maps a client package error (resolution, sealing, broker
// answers) to an API error with the HTTP status its code deserves.
func clientError(err error) *apiError {
	var ce *client.Error
	if !errors.As(err, &ce) {
		return internalError(err)
	}
	status := 502
	switch ce.Code {
	case wire.CodeInvalidArgument, wire.CodePayloadTooLarge, wire.CodeMalformed, "mesh_required":
		status = 400
	case "unknown_target", wire.CodeUnknownRecipient, "topic_not_found", wire.CodeNotFound, "mesh_not_found":
		status = 404
	case wire.CodeTopicKeyMissing, wire.CodeStaleKeyGen, wire.CodeTopicExists, wire.CodeIncompleteSeals:
		status = 409
	case wire.CodeAmbiguousTarget, wire.CodeIdempotencyKeyReused:
		status = 409
	case wire.CodeForbidden, wire.CodeNotAMember, wire.CodeRevoked:
		status = 403
	case "unreachable", "connection_closed", "timeout":
		status = 503
	}
	return &apiError{status: status, code: ce.Code, msg: ce.Message, candidates: ce.Candidates}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.MarshalWrite(w, v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, localapi.ErrorBody{Error: localapi.Error{Code: e.code, Message: e.msg, Candidates: e.candidates, Status: e.rowStatus, Hint: e.hint}})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil || len(data) > 1<<20 {
		writeError(w, &apiError{status: 413, code: wire.CodePayloadTooLarge, msg: "bodies are limited to 1 MiB"})
		return false
	}
	if err := wire.Decode(data, v); err != nil {
		writeError(w, badRequest(wire.CodeMalformed, wire.DescribeDecodeError(err, "the request body")))
		return false
	}
	return true
}

// guard enforces the local API's browser defences (03-daemon "Local API"):
// no Origin header (a web page can reach a loopback port, never with our
// Host and without an Origin), a loopback Host, and no token in a query
// string (query strings end up in logs and histories).
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Origin") != "" {
			writeError(w, &apiError{status: 403, code: wire.CodeForbidden, msg: "requests with an Origin header are refused"})
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		switch host {
		case "localhost", "127.0.0.1", "::1", "[::1]":
		default:
			writeError(w, &apiError{status: 403, code: wire.CodeForbidden, msg: "the Host must be localhost"})
			return
		}
		if localapi.SecretInQuery(r.URL.Query()) != "" {
			writeError(w, badRequest("token_in_query", "tokens are never accepted in query strings; use the Authorization header"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// tcpGuard requires the local token on the optional TCP listener, which any
// local user could otherwise reach.
func (d *Daemon) tcpGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(tok), []byte(d.token)) != 1 {
			writeError(w, &apiError{status: 401, code: wire.CodeUnauthorized, msg: "Authorization: Bearer <daemon/local-token> required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", d.handleVersion)
	mux.HandleFunc("GET /v1/health", d.handleHealth)
	mux.HandleFunc("GET /v1/status", d.handleStatus)
	mux.HandleFunc("POST /v1/send", d.handleSend)
	mux.HandleFunc("GET /v1/peers", d.handlePeers)
	mux.HandleFunc("GET /v1/members", d.handleMembers)
	mux.HandleFunc("GET /v1/inbox", d.handleInbox)
	mux.HandleFunc("POST /v1/inbox/seen", d.handleSeen)
	mux.HandleFunc("DELETE /v1/inbox", d.handleDeleteInbox)
	mux.HandleFunc("DELETE /v1/inbox/{id}", d.handleDeleteInboxRow)
	mux.HandleFunc("GET /v1/outbox", d.handleOutbox)
	mux.HandleFunc("POST /v1/outbox/requeue", d.handleRequeue)
	mux.HandleFunc("GET /v1/messages/{id}", d.handleMessageStatus)
	mux.HandleFunc("POST /v1/groups", d.handleGroups)
	mux.HandleFunc("POST /v1/profile", d.handleProfile)
	mux.HandleFunc("GET /v1/events", d.handleEvents)
	mux.HandleFunc("POST /v1/reload", d.handleReload)
	mux.HandleFunc("POST /v1/sessions/register", d.handleRegister)
	mux.HandleFunc("DELETE /v1/sessions/{token}", d.handleDeregister)
	mux.HandleFunc("GET /v1/sessions/me", d.handleSessionMe)
	mux.HandleFunc("GET /v1/sessions", d.handleSessions)
	mux.HandleFunc("POST /v1/sessions/hook", d.handleHook)
	d.topicRoutes(mux) // topics_api.go
	d.webRoutes(mux)
	mux.HandleFunc("GET /v1/skills", d.handleSkills)
	mux.HandleFunc("GET /v1/skills/{name}", d.handleSkill)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: 404, code: wire.CodeNotFound, msg: "no such route: " + r.Method + " " + r.URL.Path})
	})
	return guard(mux)
}

var features = []string{"send", "outbox", "inbox", "events", "peers", "members", "profile", "groups", "reload", "sessions", "hook", "topics", "web", "skills", "audit"}

func (d *Daemon) handleVersion(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, localapi.Version{DaemonVersion: buildinfo.Version, API: localapi.APIVersion, Features: features, PID: os.Getpid()})
}

func (d *Daemon) meshStates() map[string]string {
	out := map[string]string{}
	for _, m := range d.meshList() {
		out[m.cfg.Slug] = m.getState()
	}
	return out
}

func (d *Daemon) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, localapi.Health{OK: true, PID: os.Getpid(), Meshes: d.meshStates(), MeshErrors: d.meshProblems()})
}

// handleStatus backs `daemon status`: uptime, mesh states, outbox rows by
// internal state and unread inbox rows.
func (d *Daemon) handleStatus(w http.ResponseWriter, r *http.Request) {
	st := localapi.Status{Running: true, PID: os.Getpid(), UptimeSec: int64(time.Since(d.started).Seconds()),
		Meshes: d.meshStates(), MeshErrors: d.meshProblems(), Outbox: &localapi.OutboxCounts{}, Sessions: len(d.sessionList()), Audit: d.audit.snapshot(), Web: d.webStatus(), TCP: d.tcpStatus()}
	// An open mesh whose broker refuses writes (writes.go): said by
	// status and doctor, not by health (a read's listing is not about it).
	for _, m := range d.meshList() {
		if c := m.ackConn(); c != nil && st.Meshes[m.cfg.Slug] == localapi.MeshOpen {
			if st.MeshBrokers == nil {
				st.MeshBrokers = map[string]string{}
			}
			st.MeshBrokers[m.cfg.Slug] = c.Identity().BrokerURL
		}
		if _, said := st.MeshErrors[m.cfg.Slug]; !said && st.Meshes[m.cfg.Slug] == localapi.MeshOpen {
			if p := m.writesProblem(); p != nil {
				if st.MeshErrors == nil {
					st.MeshErrors = map[string]localapi.Error{}
				}
				st.MeshErrors[m.cfg.Slug] = *p
			}
		}
	}
	var size int64
	var rows int
	unseenBy, rowOf := map[string]int64{}, map[string][]byte{}
	d.outboxSettled(r)
	d.db.View(func(tx *bolt.Tx) error {
		n := outboxCounts(tx)
		// Rows being sent are pending in daemon.db (drain).
		sending := min(d.inflightCount(), n[statePending])
		n[statePending] -= sending
		n[stateInflight] += sending
		*st.Outbox = localapi.OutboxCounts{Pending: n[statePending], Inflight: n[stateInflight], Queued: n[stateQueued],
			Sent: n[stateSent], Delivered: n[stateDelivered], Dead: n[stateDead], Aborted: n[stateAborted], Untracked: n[stateUntracked]}
		return tx.Bucket(bInbox).ForEach(func(k, v []byte) error {
			if !bytesContains(v, `"seenAt"`) {
				st.InboxUnread++
				if bytesContains(v, `"mentionsYou":true`) {
					st.InboxMentions++
				}
				from := rowSender(v)
				unseenBy[from] += int64(len(v))
				if _, ok := rowOf[from]; !ok {
					rowOf[from] = bytes.Clone(k)
				}
			}
			size += int64(len(v))
			rows++
			return nil
		})
	})
	shares, shareWarnings := d.senderShares(unseenBy, rowOf)
	st.Inbox, st.Warnings = d.inboxStatus(size, rows, st.InboxUnread, shares, shareWarnings)
	if p := d.acc.problem(); p != "" {
		st.Warnings = append(st.Warnings, p)
	}
	writeJSON(w, 200, st)
}

func (d *Daemon) handleSend(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var req localapi.SendRequest
	if !readJSON(w, r, &req) {
		return
	}
	resp, status, aerr := d.accept(r.Context(), req, r.Header.Get("Idempotency-Key"), sess)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, status, resp)
}

// meshesFor returns the meshes a read covers: the named one, or all.
func (d *Daemon) meshesFor(w http.ResponseWriter, slug string) ([]*meshRT, bool) {
	if slug == "" {
		return d.meshList(), true
	}
	m := d.meshBySlug(slug)
	if m == nil {
		writeError(w, meshNotFound(slug))
		return nil, false
	}
	return []*meshRT{m}, true
}

// liveDirectory asks the broker for the mesh's members and presences
// (refreshing the cache), after waiting briefly for a mesh that is still
// making its first connection. A mesh that is not open is an error that
// says why: answering from the cache would show a broker that cannot be
// reached as "nobody is connected".
func (m *meshRT) liveList(ctx context.Context) ([]wire.Member, []wire.Peer, *apiError) {
	if _, aerr := m.openConn(); aerr != nil {
		return nil, nil, aerr
	}
	members, peers, err := m.liveDirectory(ctx, time.Now())
	switch {
	case errors.Is(err, errNotConnected) || client.CodeOf(err) == client.CodeConnectionClosed:
		// The connection ended after openConn found it open.
		return nil, nil, m.unavailableAfter(err)
	case err != nil:
		return nil, nil, clientError(err)
	}
	return members, peers, nil
}

// directoryFor is the directory of each mesh a read covers: live for the
// named mesh (an error when it is not open); for all meshes, live where
// open and the last known copy elsewhere.
func (d *Daemon) directoryFor(w http.ResponseWriter, r *http.Request) ([]*meshRT, [][]wire.Member, [][]wire.Peer, bool) {
	slug := r.URL.Query().Get("mesh")
	ms, ok := d.meshesFor(w, slug)
	if !ok {
		return nil, nil, nil, false
	}
	members, peers := make([][]wire.Member, len(ms)), make([][]wire.Peer, len(ms))
	for i, m := range ms {
		mem, ps, aerr := m.liveList(r.Context())
		if aerr != nil && slug != "" {
			writeError(w, aerr)
			return nil, nil, nil, false
		}
		if aerr != nil {
			mem, ps = m.directory()
		}
		members[i], peers[i] = mem, ps
	}
	return ms, members, peers, true
}

// handlePeers lists the presences of one or all meshes. isSelf marks this
// member's presences (its daemon and its sessions); isThisSession marks
// the caller's own presence: the calling session's, or, for a caller that
// is not a session, the daemon's control-plane presence it speaks through.
func (d *Daemon) handlePeers(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	ms, _, peers, ok := d.directoryFor(w, r)
	if !ok {
		return
	}
	out := []localapi.Peer{}
	for i, m := range ms {
		self := m.key.PublicHex()
		for _, p := range peers[i] {
			this := p.MemberPubkey == self && p.SessionID == "daemon" && p.Role == wire.RoleControlPlane
			if sess != nil {
				this = p.Pubkey == sess.rec.Pubkey
			}
			out = append(out, localapi.Peer{Mesh: m.cfg.Slug, Peer: p, IsSelf: p.MemberPubkey == self, IsThisSession: this})
		}
	}
	writeJSON(w, 200, out)
}

func (d *Daemon) handleMembers(w http.ResponseWriter, r *http.Request) {
	ms, members, _, ok := d.directoryFor(w, r)
	if !ok {
		return
	}
	out := []localapi.Member{}
	for i, m := range ms {
		for _, mem := range members[i] {
			out = append(out, localapi.Member{Mesh: m.cfg.Slug, Member: mem})
		}
	}
	writeJSON(w, 200, out)
}

// paramError says which query parameter is wrong, what it holds and what
// it takes.
func paramError(r *http.Request, name, want string) *apiError {
	v := r.URL.Query().Get(name)
	if v == "" {
		return badRequest(wire.CodeInvalidArgument, "the query parameter "+name+" is required: "+want)
	}
	if len(v) > 64 {
		v = v[:64] + "…"
	}
	return badRequest(wire.CodeInvalidArgument, fmt.Sprintf("the query parameter %s=%q is not valid: %s", name, v, want))
}

// badBool is the first of names given a value that is not a boolean.
func badBool(r *http.Request, names ...string) *apiError {
	for _, n := range names {
		if v := r.URL.Query().Get(n); v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				return paramError(r, n, "it is true or false")
			}
		}
	}
	return nil
}

func boolParam(r *http.Request, name string) bool {
	v := r.URL.Query().Get(name)
	b, _ := strconv.ParseBool(v)
	return b
}

func uintParam(r *http.Request, name string) (uint64, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(v, 10, 64)
	return n, err == nil
}

// handleInbox lists stored rows newest first. Reading never changes state
// unless markSeen=true is asked for.
func (d *Daemon) handleInbox(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var sc *sessionScope
	if sess != nil {
		sc = sess.scope()
	}
	q := r.URL.Query()
	since, ok1 := uintParam(r, "since")
	limit, ok2 := uintParam(r, "limit")
	switch {
	case !ok1:
		writeError(w, paramError(r, "since", "it is an inbox row id, a whole number (0 or more)"))
		return
	case !ok2:
		writeError(w, paramError(r, "limit", "it is a whole number (0 or more; 0: no limit)"))
		return
	}
	if aerr := badBool(r, "sync", "unreadOnly", "oldest", "markSeen", "left"); aerr != nil {
		writeError(w, aerr)
		return
	}
	// left: the rows of meshes no longer served (mesh leave), which the
	// daemon keeps: mesh may then name one of them, and there is no
	// broker to collect from.
	left := boolParam(r, "left")
	if slug := q.Get("mesh"); slug != "" && !left && d.meshBySlug(slug) == nil {
		writeError(w, meshNotFound(slug))
		return
	}
	if boolParam(r, "sync") && !left {
		ms := d.meshList()
		if slug := q.Get("mesh"); slug != "" {
			ms = []*meshRT{d.meshBySlug(slug)}
		}
		d.syncInbox(r.Context(), ms)
	}
	// oldest: oldest first, so that limit takes the oldest rows (the CLI's
	// inbox --unread --limit reads a backlog in order); else newest first.
	rows, err := d.listInboxOrder(q.Get("mesh"), since, boolParam(r, "unreadOnly"), int(limit), sc, boolParam(r, "oldest"), left)
	if err != nil {
		writeError(w, internalError(err))
		return
	}
	out := make([]localapi.InboxRow, 0, len(rows))
	var ids []string
	for _, row := range rows {
		out = append(out, row.api())
		if row.SeenAt == 0 {
			ids = append(ids, strconv.FormatUint(row.Seq, 10))
		}
	}
	if boolParam(r, "markSeen") && len(ids) > 0 {
		if _, err := d.markSeen(ids, sc); err != nil {
			writeError(w, internalError(err))
			return
		}
	}
	writeJSON(w, 200, out)
}

func (d *Daemon) handleSeen(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var sc *sessionScope
	if sess != nil {
		sc = sess.scope()
	}
	var req localapi.SeenRequest
	if !readJSON(w, r, &req) {
		return
	}
	n, err := d.markSeen(req.IDs, sc)
	if err != nil {
		writeError(w, internalError(err))
		return
	}
	writeJSON(w, 200, map[string]any{"ok": true, "marked": n})
}

func (d *Daemon) handleDeleteInbox(w http.ResponseWriter, r *http.Request) {
	before, ok := uintParam(r, "before")
	if !ok {
		writeError(w, paramError(r, "before", "it is an inbox row id, a whole number"))
		return
	}
	n, err := d.deleteInbox(r.URL.Query().Get("mesh"), before, 0)
	if err != nil {
		writeError(w, internalError(err))
		return
	}
	writeJSON(w, 200, map[string]any{"ok": true, "deleted": n})
}

func (d *Daemon) handleDeleteInboxRow(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		writeError(w, badRequest(wire.CodeInvalidArgument, "id is a row id"))
		return
	}
	n, err := d.deleteInbox("", 0, id)
	if err != nil {
		writeError(w, internalError(err))
		return
	}
	if n == 0 {
		writeError(w, &apiError{status: 404, code: wire.CodeNotFound, msg: "no inbox row with that id"})
		return
	}
	writeJSON(w, 200, localapi.OK{OK: true})
}

// handleOutbox lists rows newest first, filtered by public or internal
// status.
func (d *Daemon) handleOutbox(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	if err := checkOutboxStatus(status); err != nil {
		writeError(w, badRequest(wire.CodeInvalidArgument, strings.TrimPrefix(err.Error(), "--")))
		return
	}
	limit, ok := uintParam(r, "limit")
	if !ok {
		writeError(w, paramError(r, "limit", "it is a whole number (0 or more; 0: no limit)"))
		return
	}
	out := []localapi.OutboxRow{}
	d.outboxSettled(r)
	if cmid := r.URL.Query().Get("clientMessageId"); cmid != "" {
		// One row, by the caller's id (send --wait's last look).
		d.db.View(func(tx *bolt.Tx) error {
			row, err := outboxByCMID(tx, cmid)
			if err != nil {
				return nil
			}
			if row.State == statePending && d.isSending(row.Seq) {
				row.State = stateInflight
			}
			if status == "" || status == row.State || status == publicStatus(row.State) {
				out = append(out, row.api())
			}
			return nil
		})
		writeJSON(w, 200, out)
		return
	}
	d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bOutbox).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var row outboxRow
			if decodeOutbox(v, &row) != nil {
				continue
			}
			if row.State == statePending && d.isSending(row.Seq) {
				row.State = stateInflight // pending in daemon.db while it is sent (drain)
			}
			if status != "" && status != row.State && status != publicStatus(row.State) {
				continue
			}
			out = append(out, row.api())
			if limit > 0 && len(out) >= int(limit) {
				break
			}
		}
		return nil
	})
	writeJSON(w, 200, out)
}

func (d *Daemon) handleRequeue(w http.ResponseWriter, r *http.Request) {
	var req localapi.RequeueRequest
	if !readJSON(w, r, &req) {
		return
	}
	d.outboxSettled(r)
	id, err := strconv.ParseUint(req.ID, 10, 64)
	if err != nil {
		// Also accept a clientMessageId.
		d.db.View(func(tx *bolt.Tx) error {
			if row, err := outboxByCMID(tx, req.ID); err == nil {
				id = row.Seq
			}
			return nil
		})
	}
	if id == 0 {
		writeError(w, &apiError{status: 404, code: wire.CodeNotFound, msg: "no outbox row " + req.ID})
		return
	}
	row, aerr := d.requeue(id)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, 200, row.api())
}

// handleMessageStatus asks the broker for a message this member sent, by
// messageId or clientMessageId (an outbox row tells which mesh).
func (d *Daemon) handleMessageStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	slug := r.URL.Query().Get("mesh")
	messageID, cmid := "", ""
	var row *outboxRow
	d.outboxSettled(r)
	d.db.View(func(tx *bolt.Tx) error {
		row, _ = outboxByCMID(tx, id)
		return nil
	})
	switch {
	case row != nil && row.State == stateDead && (row.ErrorCode == localapi.CodeLostByBroker || row.ErrorCode == localapi.CodeRecordPurged):
		what, hint := unknownWhy(row, row.ErrorCode, d.opts.Home)
		writeError(w, &apiError{status: 410, code: row.ErrorCode, msg: what, hint: hint})
		return
	case row != nil && row.BrokerMessageID != "":
		messageID, slug = row.BrokerMessageID, row.Mesh
	case row != nil:
		// Not at the broker yet (accepted, or failed before it got
		// there): what the outbox knows, as a status, not an error (a
		// script asking right after send got exit 1 "still in the
		// outbox" for a message on its way).
		writeJSON(w, 200, localapi.OutboxMessageStatus{ClientMessageID: row.ClientMessageID, TargetSpec: row.TargetSpec,
			DisplayName: row.DisplayName, CreatedAt: row.EnqueuedAt, Recipients: []wire.RecipientState{}, State: publicStatus(row.State),
			Error: row.LastError, ErrorCode: row.ErrorCode})
		return
	case wire.ValidULID(id):
		messageID = id
	default:
		cmid = id
	}
	// Only a row the status check follows (expiry.go checkUnsettled: a
	// DM or group message the broker still counts recipients of) is
	// called lost on a not_found; a topic post has no recipients and
	// stays unsettled for good.
	if row == nil || !unsettled(row.State) || row.Kind == wire.KindTopic || row.Pending == 0 {
		d.brokerCall(w, r, slug, func(ctx context.Context, c *client.Conn) (any, error) {
			st, err := c.MessageStatus(ctx, messageID, cmid)
			if row == nil && messageID == id && client.CodeOf(err) == wire.CodeNotFound {
				// A clientMessageId may be a ULID too (the CLI mints one
				// when --id is not given): one no outbox row holds (sent
				// by another path, or the row is gone) is tried as one.
				st, err = c.MessageStatus(ctx, "", id)
			}
			return st, err
		})
		return
	}
	// The broker acked this row: if it has no record of it now, say
	// that, not "you sent no message" (the status check fails the row
	// once it is sure: expiry.go).
	m, aerr := d.chooseMesh(slug)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	c, aerr := m.openConn()
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	st, err := c.MessageStatus(ctx, messageID, "")
	code := map[string]string{wire.CodeNotFound: localapi.CodeLostByBroker, wire.CodeExpired: localapi.CodeRecordPurged}[client.CodeOf(err)]
	switch {
	case code == localapi.CodeLostByBroker && m.earlierMembership(row.SenderPubkey, row.EnqueuedAt):
		writeError(w, &apiError{status: 410, code: localapi.CodeLeftMesh,
			msg:  "you sent it as your earlier membership of " + m.cfg.Slug + " (you joined again since): the broker answers only the member that sent it, and this machine no longer learns whether it was delivered",
			hint: "do not send it again blindly: the broker still delivers it to recipients who come back"})
	case code == localapi.CodeLostByBroker:
		// One answer is not final for the status check (two, a round
		// apart: expiry.go), and requeue takes failed rows only.
		writeError(w, &apiError{status: 410, code: code,
			msg:  "the broker took it, but now says it has no record of it (was it restored from a backup?)",
			hint: "the daemon asks again within a few minutes and, if the broker still has none, marks it failed (lost_by_broker); then resend it with " + config.Invocation(d.opts.Home) + " daemon outbox requeue " + strconv.FormatUint(row.Seq, 10)})
	case code != "":
		what, hint := unknownWhy(row, code, d.opts.Home)
		writeError(w, &apiError{status: 410, code: code, msg: what, hint: hint})
	case err != nil:
		writeError(w, clientError(err))
	default:
		writeJSON(w, 200, st)
	}
}

// brokerCall answers a request that is one exchange with the broker of the
// chosen mesh, on the daemon's open connection and bounded by 10 s: 503
// when the mesh is not connected, the client error when call fails, else
// 200 and what call returned.
func (d *Daemon) brokerCall(w http.ResponseWriter, r *http.Request, slug string, call func(ctx context.Context, c *client.Conn) (any, error)) {
	m, aerr := d.chooseMesh(slug)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	c, aerr := m.openConn()
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v, err := call(ctx, c)
	if err != nil {
		writeError(w, clientError(err))
		return
	}
	writeJSON(w, 200, v)
}

func (d *Daemon) handleGroups(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var req localapi.GroupRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Op != "join" && req.Op != "leave" {
		writeError(w, badRequest(wire.CodeInvalidArgument, "op must be join or leave"))
		return
	}
	d.profileCall(w, r, sess, req.Mesh, func(ctx context.Context, c *client.Conn) (any, error) {
		if req.Op == "join" {
			return localapi.OK{OK: true}, c.JoinGroup(ctx, req.Name, req.Role)
		}
		return localapi.OK{OK: true}, c.LeaveGroup(ctx, req.Name)
	}, func(rec *sessionRecord) {
		if req.Op == "join" {
			rec.Groups = joinedGroups(rec.Groups, wire.Group{Name: req.Name, Role: req.Role})
		} else {
			rec.Groups = slices.DeleteFunc(rec.Groups, func(g wire.Group) bool { return g.Name == req.Name })
		}
	})
}

func (d *Daemon) handleProfile(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var req localapi.ProfileRequest
	if !readJSON(w, r, &req) {
		return
	}
	d.profileCall(w, r, sess, req.Mesh, func(ctx context.Context, c *client.Conn) (any, error) {
		var err error
		if req.Status != "" {
			err = c.SetStatus(ctx, req.Status)
		}
		if err == nil && req.Summary != nil {
			err = c.SetSummary(ctx, *req.Summary)
		}
		if err == nil && req.Visible != nil {
			err = c.SetVisible(ctx, *req.Visible)
		}
		return localapi.OK{OK: true}, err
	}, func(rec *sessionRecord) {
		if req.Status != "" {
			rec.Status, rec.StatusAt = req.Status, time.Now().UnixMilli()
		}
		if req.Summary != nil {
			rec.Summary = *req.Summary
		}
		if req.Visible != nil {
			rec.Hidden = !*req.Visible
		}
	})
}

func (d *Daemon) handleReload(w http.ResponseWriter, r *http.Request) {
	started, err := d.Reload()
	if err != nil {
		writeError(w, internalError(err))
		return
	}
	d.refreshBlockedAll() // the grant verbs reload after a change
	writeJSON(w, 200, localapi.ReloadResponse{OK: true, Started: started})
}

// profileCall runs a profile change (status, summary, visibility, groups)
// on the calling session's own connection, so it changes that session
// alone (01-protocol §4), or, for a caller that is not a session (or a
// session naming another mesh), as the member on the mesh's connection.
// After a session's change succeeds, record applies it to the session's
// registration, which its next session_hello restores.
func (d *Daemon) profileCall(w http.ResponseWriter, r *http.Request, sess *sessionRT, slug string, call func(ctx context.Context, c *client.Conn) (any, error), record func(rec *sessionRecord)) {
	if sess == nil || (slug != "" && d.meshBySlug(slug) != nil && d.meshBySlug(slug).cfg.MeshID != sess.rec.MeshID) {
		d.brokerCall(w, r, slug, call)
		return
	}
	c := sess.conn()
	if c == nil {
		st := client.StateClosed
		if p := sess.pres(); p != nil {
			st, _ = p.State()
		}
		writeError(w, &apiError{status: 503, code: "unreachable", msg: fmt.Sprintf("session %s is not connected (%s)", sess.rec.SessionID, st)})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	v, err := call(ctx, c)
	if err != nil {
		writeError(w, clientError(err))
		return
	}
	sess.recordProfile(record)
	writeJSON(w, 200, v)
}
