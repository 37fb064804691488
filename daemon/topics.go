package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/agentview"
	"claudemesh/wire"
)

// topicsRT is a mesh's topics in the daemon: the member's keyring and key
// keeper (re-seals for joiners, rotations, general's first key; on the
// broker's topic events and on a sweep every 30 s), the last known topic
// list, and a catch-up cursor per joined topic so the inbox gets every post
// made while the daemon was away or had no key yet.
//
// Topic posts are not queued per member on the broker: a live push is the
// only copy a connected daemon gets, and the topic's history is where it
// reads what it missed. Posts are stored as inbox rows (kind "topic") and
// sent as `message` events, except the member's own; every post also goes
// out as a `topic_message` event (for `topic tail` and the chat page).
type topicsRT struct {
	m      *meshRT
	ring   *client.TopicKeyring
	keeper *client.TopicKeeper

	mu   sync.Mutex
	list map[string]wire.TopicInfo // by id
	// listed: list has been read from the broker at least once since the
	// daemon started (until then it is empty, not "no topics").
	listed   bool
	cursors  map[string]string        // topic id → last message id stored ("" = from the start)
	catching map[string]chan struct{} // topic id → a catch-up is running; closed when done
	// behind: topic id → the generation (behindGen) of the last post of
	// it left on the broker because the inbox was full. While a topic is
	// behind, its live posts are not stored (the cursor must not pass the
	// posts left out): the catch-up reads them all, in order, from the
	// topic's history once there is room, and ends the state.
	behind    map[string]uint64
	behindGen uint64
	// held: topic id → the posts of it left in its history because their
	// senders held their share of the inbox in unseen rows (heldPosts).
	// While a topic is held its cursor stays before the first of them;
	// the other senders' posts are stored as they come (a post stored
	// already is recognised when a catch-up reads it again), and a
	// catch-up from the cursor, started when rows are read (roomMade), by
	// a post of a left-out sender that is under its share again, and by
	// every sweep, stores what was left, each sender's in its order.
	held   map[string]*heldPosts
	kicked map[string]bool // topic id → a catch-up started by kick has not begun
}

// heldPosts is a held topic's state: the generation (behindGen) of its
// last post left for a sender's share, and the senders left out.
type heldPosts struct {
	gen     uint64
	senders map[string]bool
	// through is how far the catch-ups read the history (every post up
	// to it was stored, found stored already, or left for a sender of
	// left), and left the senders whose posts up to it were left. The
	// next catch-up reads on from through, not from the frozen cursor,
	// unless one of left can be stored again (under its share, or
	// blocked): otherwise every sweep and every inbox read downloaded
	// and opened again every post since the cursor, up to 5,000 a round,
	// for as long as one poster held its share (a review). In memory: a
	// daemon started again reads from the cursor once.
	through string
	left    map[string]bool
}

func newTopicsRT(m *meshRT) *topicsRT {
	t := &topicsRT{m: m, ring: client.NewTopicKeyring(), list: map[string]wire.TopicInfo{},
		cursors: map[string]string{}, catching: map[string]chan struct{}{}, behind: map[string]uint64{},
		held: map[string]*heldPosts{}, kicked: map[string]bool{}}
	t.keeper = &client.TopicKeeper{MeshID: m.cfg.MeshID, Member: m.key, Ring: t.ring, Log: m.d.log,
		OnKey: t.onKey, Jitter: m.d.opts.TopicJitter}
	m.d.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bCache), cursorKey(m.cfg.MeshID), &t.cursors)
	})
	return t
}

// cursorKey is where a mesh's topic cursors live in the cache bucket (beside
// its directory, under meshId): they are a cache too, rebuilt from the
// broker's history when lost.
func cursorKey(meshID string) []byte { return []byte(meshID + "/topic-cursors") }

// onEvent takes the broker's topic events; false for other system events.
func (t *topicsRT) onEvent(p *wire.Push) bool {
	switch p.Event {
	case wire.EventTopicSealed, wire.EventTopicMemberJoined, wire.EventTopicRekeyNeeded:
		if p.Event == wire.EventTopicSealed {
			t.learnGen(p)
		}
		t.keeper.OnEvent(t.m.d.ctx, p, t.m.ackConn)
		return true
	}
	return false
}

// learnGen takes a topic_sealed event's generation into the last known
// list at once: a rotation by another member is the topic's current
// generation from now, and a post accepted from now on is sealed with it
// (sealTopicRow fetches the key if the keeper has not opened it yet),
// not with the one the list had at the last sweep, which the broker
// refuses as stale_key_gen.
func (t *topicsRT) learnGen(p *wire.Push) {
	var ev wire.TopicEvent
	raw, err := wire.Encode(p.EventData)
	if err != nil || wire.Decode(raw, &ev) != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if info, ok := t.list[ev.TopicID]; ok && ev.KeyGen > info.KeyGen {
		info.KeyGen, info.RekeyNeeded = ev.KeyGen, false
		t.list[ev.TopicID] = info
	}
}

// onKey runs when the keeper opened keys of a topic: tell listeners, and
// catch up on what could not be read.
func (t *topicsRT) onKey(topicID string) {
	info, _ := t.topic(topicID)
	t.m.d.publishAsync(localapi.EventTopicKey, t.m.cfg.MeshID, localapi.TopicKeyEvent{Mesh: t.m.cfg.Slug, TopicID: topicID, Topic: info.Name})
	go t.catchUp(topicID)
}

// connected runs at every hello_ack: refresh the list, do what the keeper
// owes, catch up every joined topic. It returns at once.
func (t *topicsRT) connected(c *client.Conn) {
	go t.sweep(c)
}

// sweepLoop maintains the topics every interval (the fallback when an event
// was missed: 03-daemon's 30 s).
func (t *topicsRT) sweepLoop(ctx context.Context) {
	tick := time.NewTicker(t.m.d.opts.TopicSweep)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if c := t.m.ackConn(); c != nil {
				t.sweep(c)
			}
		}
	}
}

func (t *topicsRT) sweep(c *client.Conn) {
	ctx, cancel := context.WithTimeout(t.m.d.ctx, time.Minute)
	defer cancel()
	list, err := t.refresh(ctx, c)
	if err != nil {
		return
	}
	for _, info := range list {
		if !info.Joined {
			continue
		}
		if info.Encrypted {
			if err := t.keeper.Maintain(ctx, c, info); err != nil {
				t.m.d.log.Debug("topic maintenance", "mesh", t.m.cfg.Slug, "topic", info.Name, "err", err)
			}
		}
		t.catchUp(info.ID)
	}
}

// refresh reads the topic list from the broker.
func (t *topicsRT) refresh(ctx context.Context, c *client.Conn) ([]wire.TopicInfo, error) {
	list, err := c.TopicList(ctx)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	t.list = make(map[string]wire.TopicInfo, len(list))
	for _, info := range list {
		t.list[info.ID] = info
	}
	t.listed = true
	t.mu.Unlock()
	return list, nil
}

// topic finds a topic by id or name in the last known list.
func (t *topicsRT) topic(ref string) (wire.TopicInfo, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if info, ok := t.list[ref]; ok {
		return info, true
	}
	for _, info := range t.list {
		if info.Name == ref {
			return info, true
		}
	}
	return wire.TopicInfo{}, false
}

// resolve finds a topic, asking the broker when the cached list does not
// know it (a topic created a moment ago).
func (t *topicsRT) resolve(ctx context.Context, ref string) (wire.TopicInfo, error) {
	if info, ok := t.topic(ref); ok {
		return info, nil
	}
	if !t.awaitList(ctx) {
		return wire.TopicInfo{}, &client.Error{Code: client.CodeUnreachable,
			Message: "cannot tell whether #" + strings.TrimPrefix(ref, "#") + " exists in " + t.m.cfg.Slug +
				": the daemon has not reached its broker since it started, so it knows none of its topics yet"}
	}
	if c := t.m.ackConn(); c != nil {
		if _, err := t.refresh(ctx, c); err != nil {
			return wire.TopicInfo{}, err
		}
		if info, ok := t.topic(ref); ok {
			return info, nil
		}
	}
	return wire.TopicInfo{}, &client.Error{Code: client.CodeTopicNotFound, Message: "no topic " + ref + " in " + t.m.cfg.Slug}
}

// awaitList reports whether the topic list can be told: read from the
// broker since the daemon started, or a connection is open to read it.
// Right after the daemon starts, its mesh is still connecting and it
// knows no topics yet ("no topic", or an empty list, would be untrue):
// it waits for the connection (up to startWait) as a send by name waits
// for the directory.
func (t *topicsRT) awaitList(ctx context.Context) bool {
	t.mu.Lock()
	listed := t.listed
	t.mu.Unlock()
	if listed || t.m.ackConn() != nil {
		return true
	}
	if p := t.m.presence.Load(); p != nil {
		wctx, cancel := context.WithTimeout(ctx, startWait)
		p.WaitState(wctx, client.StateOpen, client.StateKicked, client.StateRemoved, client.StateBanned, client.StateClosed)
		cancel()
	}
	return t.m.ackConn() != nil
}

// openKeys fetches the seals of the joined encrypted topics whose
// current key this daemon does not hold yet, so that a listing says
// "waiting for the key" only when no member has sealed it for this one:
// right after the daemon starts its keyring is empty until the first
// sweep has opened the seals, which the broker holds already.
func (t *topicsRT) openKeys(ctx context.Context, c *client.Conn, list []wire.TopicInfo) {
	for _, info := range list {
		if info.Joined && info.Encrypted && info.KeyGen > 0 && !t.ring.Has(info.ID, info.KeyGen) {
			if _, err := t.keeper.Refresh(ctx, c, info.ID); err != nil {
				t.m.d.log.Debug("topic keys", "mesh", t.m.cfg.Slug, "topic", info.Name, "err", err)
			}
		}
	}
}

// startCursor makes the topic's catch-up begin after its newest post now
// (a topic this member just joined: its older history is there to read,
// not to flood the inbox with).
func (t *topicsRT) startCursor(ctx context.Context, c *client.Conn, topicID string) {
	page, err := c.TopicHistory(ctx, topicID, client.HistoryPage{Limit: 1})
	if err != nil {
		return
	}
	newest := ""
	if len(page.Messages) > 0 && page.Messages[0].Push != nil {
		newest = page.Messages[0].Push.MessageID
	}
	t.setCursor(topicID, newest)
}

func (t *topicsRT) setCursor(topicID, id string) {
	t.mu.Lock()
	t.cursors[topicID] = id
	cp := make(map[string]string, len(t.cursors))
	for k, v := range t.cursors {
		cp[k] = v
	}
	t.mu.Unlock()
	t.m.d.db.Submit(func(tx *bolt.Tx) error { return putJSON(tx.Bucket(bCache), cursorKey(t.m.cfg.MeshID), cp) }, nil)
}

// catchUp stores the posts of a topic after its cursor, oldest first, up
// to the first it cannot open for want of a key (it resumes there when the
// key comes). One runs at a time per topic; a call while one runs waits
// for it and runs again. A round reads at most topicRoundPages pages; one
// that read them all with more to come starts the next round (kick) once
// it is done, in a goroutine of its own, so that a sweep goes on to the
// other topics and a long history is caught up without waiting for the
// next sweep or read.
func (t *topicsRT) catchUp(topicID string) {
	for {
		t.mu.Lock()
		running, busy := t.catching[topicID]
		if !busy {
			t.catching[topicID] = make(chan struct{})
			delete(t.kicked, topicID)
		}
		t.mu.Unlock()
		if !busy {
			break
		}
		select {
		case <-running:
		case <-t.m.d.ctx.Done():
			return
		}
	}
	defer func() {
		t.mu.Lock()
		close(t.catching[topicID])
		delete(t.catching, topicID)
		t.mu.Unlock()
	}()
	c := t.m.ackConn()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(t.m.d.ctx, time.Minute)
	defer cancel()
	t.mu.Lock()
	cursor, known := t.cursors[topicID]
	t.mu.Unlock()
	if !known {
		t.startCursor(ctx, c, topicID)
		return
	}
	// from is where the next page is read after: the cursor, or past the
	// posts of a sender at its share, left in the history while the
	// others' after them are stored (frozen: the cursor stays before the
	// first one left; refused: their senders, whose later posts are left
	// too, so that each sender's are stored in their order).
	from, frozen, refused := cursor, false, map[string]bool{}
	t.mu.Lock()
	var heldGen uint64
	var through string
	var left map[string]bool
	if h := t.held[topicID]; h != nil {
		heldGen, through, left = h.gen, h.through, maps.Clone(h.left)
	}
	t.mu.Unlock()
	if through != "" && !t.m.d.mayStoreAgain(t.m, left) {
		// Read on from where the last catch-up got to: the posts before
		// it are stored but for those of left, which are left still (and
		// their later ones after them, each sender's in its order). With
		// none left there, the cursor may move past them.
		if left == nil {
			left = map[string]bool{}
		}
		from, refused, frozen = through, left, len(left) > 0
	}
	if h := t.m.d.opts.testCatchUpRead; h != nil {
		h(topicID)
	}
	start := from
	for range t.m.d.opts.topicRoundPages {
		var posts []*wire.Push
		var more bool
		// A post left out for a full inbox before this read is in it.
		t.mu.Lock()
		gen := t.behind[topicID]
		t.mu.Unlock()
		if from == "" {
			// From the start of the topic: its oldest post, then the
			// pages after it (below, once it is the cursor). Reading
			// back from the newest kept only the newest 1,000 posts,
			// and the cursor moved past the older ones.
			oldest, complete, err := oldestPost(ctx, c, topicID, t.m.d.opts.topicScanPages)
			if err != nil {
				return
			}
			if !complete {
				t.m.d.log.Warn("topic catch-up: the history is longer than the catch-up reads back; older posts stay readable with topic history",
					"mesh", t.m.cfg.Slug, "topic", topicID, "posts", t.m.d.opts.topicScanPages*wire.MaxTopicHistory)
			}
			if oldest != nil {
				posts, more = []*wire.Push{oldest}, true
			}
		} else {
			page, err := c.TopicHistory(ctx, topicID, client.HistoryPage{After: from})
			if client.CodeOf(err) == wire.CodeInvalidArgument {
				// The cursor's post is gone (--topic-retention purges
				// the oldest posts first): every post still there is
				// newer than it, so read them all, from the topic's
				// start (above). Starting again from the newest skipped
				// every post made while this daemon was away.
				t.m.d.log.Info("topic catch-up: the post it had read up to was purged; reading the topic's history from its start",
					"mesh", t.m.cfg.Slug, "topic", topicID)
				cursor, from, frozen = "", "", false
				clear(refused)
				continue
			}
			if err != nil {
				return
			}
			for _, m := range page.Messages {
				if m.Push != nil {
					posts = append(posts, m.Push)
				}
			}
			more = page.More
		}
		if len(posts) == 0 {
			t.caughtUp(topicID, gen, heldGen, refused)
			return
		}
		r := t.m.d.storeTopicPosts(t.m, topicID, posts, refused)
		if !frozen && r.upTo != "" {
			t.setCursor(topicID, r.upTo)
			cursor = r.upTo
		}
		frozen = frozen || len(refused) > 0
		if r.through != "" {
			from = r.through
			t.readThrough(topicID, from, refused)
		}
		if r.handled < len(posts) {
			return // waiting for a key, or for room in the inbox
		}
		if !more {
			t.caughtUp(topicID, gen, heldGen, refused)
			return
		}
	}
	// The round's pages are read and there are more: the next round
	// reads on, from the cursor or from where this one got to. Not when
	// this round ended where it began or where the last one got to (a
	// held topic read again from its cursor): that would read the same
	// pages again and again until something changes, which a read or
	// the sweep then handles.
	if from != start && from != through {
		t.kick(topicID)
	}
}

// defaultTopicRoundPages is how many pages of a topic's history one
// catch-up round reads: 100 pages of 50, 5,000 posts.
const defaultTopicRoundPages = 100

// defaultTopicScanPages is how far back a catch-up from a topic's start
// reads to find its oldest post: 100 pages of 50, 5,000 posts, about ten
// seconds of round trips over a slow link, well inside the catch-up's
// minute.
const defaultTopicScanPages = 100

// oldestPost is the oldest post of a topic's history (nil for none),
// found by reading the history back from its newest page by page: a page
// "after" a post needs that post, and a catch-up from the topic's start
// has none. It reads at most maxPages pages: for a longer history it
// returns the oldest of those, complete false. Unbounded, a history longer
// than a minute of round trips was never caught up, and every sweep and
// reconnect read it all again (a review).
func oldestPost(ctx context.Context, c *client.Conn, topicID string, maxPages int) (oldest *wire.Push, complete bool, err error) {
	before := ""
	for range maxPages {
		page, err := c.TopicHistory(ctx, topicID, client.HistoryPage{Before: before})
		if err != nil {
			return nil, false, err
		}
		for _, m := range page.Messages {
			if m.Push != nil {
				oldest = m.Push // pages are newest first
			}
		}
		if !page.More || oldest == nil || oldest.MessageID == before {
			return oldest, true, nil
		}
		before = oldest.MessageID
	}
	return oldest, false, nil
}

// caughtUp ends a topic's behind state when no post was left out since
// the catch-up's last read of its history (gen, read before it); and its
// held state when the catch-up, which read the history from the cursor,
// left no post for a sender's share (refused is empty) and none was left
// since it began (heldGen).
func (t *topicsRT) caughtUp(topicID string, gen, heldGen uint64, refused map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if g, ok := t.behind[topicID]; ok && g == gen {
		delete(t.behind, topicID)
	}
	if h := t.held[topicID]; h != nil && h.gen == heldGen && len(refused) == 0 {
		delete(t.held, topicID)
	}
}

// readThrough records, for a held topic, that a catch-up went through
// the history up to through, leaving the posts of the senders in left
// (whose later posts it leaves too).
func (t *topicsRT) readThrough(topicID, through string, left map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.held[topicID]; h != nil {
		h.through, h.left = through, maps.Clone(left)
	}
}

// mayStoreAgain reports whether a post of one of senders, left in a
// topic's history for its share, would be stored now: the sender is under
// its share (rows were read) or blocked (stored as seen, whatever its
// share).
func (d *Daemon) mayStoreAgain(m *meshRT, senders map[string]bool) bool {
	if len(senders) == 0 {
		return false
	}
	unseen, share := d.unseenBySender(), d.senderShare()
	for from := range senders {
		if unseen[from] < share || m.isBlocked(from) {
			return true
		}
	}
	return false
}

// holdForShare records that posts of the topic by senders were left in
// its history for their share of the inbox.
func (t *topicsRT) holdForShare(topicID string, senders map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.behindGen++
	h := t.held[topicID]
	if h == nil {
		h = &heldPosts{senders: map[string]bool{}}
		t.held[topicID] = h
	}
	h.gen = t.behindGen
	for from := range senders {
		h.senders[from] = true
	}
}

// heldFor reports whether the topic is held, and the senders whose posts
// are left (a copy).
func (t *topicsRT) heldFor(topicID string) (bool, map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.held[topicID]
	if h == nil {
		return false, nil
	}
	return true, maps.Clone(h.senders)
}

// leftBehind records that a post of the topic was left on the broker for a
// full inbox.
func (t *topicsRT) leftBehind(topicID string) {
	t.mu.Lock()
	t.behindGen++
	t.behind[topicID] = t.behindGen
	t.mu.Unlock()
}

// kickBehind starts a catch-up of every topic whose posts were left on
// the broker (roomMade: rows were read, so there may be room for them).
func (t *topicsRT) kickBehind() {
	t.mu.Lock()
	ids := make([]string, 0, len(t.behind)+len(t.held))
	for id := range t.behind {
		ids = append(ids, id)
	}
	for id := range t.held {
		if _, ok := t.behind[id]; !ok {
			ids = append(ids, id)
		}
	}
	t.mu.Unlock()
	for _, id := range ids {
		t.kick(id)
	}
}

// kick starts a catch-up of the topic unless one is already waiting to
// start (catchUp clears the mark when it starts).
func (t *topicsRT) kick(topicID string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.kicked[topicID] {
		return
	}
	t.kicked[topicID] = true
	go t.catchUp(topicID)
}

func (t *topicsRT) isBehind(topicID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.behind[topicID]
	return ok
}

// topicStore is what storeTopicPosts did with a page of posts.
type topicStore struct {
	// handled is how many posts it went through, in order: all of them
	// but from the first whose key is missing, or past the one that
	// reached the inbox's hard limit.
	handled int
	// upTo is the last handled post before the first one left for its
	// sender's share (the cursor may pass it), through the last handled
	// post ("" for none).
	upTo, through string
}

// storeTopicPosts opens posts of one topic (oldest first) and stores the
// others' as inbox rows, stopping at the first post whose key is missing
// and at the inbox's hard limit. A post of a sender that holds its share
// of the inbox, or of one in refused, is left in the topic's history, and
// so are that sender's later ones (refused gets it); the others are
// stored.
func (d *Daemon) storeTopicPosts(m *meshRT, topicID string, posts []*wire.Push, refused map[string]bool) topicStore {
	// A post stored already (a held topic's catch-up reads again the
	// posts stored as they came) is not opened again: its row is there,
	// and admitTopicPosts counts it as nothing.
	already := make([]bool, len(posts))
	self := m.key.PublicHex()
	d.db.View(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bInboxKey)
		for i, p := range posts {
			already[i] = p.MessageID != "" && keys.Get(keyOf(m.cfg.MeshID, self, p.MessageID)) != nil
		}
		return nil
	})
	var msgs []client.TopicMessage
	opened := 0
	for i, p := range posts {
		if already[i] {
			msgs = append(msgs, client.TopicMessage{ID: p.MessageID, TopicID: topicID})
			continue
		}
		tm := client.OpenTopicPush(p, m.cfg.MeshID, topicID, func(g int) *[32]byte { return m.topics.ring.Get(topicID, g) })
		opened++
		if tm.KeyMissing {
			break
		}
		msgs = append(msgs, tm)
	}
	if h := d.opts.testTopicOpened; h != nil {
		h(opened)
	}
	if len(msgs) == 0 {
		return topicStore{}
	}
	// The inbox's hard limit and each sender's share hold for topic posts
	// too: those past them stay in the topic's history, where the next
	// catch-up finds them (one starts when rows are read: roomMade).
	d.icap.admit.Lock()
	defer d.icap.admit.Unlock()
	if d.inboxFull(len(msgs)) {
		m.topics.leftBehind(topicID)
		return topicStore{}
	}
	had := len(refused)
	ok, n := d.admitTopicPosts(m, msgs, refused)
	if n < len(msgs) {
		m.topics.leftBehind(topicID)
	}
	msgs, ok = msgs[:n], ok[:n]
	if len(refused) > had {
		m.topics.holdForShare(topicID, refused)
		d.shareRefused(refused)
	}
	var take []client.TopicMessage
	for i, tm := range msgs {
		if ok[i] && !already[i] {
			take = append(take, tm)
		}
	}
	if len(take) > 0 {
		if err := d.storeTopicRows(m, take); err != nil {
			d.log.Error("topic inbox store", "err", err)
			return topicStore{}
		}
	}
	r := topicStore{handled: n, through: msgs[n-1].ID}
	for i, tm := range msgs {
		if !ok[i] {
			break
		}
		r.upTo = tm.ID
	}
	return r
}

// topicRowSizes estimates the inbox bytes each post adds: its body and
// metadata, nothing for the member's own (not stored).
func topicRowSizes(m *meshRT, msgs []client.TopicMessage) []int64 {
	self := m.key.PublicHex()
	sizes := make([]int64, len(msgs))
	for i, tm := range msgs {
		if tm.SenderPubkey != self {
			sizes[i] = int64(len(tm.Body)+len(tm.DecryptError)) + 512
		}
	}
	return sizes
}

// mentionsUs reports whether a post's mentions (member or session keys)
// name this member or one of its agent sessions in this mesh.
func (m *meshRT) mentionsUs(keys []string) bool {
	if len(keys) == 0 {
		return false
	}
	if slices.Contains(keys, m.key.PublicHex()) {
		return true
	}
	// d.sessions is sessMu's (not d.mu's): a range over it while a
	// session registers or ends is a fatal error of the runtime.
	m.d.sessMu.Lock()
	defer m.d.sessMu.Unlock()
	for _, s := range m.d.sessions {
		if s.rec.MeshID == m.cfg.MeshID && slices.Contains(keys, s.rec.Pubkey) {
			return true
		}
	}
	return false
}

// storeTopicRows stores topic posts by others as inbox rows (once: a post
// seen live and again by a catch-up is recognised) and publishes their
// events after the commit.
func (d *Daemon) storeTopicRows(m *meshRT, msgs []client.TopicMessage) error {
	self := m.key.PublicHex()
	now := time.Now().UnixMilli()
	rows := make([]*inboxRow, len(msgs))
	stored := make([]bool, len(msgs))
	tried := map[*meshRT]bool{}
	for i, tm := range msgs {
		var seenAt int64
		if m.isBlocked(topicSender(tm)) {
			seenAt = now // as a blocked member's DM (blocked.go): kept, not new, not announced
		}
		rows[i] = &inboxRow{SeenAt: seenAt, Mesh: m.cfg.Slug, MeshID: m.cfg.MeshID, MessageID: tm.ID, ClientMessageID: tm.ClientMessageID,
			Kind: wire.KindTopic, Topic: tm.Topic, SenderPubkey: tm.SenderPubkey, SenderMember: tm.SenderMemberPubkey,
			SenderName: tm.SenderName, RecipientPubkey: self, RecipientKind: "member", Priority: tm.Priority,
			ReplyToID: tm.ReplyToID, ReceivedAt: now, SentAt: tm.CreatedAt, Body: tm.Body, DecryptError: tm.DecryptError, Verified: tm.Verified,
			Plaintext: tm.Plaintext, TargetSpec: "#" + tm.TopicID,
			// mentions are routing metadata the sender does not sign: a
			// post that did not verify (or could not be read) is not
			// marked as naming you; a plaintext topic's post, whose
			// sender is the broker's word anyway, is.
			MentionsYou: (tm.Verified || tm.Plaintext) && m.mentionsUs(tm.Mentions)}
		if tm.Verified {
			rows[i].SenderMemberName = m.knownMemberName(tm.SenderMemberPubkey, tried)
			rows[i].FromSelf, rows[i].Lookalike, rows[i].LookalikeSelf = m.senderMarks(tm.SenderMemberPubkey, tm.SenderName, rows[i].SenderMemberName)
		}
	}
	return d.update(func(tx *bolt.Tx) error {
		clear(stored)
		for i, row := range rows {
			if row.SenderPubkey == self {
				continue // the member's own post: a topic_message event only
			}
			var err error
			if stored[i], err = putInboxRow(tx, row, msgs[i].Nonce); err != nil {
				return err
			}
		}
		return nil
	}, func() {
		for i := range rows {
			if stored[i] && rows[i].SeenAt == 0 {
				d.events.publish(event{id: rows[i].Seq, kind: localapi.EventMessage, meshID: m.cfg.MeshID, data: rows[i].api(), inbox: rows[i]})
			}
		}
		d.inboxGrew(rows, stored)
		d.unseenGrew(rows, stored)
		for i := range msgs {
			if stored[i] || rows[i].SenderPubkey == self {
				d.publishAsync(localapi.EventTopicMessage, m.cfg.MeshID, topicMessageAPI(m, msgs[i]))
			}
		}
	})
}

// storeTopicPushes handles live topic pushes from the inbox worker: each is
// stored (or, without its key, left for the catch-up that follows the key)
// and none is acked: topic posts have no delivery records to settle.
func (d *Daemon) storeTopicPushes(items []inboxItem) {
	for _, it := range items {
		p, m := it.push, it.m
		if it.sess != nil || p.Topic == nil || !wire.ValidULID(p.Topic.ID) {
			continue // a session's copy: the member's own connection has it too
		}
		topicID := p.Topic.ID
		tm := client.OpenTopicPush(p, m.cfg.MeshID, topicID, func(g int) *[32]byte { return m.topics.ring.Get(topicID, g) })
		if tm.KeyMissing {
			// A key this daemon has not opened yet: fetch it now (the
			// seal may already be there) and catch up afterwards.
			go func() {
				if c := m.ackConn(); c != nil {
					ctx, cancel := context.WithTimeout(d.ctx, 30*time.Second)
					defer cancel()
					m.topics.keeper.Refresh(ctx, c, topicID)
				}
			}()
			continue
		}
		// Past the inbox's hard limit, or its sender's share, a post is
		// left in the topic's history, and so are the topic's next ones
		// until a catch-up has read them in order (topicsRT.behind); one
		// is started when there is room again (and by every sweep).
		d.icap.admit.Lock()
		_, senders := m.topics.heldFor(topicID)
		if behind := m.topics.isBehind(topicID); behind || tm.SenderPubkey != m.key.PublicHex() {
			if full := d.inboxFull(1); behind || full {
				d.icap.admit.Unlock()
				m.topics.leftBehind(topicID)
				if !full {
					m.topics.kick(topicID)
				}
				continue
			}
			// A sender at its share, or with posts of this topic left
			// for it (its order), is left in the history: the others
			// are stored. A sender at its share is not kicked: the
			// catch-up would leave it again; rows read start it
			// (roomMade). One under its share waits only for the
			// catch-up to store its earlier posts first, and one is
			// started: a catch-up running when the post came (the one
			// rows read started) stores everything it finds but
			// leaves the topic held (a post was left since it began),
			// and every later post of that sender waited in the
			// history until rows were read again or the sweep ran.
			if senders == nil {
				senders = map[string]bool{}
			}
			from := topicSender(tm)
			waiting := senders[from]
			if ok, _ := d.admitTopicPosts(m, []client.TopicMessage{tm}, senders); !ok[0] {
				underShare := waiting && d.unseenBySender()[from] < d.senderShare()
				d.icap.admit.Unlock()
				m.topics.holdForShare(topicID, senders)
				if underShare {
					m.topics.kick(topicID)
				} else {
					d.shareRefused(senders)
				}
				continue
			}
		}
		err := d.storeTopicRows(m, []client.TopicMessage{tm})
		d.icap.admit.Unlock()
		if err != nil {
			d.log.Error("topic inbox store", "err", err)
			continue
		}
		m.topics.mu.Lock()
		_, known := m.topics.cursors[topicID]
		_, catching := m.topics.catching[topicID]
		_, held := m.topics.held[topicID]
		m.topics.mu.Unlock()
		if known && !catching && !held {
			m.topics.setCursor(topicID, tm.ID)
		}
	}
}

// topicMessageAPI is a decrypted post as the local API shows it.
func topicMessageAPI(m *meshRT, tm client.TopicMessage) localapi.TopicMessage {
	name := ""
	if tm.Verified && !tm.Plaintext && tm.SenderMemberPubkey != "" {
		name = m.memberName(tm.SenderMemberPubkey) // the directory cache: no request
	}
	return localapi.TopicMessage{ID: tm.ID, Mesh: m.cfg.Slug, SenderMemberName: name, Topic: tm.Topic, TopicID: tm.TopicID, SenderName: tm.SenderName,
		SenderPubkey: tm.SenderPubkey, SenderMemberPubkey: tm.SenderMemberPubkey, Body: tm.Body, KeyGen: tm.KeyGen,
		Verified: tm.Verified, Plaintext: tm.Plaintext, CreatedAt: tm.CreatedAt, ReplyToID: tm.ReplyToID,
		Mentions: tm.Mentions, DecryptError: tm.DecryptError, KeyMissing: tm.KeyMissing}
}

// target resolves "#topic" (a name or id) of a topic this member belongs
// to (03-daemon "Outbox" step 3).
func (t *topicsRT) target(ctx context.Context, to string) (*client.Target, *apiError) {
	ref := strings.TrimPrefix(strings.TrimSpace(to), "#")
	if strings.TrimSpace(ref) == "" {
		return nil, badRequest(wire.CodeInvalidArgument, "'#' needs a topic name (#deploys)")
	}
	info, err := t.resolve(ctx, ref)
	if err != nil {
		return nil, clientError(err)
	}
	if !info.Joined {
		return nil, clientError(&client.Error{Code: wire.CodeNotAMember, Message: "not a member of #" + info.Name + "; join it first (claudemesh topic join " + info.Name + ")"})
	}
	if info.Role == wire.TopicObserver {
		// The broker refuses an observer's post: say so now rather than
		// accept it into the outbox, where it would fail a moment later.
		// The list may be older than a promotion: ask the broker first.
		if c := t.m.ackConn(); c != nil {
			if _, err := t.refresh(ctx, c); err == nil {
				fresh, ok := t.topic(info.ID)
				if !ok || !fresh.Joined {
					return nil, clientError(&client.Error{Code: wire.CodeNotAMember, Message: "not a member of #" + info.Name + " any more"})
				}
				info = fresh
			}
		}
		if info.Role == wire.TopicObserver {
			return nil, &apiError{status: 403, code: wire.CodeForbidden, msg: client.ObserverRefusal(info.Name),
				hint: client.ObserverHint(info.Name, t.m.cfg.DisplayName)}
		}
	}
	return &client.Target{Kind: wire.KindTopic, Spec: "#" + info.ID, DisplayName: "#" + info.Name, Match: "topic"}, nil
}

// sealTopicRow encrypts an outbox row for a topic target with the current
// key (03-daemon "Outbox" step 4) and turns its mentions (names, pubkeys or
// prefixes) into the member keys the broker takes.
func (t *topicsRT) sealTopicRow(sender *cmcrypto.Identity, row *outboxRow, target *client.Target, plaintext []byte) error {
	ctx, cancel := context.WithTimeout(t.m.d.ctx, 10*time.Second)
	defer cancel()
	info, err := t.resolve(ctx, strings.TrimPrefix(target.Spec, "#"))
	if err != nil {
		return err
	}
	var key *[32]byte
	if info.Encrypted {
		// A generation the keeper opened is current (a seal names no
		// generation the topic does not have yet), even when the list is
		// older than the rotation.
		info.KeyGen = max(info.KeyGen, t.ring.Newest(info.ID))
		if info.KeyGen == 0 {
			return &client.Error{Code: wire.CodeTopicKeyMissing, Message: "#" + info.Name + " has no key yet: the mesh owner's or an admin's client makes it"}
		}
		key = t.ring.Get(info.ID, info.KeyGen)
		if c := t.m.ackConn(); key == nil && c != nil {
			t.keeper.Refresh(ctx, c, info.ID)
			key = t.ring.Get(info.ID, info.KeyGen)
		}
		if key == nil {
			if c := t.m.ackConn(); c != nil {
				members, err := c.TopicMembers(ctx, info.ID)
				if err == nil && len(members) > 0 && client.HoldersOfCurrentKey(members) == 0 {
					// Nobody holds it (everyone who did left): no member
					// will share it, and only a rotation brings a key.
					return &client.Error{Code: wire.CodeTopicKeyMissing, Message: client.NobodyHoldsKeyRefusal(info.Name) + "; " + client.NobodyHoldsKeyHint(info.Name)}
				}
				if holder := t.onlineHolder(members); err == nil && holder != "" {
					// A holder is online: its daemon seals the key for
					// this member moments after a join. A post typed right
					// after topic join (the README's order) waits for it
					// rather than being refused.
					if key = t.awaitKey(ctx, c, info, keyWait); key == nil {
						return &client.Error{Code: wire.CodeTopicKeyMissing, Message: "not posted: " + holder + " holds the key of #" + info.Name +
							" and is online, but it has not reached you within " + keyWait.String() + "; post again in a moment"}
					}
				}
			}
		}
		if key == nil {
			// Nothing is posted and nothing waits: say so (it read
			// "waiting for a member…", as if the post were queued).
			return &client.Error{Code: wire.CodeTopicKeyMissing, Message: "not posted: you do not hold the key of #" + info.Name +
				" yet; a member who holds it shares it automatically when online (their daemon, or a running claudemesh topic tail), then post again"}
		}
	}
	if len(row.Mentions) > 0 {
		dir := t.m.directoryResolver()
		keys := make([]string, 0, len(row.Mentions))
		for _, who := range row.Mentions {
			mt, err := dir.Resolve(who, "")
			if err != nil {
				return err
			}
			if mt.Kind != wire.KindBox {
				return &client.Error{Code: wire.CodeInvalidArgument, Message: "a mention names one member or session, not " + who}
			}
			keys = append(keys, mt.Spec)
		}
		row.Mentions = keys
	}
	s, err := client.SealTopicPost(t.m.cfg.MeshID, info.ID, info.KeyGen, key, plaintext, sender, client.SendOptions{})
	if err != nil {
		return err
	}
	row.Nonce, row.Ciphertext, row.Signature, row.KeyGen = s.Nonce, s.Ciphertext, s.Signature, s.KeyGen
	return nil
}

// keyWait is how long a topic post waits for a key that a member online
// holds (it seals it for a new member within moments of the join).
const keyWait = 5 * time.Second

// onlineHolder is the name of a member of the topic who holds its current
// key and is online now, or "".
func (t *topicsRT) onlineHolder(members []wire.TopicMemberInfo) string {
	dir, _ := t.m.directory()
	online := map[string]bool{}
	for _, m := range dir {
		if m.Online {
			online[m.Pubkey] = true
		}
	}
	self := t.m.key.PublicHex()
	for _, m := range members {
		if m.HasCurrentKey && m.Pubkey != self && online[m.Pubkey] {
			return agentview.QuoteName(m.DisplayName) // a member's choice: quoted when not plain
		}
	}
	return ""
}

// awaitKey fetches this member's seals of the topic until the current
// generation's key is there, for up to d.
func (t *topicsRT) awaitKey(ctx context.Context, c *client.Conn, info wire.TopicInfo, d time.Duration) *[32]byte {
	deadline := time.Now().Add(d)
	for {
		if key := t.ring.Get(info.ID, info.KeyGen); key != nil {
			return key
		}
		if time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(150 * time.Millisecond):
		}
		t.keeper.Refresh(ctx, c, info.ID)
	}
}

// reseal seals a topic post of the outbox again under the topic's current
// key generation, after the broker refused it as stale_key_gen: the topic
// was rotated after the post was accepted, before this daemon knew. The
// daemon holds the old generation's key: it opens its own post with it
// (the plaintext is in memory for this moment only, never stored) and seals
// it as a fresh post would be, with a new nonce, ciphertext and signature
// over the new generation (the specification's topic-post string covers
// the mesh, topic, generation, nonce and ciphertext; nothing else of the
// send changes). permanent says the post can never be sealed again (its
// old key or its sender's key is gone); otherwise it may be later (the new
// generation's key is not here yet, or the broker could not be asked).
func (t *topicsRT) reseal(r *outboxRow) (s *wire.Send, permanent bool, err error) {
	if r.KeyGen == nil {
		return nil, true, errors.New("a plaintext post has no key generation")
	}
	oldGen, topicID := *r.KeyGen, strings.TrimPrefix(r.TargetSpec, "#")
	m := t.m
	sender := m.key
	if r.SenderPubkey != "" && r.SenderPubkey != m.key.PublicHex() {
		sess := m.d.sessionBySender(r.SenderPubkey)
		if sess == nil {
			return nil, true, errors.New("its session is gone, and its key with it")
		}
		sender = sess.key
	}
	c := m.ackConn()
	if c == nil {
		return nil, false, errors.New("the broker is not connected")
	}
	ctx, cancel := context.WithTimeout(m.d.ctx, 10*time.Second)
	defer cancel()
	if _, err := t.refresh(ctx, c); err != nil {
		return nil, false, err
	}
	info, ok := t.topic(topicID)
	if !ok {
		return nil, false, fmt.Errorf("#%s is not in the topic list", topicID)
	}
	gen := max(info.KeyGen, t.ring.Newest(topicID))
	if gen <= oldGen {
		return nil, false, fmt.Errorf("#%s is still at key generation %d here", info.Name, gen)
	}
	if t.ring.Get(topicID, oldGen) == nil || t.ring.Get(topicID, gen) == nil {
		t.keeper.Refresh(ctx, c, topicID)
	}
	oldKey, key := t.ring.Get(topicID, oldGen), t.ring.Get(topicID, gen)
	if oldKey == nil {
		return nil, true, fmt.Errorf("the key of generation %d it was sealed with is not available to open it", oldGen)
	}
	if key == nil {
		return nil, false, fmt.Errorf("waiting for the key of generation %d of #%s", gen, info.Name)
	}
	plaintext, err := cmcrypto.OpenTopicPost(m.cfg.MeshID, topicID, oldGen, r.Nonce, r.Ciphertext, r.Signature, oldKey, sender.Public())
	if err != nil {
		return nil, true, fmt.Errorf("opening it: %w", err)
	}
	defer clear(plaintext)
	s, err = client.SealTopicPost(m.cfg.MeshID, topicID, gen, key, plaintext, sender, client.SendOptions{})
	if err != nil {
		return nil, true, err
	}
	m.d.log.Info("topic post sealed again after a rotation", "mesh", m.cfg.Slug, "topic", info.Name, "clientMessageId", r.ClientMessageID,
		"fromKeyGen", oldGen, "keyGen", gen)
	return s, false, nil
}

// topicBodyVersion is the bodyVersion of an outbox row's send: a topic row
// without a key generation is a plaintext topic's post.
func topicBodyVersion(r *outboxRow) int {
	if r.Kind != wire.KindTopic {
		return 0
	}
	if r.KeyGen == nil {
		return wire.BodyPlaintext
	}
	return wire.BodyEncrypted
}
