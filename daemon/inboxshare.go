package daemon

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"sort"
	"sync"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/agentview"
	"claudemesh/wire"
)

// Each sender's share of the inbox (trial 18, finding 11). At twice its
// cap the inbox takes no more pushes (inboxcap.go), and one member could
// reach that alone: a flood to a teammate away from the keyboard, after
// which nobody else's messages reached them until the flood was read. Now
// one sending member (its member key and its agent sessions together)
// may hold at most a quarter of that, half the cap, in unseen rows; past
// it only that member's pushes are refused (left unacked on the broker,
// which keeps each sender to a share of its window too), and everyone
// else's are stored. Rows are read by `inbox`, and the room it makes is
// used at once: the pushes refused meanwhile are kept in memory (bounded
// by the broker's window, and by maxParked here) and stored and acked as
// soon as there is room, instead of at the broker's next redelivery.

// Bounds on the refused pushes kept for when there is room: the broker
// has at most 256 pushes (4 MiB) in flight per connection, and a daemon
// has a few connections a mesh. Past these the oldest are forgotten:
// they are still on the broker, which pushes them again.
const (
	maxParked      = 1024
	maxParkedBytes = 16 << 20
)

// senderShare is the unseen bytes one sending member may hold in the
// inbox: a quarter of its hard limit (twice the cap).
func (d *Daemon) senderShare() int64 {
	if d.opts.testNoSenderShare {
		return math.MaxInt64 / 2
	}
	return 2 * d.opts.InboxMaxBytes / 4
}

// pushSender is the sending member a push counts against: the member key
// its broker names (an agent session's member), else the sender's key.
func pushSender(p *wire.Push) string {
	if p.SenderMemberPubkey != "" {
		return p.SenderMemberPubkey
	}
	return p.SenderPubkey
}

// estimateRow is what a push adds to the inbox, as inboxRoom estimates
// it: its plaintext (three quarters of the base64 ciphertext) and
// metadata.
func estimateRow(p *wire.Push) int64 { return int64(len(p.Ciphertext))*3/4 + 512 }

// parkedPushes are pushes the inbox refused, kept for when there is room.
type parkedPushes struct {
	mu    sync.Mutex
	items []inboxItem
	bytes int
}

func (it inboxItem) recipientKey() string {
	if it.sess != nil {
		return it.sess.rec.Pubkey
	}
	return it.m.key.PublicHex()
}

// park keeps refused pushes, in arrival order. A push kept already (the
// broker sent it again) keeps its place and takes the newer connection.
func (d *Daemon) park(items []inboxItem) {
	if len(items) == 0 {
		return
	}
	pp := &d.parked
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, it := range items {
		dup := false
		for i := range pp.items {
			o := &pp.items[i]
			if o.push.MessageID == it.push.MessageID && o.m == it.m && o.recipientKey() == it.recipientKey() {
				*o, dup = it, true
				break
			}
		}
		if dup {
			continue
		}
		pp.items = append(pp.items, it)
		pp.bytes += len(it.push.Ciphertext)
	}
	for len(pp.items) > maxParked || (pp.bytes > maxParkedBytes && len(pp.items) > 1) {
		pp.bytes -= len(pp.items[0].push.Ciphertext)
		pp.items[0] = inboxItem{}
		pp.items = pp.items[1:]
	}
}

// takeParked hands over every kept push, oldest first.
func (d *Daemon) takeParked() []inboxItem {
	pp := &d.parked
	pp.mu.Lock()
	defer pp.mu.Unlock()
	out := pp.items
	pp.items, pp.bytes = nil, 0
	return out
}

// parkedBySender counts the kept pushes per sending member.
func (d *Daemon) parkedBySender() map[string]int {
	pp := &d.parked
	pp.mu.Lock()
	defer pp.mu.Unlock()
	out := map[string]int{}
	for _, it := range pp.items {
		out[pushSender(it.push)]++
	}
	return out
}

// roomMade is called when rows were read, deleted or pruned: the inbox
// worker stores the kept pushes that now fit at once, and the topics whose
// posts were left in their history catch up.
func (d *Daemon) roomMade() {
	for _, m := range d.meshList() {
		m.topics.kickBehind()
	}
	d.parked.mu.Lock()
	any := len(d.parked.items) > 0
	d.parked.mu.Unlock()
	if !any {
		return
	}
	select {
	case d.roomWake <- struct{}{}:
	default:
	}
}

// newcomerRoom is the reserve past the hard limit (a new user's trial:
// four members flooding one recipient together filled its inbox, after
// which nobody else's messages were stored until it read): a sending
// member that holds less than perSender in unseen rows is still stored
// there, until the inbox is total past its hard limit. At the default cap
// (256 MiB) that is 4 MiB a sender within 64 MiB, so it takes sixteen
// more members flooding together to keep a newcomer's messages out; at
// the smallest (1 MiB), 128 KiB (a largest message and more) within
// 256 KiB. Always well under a sender's share (half the cap).
func (d *Daemon) newcomerRoom() (perSender, total int64) {
	c := d.opts.InboxMaxBytes
	return max(c/64, min(c/8, 128<<10)), c / 4
}

// admitPushes decides, in order, which pushes the inbox takes: while it
// is under its hard limit, each one whose sender is under its share;
// past it, those of senders that hold almost nothing of it, within the
// reserve (newcomerRoom). Once one of a sender's pushes is refused, its
// later ones in items are too, so that one sender's messages are stored
// in their order. refused holds the senders refused for their share.
func (d *Daemon) admitPushes(items []inboxItem, full bool) (ok []bool, refused map[string]bool) {
	hard, share := 2*d.opts.InboxMaxBytes, d.senderShare()
	perSender, reserve := d.newcomerRoom()
	d.icap.mu.Lock()
	size := d.icap.bytes
	d.icap.mu.Unlock()
	var total int64
	for _, it := range items {
		total += estimateRow(it.push)
	}
	var unseen map[string]int64
	if size+total >= share {
		unseen = d.unseenBySender()
	}
	ok = make([]bool, len(items))
	refused = map[string]bool{}
	stopped := map[string]bool{}
	adding := map[string]int64{}
	for i, it := range items {
		from := pushSender(it.push)
		if it.m.isBlocked(from) {
			// Stored as seen (blocked.go), whatever room is left: the
			// cap drops such rows first.
			ok[i] = true
			size += estimateRow(it.push)
			continue
		}
		n := estimateRow(it.push)
		if !stopped[from] && (full || size >= hard) {
			if unseen == nil {
				unseen = d.unseenBySender()
			}
			if unseen[from]+adding[from]+n <= perSender && size+n <= hard+reserve {
				ok[i] = true
				size += n
				adding[from] += n
				continue
			}
		}
		if stopped[from] || full || size >= hard {
			stopped[from] = true
			continue
		}
		if unseen != nil && unseen[from]+adding[from] >= share {
			stopped[from], refused[from] = true, true
			continue
		}
		ok[i] = true
		size += n
		adding[from] += n
	}
	return ok, refused
}

// topicSender is the sending member a topic post counts against, as
// pushSender for a push (and unseenGrew for its row).
func topicSender(tm client.TopicMessage) string {
	if tm.SenderMemberPubkey != "" {
		return tm.SenderMemberPubkey
	}
	return tm.SenderPubkey
}

// admitTopicPosts is admitPushes for posts of one topic (oldest first):
// which of them to store, while the inbox is under its hard limit, n of
// them up to and including the one that reaches it. A post of a sender
// that holds its share in unseen rows is not stored, nor are that
// sender's later ones, so that each sender's posts are stored in their
// order; refused (filled in) names those senders, and a sender it names
// already is refused too. The posts not stored stay in the topic's
// history on the broker; the catch-up reads them again once rows are
// read (roomMade) and stores each once. The member's own posts are not
// stored, and posts stored already are not again (both ok, adding
// nothing); a blocked member's are, as seen, whatever its share.
func (d *Daemon) admitTopicPosts(m *meshRT, msgs []client.TopicMessage, refused map[string]bool) (ok []bool, n int) {
	hard, share := 2*d.opts.InboxMaxBytes, d.senderShare()
	sizes := topicRowSizes(m, msgs)
	// Posts stored already (a held topic's catch-up reads again the
	// posts stored as they came) add nothing: counted, they took room
	// and share that their rows hold already.
	self := m.key.PublicHex()
	d.db.View(func(tx *bolt.Tx) error {
		keys := tx.Bucket(bInboxKey)
		for i, tm := range msgs {
			if sizes[i] != 0 && keys.Get(keyOf(m.cfg.MeshID, self, tm.ID)) != nil {
				sizes[i] = 0
			}
		}
		return nil
	})
	d.icap.mu.Lock()
	size := d.icap.bytes
	d.icap.mu.Unlock()
	var total int64
	for _, n := range sizes {
		total += n
	}
	var unseen map[string]int64
	if size+total >= share {
		unseen = d.unseenBySender()
	}
	ok = make([]bool, len(msgs))
	adding := map[string]int64{}
	for i, tm := range msgs {
		if sizes[i] == 0 {
			ok[i] = true // the member's own (a topic_message event only), or stored already
			continue
		}
		from := topicSender(tm)
		blocked := m.isBlocked(from)
		if !blocked && (refused[from] || (unseen != nil && unseen[from]+adding[from] >= share)) {
			refused[from] = true
			continue
		}
		ok[i] = true
		size += sizes[i]
		adding[from] += sizes[i]
		if size >= hard {
			return ok, i + 1
		}
	}
	return ok, len(msgs)
}

// shareRefused logs, once per sender until it is under its share again,
// that a sender's pushes are left on the broker.
func (d *Daemon) shareRefused(refused map[string]bool) {
	d.icap.mu.Lock()
	var fresh []string
	if d.icap.overShare == nil {
		d.icap.overShare = map[string]bool{}
	}
	for from := range refused {
		if !d.icap.overShare[from] {
			d.icap.overShare[from] = true
			fresh = append(fresh, from)
		}
	}
	d.icap.mu.Unlock()
	for _, from := range fresh {
		d.log.Warn("a sender holds its share of the inbox in unseen rows: its new messages are left on the broker until some are read", "sender", from, "share", d.senderShare())
	}
}

// unseenBySender is the unseen rows' bytes per sending member, counted
// again from the inbox when rows were read or deleted since the last
// count, else kept up to date as rows are stored.
func (d *Daemon) unseenBySender() map[string]int64 {
	d.icap.mu.Lock()
	if d.icap.unseenBy != nil {
		out := maps.Clone(d.icap.unseenBy) // unseenGrew adds to it meanwhile
		d.icap.mu.Unlock()
		return out
	}
	d.icap.mu.Unlock()
	by := map[string]int64{}
	d.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bInbox).ForEach(func(_, v []byte) error {
			if !bytesContains(v, `"seenAt"`) {
				by[rowSender(v)] += int64(len(v))
			}
			return nil
		})
	})
	d.icap.mu.Lock()
	d.icap.unseenBy = maps.Clone(by)
	d.icap.mu.Unlock()
	return by
}

// unseenChanged forgets the per-sender count after rows were read or
// deleted; the next push that needs it counts again.
func (d *Daemon) unseenChanged() {
	d.icap.mu.Lock()
	d.icap.unseenBy, d.icap.overShare = nil, nil
	d.icap.mu.Unlock()
}

// unseenGrew counts new unseen rows in the per-sender count.
func (d *Daemon) unseenGrew(rows []*inboxRow, stored []bool) {
	d.icap.mu.Lock()
	defer d.icap.mu.Unlock()
	if d.icap.unseenBy == nil {
		return
	}
	for i, r := range rows {
		if stored[i] && r.SeenAt == 0 {
			from := r.SenderMember
			if from == "" {
				from = r.SenderPubkey
			}
			d.icap.unseenBy[from] += int64(r.size)
		}
	}
}

// rowSender reads a stored row's sending member without decoding the row
// (its body may be 64 KiB): the keys are lowercase hex, written by this
// daemon.
func rowSender(v []byte) string {
	if s := jsonHexField(v, `"senderMemberPubkey":"`); s != "" {
		return s
	}
	return jsonHexField(v, `"senderPubkey":"`)
}

func jsonHexField(v []byte, key string) string {
	i := bytes.Index(v, []byte(key))
	if i < 0 {
		return ""
	}
	v = v[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 || j > 128 {
		return ""
	}
	return string(v[:j])
}

// senderShares is the `daemon status` part about senders over their
// share: from the caller's scan, each sender's unseen bytes and the key
// of one of its rows (for its name).
func (d *Daemon) senderShares(unseen map[string]int64, rowOf map[string][]byte) ([]localapi.SenderShare, []string) {
	share := d.senderShare()
	parked := d.parkedBySender()
	var out []localapi.SenderShare
	for from, n := range unseen {
		if n < share {
			continue // a sender's pushes kept because the inbox is full are the full warning's
		}
		s := localapi.SenderShare{Pubkey: from, UnseenBytes: n, Waiting: parked[from]}
		if k := rowOf[from]; k != nil {
			d.db.View(func(tx *bolt.Tx) error {
				var r inboxRow
				if getJSON(tx.Bucket(bInbox), k, &r) == nil {
					s.Name = r.SenderMemberName
					if s.Name == "" {
						s.Name = r.SenderName
					}
				}
				return nil
			})
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UnseenBytes > out[j].UnseenBytes })
	var warnings []string
	for _, s := range out {
		key := s.Pubkey
		if len(key) > 8 {
			key = key[:8]
		}
		name := agentview.QuoteName(s.Name)
		if s.Name == "" {
			name = "a member"
		}
		more := "new messages from them stay on the broker"
		if s.Waiting > 0 {
			more = fmt.Sprintf("%d more from them wait on the broker", s.Waiting)
		}
		warnings = append(warnings, fmt.Sprintf("%s (%s) holds %s of unseen messages, its share of the inbox (half the cap of %s): %s until you read or delete theirs (claudemesh inbox --mark-seen) or block them (claudemesh block marks theirs seen); other members' messages still arrive",
			name, key, humanSize(s.UnseenBytes), humanSize(d.opts.InboxMaxBytes), more))
	}
	return out, warnings
}
