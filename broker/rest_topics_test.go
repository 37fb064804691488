package broker

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	json "github.com/go-json-experiment/json"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// rest calls an API-key route and decodes the JSON answer.
func rest(t *testing.T, b *Broker, method, path, key string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		data, _ := json.Marshal(body)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, b.HTTPURL()+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func apiKey(t *testing.T, p *topicPeer, label string, caps []string, topics ...string) *wire.APIKeyReply {
	t.Helper()
	k, err := p.conn.APIKeyCreate(p.ctx(), wire.APIKeyCreate{Label: label, Capabilities: caps, Topics: topics})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.Secret, "cm_") || len(k.Secret) != 46 || k.Prefix != k.Secret[:11] {
		t.Fatalf("secret %q prefix %q", k.Secret, k.Prefix)
	}
	return k
}

// API keys: wrong capability → 403 missing_capability, topic outside scope
// → 403 topic_out_of_scope, revoked, expired or unknown key → 401; the
// secret is stored only as its SHA-256; plaintext posts to an encrypted
// topic are refused clearly.
func TestAPIKeysAndREST(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	ops := alice.create("ops", client.TopicCreateOptions{})
	alice.create("dev", client.TopicCreateOptions{})
	alice.create("bots", client.TopicCreateOptions{Plaintext: true})
	if _, err := alice.post(ops, 1, "hello ops"); err != nil {
		t.Fatal(err)
	}
	reader := apiKey(t, alice, "dashboard", []string{"read"}, "ops", "bots")
	writer := apiKey(t, alice, "deploy bot", []string{"read", "send"})
	if _, err := bob.conn.APIKeyCreate(bob.ctx(), wire.APIKeyCreate{Label: "x", Capabilities: []string{"admin"}}); errCodeOf(err) != wire.CodeForbidden {
		t.Fatalf("a member grants admin: %v", err)
	}

	st, body := rest(t, b, "GET", "/v1/topics", reader.Secret, nil)
	if st != 200 || len(body["topics"].([]any)) != 2 {
		t.Fatalf("topics with a scoped key: %d %v", st, body)
	}
	st, body = rest(t, b, "GET", "/v1/topics/ops/messages", reader.Secret, nil)
	if msgs := body["messages"].([]any); st != 200 || len(msgs) != 1 || msgs[0].(map[string]any)["kind"] != "topic" {
		t.Fatalf("messages: %d %v", st, body)
	}
	for _, c := range []struct {
		method, path, key string
		body              any
		status            int
		code              string
	}{
		{"POST", "/v1/topics/bots/messages", reader.Secret, map[string]string{"text": "hi"}, 403, wire.CodeMissingCapability},
		{"GET", "/v1/topics/dev/messages", reader.Secret, nil, 403, wire.CodeTopicOutOfScope},
		{"POST", "/v1/topics/ops/messages", writer.Secret, map[string]string{"text": "plain"}, 400, wire.CodeTopicEncrypted},
		{"GET", "/v1/peers", "", nil, 401, wire.CodeAPIKeyInvalid},
		{"GET", "/v1/peers", reader.Secret + "x", nil, 401, wire.CodeAPIKeyInvalid},
		{"GET", "/v1/peers", "cm_" + strings.Repeat("A", 43), nil, 401, wire.CodeAPIKeyInvalid},
		{"GET", "/v1/topics/nope/messages", writer.Secret, nil, 404, wire.CodeTopicNotFound},
	} {
		if st, body := rest(t, b, c.method, c.path, c.key, c.body); st != c.status || errCode(body) != c.code {
			t.Errorf("%s %s: %d %v, want %d %s", c.method, c.path, st, body, c.status, c.code)
		}
	}
	// A plaintext topic takes {text} and shows it.
	if st, body := rest(t, b, "POST", "/v1/topics/bots/messages", writer.Secret, map[string]string{"text": "build 42 is green"}); st != 201 || body["messageId"] == "" {
		t.Fatalf("plaintext post: %d %v", st, body)
	}
	st, body = rest(t, b, "GET", "/v1/topics/bots/messages", reader.Secret, nil)
	if m := body["messages"].([]any)[0].(map[string]any); st != 200 || m["text"] != "build 42 is green" || m["bodyVersion"] != float64(1) {
		t.Fatalf("plaintext messages: %d %v", st, body)
	}
	// An encrypted post made with the member key is accepted; one signed by
	// someone else is not.
	key := alice.keeper.Ring.Get(ops.ID, 1)
	nonce, ct, sig, _ := cmcrypto.SealTopicPost(alice.id.meshID, ops.ID, 1, []byte("from the bot"), key, alice.id.key)
	good := map[string]any{"keyGen": 1, "nonce": nonce, "ciphertext": ct, "signature": sig, "senderPubkey": alice.id.pub()}
	if st, body := rest(t, b, "POST", "/v1/topics/ops/messages", writer.Secret, good); st != 201 {
		t.Fatalf("encrypted REST post: %d %v", st, body)
	}
	for {
		m := alice.open(alice.nextTopicPush(), ops.ID)
		if m.Body == "from the bot" {
			if !m.Verified || m.SenderName != "alice" {
				t.Fatalf("the bot's post: %+v", m)
			}
			break
		}
	}
	bad := map[string]any{"keyGen": 1, "nonce": nonce, "ciphertext": ct, "signature": sig, "senderPubkey": bob.id.pub()}
	if st, body := rest(t, b, "POST", "/v1/topics/ops/messages", writer.Secret, bad); st != 403 {
		t.Fatalf("post as another member: %d %v", st, body)
	}
	// Only the hash is stored.
	var stored *store.APIKey
	b.store.View(func(tx *store.Tx) error {
		_, stored, _ = store.APIKeyByPrefix(tx, writer.Prefix)
		return nil
	})
	if stored == nil || strings.Contains(stored.Hash, writer.Secret[11:]) || len(stored.Hash) != 64 {
		t.Fatalf("stored key %+v", stored)
	}
	// Revoked and expired keys are refused.
	if err := alice.conn.APIKeyRevoke(alice.ctx(), reader.ID); err != nil {
		t.Fatal(err)
	}
	if st, body := rest(t, b, "GET", "/v1/topics", reader.Secret, nil); st != 401 || errCode(body) != wire.CodeAPIKeyInvalid {
		t.Fatalf("revoked key: %d %v", st, body)
	}
	if err := b.store.Update(func(tx *store.Tx) error {
		k, _ := store.GetAPIKey(tx, alice.id.meshID, writer.ID)
		k.ExpiresAt = time.Now().Add(-time.Second).UnixMilli()
		return store.UpdateAPIKey(tx, alice.id.meshID, k)
	}); err != nil {
		t.Fatal(err)
	}
	if st, body := rest(t, b, "GET", "/v1/topics", writer.Secret, nil); st != 401 || errCode(body) != wire.CodeAPIKeyInvalid {
		t.Fatalf("expired key: %d %v", st, body)
	}
	keys, err := alice.conn.APIKeyList(alice.ctx())
	if err != nil || len(keys) != 2 || keys[0].RevokedAt == 0 {
		t.Fatalf("list: %+v %v", keys, err)
	}
	if keys, _ := bob.conn.APIKeyList(bob.ctx()); len(keys) != 0 {
		t.Fatalf("bob lists alice's keys: %+v", keys)
	}
}

// sseStream reads a topic stream.
type sseStream struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	beats  chan struct{}
}

type sseEvent struct {
	id, event string
	data      []byte
	at        time.Time
}

func openStream(t *testing.T, b *Broker, key, topic, lastID string) *sseStream {
	t.Helper()
	req, _ := http.NewRequest("GET", b.HTTPURL()+"/v1/topics/"+topic+"/stream", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s", resp.StatusCode, raw)
	}
	s := &sseStream{t: t, resp: resp, events: make(chan sseEvent, 1000), beats: make(chan struct{}, 1000)}
	t.Cleanup(s.close)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev sseEvent
		first := true
		for sc.Scan() {
			line := sc.Text()
			if first {
				close(ready) // the opening comment: the stream is subscribed
				first = false
			}
			switch {
			case line == "":
				if ev.id != "" {
					ev.at = time.Now()
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ": heartbeat"):
				s.beats <- struct{}{}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = []byte(line[6:])
			}
		}
		close(s.events)
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not open")
	}
	return s
}

func (s *sseStream) close() { s.resp.Body.Close() }

func (s *sseStream) next() sseEvent {
	s.t.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			s.t.Fatal("the stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		s.t.Fatal("no event")
	}
	return sseEvent{}
}

// SSE: a post reaches a stream within a bound of its ack (the real figure
// is in BENCHMARKS.md); a client that disconnects and resumes with
// Last-Event-ID misses nothing and gets nothing twice; heartbeats flow.
func TestTopicStreamSSE(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.SSEHeartbeat = 100 * time.Millisecond })
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice := peers[0]
	ops := alice.create("ops", client.TopicCreateOptions{})
	bot := apiKey(t, alice, "watcher", []string{"read"})
	s := openStream(t, b, bot.Secret, "ops", "")
	post := func(text string) (string, time.Time) {
		t.Helper()
		ack, err := alice.post(ops, 1, text)
		if err != nil {
			t.Fatal(err)
		}
		return ack.MessageID, time.Now()
	}
	var ids []string
	var worst time.Duration
	for i := range 3 {
		id, acked := post("p" + string(rune('0'+i)))
		ev := s.next()
		if ev.id != id || ev.event != "message" {
			t.Fatalf("event %+v for %s", ev, id)
		}
		var p wire.Push
		if err := wire.Decode(ev.data, &p); err != nil || p.MessageID != id || p.Topic.Name != "ops" {
			t.Fatalf("event data %s: %v", ev.data, err)
		}
		if m := alice.open(&p, ops.ID); m.Body != "p"+string(rune('0'+i)) || !m.Verified {
			t.Fatalf("event opens to %+v", m)
		}
		ids = append(ids, id)
		worst = max(worst, ev.at.Sub(acked))
	}
	t.Logf("post → SSE event, worst of 3, measured from the ack (negative or tiny: the event is published before the ack is written): %v", worst)
	if worst > 2*time.Second {
		t.Fatalf("an event came %v after its ack", worst)
	}
	select {
	case <-s.beats:
	case <-time.After(10 * time.Second):
		t.Fatal("no heartbeat")
	}
	// Disconnect; three posts are made meanwhile; resume after the third.
	s.close()
	for i := 3; i < 6; i++ {
		id, _ := post("p" + string(rune('0'+i)))
		ids = append(ids, id)
	}
	s2 := openStream(t, b, bot.Secret, "ops", ids[2])
	id7, _ := post("p6")
	ids = append(ids, id7)
	for _, want := range ids[3:] {
		if ev := s2.next(); ev.id != want {
			t.Fatalf("resumed stream gave %s, want %s", ev.id, want)
		}
	}
	// The next event is the next post: nothing was sent twice.
	id8, _ := post("p7")
	if ev := s2.next(); ev.id != id8 {
		t.Fatalf("after the resumed events came %s, want the next post %s", ev.id, id8)
	}
	// A revoked key's stream ends at the next heartbeat.
	if err := alice.conn.APIKeyRevoke(alice.ctx(), bot.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-s2.events:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the stream of a revoked key stayed open")
		}
	}
}

// A Last-Event-ID that names no message of the topic is refused.
func TestTopicStreamBadLastEventID(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := topicMesh(t, b, "acme", "alice")[0]
	alice.create("ops", client.TopicCreateOptions{})
	bot := apiKey(t, alice, "w", []string{"read"})
	req, _ := http.NewRequestWithContext(context.Background(), "GET", b.HTTPURL()+"/v1/topics/ops/stream", nil)
	req.Header.Set("Authorization", "Bearer "+bot.Secret)
	req.Header.Set("Last-Event-ID", "not-an-id")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// TestAPIKeyListMarksARemovedMembersKey: once its member is removed, a key
// the broker refuses is listed as such (memberRemoved), not as a live key.
func TestAPIKeyListMarksARemovedMembersKey(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "rmk", "alice", "bob")
	alice, bob := peers[0], peers[1]
	apiKey(t, alice, "alice's bot", []string{"read"})
	bobs := apiKey(t, bob, "bob's bot", []string{"read"})
	req, _ := http.NewRequest("DELETE", b.HTTPURL()+"/v1/admin/meshes/rmk/members/bob", nil)
	req.Header.Set("Authorization", "Bearer "+b.OperatorToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("remove bob: %d", resp.StatusCode)
	}
	if st, body := rest(t, b, "GET", "/v1/topics", bobs.Secret, nil); st != 401 || errCode(body) != wire.CodeAPIKeyInvalid {
		t.Fatalf("a removed member's key: %d %v", st, body)
	}
	keys, err := alice.conn.APIKeyList(alice.ctx())
	if err != nil || len(keys) != 2 {
		t.Fatalf("list: %+v %v", keys, err)
	}
	for _, k := range keys {
		if want := k.ID == bobs.ID; k.MemberRemoved != want || k.RevokedAt != 0 {
			t.Errorf("key %s (bob's %v): memberRemoved %v", k.Label, k.ID == bobs.ID, k.MemberRemoved)
		}
	}
}

// A bot that lost the answer to a plaintext post retries it with the same
// Idempotency-Key (or clientMessageId) and gets the documented 200
// duplicate with the first messageId, not idempotency_key_reused (a new
// user's trial); the same key with another text is still refused.
func TestRESTPlaintextPostRetryIsADuplicate(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	alice := topicMesh(t, b, "acme", "alice")[0]
	alice.create("bots", client.TopicCreateOptions{Plaintext: true})
	writer := apiKey(t, alice, "bot", []string{"read", "send"})
	post := func(header string, body map[string]string) (int, map[string]any) {
		t.Helper()
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", b.HTTPURL()+"/v1/topics/bots/messages", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+writer.Secret)
		if header != "" {
			req.Header.Set("Idempotency-Key", header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		json.Unmarshal(raw, &out)
		return resp.StatusCode, out
	}
	for _, c := range []struct {
		header string
		body   map[string]string
	}{
		{"abc", map[string]string{"text": "build 1 green"}},
		{"", map[string]string{"text": "build 2 green", "clientMessageId": "cmid-1"}},
	} {
		st, first := post(c.header, c.body)
		if st != 201 || first["duplicate"] != false {
			t.Fatalf("first post: %d %v", st, first)
		}
		st, again := post(c.header, c.body)
		if st != 200 || again["duplicate"] != true || again["messageId"] != first["messageId"] {
			t.Fatalf("retry of %v: %d %v, want 200 duplicate of %v", c.body, st, again, first["messageId"])
		}
		other := map[string]string{"text": "something else"}
		if id, ok := c.body["clientMessageId"]; ok {
			other["clientMessageId"] = id
		}
		if st, body := post(c.header, other); st != 409 || errCode(body) != wire.CodeIdempotencyKeyReused {
			t.Fatalf("same key, other text: %d %v", st, body)
		}
	}
	// Posts without a key are separate posts.
	st1, p1 := post("", map[string]string{"text": "same"})
	st2, p2 := post("", map[string]string{"text": "same"})
	if st1 != 201 || st2 != 201 || p1["messageId"] == p2["messageId"] {
		t.Fatalf("two keyless posts: %d %v, %d %v", st1, p1, st2, p2)
	}
}

// A revoked key's stream, and the stream of a key whose member is banned,
// end as the change is applied: a post made right after `apikey revoke`
// (or the ban) returned is never sent to them. The heartbeat, which also
// re-checks the key, is an hour here: only the change can end them.
func TestTopicStreamEndsAtRevocationAndBan(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.SSEHeartbeat = time.Hour })
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	alice.create("bots", client.TopicCreateOptions{Plaintext: true})
	if err := bob.conn.TopicJoin(bob.ctx(), "bots"); err != nil {
		t.Fatal(err)
	}
	mine := apiKey(t, alice, "watcher", []string{"read"})
	bobs := apiKey(t, bob, "bob's watcher", []string{"read"})
	poster := apiKey(t, alice, "poster", []string{"read", "send"})
	revoked := openStream(t, b, mine.Secret, "bots", "")
	banned := openStream(t, b, bobs.Secret, "bots", "")
	kept := openStream(t, b, poster.Secret, "bots", "")
	post := func(text string) string { return postPlaintext(t, b, poster.Secret, "bots", text) }
	first := post("before")
	for _, s := range []*sseStream{revoked, banned, kept} {
		if ev := s.next(); ev.id != first {
			t.Fatalf("before the changes a stream got %s, want %s", ev.id, first)
		}
	}
	if err := alice.conn.APIKeyRevoke(alice.ctx(), mine.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.conn.Admin(alice.ctx(), &wire.AdminRequest{Type: wire.TypeBan, Target: "bob", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	after := post("after")
	for name, s := range map[string]*sseStream{"revoked key's": revoked, "banned member's key's": banned} {
		select {
		case ev, ok := <-s.events:
			if ok {
				t.Fatalf("the %s stream was sent %s after the change", name, ev.id)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the %s stream stayed open", name)
		}
	}
	if ev := kept.next(); ev.id != after {
		t.Fatalf("the untouched key's stream got %s, want %s", ev.id, after)
	}
}

// On a cluster, a key revoked through one node ends its stream on another
// as the revocation replicates, before the post made after it: that
// node's hub applies the log's entries in order.
func TestClusterTopicStreamEndsAtRevocation(t *testing.T) {
	t.Parallel()
	bs := startCluster(t, "revoke", 3, func(c *Config) { c.SSEHeartbeat = time.Hour })
	peers := topicMesh(t, bs[0], "acme", "alice")
	alice := peers[0]
	alice.create("bots", client.TopicCreateOptions{Plaintext: true})
	watcher := apiKey(t, alice, "watcher", []string{"read"})
	poster := apiKey(t, alice, "poster", []string{"read", "send"})
	// The other node knows the key and the topic once it has applied them.
	waitFor(t, "node 2 to know the key and the topic", func() bool {
		req, _ := http.NewRequest("GET", bs[1].HTTPURL()+"/v1/topics/bots/messages", nil)
		req.Header.Set("Authorization", "Bearer "+watcher.Secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	s := openStream(t, bs[1], watcher.Secret, "bots", "")
	post := func(text string) string { return postPlaintext(t, bs[0], poster.Secret, "bots", text) }
	if first := post("before"); s.next().id != first {
		t.Fatal("node 2's stream missed the post before the revocation")
	}
	if err := alice.conn.APIKeyRevoke(alice.ctx(), watcher.ID); err != nil {
		t.Fatal(err)
	}
	post("after")
	select {
	case ev, ok := <-s.events:
		if ok {
			t.Fatalf("node 2's stream of the revoked key was sent %s after the revocation", ev.id)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node 2's stream of the revoked key stayed open")
	}
}

// On a cluster, a member who joins an encrypted topic through one node gets
// its key from a key holder connected to another: that node tells its key
// holders of the join as it applies the membership (before, the join
// event went only to the presences of the node that took it, and the key
// came at a key holder's next sweep, ~30 s; the harness's keepers have no
// sweep at all).
func TestClusterTopicJoinReachesKeyHoldersOnOtherNodes(t *testing.T) {
	t.Parallel()
	bs := startCluster(t, "topicjoin", 3, nil)
	owner := createMesh(t, bs[0], "acme", "alice")
	bobID := addMember(t, bs[0], owner, "acme", "bob")
	for _, b := range bs {
		waitMember(t, b, owner.meshID, owner.pub())
		waitMember(t, b, owner.meshID, bobID.pub())
	}
	alice := connectPeer(t, bs[0], owner, true)
	bob := connectPeer(t, bs[1], bobID, true)
	ops := alice.create("ops", client.TopicCreateOptions{})
	// Node 2 knows the topic once it applied its creation.
	waitFor(t, "node 2 to know #ops", func() bool {
		ms := bs[1].hub.mesh(owner.meshID)
		ms.mu.Lock()
		defer ms.mu.Unlock()
		idx, err := bs[1].topicsLocked(ms)
		return err == nil && idx.byID[ops.ID] != nil
	})
	if err := bob.conn.TopicJoin(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	bob.waitKey(ops.ID, 1)
}

// A key's stream of a topic ends when its member is removed from the topic
// (a lead's topic_remove) or leaves it: the stream's right to the topic was
// checked only when it opened, so every later post of a plaintext topic
// still reached the key.
func TestTopicStreamEndsWhenItsMemberLeavesTheTopic(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.SSEHeartbeat = time.Hour })
	peers := topicMesh(t, b, "acme", "alice", "bob", "carol")
	alice, bob, carol := peers[0], peers[1], peers[2]
	alice.create("bots", client.TopicCreateOptions{Plaintext: true})
	for _, p := range []*topicPeer{bob, carol} {
		if err := p.conn.TopicJoin(p.ctx(), "bots"); err != nil {
			t.Fatal(err)
		}
	}
	bobs := apiKey(t, bob, "bob's watcher", []string{"read"})
	carols := apiKey(t, carol, "carol's watcher", []string{"read"})
	poster := apiKey(t, alice, "poster", []string{"read", "send"})
	removed := openStream(t, b, bobs.Secret, "bots", "")
	left := openStream(t, b, carols.Secret, "bots", "")
	post := func(text string) string { return postPlaintext(t, b, poster.Secret, "bots", text) }
	first := post("before")
	for _, s := range []*sseStream{removed, left} {
		if ev := s.next(); ev.id != first {
			t.Fatalf("before the changes a stream got %s, want %s", ev.id, first)
		}
	}
	if err := alice.conn.TopicRemove(alice.ctx(), "bots", bob.id.pub()); err != nil {
		t.Fatal(err)
	}
	if err := carol.conn.TopicLeave(carol.ctx(), "bots"); err != nil {
		t.Fatal(err)
	}
	post("after")
	for name, s := range map[string]*sseStream{"removed member's": removed, "departed member's": left} {
		select {
		case ev, ok := <-s.events:
			if ok {
				t.Fatalf("the %s stream was sent %s after the change", name, ev.id)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the %s stream stayed open", name)
		}
	}
}

// postPlaintext posts text to a plaintext topic with an API key that may
// send, and returns the post's id.
func postPlaintext(t *testing.T, b *Broker, secret, topic, text string) string {
	t.Helper()
	st, body := rest(t, b, "POST", "/v1/topics/"+topic+"/messages", secret, map[string]string{"text": text})
	if st != 201 {
		t.Fatalf("post %q to #%s: %d %v", text, topic, st, body)
	}
	return body["messageId"].(string)
}
