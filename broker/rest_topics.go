package broker

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// The API-key REST routes of 01-protocol §7, for bots and scripts. Every
// route acts as the key's member, within its capabilities and topics.

func (b *Broker) apiKeyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/peers", b.withKey(wire.CapRead, b.restPeers))
	mux.HandleFunc("GET /v1/members", b.withKey(wire.CapRead, b.restMembers))
	mux.HandleFunc("GET /v1/topics", b.withKey(wire.CapRead, b.restTopics))
	mux.HandleFunc("GET /v1/topics/{name}/messages", b.withKey(wire.CapRead, b.withTopic(b.restTopicMessages)))
	mux.HandleFunc("POST /v1/topics/{name}/messages", b.withKey(wire.CapSend, b.withTopic(b.restTopicPost)))
	mux.HandleFunc("GET /v1/topics/{name}/stream", b.withKey(wire.CapRead, b.withTopic(b.restTopicStream)))
	mux.HandleFunc("GET /v1/notifications", b.withKey(wire.CapRead, b.restNotifications))
}

type keyHandler func(w http.ResponseWriter, r *http.Request, a *apiCaller)

// withKey authenticates the key and checks it holds cp (403
// missing_capability otherwise).
func (b *Broker) withKey(cp string, h keyHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, ok := b.authAPIKey(w, r)
		if !ok {
			return
		}
		if !a.can(cp) {
			restError(w, http.StatusForbidden, wire.CodeMissingCapability, fmt.Sprintf("this API key lacks the %q capability", cp))
			return
		}
		h(w, r, a)
	}
}

type topicHandler func(w http.ResponseWriter, r *http.Request, a *apiCaller, t topicState)

// withTopic resolves {name} to a topic the key's member may see and the key
// may touch (403 topic_out_of_scope), and requires membership.
func (b *Broker) withTopic(h topicHandler) keyHandler {
	return func(w http.ResponseWriter, r *http.Request, a *apiCaller) {
		ref := r.PathValue("name")
		ms := a.ms
		ms.mu.Lock()
		idx, err := b.topicsLocked(ms)
		var t *topicState
		if err == nil {
			t = idx.lookup(ref)
		}
		var cp topicState
		visible, member := false, false
		if t != nil {
			cp = *t
			visible, member = t.visibleTo(ms, a.mem.Pubkey), t.isMember(ms, a.mem.Pubkey)
		}
		ms.mu.Unlock()
		switch {
		case err != nil:
			restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not load the topics")
		case t == nil || !visible:
			restError(w, http.StatusNotFound, wire.CodeTopicNotFound, fmt.Sprintf("no topic %q in this mesh", ref))
		case !a.inScope(cp.Name):
			restError(w, http.StatusForbidden, wire.CodeTopicOutOfScope, "this API key is limited to other topics")
		case !member:
			restError(w, http.StatusForbidden, wire.CodeNotAMember, "the key's member is not in #"+cp.Name+"; join it first")
		default:
			h(w, r, a, cp)
		}
	}
}

func (b *Broker) restPeers(w http.ResponseWriter, r *http.Request, a *apiCaller) {
	a.ms.mu.Lock()
	peers := a.ms.listPeers(a.mem, b.cfg.WorkingDecay)
	a.ms.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"peers": peers})
}

func (b *Broker) restMembers(w http.ResponseWriter, r *http.Request, a *apiCaller) {
	writeJSON(w, http.StatusOK, map[string]any{"members": a.ms.memberList()})
}

func (b *Broker) restTopics(w http.ResponseWriter, r *http.Request, a *apiCaller) {
	infos, err := b.topicInfos(a.ms, a.mem.Pubkey)
	if err != nil {
		restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not list the topics")
		return
	}
	out := make([]wire.TopicInfo, 0, len(infos))
	for _, t := range infos {
		if a.inScope(t.Name) {
			out = append(out, t)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"topics": out})
}

// restTopicMessages is a history page, newest first (?limit ≤ 50, ?before
// = a message id).
func (b *Broker) restTopicMessages(w http.ResponseWriter, r *http.Request, a *apiCaller, t topicState) {
	q := r.URL.Query()
	limit := wire.MaxTopicHistory
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > wire.MaxTopicHistory {
			restError(w, http.StatusBadRequest, wire.CodeInvalidArgument, fmt.Sprintf("limit is 1 to %d", wire.MaxTopicHistory))
			return
		}
		limit = n
	}
	msgs := []wire.RawJSON{}
	var more bool
	err := b.store.View(func(tx *store.Tx) error {
		var before uint64
		if v := q.Get("before"); v != "" {
			var err error
			if before, err = postSeq(tx, a.ms.id, t.ID, v); err != nil {
				return err
			}
		}
		posts, m, err := store.TopicPostsBefore(tx, a.ms.id, t.ID, before, limit)
		for _, p := range posts {
			msgs = append(msgs, restMessage(p.Push))
		}
		more = m
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		restError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "before names no message of #"+t.Name)
		return
	}
	if err != nil {
		restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not read the history")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"messages": msgs, "more": more})
}

// restPostBody is POST /v1/topics/{name}/messages: {text} for a plaintext
// topic, or a post encrypted and signed by a member or session key that
// belongs to the key's member.
type restPostBody struct {
	Text            *string  `json:"text,omitempty"`
	KeyGen          int      `json:"keyGen,omitzero"`
	Nonce           string   `json:"nonce,omitempty"`
	Ciphertext      string   `json:"ciphertext,omitempty"`
	Signature       string   `json:"signature,omitempty"`
	SenderPubkey    string   `json:"senderPubkey,omitempty"`
	ClientMessageID string   `json:"clientMessageId,omitempty"`
	ReplyToID       string   `json:"replyToId,omitempty"`
	Mentions        []string `json:"mentions,omitempty"`
}

func (b *Broker) restTopicPost(w http.ResponseWriter, r *http.Request, a *apiCaller, t topicState) {
	var body restPostBody
	if !readBody(w, r, &body) {
		return
	}
	bad := func(msg string) { restError(w, http.StatusBadRequest, wire.CodeInvalidArgument, msg) }
	cmid := body.ClientMessageID
	if cmid == "" {
		cmid = r.Header.Get("Idempotency-Key")
	}
	if cmid == "" {
		cmid = newID()
	}
	if !wire.ValidReqID(cmid) || (body.ReplyToID != "" && !wire.ValidReqID(body.ReplyToID)) {
		bad("clientMessageId and replyToId match ^[A-Za-z0-9._:-]{1,64}$")
		return
	}
	if len(body.Mentions) > 64 {
		bad("at most 64 mentions")
		return
	}
	for _, m := range body.Mentions {
		if !wire.IsHex(m, 64) {
			bad("mentions are 64-hex pubkeys")
			return
		}
	}
	s := &wire.Send{Type: wire.TypeSend, ID: cmid, ClientMessageID: cmid, TargetSpec: "#" + t.ID, Kind: wire.KindTopic,
		Priority: wire.PriorityNext, ReplyToID: body.ReplyToID, Mentions: body.Mentions}
	ms := a.ms
	from := postSender{pubkey: a.mem.Pubkey, mem: a.mem, name: a.mem.DisplayName}
	if body.Text != nil {
		if body.Ciphertext != "" || body.Signature != "" {
			bad("give text (plaintext topics) or keyGen, nonce, ciphertext, signature and senderPubkey, not both")
			return
		}
		if t.Encrypted {
			restError(w, http.StatusBadRequest, wire.CodeTopicEncrypted, "#"+t.Name+" is end-to-end encrypted: the broker cannot accept plaintext for it. "+
				"Post {keyGen, nonce, ciphertext, signature, senderPubkey} made with the topic key (see docs/crypto.md), or use a topic created --plaintext")
			return
		}
		if len(*body.Text) == 0 || len(*body.Text) > maxCiphertext {
			bad("text is 1 byte to 64 KiB")
			return
		}
		s.BodyVersion = wire.BodyPlaintext
		s.Ciphertext = cmcrypto.EncodeB64([]byte(*body.Text))
		// Plaintext posts need a nonce too: clients de-duplicate on
		// (sender, nonce). It is derived from the post (not random) so
		// that a retry of the same post, same key and same text, has the
		// same fingerprint and gets the duplicate answer, not
		// idempotency_key_reused; a new post has a new clientMessageId
		// (random when none is given), so a new nonce.
		s.Nonce = plaintextPostNonce(ms.id, t.ID, a.mem.Pubkey, cmid, *body.Text)
	} else {
		if !t.Encrypted {
			bad("#" + t.Name + " is a plaintext topic: post {text}")
			return
		}
		kg := body.KeyGen
		s.KeyGen, s.Nonce, s.Ciphertext, s.Signature, s.BodyVersion = &kg, body.Nonce, body.Ciphertext, body.Signature, wire.BodyEncrypted
		if _, err := cmcrypto.DecodeB64Len(s.Nonce, 24); err != nil {
			bad("nonce is 24 bytes of canonical base64")
			return
		}
		ct, err := cmcrypto.DecodeB64(s.Ciphertext)
		if err != nil || len(ct) < 16 {
			bad("ciphertext is canonical base64 of a secretbox")
			return
		}
		if len(ct) > maxCiphertext {
			restError(w, http.StatusRequestEntityTooLarge, wire.CodePayloadTooLarge, "ciphertext is over 64 KiB of plaintext")
			return
		}
		if err := validateTopicSend(s); err != nil {
			bad(err.Error())
			return
		}
		ms.mu.Lock()
		switch sess := ms.sessions[body.SenderPubkey]; {
		case body.SenderPubkey == a.mem.Pubkey:
		case sess != nil && sess.ParentPubkey == a.mem.Pubkey:
			from.pubkey, from.name, from.attestation = body.SenderPubkey, sess.DisplayName, &sess.Attestation
		default:
			from.pubkey = ""
		}
		ms.mu.Unlock()
		if from.pubkey == "" {
			restError(w, http.StatusForbidden, wire.CodeForbidden, "senderPubkey must be the key's member or one of its sessions")
			return
		}
	}
	// What it costs is what a send frame of the post costs (chargeSend,
	// sendrate.go), counting the bytes such a frame would carry: a retry
	// of a stored post costs no bytes, and one refused after it was
	// charged, to be posted again, leaves a credit for its next try
	// (the member's, by its sending key and clientMessageId: a REST
	// client has no connection to keep it on).
	size := len(s.Ciphertext) + len(s.Nonce) + len(s.Signature) + 256
	creditKey := from.pubkey + "\x00" + cmid
	charge, ref := b.chargeSend(a.mem, size,
		func() (int, bool) {
			return a.mem.restCredits.take(creditKey, size, func() string { return fingerprint(s) })
		},
		func() bool { return b.storedAlready(ms.id, from.pubkey, cmid, true) })
	if ref != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int(ref.retry.Seconds())+1))
		restError(w, http.StatusTooManyRequests, wire.CodeRateLimited, ref.msg)
		return
	}
	done := make(chan topicPostResult, 1)
	b.postTopic(ms, from, s, nil, charge.free, func(res topicPostResult) { done <- res })
	res := <-done
	if res.duplicate {
		b.refundBytes(a.mem, charge.bytes) // it stored nothing
	}
	if res.code != "" {
		if charge.paid && holdsLine(res.code) {
			a.mem.restCredits.put(creditKey, size, fingerprint(s))
		}
		if res.code == wire.CodeRateLimited {
			w.Header().Set("Retry-After", strconv.Itoa(int(cmp.Or(res.retryMs, 1000)+999)/1000))
		}
		restError(w, postStatus(res.code), res.code, res.msg)
		return
	}
	status := http.StatusCreated
	if res.duplicate {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"messageId": res.messageID, "clientMessageId": cmid, "createdAt": res.createdAt,
		"duplicate": res.duplicate, "online": res.online})
}

// postStatus is the HTTP status of a refused post.
func postStatus(code string) int {
	switch code {
	case wire.CodeTopicNotFound:
		return http.StatusNotFound
	case wire.CodeNotAMember, wire.CodeForbidden:
		return http.StatusForbidden
	case wire.CodeStaleKeyGen, wire.CodeTopicKeyMissing, wire.CodeIdempotencyKeyReused:
		return http.StatusConflict
	case wire.CodeRateLimited:
		return http.StatusTooManyRequests
	case wire.CodeShuttingDown:
		return http.StatusServiceUnavailable
	case wire.CodeInternal:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

func (b *Broker) restNotifications(w http.ResponseWriter, r *http.Request, a *apiCaller) {
	q := r.URL.Query()
	var since int64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			restError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "since is Unix milliseconds")
			return
		}
		since = n
	}
	unread, _ := strconv.ParseBool(q.Get("unread"))
	list, err := b.listNotifications(a.ms, a.mem.Pubkey, since, unread)
	if err != nil {
		restError(w, http.StatusInternalServerError, wire.CodeInternal, "could not read the notifications")
		return
	}
	out := list[:0]
	for _, n := range list {
		if a.inScope(n.Topic) {
			out = append(out, n)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"notifications": out})
}

// restTopicStream is GET /v1/topics/{name}/stream: Server-Sent Events, one
// `message` event per post with `id:` its message id, pushed from the commit
// path. Without Last-Event-ID it starts at the next post; with one it first
// sends every post after that one from the store, then the live ones,
// skipping what it already sent: no gap, nothing twice. A comment line goes
// out every heartbeat (15 s) so proxies keep the stream open and a dead
// client is noticed.
func (b *Broker) restTopicStream(w http.ResponseWriter, r *http.Request, a *apiCaller, t topicState) {
	// The HTTP guard (admission.go) sees text/event-stream and lets the
	// stream live as long as each write makes progress.
	rc := http.NewResponseController(w)
	ms := a.ms
	var last uint64
	err := b.store.View(func(tx *store.Tx) error {
		id := r.Header.Get("Last-Event-ID")
		if id == "" {
			last = store.TopicLastSeq(tx, ms.id, t.ID)
			return nil
		}
		seq, err := postSeq(tx, ms.id, t.ID, id)
		if errors.Is(err, store.ErrNotFound) && wire.ValidULID(id) {
			// Expired by retention (or never in this topic): everything
			// still stored came after it.
			return nil
		}
		last = seq
		return err
	})
	if err != nil {
		restError(w, http.StatusBadRequest, wire.CodeInvalidArgument, "Last-Event-ID names no message of #"+t.Name)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": claudemesh topic stream\n\n"); err != nil {
		return
	}
	rc.Flush()
	b.metrics.sseStreams.Inc()
	defer b.metrics.sseStreams.Dec()
	heartbeat := time.NewTicker(b.cfg.SSEHeartbeat)
	defer heartbeat.Stop()
	for {
		sub := b.streams.subscribe(ms.id, t.ID)
		// Watched before the key is checked again: a revocation (or its
		// member's ban or removal) applied after the check closes it
		// (credwatch.go), and the stream ends then, not at a heartbeat.
		creds := ms.credentialsWatch()
		if !b.streamAllowed(a, t.ID) {
			b.streams.unsubscribe(ms.id, t.ID, sub)
			return
		}
		// revoked reports whether the key lost its right to the stream
		// since it was last checked; it is asked before every event is
		// written, as select picks among ready cases at random.
		revoked := func() bool {
			if a.key.ExpiresAt != 0 && a.key.ExpiresAt <= time.Now().UnixMilli() {
				return true
			}
			select {
			case <-creds:
				creds = ms.credentialsWatch()
				return !b.streamAllowed(a, t.ID)
			default:
				return false
			}
		}
		var ok bool
		if last, ok = b.streamCatchUp(w, rc, ms.id, t.ID, last, revoked); !ok {
			b.streams.unsubscribe(ms.id, t.ID, sub)
			return
		}
		resubscribe := false
		for !resubscribe {
			select {
			case <-r.Context().Done():
				b.streams.unsubscribe(ms.id, t.ID, sub)
				return
			case <-creds:
				if revoked() {
					b.streams.unsubscribe(ms.id, t.ID, sub)
					return
				}
			case <-sub.dropped:
				resubscribe = true // fell behind: catch up from the store
			case <-heartbeat.C:
				if !b.streamAllowed(a, t.ID) {
					b.streams.unsubscribe(ms.id, t.ID, sub)
					return
				}
				if _, err := fmt.Fprint(w, ": heartbeat\n\n"); err != nil || rc.Flush() != nil {
					b.streams.unsubscribe(ms.id, t.ID, sub)
					return
				}
			case ev := <-sub.ch:
				if ev.seq <= last {
					continue // already sent by the catch-up
				}
				if ev.seq != last+1 {
					resubscribe = true // a gap: read it from the store
					break
				}
				if revoked() || !writeStreamEvent(w, ev.id, ev.data) {
					b.streams.unsubscribe(ms.id, t.ID, sub)
					return
				}
				last = ev.seq
				for more := true; more; { // whatever else is waiting, then one flush
					select {
					case ev := <-sub.ch:
						if ev.seq <= last {
							continue
						}
						if ev.seq != last+1 {
							resubscribe, more = true, false
							continue
						}
						if revoked() || !writeStreamEvent(w, ev.id, ev.data) {
							b.streams.unsubscribe(ms.id, t.ID, sub)
							return
						}
						last = ev.seq
					default:
						more = false
					}
				}
				if rc.Flush() != nil {
					b.streams.unsubscribe(ms.id, t.ID, sub)
					return
				}
			}
		}
		b.streams.unsubscribe(ms.id, t.ID, sub)
	}
}

// streamAllowed reports whether a's stream of the topic may go on: the key
// is still valid (stillValid) and its member still sees the topic and is
// still in it (a lead's topic_remove, the member's leave).
func (b *Broker) streamAllowed(a *apiCaller, topicID string) bool {
	if !b.stillValid(a) {
		return false
	}
	ms := a.ms
	ms.mu.Lock()
	defer ms.mu.Unlock()
	idx, err := b.topicsLocked(ms)
	if err != nil {
		return false
	}
	t := idx.byID[topicID]
	return t != nil && t.visibleTo(ms, a.mem.Pubkey) && t.isMember(ms, a.mem.Pubkey)
}

// streamCatchUp sends every stored post after seq last, page by page.
func (b *Broker) streamCatchUp(w http.ResponseWriter, rc *http.ResponseController, meshID, topicID string, last uint64, revoked func() bool) (uint64, bool) {
	for {
		if revoked() {
			return last, false // checked before each page, not only once the backlog is sent
		}
		var posts []store.TopicPost
		var more bool
		err := b.store.View(func(tx *store.Tx) error {
			var err error
			posts, more, err = store.TopicPostsAfter(tx, meshID, topicID, last, 100)
			return err
		})
		if err != nil {
			return last, false
		}
		for _, p := range posts {
			if !writeStreamEvent(w, p.ID, restMessage(p.Push)) {
				return last, false
			}
			last = p.Seq
		}
		if rc.Flush() != nil {
			return last, false
		}
		if !more {
			return last, true
		}
	}
}

func writeStreamEvent(w http.ResponseWriter, id string, data []byte) bool {
	_, err := fmt.Fprintf(w, "id: %s\nevent: message\ndata: %s\n\n", id, data)
	return err == nil
}

// plaintextPostNonce is the nonce of a plaintext topic post made over REST:
// 24 bytes of SHA-256 over the post's mesh, topic, member, clientMessageId
// and text, in canonical base64.
func plaintextPostNonce(meshID, topicID, memberPubkey, cmid, text string) string {
	h := sha256.New()
	for _, part := range []string{"claudemesh/rest-plaintext-nonce/v1", meshID, topicID, memberPubkey, cmid, text} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return cmcrypto.EncodeB64(h.Sum(nil)[:24])
}
