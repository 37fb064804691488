package daemon

import (
	"cmp"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// The routes the chat page needs beyond 03-daemon (types in
// localapi/web.go). They read daemon.db the way the inbox and outbox
// routes do; the page reaches them through package web's forwarding.

func (d *Daemon) webRoutes(mux *http.ServeMux) {
	mux.HandleFunc("POST /v1/web/login", d.handleWebLogin)
	mux.HandleFunc("GET /v1/web/state", d.handleWebState)
	mux.HandleFunc("GET /v1/web/threads", d.handleWebThreads)
	mux.HandleFunc("GET /v1/web/thread", d.handleWebThread)
	mux.HandleFunc("GET /v1/web/search", d.handleWebSearch)
}

// handleWebLogin mints a login link for `claudemesh ui`. The web server
// never forwards this route: only a local process that can reach the
// socket (or the bearer-protected TCP listener) gets a link.
func (d *Daemon) handleWebLogin(w http.ResponseWriter, r *http.Request) {
	switch {
	case d.web.srv != nil:
		url, exp := d.web.srv.LoginURL()
		writeJSON(w, 200, localapi.WebLogin{URL: url, ExpiresAt: exp.UnixMilli(), PeerCheck: d.web.srv.PeerCheck()})
	case d.web.err != nil:
		writeError(w, &apiError{status: 503, code: "web_unavailable", msg: fmt.Sprintf("the daemon could not serve the chat page on %s: %v", d.opts.Web, d.web.err)})
	default:
		writeError(w, &apiError{status: 503, code: "web_off", msg: "this daemon does not serve the chat page (it was started with --web off)"})
	}
}

func (d *Daemon) handleWebState(w http.ResponseWriter, r *http.Request) {
	st := localapi.WebState{Meshes: []localapi.WebMesh{}}
	for _, m := range d.meshList() {
		st.Meshes = append(st.Meshes, localapi.WebMesh{
			Slug: m.cfg.Slug, MeshID: m.cfg.MeshID, Name: m.cfg.Name, DisplayName: m.cfg.DisplayName,
			Pubkey: m.cfg.Pubkey, Role: m.role(), State: m.getState(), WebPresence: m.webConnected(),
		})
	}
	d.db.View(func(tx *bolt.Tx) error {
		st.LastEventID = strconv.FormatUint(tx.Bucket(bEvents).Sequence(), 10)
		return nil
	})
	writeJSON(w, 200, st)
}

// Thread keys: a DM is keyed by the other side's pubkey (a member, or one
// of its agent sessions), a group message by `@group`, a broadcast by `*`,
// a topic post by `#name`.
const (
	threadDM        = "dm"
	threadGroup     = "group"
	threadBroadcast = "broadcast"
	threadTopic     = "topic"
)

// inboxThread places a received row in the human's view. Rows addressed
// to one of this member's agent sessions belong to that agent, not to the
// human's page.
func inboxThread(r *inboxRow) (thread, kind string, ok bool) {
	if r.RecipientKind == "session" {
		return "", "", false
	}
	switch r.Kind {
	case wire.KindBox:
		return r.SenderPubkey, threadDM, true
	case wire.KindMulti:
		return multiThread(r.TargetSpec)
	case wire.KindTopic:
		return "#" + r.Topic, threadTopic, r.Topic != ""
	}
	return "", "", false
}

// outboxThread places a row this member sent; a row sent with another
// key than the member's (self) is one of its agent sessions', not the
// human's.
func outboxThread(r *outboxRow, self string) (thread, kind string, ok bool) {
	if r.SessionToken != "" || r.SenderPubkey != self {
		return "", "", false
	}
	switch r.Kind {
	case wire.KindBox:
		return r.TargetSpec, threadDM, true
	case wire.KindMulti:
		return multiThread(r.TargetSpec)
	case wire.KindTopic:
		if strings.HasPrefix(r.To, "#") {
			return r.To, threadTopic, true
		}
	}
	return "", "", false
}

// multiThread: `@group`, else a broadcast (rows stored before the target
// spec was kept have none and were broadcasts or group messages alike;
// they are shown with the broadcasts).
func multiThread(spec string) (string, string, bool) {
	if strings.HasPrefix(spec, "@") && len(spec) > 1 {
		return spec, threadGroup, true
	}
	return "*", threadBroadcast, true
}

func (m *meshRT) nameOf(pubkey string) string {
	members, peers := m.directory()
	for _, mem := range members {
		if mem.Pubkey == pubkey {
			return mem.DisplayName
		}
	}
	for _, p := range peers {
		if p.Pubkey == pubkey {
			return p.DisplayName
		}
	}
	return ""
}

func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n]) + "…"
}

// handleWebThreads lists a mesh's conversations, most recent first, with
// unread counts, from the cache of them (webthreads.go): a pass over the
// rows added since the last request.
func (d *Daemon) handleWebThreads(w http.ResponseWriter, r *http.Request) {
	d.outboxSettled(r) // the page shows what was just sent
	m, aerr := d.chooseMesh(r.URL.Query().Get("mesh"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	out, err := d.meshThreadsNow(m) // webthreads.go
	if err != nil {
		writeError(w, internalError(err))
		return
	}
	for i := range out {
		if out[i].Kind == threadDM {
			if n := m.nameOf(out[i].Thread); n != "" {
				out[i].Name = n
			}
		}
	}
	slices.SortFunc(out, func(a, b localapi.WebThread) int {
		return cmp.Or(cmp.Compare(b.LastAt, a.LastAt), strings.Compare(a.Thread, b.Thread))
	})
	writeJSON(w, 200, out)
}

// threadCursor is a page boundary in both sources: rows below these
// sequences come next (math.MaxUint64: from the newest; 0: exhausted).
type threadCursor struct{ in, out uint64 }

func parseCursor(s string) (threadCursor, bool) {
	c := threadCursor{math.MaxUint64, math.MaxUint64}
	if s == "" {
		return c, true
	}
	i, o, ok := strings.Cut(s, ".")
	if !ok || !strings.HasPrefix(i, "i") || !strings.HasPrefix(o, "o") {
		return c, false
	}
	var err1, err2 error
	c.in, err1 = strconv.ParseUint(i[1:], 10, 64)
	c.out, err2 = strconv.ParseUint(o[1:], 10, 64)
	return c, err1 == nil && err2 == nil
}

func (c threadCursor) String() string {
	if c.in == 0 && c.out == 0 {
		return ""
	}
	return fmt.Sprintf("i%d.o%d", c.in, c.out)
}

// scanBack walks a bucket from just below before (MaxUint64: from the
// end) towards its start until fn returns false.
func scanBack(b *bolt.Bucket, before uint64, fn func(seq uint64, v []byte) bool) {
	if before == 0 {
		return
	}
	c := b.Cursor()
	var k, v []byte
	if before == math.MaxUint64 {
		k, v = c.Last()
	} else if k, v = c.Seek(seqKey(before)); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for ; k != nil; k, v = c.Prev() {
		if !fn(seqOf(k), v) {
			return
		}
	}
}

type scanned struct {
	item localapi.WebItem
	seq  uint64
	out  bool
}

// collect gathers up to limit matching items below cur from each source,
// newest first per source; more tells, per source, that it has more.
func (d *Daemon) collect(tx *bolt.Tx, cur threadCursor, limit int, match func(in *inboxRow, out *outboxRow) (string, bool)) (ins, outs []scanned, moreIn, moreOut bool) {
	scanBack(tx.Bucket(bInbox), cur.in, func(seq uint64, v []byte) bool {
		var row inboxRow
		if decodeRow(v, &row) != nil {
			return true
		}
		key, ok := match(&row, nil)
		if !ok {
			return true
		}
		if len(ins) == limit {
			moreIn = true
			return false
		}
		api := row.api()
		ins = append(ins, scanned{item: localapi.WebItem{Thread: key, At: row.ReceivedAt, In: &api}, seq: seq})
		return true
	})
	scanBack(tx.Bucket(bOutbox), cur.out, func(seq uint64, v []byte) bool {
		var row outboxRow
		if decodeOutbox(v, &row) != nil {
			return true
		}
		key, ok := match(nil, &row)
		if !ok {
			return true
		}
		if len(outs) == limit {
			moreOut = true
			return false
		}
		api := row.api()
		outs = append(outs, scanned{item: localapi.WebItem{Thread: key, At: row.EnqueuedAt, Out: &api}, seq: seq, out: true})
		return true
	})
	return ins, outs, moreIn, moreOut
}

// page merges two newest-first lists, keeps the newest limit items and
// computes the cursor of the next page. Each list is consumed as a prefix
// (a two-way merge, so a row is never skipped even if clocks made At
// disagree with arrival order): a source continues below the last item
// taken from it, stays where it was when none was taken, and is exhausted
// when everything it had was taken.
func page(cur threadCursor, ins, outs []scanned, moreIn, moreOut bool, limit int) localapi.WebThreadPage {
	res := localapi.WebThreadPage{Items: []localapi.WebItem{}}
	next := cur
	i, o := 0, 0
	for len(res.Items) < limit && (i < len(ins) || o < len(outs)) {
		if o == len(outs) || i < len(ins) && ins[i].item.At >= outs[o].item.At {
			res.Items = append(res.Items, ins[i].item)
			next.in = ins[i].seq
			i++
		} else {
			res.Items = append(res.Items, outs[o].item)
			next.out = outs[o].seq
			o++
		}
	}
	if i == len(ins) && !moreIn {
		next.in = 0
	}
	if o == len(outs) && !moreOut {
		next.out = 0
	}
	res.Before = next.String()
	return res
}

func limitParam(r *http.Request, def, most int) (int, bool) {
	n, ok := uintParam(r, "limit")
	if !ok {
		return 0, false
	}
	if n == 0 {
		return def, true
	}
	return int(min(n, uint64(most))), true
}

// handleWebThread is one page of a conversation, newest first.
func (d *Daemon) handleWebThread(w http.ResponseWriter, r *http.Request) {
	d.outboxSettled(r) // the page shows what was just sent
	q := r.URL.Query()
	m, aerr := d.chooseMesh(q.Get("mesh"))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	thread := q.Get("thread")
	cur, ok := parseCursor(q.Get("before"))
	limit, ok2 := limitParam(r, 50, 500)
	switch {
	case thread == "":
		writeError(w, paramError(r, "thread", "a conversation's key (a pubkey, @group, * or #topic)"))
		return
	case !ok:
		writeError(w, paramError(r, "before", "it is the before cursor of an earlier page (i<number>.o<number>)"))
		return
	case !ok2:
		writeError(w, paramError(r, "limit", "it is a whole number (0: 50, at most 500)"))
		return
	}
	match := func(in *inboxRow, out *outboxRow) (string, bool) {
		var key string
		var ok bool
		if in != nil {
			if in.MeshID != m.cfg.MeshID {
				return "", false
			}
			key, _, ok = inboxThread(in)
		} else {
			if out.MeshID != m.cfg.MeshID {
				return "", false
			}
			key, _, ok = outboxThread(out, m.key.PublicHex())
		}
		return key, ok && key == thread
	}
	var res localapi.WebThreadPage
	d.db.View(func(tx *bolt.Tx) error {
		ins, outs, moreIn, moreOut := d.collect(tx, cur, limit, match)
		res = page(cur, ins, outs, moreIn, moreOut, limit)
		return nil
	})
	writeJSON(w, 200, res)
}

// handleWebSearch finds messages of the human's view whose text or sender
// name contains q (case-insensitive), newest first.
func (d *Daemon) handleWebSearch(w http.ResponseWriter, r *http.Request) {
	d.outboxSettled(r) // the page shows what was just sent
	q := r.URL.Query()
	needle := strings.ToLower(strings.TrimSpace(q.Get("q")))
	limit, ok := limitParam(r, 50, 200)
	switch {
	case needle == "" || len(needle) > 200:
		writeError(w, paramError(r, "q", "it is the text to search for, 1 to 200 bytes"))
		return
	case !ok:
		writeError(w, paramError(r, "limit", "it is a whole number (0: 50, at most 200)"))
		return
	}
	meshID := ""
	if slug := q.Get("mesh"); slug != "" {
		m := d.meshBySlug(slug)
		if m == nil {
			writeError(w, meshNotFound(slug))
			return
		}
		meshID = m.cfg.MeshID
	}
	self := map[string]string{} // meshId → member key
	for _, m := range d.meshList() {
		self[m.cfg.MeshID] = m.key.PublicHex()
	}
	contains := func(s string) bool { return strings.Contains(strings.ToLower(s), needle) }
	match := func(in *inboxRow, out *outboxRow) (string, bool) {
		if in != nil {
			key, _, ok := inboxThread(in)
			return key, ok && (meshID == "" || in.MeshID == meshID) &&
				(contains(in.Body) || in.Verified && contains(in.SenderName))
		}
		key, _, ok := outboxThread(out, self[out.MeshID])
		return key, ok && (meshID == "" || out.MeshID == meshID) && (contains(out.Preview) || contains(out.DisplayName))
	}
	var res localapi.WebThreadPage
	cur := threadCursor{math.MaxUint64, math.MaxUint64}
	d.db.View(func(tx *bolt.Tx) error {
		ins, outs, moreIn, moreOut := d.collect(tx, cur, limit, match)
		res = page(cur, ins, outs, moreIn, moreOut, limit)
		return nil
	})
	res.Before = "" // one page of the newest matches
	writeJSON(w, 200, res)
}
