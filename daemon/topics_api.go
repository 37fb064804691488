package daemon

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/wire"
)

// The topic routes of the local API (03-daemon "Local API"; shapes in
// localapi/types.go). Everything is decrypted and verified here: the caller
// (the CLI, an agent, the chat page) never holds a topic key.

func (d *Daemon) topicRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/topics", d.handleTopics)
	mux.HandleFunc("POST /v1/topics", d.handleTopicCreate)
	mux.HandleFunc("POST /v1/topics/{name}/join", d.handleTopicMembership)
	mux.HandleFunc("POST /v1/topics/{name}/leave", d.handleTopicMembership)
	mux.HandleFunc("POST /v1/topics/{name}/rotate", d.handleTopicRotate)
	mux.HandleFunc("POST /v1/topics/{name}/add", d.handleTopicAdd)
	mux.HandleFunc("POST /v1/topics/{name}/read", d.handleTopicRead)
	mux.HandleFunc("GET /v1/topics/{name}/members", d.handleTopicMembers)
	mux.HandleFunc("GET /v1/topics/{name}/messages", d.handleTopicMessages)
	mux.HandleFunc("POST /v1/topics/{name}/messages", d.handleTopicPost)
}

// topicCall runs one exchange with the broker of the chosen mesh on the
// daemon's open connection (brokerCall, with the mesh runtime at hand).
func (d *Daemon) topicCall(w http.ResponseWriter, r *http.Request, slug string, call func(ctx context.Context, m *meshRT, c *client.Conn) (any, error)) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	if slug == "" && sess != nil {
		slug = sess.rec.MeshID // a session's topics are its mesh's
	}
	m, aerr := d.chooseMesh(slug)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	d.brokerCall(w, r, m.cfg.Slug, func(ctx context.Context, c *client.Conn) (any, error) { return call(ctx, m, c) })
}

func (m *meshRT) topicAPI(info wire.TopicInfo) localapi.Topic {
	return localapi.Topic{Mesh: m.cfg.Slug, TopicInfo: info, HasKey: info.Encrypted && info.KeyGen > 0 && m.topics.ring.Has(info.ID, info.KeyGen)}
}

// handleTopics lists the topics of one mesh (?mesh=) or all; a mesh that is
// not connected answers from the last known list.
func (d *Daemon) handleTopics(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	slug := r.URL.Query().Get("mesh")
	if slug == "" && sess != nil {
		slug = sess.rec.MeshID
	}
	ms, ok := d.meshesFor(w, slug)
	if !ok {
		return
	}
	one := slug != ""
	out := []localapi.Topic{}
	for _, m := range ms {
		// Right after the start the list is not known yet: wait for the
		// connection. A member kicked, removed or banned is told so, not
		// shown the topics it had as if it were still in them. (A listing
		// of every mesh leaves such a mesh out.)
		known := m.topics.awaitList(r.Context())
		if aerr := m.refusesSends(); aerr != nil {
			if one {
				writeError(w, aerr)
				return
			}
			continue
		}
		if !known {
			if one {
				writeError(w, &apiError{status: http.StatusServiceUnavailable, code: client.CodeUnreachable,
					msg:  "cannot list the topics of " + m.cfg.Slug + ": the daemon has not reached its broker since it started, so it knows none of them yet",
					hint: "try again in a moment; claudemesh daemon status shows the connection"})
				return
			}
			continue
		}
		var list []wire.TopicInfo
		if c := m.ackConn(); c != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			if list, _ = m.topics.refresh(ctx, c); list != nil {
				m.topics.openKeys(ctx, c, list)
			}
			cancel()
		}
		if list == nil {
			m.topics.mu.Lock()
			for _, info := range m.topics.list {
				list = append(list, info)
			}
			m.topics.mu.Unlock()
		}
		for _, info := range list {
			out = append(out, m.topicAPI(info))
		}
	}
	writeJSON(w, 200, out)
}

func (d *Daemon) handleTopicCreate(w http.ResponseWriter, r *http.Request) {
	var req localapi.TopicCreateRequest
	if !readJSON(w, r, &req) {
		return
	}
	if !wire.ValidTopicName(req.Name) {
		writeError(w, badRequest(wire.CodeInvalidArgument, "topic names match ^[a-z0-9][a-z0-9_-]{0,63}$"))
		return
	}
	d.topicCall(w, r, req.Mesh, func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		info, key, err := c.TopicCreate(ctx, client.TopicCreateOptions{Name: req.Name, Description: req.Description,
			Private: req.Private, Plaintext: req.Plaintext})
		if err != nil {
			return nil, err
		}
		if key != nil {
			m.topics.ring.Put(info.ID, 1, key)
		}
		m.topics.setCursor(info.ID, "") // a new topic: everything in it is new
		m.topics.refresh(ctx, c)
		return m.topicAPI(*info), nil
	})
}

// handleTopicMembership is …/join and …/leave.
func (d *Daemon) handleTopicMembership(w http.ResponseWriter, r *http.Request) {
	var req localapi.TopicMeshRequest
	if !readJSON(w, r, &req) {
		return
	}
	name, join := r.PathValue("name"), strings.HasSuffix(r.URL.Path, "/join")
	d.topicCall(w, r, req.Mesh, func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		if !join {
			return localapi.OK{OK: true}, c.TopicLeave(ctx, name)
		}
		if err := c.TopicJoin(ctx, name); err != nil {
			return nil, err
		}
		info, err := m.topics.resolve(ctx, name)
		if err != nil {
			return nil, err
		}
		m.topics.refresh(ctx, c)
		m.topics.mu.Lock()
		_, known := m.topics.cursors[info.ID]
		m.topics.mu.Unlock()
		if !known {
			m.topics.startCursor(ctx, c, info.ID) // the inbox gets posts from now on
		}
		if info.Encrypted && info.KeyGen > 0 {
			m.topics.keeper.Refresh(ctx, c, info.ID) // already sealed for (a re-join)?
		}
		info, _ = m.topics.topic(info.ID)
		return m.topicAPI(info), nil
	})
}

// handleTopicAdd is topic_add by a lead (or the mesh's owner or an admin),
// then the key share the new member needs: sealed here at once when this
// daemon holds the current key (other key holders do it too on the
// broker's topic_member_joined). The answer is the added member's row, its
// hasCurrentKey saying whether it can read yet.
func (d *Daemon) handleTopicAdd(w http.ResponseWriter, r *http.Request) {
	var req localapi.TopicAddRequest
	if !readJSON(w, r, &req) {
		return
	}
	if req.Member == "" {
		writeError(w, badRequest(wire.CodeInvalidArgument, "member is required"))
		return
	}
	name := r.PathValue("name")
	d.topicCall(w, r, req.Mesh, func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		if err := c.TopicAdd(ctx, name, req.Member, req.Role); err != nil {
			return nil, err
		}
		info, err := m.topics.resolve(ctx, name)
		if err == nil && info.Encrypted {
			if !m.topics.ring.Has(info.ID, info.KeyGen) {
				m.topics.keeper.Refresh(ctx, c, info.ID)
			}
			m.topics.keeper.SealPending(ctx, c, info.ID)
		}
		list, err := c.TopicMembers(ctx, name)
		if err != nil {
			return nil, err
		}
		tm, ok := client.FindTopicMember(list, req.Member)
		if !ok {
			return nil, &client.Error{Code: wire.CodeInternal, Message: "the member was added but is not among the topic's members"}
		}
		return localapi.TopicMember{Mesh: m.cfg.Slug, TopicMemberInfo: tm}, nil
	})
}

func (d *Daemon) handleTopicRotate(w http.ResponseWriter, r *http.Request) {
	var req localapi.TopicMeshRequest
	if !readJSON(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	d.topicCall(w, r, req.Mesh, func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		if _, err := m.topics.refresh(ctx, c); err != nil {
			return nil, err
		}
		info, err := m.topics.resolve(ctx, name)
		if err != nil {
			return nil, err
		}
		if err := m.topics.keeper.Rotate(ctx, c, info); err != nil {
			return nil, err
		}
		m.topics.refresh(ctx, c)
		info, _ = m.topics.topic(info.ID)
		return m.topicAPI(info), nil
	})
}

func (d *Daemon) handleTopicRead(w http.ResponseWriter, r *http.Request) {
	var req localapi.TopicReadRequest
	if !readJSON(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	d.topicCall(w, r, req.Mesh, func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		// The caller may stop waiting (a tail ended with Ctrl-C waits
		// a second for this): the marker still moves, on the daemon's
		// time rather than the caller's.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return localapi.OK{OK: true}, c.TopicMarkRead(ctx, name, req.UpTo)
	})
}

func (d *Daemon) handleTopicMembers(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	d.topicCall(w, r, r.URL.Query().Get("mesh"), func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		list, err := c.TopicMembers(ctx, name)
		if err != nil {
			return nil, err
		}
		out := make([]localapi.TopicMember, len(list))
		for i, tm := range list {
			out[i] = localapi.TopicMember{Mesh: m.cfg.Slug, TopicMemberInfo: tm}
		}
		return out, nil
	})
}

// handleTopicMessages is a page of history (?limit ≤ 50, ?before = a message
// id), newest first, decrypted and verified.
func (d *Daemon) handleTopicMessages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := r.PathValue("name")
	limit := 0
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > wire.MaxTopicHistory {
			writeError(w, badRequest(wire.CodeInvalidArgument, "limit is 1 to 50"))
			return
		}
		limit = n
	}
	d.topicCall(w, r, q.Get("mesh"), func(ctx context.Context, m *meshRT, c *client.Conn) (any, error) {
		before := q.Get("before")
		if id := d.sentID(m.cfg.MeshID, before); id != "" {
			// The id topic post printed (a clientMessageId), perhaps of
			// an agent session's post, which the broker knows by the
			// session's key, not this connection's.
			before = id
		}
		return m.topics.page(ctx, c, name, client.HistoryPage{Limit: limit, Before: before})
	})
}

// page reads and opens a page of a topic's history, fetching keys this
// daemon has not opened yet.
func (t *topicsRT) page(ctx context.Context, c *client.Conn, ref string, p client.HistoryPage) (*localapi.TopicMessages, error) {
	info, err := t.resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	h, err := c.TopicHistory(ctx, info.ID, p)
	if err != nil {
		return nil, err
	}
	if info.Encrypted && info.KeyGen > 0 && !t.ring.Has(info.ID, info.KeyGen) {
		t.keeper.Refresh(ctx, c, info.ID)
	}
	// The cached list may predate a rotation whose key is here already.
	gen := max(info.KeyGen, t.ring.Newest(info.ID))
	out := &localapi.TopicMessages{More: h.More, Messages: make([]localapi.TopicMessage, 0, len(h.Messages)), KeyGen: gen,
		WaitingForKey: info.Encrypted && (gen == 0 || !t.ring.Has(info.ID, gen))}
	for _, raw := range h.Messages {
		if raw.Push == nil {
			continue
		}
		tm := client.OpenTopicPush(raw.Push, t.m.cfg.MeshID, info.ID, func(g int) *[32]byte { return t.ring.Get(info.ID, g) })
		if tm.Topic == "" {
			tm.Topic = info.Name
		}
		out.Messages = append(out.Messages, topicMessageAPI(t.m, tm))
	}
	return out, nil
}

// handleTopicPost accepts a post into the outbox, exactly as POST /v1/send
// to "#name".
func (d *Daemon) handleTopicPost(w http.ResponseWriter, r *http.Request) {
	sess, ok := d.caller(w, r)
	if !ok {
		return
	}
	var req localapi.TopicPostRequest
	if !readJSON(w, r, &req) {
		return
	}
	resp, status, aerr := d.accept(r.Context(), localapi.SendRequest{To: "#" + r.PathValue("name"), Message: req.Message, Mesh: req.Mesh,
		Priority: req.Priority, ClientMessageID: req.ClientMessageID, ReplyToID: req.ReplyToID, Mentions: req.Mentions},
		r.Header.Get("Idempotency-Key"), sess)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	writeJSON(w, status, resp)
}
