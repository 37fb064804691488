package daemon

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
)

// event is one Server-Sent Event. id comes from daemon.db's events
// sequence, shared by every event, so ids are monotonic across restarts and
// a message event's id is its inbox row's sequence (03-daemon "Events").
type event struct {
	id     uint64
	kind   string
	meshID string
	data   any
	// inbox and outbox are the rows behind message and outbox_status
	// events, which a session subscriber sees only when its scope does.
	inbox  *inboxRow
	outbox *outboxRow
	// session is the pubkey of the agent session the event is about
	// alone (session_status): only its subscribers get it.
	session string
}

// visibleTo reports whether a subscriber with scope sc gets the event.
func (ev *event) visibleTo(sc *sessionScope) bool {
	switch {
	case sc == nil:
		return true
	case ev.session != "":
		return ev.session == sc.session
	case ev.inbox != nil:
		return sc.sees(ev.inbox)
	case ev.outbox != nil:
		return sc.seesOutbox(ev.outbox)
	}
	return sc.seesMesh(ev.meshID)
}

// eventHub fans events out to SSE subscribers. A subscriber that cannot
// keep up is dropped (its client reconnects with Last-Event-ID and replays
// from the inbox), so one stuck reader never holds up the others.
type eventHub struct {
	mu   sync.Mutex
	subs map[*subscriber]struct{}
	// open counts the streams open per caller (streamKey).
	open map[string]int
}

// Event streams one caller may hold open at once: each is a goroutine, a
// 1,024-event buffer and a file descriptor for as long as it stays open,
// and a local client that opened them in a loop took the daemon's memory
// and descriptors from everyone else. An agent session needs one (its MCP
// server's, a `topic tail` or two beside it); the member's own callers
// (the socket, --tcp, the chat page's tabs, every `inbox --follow` in a
// terminal) share a larger number.
const (
	maxSessionStreams = 8
	maxMemberStreams  = 64
)

type subscriber struct {
	key     string // the caller's streamKey
	ch      chan event
	dropped chan struct{}
	once    sync.Once
	meshID  string        // "" = all meshes
	scope   *sessionScope // nil unless a session subscribed
}

func newEventHub() *eventHub {
	return &eventHub{subs: map[*subscriber]struct{}{}, open: map[string]int{}}
}

// subscribe opens a stream for caller key, or returns nil when key has
// limit streams open already.
func (h *eventHub) subscribe(meshID string, sc *sessionScope, key string, limit int) *subscriber {
	s := &subscriber{key: key, ch: make(chan event, 1024), dropped: make(chan struct{}), meshID: meshID, scope: sc}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.open[key] >= limit {
		return nil
	}
	h.open[key]++
	h.subs[s] = struct{}{}
	return s
}

// unsubscribe ends s's stream; its handler calls it once, also after a
// drop (publish, closeAll), which leaves the count to it.
func (h *eventHub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	if h.open[s.key]--; h.open[s.key] <= 0 {
		delete(h.open, s.key)
	}
	h.mu.Unlock()
	s.once.Do(func() { close(s.dropped) })
}

func (h *eventHub) publish(ev event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.meshID != "" && ev.meshID != "" && s.meshID != ev.meshID {
			continue
		}
		if !ev.visibleTo(s.scope) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			delete(h.subs, s)
			s.once.Do(func() { close(s.dropped) })
		}
	}
}

func (h *eventHub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		delete(h.subs, s)
		s.once.Do(func() { close(s.dropped) })
	}
}

// update commits fn and, only if it succeeded, runs published on the
// committer goroutine before returning. Commit callbacks run in commit
// order, so events are published in the order of their ids: a client that
// resumes from the highest id it saw can never skip an earlier one.
func (d *Daemon) update(fn func(tx *bolt.Tx) error, published func()) error {
	return d.commitWait(d.db.Submit, fn, published)
}

// updateLazy is update for a write that no caller needs on disk at once
// (the drain's record of an ack or a receipt, the accept journal's copy
// into daemon.db: what it records is already safe, in the journal or with
// the broker, which resends a receipt that was not settled). It may wait
// up to commitLinger for other writes to share its commit: the drain's
// updates came one commit each, and a commit costs two fdatasyncs and
// rewrites the same B+tree pages each time.
func (d *Daemon) updateLazy(fn func(tx *bolt.Tx) error, published func()) error {
	return d.commitWait(d.db.SubmitDeferred, fn, published)
}

// commitLinger is how long a commit of updateLazy writes only waits for
// company (store.Options.DeferFor). Any other write commits at once, with
// them. Under a burst of accepts (16 clients, the drain running) 2 ms
// gave ~300 daemon.db commits in the phase, 6 ms ~130 (each costs two
// fdatasyncs, CPU on a VM): the daemon's CPU fell ~13 % and its accepts
// rose in 5 of 6 interleaved pairs (BENCHMARKS.md, twentieth
// session). A lone accepted row still commits at once (acceptLog.applyLoop);
// what waits longer is a burst's copy and the drain's ack and receipt
// records, which nothing needs on disk at once (the drain's window slot
// is free at the ack, not at its record: meshRT.drain).
const commitLinger = 6 * time.Millisecond

func (d *Daemon) commitWait(submit func(func(tx *bolt.Tx) error, func(error)) error, fn func(tx *bolt.Tx) error, published func()) error {
	done := make(chan error, 1)
	err := submit(fn, func(err error) {
		if err == nil && published != nil {
			published()
		}
		done <- err
	})
	if err != nil {
		return err
	}
	return <-done
}

// publishAsync allocates an event id in the store and publishes after the
// commit; used for events that carry no row of their own.
func (d *Daemon) publishAsync(kind, meshID string, data any) {
	d.publishEventAsync(event{kind: kind, meshID: meshID, data: data})
}

// publishEventAsync is publishAsync of an event with its scope fields set.
func (d *Daemon) publishEventAsync(ev event) {
	var seq uint64
	d.db.Submit(func(tx *bolt.Tx) error {
		var err error
		seq, err = tx.Bucket(bEvents).NextSequence()
		return err
	}, func(err error) {
		if err == nil {
			ev.id = seq
			d.events.publish(ev)
		}
	})
}

// keepalive is how often an idle SSE stream gets a comment line.
const keepalive = 15 * time.Second

// handleEvents is GET /v1/events: subscribe first, then replay message
// events after Last-Event-ID from the inbox, then stream live events,
// skipping any the replay already sent. A restarted MCP server loses
// nothing this way.
func (d *Daemon) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, &apiError{status: 500, code: "internal", msg: "streaming unsupported"})
		return
	}
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var sc *sessionScope
	if sess != nil {
		sc = sess.scope()
	}
	meshID := ""
	if slug := r.URL.Query().Get("mesh"); slug != "" {
		m := d.meshBySlug(slug)
		if m == nil {
			writeError(w, &apiError{status: 404, code: "mesh_not_found", msg: "not joined to " + slug})
			return
		}
		meshID = m.cfg.MeshID
	}
	var last uint64
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, badRequest("invalid_argument", "Last-Event-ID must be an event id"))
			return
		}
		last = n
	}
	key, limit, who := "", maxMemberStreams, "this member's callers (the socket, --tcp and the chat page together) hold"
	if sess != nil {
		key, limit, who = "session:"+sess.rec.TokenHash, maxSessionStreams, "this session holds"
	}
	sub := d.events.subscribe(meshID, sc, key, limit)
	if sub == nil {
		writeError(w, &apiError{status: 429, code: "too_many_streams",
			msg: fmt.Sprintf("%s %d event streams open already, the most allowed; close one (an inbox --follow, a topic tail, a chat page tab) first", who, limit)})
		return
	}
	defer d.events.unsubscribe(sub)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(200)
	fmt.Fprint(w, ": claudemesh events\n\n")
	fl.Flush()
	sent := last
	if r.Header.Get("Last-Event-ID") != "" {
		rows, err := d.listInbox("", last, false, 0, sc)
		if err != nil {
			return
		}
		for i := len(rows) - 1; i >= 0; i-- { // oldest first
			row := rows[i]
			if meshID != "" && row.MeshID != meshID {
				continue
			}
			if !writeEvent(w, event{id: row.Seq, kind: localapi.EventMessage, data: row.api()}) {
				return
			}
			sent = row.Seq
		}
		fl.Flush()
	}
	tick := time.NewTicker(keepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sub.dropped:
			return
		case <-tick.C:
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		case ev := <-sub.ch:
			if ev.kind == localapi.EventMessage && ev.id <= sent {
				continue
			}
			if !writeEvent(w, ev) {
				return
			}
			// Send whatever else is already waiting before flushing.
			for more := true; more; {
				select {
				case ev := <-sub.ch:
					if ev.kind == localapi.EventMessage && ev.id <= sent {
						continue
					}
					if !writeEvent(w, ev) {
						return
					}
				default:
					more = false
				}
			}
			fl.Flush()
		}
	}
}

func writeEvent(w http.ResponseWriter, ev event) bool {
	data, err := json.Marshal(ev.data)
	if err != nil {
		return false
	}
	_, err = fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", ev.id, ev.kind, data)
	return err == nil
}
