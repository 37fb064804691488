package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oklog/ulid/v2"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// peer is one enrolled member: a sender, a recipient, or both.
type peer struct {
	idx    int
	key    *cmcrypto.Identity
	pubHex string
	ident  client.MeshIdentity
	conn   *client.Conn
	// keys are the precomputed box keys with the peers this one talks
	// to, by their index; read-only once the clock starts.
	keys map[int32]*cmcrypto.SharedKey
	// plain is this peer's pre-generated plaintext: every message it sends
	// carries it, and recipients compare what they open with it.
	plain []byte
	// targets are the recipients of its DMs, chosen before the clock
	// starts so that the box keys can be precomputed for exactly them.
	targets []int32
	// sendAt[seq] is when send seq was handed to the connection (ns since
	// base). Written by the sender, read by recipients' reader goroutines.
	sendAt []atomic.Int64

	// Owned by the sender goroutine; read after shutdown.
	ackNs     []int64
	lastAckNs int64
	accepted  int64 // deliveries the broker accepted (deliveriesOf its acks)
	refused   int64
	retried   int64
	firstErr  error

	// Owned by the connection's reader goroutine (OnPush); read after
	// shutdown.
	seen          map[msgKey]struct{}
	e2eNs         []int64
	e2eSeq        []int32 // the send seq of each e2eNs sample (--segments)
	e2eSentNs     []int64 // the send time of each e2eNs sample (Config.startTail, run.samplesDir)
	lastPushNs    int64
	undecryptable int64
	duplicates    int64
	late          int64
	firstBad      error

	// ackConn is the connection pushes and receipts are acked on: the
	// last one whose handshake finished (OnReady, before its reader
	// starts).
	ackConn atomic.Pointer[client.Conn]

	// Cluster fail-over (failover.go): the presence that keeps the peer
	// connected (nil otherwise).
	live *liveConn
	// ackedSeq[seq] is whether send seq was acked, and resent how many
	// sends went again on a new connection (sender goroutine's).
	ackedSeq []bool
	resent   int64
	// notes[seq] is what the sender learned of send seq: where it went
	// and how it was acked (sender goroutine's, fail-over runs only).
	notes       []sendNote
	unavailable int64 // sends retried after error unavailable
	// bySend holds the distinct message ids each send arrived under
	// (reader goroutine's, fail-over runs only).
	bySend map[uint64][]string
	// firstPushNs is when each send first arrived (ns since base;
	// reader goroutine's, fail-over runs only).
	firstPushNs map[uint64]int64
	// afterKillNs are the send→push latencies of sends made after the
	// kill (reader goroutine's, fail-over runs only).
	afterKillNs []int64
	// leftover are the sends still queued for this peer after the drain
	// (fetchLeftovers; fail-over runs with deliveries missing only).
	leftover map[uint64]struct{}
}

// makePeers generates the identities, plaintexts and (DM mode) targets,
// and sizes the per-send records, so that the timed part only seals, sends,
// opens and acks.
func (r *run) makePeers() error {
	cfg := r.cfg
	n := cfg.Peers
	if cfg.Broadcast {
		n++ // the sender
	}
	r.peers = make([]*peer, n)
	r.byPubkey = make(map[string]*peer, n)
	for i := range n {
		key, err := cmcrypto.GenerateIdentity()
		if err != nil {
			return err
		}
		p := &peer{idx: i, key: key, pubHex: key.PublicHex(), keys: map[int32]*cmcrypto.SharedKey{},
			plain: plaintext(i, cfg.Payload), seen: map[msgKey]struct{}{}}
		r.peers[i] = p
		r.byPubkey[p.pubHex] = p
	}
	if cfg.Broadcast {
		r.senders, r.recipients = r.peers[:1], r.peers[1:]
		r.chunks = (len(r.recipients) + cmcrypto.MaxRecipients - 1) / cmcrypto.MaxRecipients
		r.jobs = cfg.Messages * r.chunks
		r.expected = int64(cfg.Messages) * int64(len(r.recipients))
	} else {
		r.senders, r.recipients = r.peers, r.peers
		r.jobs = cfg.Messages
		r.expected = int64(cfg.Messages) * int64(n)
		var seed [16]byte
		rand.Read(seed[:])
		s1, s2 := binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])
		for _, p := range r.peers {
			rng := mrand.New(mrand.NewPCG(s1, s2+uint64(p.idx)))
			p.targets = make([]int32, r.jobs)
			for j := range p.targets {
				t := rng.IntN(n - 1) // any peer but p itself
				if t >= p.idx {
					t++
				}
				p.targets[j] = int32(t)
			}
		}
	}
	for _, s := range r.senders {
		s.sendAt = make([]atomic.Int64, r.jobs)
		s.ackNs = make([]int64, 0, r.jobs)
		s.ackedSeq = make([]bool, r.jobs)
	}
	if cfg.Failover {
		for _, p := range r.peers {
			p.bySend = map[uint64][]string{}
			p.firstPushNs = map[uint64]int64{}
			p.notes = make([]sendNote, r.jobs)
		}
	}
	return nil
}

// plaintext is printable ASCII (so it is also valid message text) that
// names its sender, padded to size.
func plaintext(idx, size int) []byte {
	head := fmt.Sprintf("claudemesh bench from peer %d: ", idx)
	out := make([]byte, size)
	for i := range out {
		if i < len(head) {
			out[i] = head[i]
		} else {
			out[i] = 'a' + byte(i%26)
		}
	}
	return out
}

// precomputeKeys derives the box key (crypto_box_beforenm) of every pair
// of peers that will exchange a message, in parallel and before the
// clock starts. The key is symmetric, so each unordered pair costs one
// X25519 and serves both the sealing sender and the opening recipient.
func (r *run) precomputeKeys(ctx context.Context) error {
	type pair struct{ a, b int32 }
	set := map[pair]struct{}{}
	add := func(x, y int32) {
		if x > y {
			x, y = y, x
		}
		set[pair{x, y}] = struct{}{}
	}
	for _, s := range r.senders {
		if r.cfg.Broadcast {
			for _, rc := range r.recipients {
				add(int32(s.idx), int32(rc.idx))
			}
			continue
		}
		for _, t := range s.targets {
			add(int32(s.idx), t)
		}
	}
	pairs := make([]pair, 0, len(set))
	for p := range set {
		pairs = append(pairs, p)
	}
	keys := make([]*cmcrypto.SharedKey, len(pairs))
	err := parallel(ctx, len(pairs), func(_, i int) error {
		a, b := r.peers[pairs[i].a], r.peers[pairs[i].b]
		k, err := cmcrypto.Precompute(b.key.Public(), a.key)
		keys[i] = k
		return err
	})
	if err != nil {
		return err
	}
	for i, p := range pairs {
		r.peers[p.a].keys[p.b] = keys[i]
		r.peers[p.b].keys[p.a] = keys[i]
	}
	return nil
}

// connectPeers opens every peer's presence connection. Pushes are opened
// and acked on the reader goroutine; receipts for the peer's own sends are
// acked too, as a daemon would, so they do not pile up in its queue. The
// acks go through the client library's queue (ClientAckAsync), which puts
// those queued while its writer was busy into one frame, as it does for a
// daemon.
//
// Only peer 0 listens to presence events (and counts them): a connection
// without an OnSystem handler skips decoding them, and in a large mesh
// decoding every peer_joined at every connection would make the load
// generator, not the broker, the bottleneck of set-up.
func (r *run) connectPeers(ctx context.Context) error {
	var done atomic.Int64
	return parallel(ctx, len(r.peers), func(_, i int) error {
		p := r.peers[i]
		opts := client.DialOptions{
			Presence: true, Role: wire.RoleCLI, SessionID: "bench",
			OnReady:   p.ackConn.Store,
			OnPush:    func(_ []byte, m *wire.Push) { r.onPush(p, m) },
			OnReceipt: func(rc *wire.Receipt) { p.ack(rc.ReceiptID) },
			// Nothing here waits for a receipt: kept, they were a live
			// heap that grew with the run (~4,096 a peer by ~400k
			// messages), and the GC work it took from the readers showed
			// as a send→push p99 rising over the tail row's first 400k.
			NoReceiptWaits: true,
		}
		if i == 0 {
			opts.OnSystem = func(*wire.Push) { r.systemEvents.Add(1) }
		}
		id := p.ident
		id.BrokerURL = r.nodeURL(r.nodeOf(i))
		var c *client.Conn
		var err error
		if r.cfg.Failover {
			c, err = r.startLive(ctx, p, id, opts)
		} else {
			c, err = r.dialRetry(ctx, id, opts)
		}
		if err != nil {
			return fmt.Errorf("peer %d connecting: %w", i, err)
		}
		p.conn = c
		r.progressf("connecting peers: %d/%d", done.Add(1), len(r.peers))
		return nil
	})
}

// connectIdle opens the idle presences: member presences of the owner with
// distinct session ids, so each is a listed presence of its own, and the
// owner is never a sender or recipient, so no delivery is routed to them.
func (r *run) connectIdle(ctx context.Context) error {
	if r.cfg.IdleConnections == 0 {
		return nil
	}
	r.idle = make([]*client.Conn, r.cfg.IdleConnections)
	var done atomic.Int64
	return parallel(ctx, len(r.idle), func(_, i int) error {
		id := r.owner
		id.BrokerURL = r.nodeURL(r.nodeOf(i))
		c, err := r.dialRetry(ctx, id, client.DialOptions{
			Presence: true, Role: wire.RoleCLI, SessionID: "idle-" + strconv.Itoa(i),
		})
		if err != nil {
			return fmt.Errorf("idle connection %d: %w", i, err)
		}
		r.idle[i] = c
		r.progressf("opening idle connections: %d/%d", done.Add(1), len(r.idle))
		return nil
	})
}

// sendID names send seq of peer idx; it is also the clientMessageId the
// broker echoes in the push, which is how a recipient finds the send time.
// It is a ULID of the moment it is made, as every client of this project
// mints its ids (client.NewID): the broker's idempotency index grows at its
// right edge for such ids, and a bench that used ids in another order
// would measure a load no real client makes (it made every send rewrite a
// page somewhere in the middle of that index). Its 80 "random" bits carry
// the peer's index and the sequence number, then 16 random bits.
func sendID(idx, seq int) string {
	var u ulid.ULID
	u.SetTime(ulid.Now())
	binary.BigEndian.PutUint32(u[6:10], uint32(idx))
	binary.BigEndian.PutUint32(u[10:14], uint32(seq))
	r := mrand.Uint32()
	u[14], u[15] = byte(r>>8), byte(r)
	return u.String()
}

// parseSendID is the inverse of sendID for a known sender.
func parseSendID(id string, idx int) (int, bool) {
	u, err := ulid.ParseStrict(id)
	if err != nil || binary.BigEndian.Uint32(u[6:10]) != uint32(idx) {
		return 0, false
	}
	seq := binary.BigEndian.Uint32(u[10:14])
	if seq > math.MaxInt32 {
		return 0, false
	}
	return int(seq), true
}

// sendLoop is one closed-loop sender: at most Window sends un-acked, the
// next one issued as soon as the oldest is acked. The broker acks one
// connection's sends in the order it received them (they are committed in
// submission order), so waiting on the oldest first times every ack as it
// arrives.
func (r *run) sendLoop(ctx context.Context, s *peer) {
	type slot struct {
		seq  int
		send *wire.Send
		at   int64
		conn *client.Conn
		ch   <-chan client.SendResult
	}
	win := make([]slot, 0, r.cfg.Window)
	// put hands sl to the peer's connection. In a fail-over run a
	// connection found closed is waited out and the send goes on the
	// next one.
	put := func(sl slot) bool {
		for {
			c := s.connNow()
			if c != nil {
				ch, err := c.SendAsync(ctx, sl.send)
				if err == nil {
					sl.conn, sl.ch = c, ch
					win = append(win, sl)
					if s.notes != nil {
						n := &s.notes[sl.seq]
						n.id = sl.send.ID
						n.tries = append(n.tries, r.nodeOfConn(c))
					}
					return true
				}
				if s.live == nil || !isClosed(err) || ctx.Err() != nil {
					s.firstErr = err
					return false
				}
			}
			if !r.awaitNewConn(ctx, s, c) {
				if s.firstErr == nil {
					s.firstErr = errors.New("the run ended while the peer was reconnecting")
				}
				return false
			}
		}
	}
	issue := func(seq int, ws *wire.Send) bool {
		at := r.now()
		s.sendAt[seq].Store(at)
		return put(slot{seq: seq, send: ws, at: at})
	}
	// With --honest-rate, send seq is due at paceStart + offset +
	// seq·interval; the sender waits for it (taking acks meanwhile).
	paced := r.cfg.HonestRate > 0
	var interval, offset float64
	if paced {
		interval = float64(len(r.senders)) / r.cfg.HonestRate * 1e9
		offset = interval * float64(s.idx) / float64(len(r.senders))
	}
	due := func(seq int) int64 { return r.paceStart + int64(offset+float64(seq)*interval) }
	next := 0
	for next < r.jobs || len(win) > 0 {
		for next < r.jobs && len(win) < r.cfg.Window {
			if paced {
				if wait := due(next) - r.now(); wait > 0 {
					if len(win) > 0 {
						break // the select below takes acks until then
					}
					if sleep(ctx, time.Duration(wait)) != nil {
						return
					}
				}
			}
			send, err := r.build(s, next)
			if err != nil {
				s.firstErr = err
				return
			}
			if !issue(next, send) {
				return
			}
			next++
		}
		var res client.SendResult
		var dueT *time.Timer
		var dueC <-chan time.Time
		if paced && next < r.jobs && len(win) < r.cfg.Window {
			dueT = time.NewTimer(time.Duration(max(due(next)-r.now(), 0)))
			dueC = dueT.C
		}
		got := false
		select {
		case res = <-win[0].ch:
			got = true
		case <-dueC:
		case <-ctx.Done():
		}
		if dueT != nil {
			dueT.Stop()
		}
		if !got {
			if ctx.Err() != nil {
				return
			}
			continue // the next send is due
		}
		now := r.now()
		sl := win[0]
		win = win[1:]
		if res.Err != nil {
			if d := client.RetryAfter(res.Err); d > 0 && client.CodeOf(res.Err) == wire.CodeRateLimited {
				// Only an external broker limits sends; the retry is
				// the newest send, so FIFO order still holds.
				s.retried++
				if sleep(ctx, d) != nil || !issue(sl.seq, sl.send) {
					return
				}
				continue
			}
			if s.live != nil && isClosed(res.Err) && ctx.Err() == nil {
				// The connection died before the ack: this send and every
				// later un-acked one go again, with the same ids, on the
				// next connection (the broker answers a send it already
				// committed with the same message). Their clocks keep
				// running from the first attempt.
				if !r.awaitNewConn(ctx, s, sl.conn) {
					return
				}
				rest := append([]slot{sl}, win...)
				win = win[:0]
				for _, x := range rest {
					s.resent++
					if !put(x) {
						return
					}
				}
				continue
			}
			if client.CodeOf(res.Err) == wire.CodeUnavailable && len(r.nodes) > 0 {
				// The cluster had no quorum for this write in time (a
				// node died and a log leader is being elected): a client
				// sends it again later, same id.
				s.unavailable++
				if sleep(ctx, 100*time.Millisecond) != nil || !put(sl) {
					return
				}
				continue
			}
			s.refused++
			if s.firstErr == nil {
				s.firstErr = fmt.Errorf("%s: %w", r.describeSend(s, sl.seq, sl.conn), res.Err)
			}
			if isClosed(res.Err) {
				return
			}
			continue
		}
		s.ackNs = append(s.ackNs, now-sl.at)
		s.ackedSeq[sl.seq] = true
		if s.notes != nil {
			n := &s.notes[sl.seq]
			n.ackNode, n.messageID, n.duplicate, n.pending, n.ackNs = r.nodeOfConn(sl.conn), res.Ack.MessageID, res.Ack.Duplicate, -1, now
			if res.Ack.Pending != nil {
				n.pending = *res.Ack.Pending
			}
		}
		if r.killed.Load() && sl.at > r.fo.killNs {
			r.writesBack.CompareAndSwap(0, now)
		}
		s.lastAckNs = now
		s.accepted += r.deliveriesOf(sl.seq, res.Ack)
		r.acked.Add(1)
	}
}

// describeSend names send seq of s for a report: its recipient, the
// node it went to (cluster runs) and, in a fail-over run, when.
func (r *run) describeSend(s *peer, seq int, c *client.Conn) string {
	out := fmt.Sprintf("send %d", seq)
	if !r.cfg.Broadcast {
		out += fmt.Sprintf(" to peer %d", s.targets[seq])
	}
	if len(r.nodes) > 0 && c != nil {
		out += " through " + nodeName(r.nodeOfConn(c))
	}
	if r.cfg.Failover {
		if r.killed.Load() {
			out += fmt.Sprintf(", sent %+.3f s from the kill", time.Duration(s.sendAt[seq].Load()-r.fo.killNs).Seconds())
		} else {
			out += ", sent before the kill"
		}
	}
	return out
}

// deliveriesOf is how many deliveries an acked send makes, which the
// drain waits for: the ack's pending count, the recipients the broker
// queued it for. Not for a duplicate (a send made again, same id, after a
// connection died before its ack, which the broker had stored the first
// time): its pending counts only the deliveries still open, and one its
// recipient settled meanwhile was delivered, and counted, all the same.
// Counting it as 0 could make a fail-over run's drain stop one delivery
// short, and a push still on its way was then taken for lost.
func (r *run) deliveriesOf(seq int, ack *wire.Ack) int64 {
	if ack.Duplicate {
		return int64(r.addressed(seq))
	}
	if ack.Pending == nil {
		return 0
	}
	return int64(*ack.Pending)
}

// addressed is the number of recipients of send seq: one DM, or the
// chunk of recipients of a broadcast's envelope.
func (r *run) addressed(seq int) int {
	if !r.cfg.Broadcast {
		return 1
	}
	lo := (seq % r.chunks) * cmcrypto.MaxRecipients
	return min(lo+cmcrypto.MaxRecipients, len(r.recipients)) - lo
}

// build seals send seq of sender s with a fresh nonce under the
// precomputed key: a box to its target, or (broadcast) one multi envelope
// for a chunk of at most 1,000 recipients.
func (r *run) build(s *peer, seq int) (*wire.Send, error) {
	id := sendID(s.idx, seq)
	if !r.cfg.Broadcast {
		to := r.peers[s.targets[seq]]
		nonce, ct := s.keys[int32(to.idx)].Seal(s.plain)
		return &wire.Send{ID: id, TargetSpec: to.pubHex, Kind: wire.KindBox, Nonce: nonce, Ciphertext: ct}, nil
	}
	lo := (seq % r.chunks) * cmcrypto.MaxRecipients
	hi := min(lo+cmcrypto.MaxRecipients, len(r.recipients))
	return r.sealMulti(s, id, r.recipients[lo:hi])
}

// sealMulti is client.SealMulti (02-crypto "Multi-recipient message") with
// the content key boxed under precomputed keys instead of one X25519 per
// recipient per message.
func (r *run) sealMulti(s *peer, id string, to []*peer) (*wire.Send, error) {
	var k [32]byte
	rand.Read(k[:])
	nonce, ctB64 := cmcrypto.SecretSeal(s.plain, &k)
	ct, err := cmcrypto.DecodeB64(ctB64)
	if err != nil {
		return nil, err
	}
	msg, err := cmcrypto.MultiString(r.meshID, "*", nonce, ct)
	if err != nil {
		return nil, err
	}
	keys := make([]wire.MultiKey, len(to))
	for i, rc := range to {
		n, box := s.keys[int32(rc.idx)].Seal(k[:])
		keys[i] = wire.MultiKey{To: rc.pubHex, Nonce: n, Box: box}
	}
	return &wire.Send{ID: id, TargetSpec: "*", Kind: wire.KindMulti, Nonce: nonce, Ciphertext: ctB64,
		Signature: s.key.Sign(msg), Keys: keys}, nil
}

// onPush runs on the recipient's reader goroutine for every message push:
// settle it, then count it once if it opens to exactly what was sent.
func (r *run) onPush(me *peer, m *wire.Push) {
	now := r.now()
	me.ack(m.MessageID) // whatever it is, so it is not redelivered
	if d := r.deadlineNs.Load(); d > 0 && now > d {
		me.late++
		return
	}
	id := keyOf(m.MessageID)
	if _, dup := me.seen[id]; dup {
		me.duplicates++
		return
	}
	sender, seq, err := r.open(me, m)
	if err != nil {
		me.undecryptable++
		if me.firstBad == nil {
			me.firstBad = err
		}
		return
	}
	me.seen[id] = struct{}{}
	if me.bySend != nil {
		k := sendKey(sender.idx, seq)
		me.bySend[k] = append(me.bySend[k], m.MessageID)
		if _, ok := me.firstPushNs[k]; !ok {
			me.firstPushNs[k] = now
		}
	}
	sentAt := sender.sendAt[seq].Load()
	me.e2eNs = append(me.e2eNs, now-sentAt)
	if me.bySend != nil && r.killed.Load() && sentAt > r.fo.killNs {
		me.afterKillNs = append(me.afterKillNs, now-sentAt)
	}
	if r.cfg.Segments > 0 {
		me.e2eSeq = append(me.e2eSeq, int32(seq))
	}
	if r.cfg.startTail || r.samplesDir != "" {
		me.e2eSentNs = append(me.e2eSentNs, sentAt)
	}
	me.lastPushNs = now
	r.delivered.Add(1)
}

// msgKey is a message id as a map key with no pointer in it: a
// recipient's set of the ids it has seen holds every message of the run
// (1M in the tail row), and as a map of strings it was a heap the load
// generator's GC marked in every cycle, more each tenth of the run. A map
// whose keys and values hold no pointer is not scanned.
type msgKey [32]byte

// keyOf is id's msgKey: the id itself (a broker's ids are 26-character
// ULIDs) and its length, or a SHA-256 of a longer one.
func keyOf(id string) msgKey {
	var k msgKey
	if len(id) < len(k) {
		copy(k[:], id)
		k[len(k)-1] = byte(len(id))
		return k
	}
	return sha256.Sum256([]byte(id))
}

// open checks a push's addressing, decrypts it with the precomputed key
// and compares the plaintext with the sender's. It returns the sender and
// the send's sequence number.
func (r *run) open(me *peer, m *wire.Push) (*peer, int, error) {
	if m.MeshID != r.meshID {
		return nil, 0, fmt.Errorf("push %s is for mesh %q", m.MessageID, m.MeshID)
	}
	sender := r.byPubkey[m.SenderPubkey]
	if sender == nil || sender.sendAt == nil {
		return nil, 0, fmt.Errorf("push %s from unknown sender %q", m.MessageID, m.SenderPubkey)
	}
	seq, ok := parseSendID(m.ClientMessageID, sender.idx)
	if !ok || seq >= len(sender.sendAt) {
		return nil, 0, fmt.Errorf("push %s has clientMessageId %q, not one of peer %d's", m.MessageID, m.ClientMessageID, sender.idx)
	}
	key := me.keys[int32(sender.idx)]
	if key == nil {
		return nil, 0, fmt.Errorf("push %s from peer %d, which never sends to peer %d", m.MessageID, sender.idx, me.idx)
	}
	var body []byte
	var err error
	switch m.Kind {
	case wire.KindBox:
		if m.TargetSpec != me.pubHex {
			return nil, 0, fmt.Errorf("push %s is addressed to %s", m.MessageID, m.TargetSpec)
		}
		body, err = key.Open(m.Nonce, m.Ciphertext)
	case wire.KindMulti:
		if m.Key == nil || m.Key.To != me.pubHex {
			return nil, 0, fmt.Errorf("multi push %s carries no key entry for this peer", m.MessageID)
		}
		if err := r.verifyMulti(m, sender); err != nil {
			return nil, 0, err
		}
		var ck []byte
		if ck, err = key.Open(m.Key.Nonce, m.Key.Box); err == nil && len(ck) != 32 {
			err = errors.New("content key is not 32 bytes")
		}
		if err == nil {
			body, err = cmcrypto.SecretOpen(m.Nonce, m.Ciphertext, (*[32]byte)(ck))
		}
	default:
		return nil, 0, fmt.Errorf("push %s has kind %q", m.MessageID, m.Kind)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("push %s: %w", m.MessageID, err)
	}
	if !bytes.Equal(body, sender.plain) {
		return nil, 0, fmt.Errorf("push %s opened to a different text than peer %d sent", m.MessageID, sender.idx)
	}
	return sender, seq, nil
}

// verification is one multi envelope's signature check, shared by all of
// its recipients. It remembers what it verified, so a push that carries the
// same messageId with other bytes is checked on its own.
type verification struct {
	once                         sync.Once
	nonce, ciphertext, signature string
	err                          error
}

func (r *run) verifyMulti(m *wire.Push, sender *peer) error {
	v, ok := r.verified.Load(m.MessageID)
	if !ok {
		v, _ = r.verified.LoadOrStore(m.MessageID, &verification{})
	}
	ver := v.(*verification)
	ver.once.Do(func() {
		ver.nonce, ver.ciphertext, ver.signature = m.Nonce, m.Ciphertext, m.Signature
		ver.err = checkMultiSignature(r.meshID, m, sender)
	})
	if ver.nonce != m.Nonce || ver.ciphertext != m.Ciphertext || ver.signature != m.Signature {
		return checkMultiSignature(r.meshID, m, sender)
	}
	return ver.err
}

func checkMultiSignature(meshID string, m *wire.Push, sender *peer) error {
	ct, err := cmcrypto.DecodeB64(m.Ciphertext)
	if err != nil {
		return err
	}
	msg, err := cmcrypto.MultiString(meshID, m.TargetSpec, m.Nonce, ct)
	if err != nil {
		return err
	}
	return cmcrypto.Verify(sender.key.Public(), msg, m.Signature)
}

// ack settles a push or receipt with a client_ack without reqId (no
// answer to wait for): queued for the connection's writer, which batches
// whatever queued up while it was writing the previous frame, one frame
// per push when idle and up to 500 ids a frame under load, as it does for
// a daemon. A connection that is gone needs none: the broker pushes the
// id again on the next one.
func (p *peer) ack(id string) {
	if c := p.ackConn.Load(); c != nil {
		c.ClientAckAsync([]string{id})
	}
}
