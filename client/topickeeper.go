package client

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// TopicKeeper does one member's share of topic key management on a mesh
// (02-crypto "Topic key seals" and "Rotation"). Keys are never made or held
// by the broker; the members' own clients do this:
//
//   - fetch and verify their own seals (TopicKeyring.OpenSeals);
//   - seal the current key for members who have none yet (a joiner), when
//     the broker says one joined (topic_member_joined) and on every sweep;
//   - rotate to a new generation sealed to every remaining member when a
//     topic is marked rekeyNeeded (topic_rekey_needed, and sweeps);
//   - give the reserved general topic its first key when this member is
//     the mesh's owner or an admin and it has none (keyGen 0).
//
// The daemon runs one per mesh (events, plus a sweep every 30 s); a running
// `topic tail` without a daemon runs one too. Several key holders may act on
// the same event: each waits a random moment first and re-checks, and the
// broker's generation check makes a second rotation fail harmlessly.
type TopicKeeper struct {
	MeshID string
	Member *cmcrypto.Identity
	Ring   *TopicKeyring
	Log    *slog.Logger
	// OnKey is told when keys of a topic were opened (the caller can now
	// read what it could not).
	OnKey func(topicID string)
	// OnRejected is told of every seal refused (forged, unsigned, for
	// another topic or generation, or by a non-member).
	OnRejected func(topicID string, r RejectedSeal)
	// Jitter bounds the random wait before acting on an event (default
	// 200 ms).
	Jitter time.Duration

	mu        sync.Mutex
	members   map[string]bool
	membersAt time.Time
	queued    map[string][]func() // per topic: the running action first
}

func (k *TopicKeeper) log() *slog.Logger {
	if k.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return k.Log
}

// isMember reports whether pubkey is an active member of the mesh, from a
// cache refreshed when it is old or does not know the key.
func (k *TopicKeeper) isMember(ctx context.Context, c *Conn) func(string) bool {
	return func(pubkey string) bool {
		k.mu.Lock()
		known, fresh := k.members[pubkey], time.Since(k.membersAt) < 30*time.Second
		k.mu.Unlock()
		if known && fresh {
			return true
		}
		list, err := c.MembersList(ctx)
		if err != nil {
			return known
		}
		m := make(map[string]bool, len(list))
		for _, x := range list {
			if x.RevokedAt == 0 {
				m[x.Pubkey] = true
			}
		}
		k.mu.Lock()
		k.members, k.membersAt = m, time.Now()
		k.mu.Unlock()
		return m[pubkey]
	}
}

// Refresh fetches this member's seals of a topic and opens the ones it does
// not hold yet; it returns the generations it opened.
func (k *TopicKeeper) Refresh(ctx context.Context, c *Conn, topicID string) ([]int, error) {
	keys, err := c.TopicKeys(ctx, topicID)
	if err != nil {
		return nil, err
	}
	opened, rejected := k.Ring.OpenSeals(k.MeshID, topicID, keys.Seals, k.Member, k.isMember(ctx, c))
	for _, r := range rejected {
		k.log().Warn("topic seal refused", "topic", topicID, "seal", r.String())
		if k.OnRejected != nil {
			k.OnRejected(topicID, r)
		}
	}
	if len(opened) > 0 && k.OnKey != nil {
		k.OnKey(topicID)
	}
	return opened, nil
}

// Sweep maintains every encrypted topic this member belongs to.
func (k *TopicKeeper) Sweep(ctx context.Context, c *Conn) error {
	topics, err := c.TopicList(ctx)
	if err != nil {
		return err
	}
	for _, t := range topics {
		if t.Joined && t.Encrypted {
			if err := k.Maintain(ctx, c, t); err != nil {
				k.log().Debug("topic maintenance", "topic", t.Name, "err", err)
			}
		}
	}
	return nil
}

// Maintain does what this member owes one topic now: fetch a missing key,
// rotate when the topic needs it, seal for pending members, or make
// general's first key.
func (k *TopicKeeper) Maintain(ctx context.Context, c *Conn, t wire.TopicInfo) error {
	if t.KeyGen == 0 {
		role := c.HelloAck().MemberRole
		if t.Name == wire.GeneralTopic && (role == wire.MemberOwner || role == wire.MemberAdmin) {
			return k.Rotate(ctx, c, t)
		}
		return nil
	}
	if !k.Ring.Has(t.ID, t.KeyGen) {
		if _, err := k.Refresh(ctx, c, t.ID); err != nil {
			return err
		}
		if !k.Ring.Has(t.ID, t.KeyGen) {
			return nil // waiting for someone to seal for us
		}
	}
	if t.RekeyNeeded {
		return k.Rotate(ctx, c, t)
	}
	return k.SealPending(ctx, c, t.ID)
}

// SealPending seals the current key for every member of the topic that has
// none, if this member holds it.
func (k *TopicKeeper) SealPending(ctx context.Context, c *Conn, topicID string) error {
	pend, err := c.TopicPendingSeals(ctx, topicID)
	if err != nil || pend.KeyGen == 0 || len(pend.Pending) == 0 {
		return err
	}
	key := k.Ring.Get(topicID, pend.KeyGen)
	if key == nil {
		return nil
	}
	seals := make([]wire.TopicSealIn, 0, len(pend.Pending))
	for _, p := range pend.Pending {
		pub, err := cmcrypto.ParsePublicKey(p.Pubkey)
		if err != nil {
			continue
		}
		blob, nonce, sig, err := cmcrypto.SealTopicKey(k.MeshID, topicID, pend.KeyGen, key, pub, k.Member)
		if err != nil {
			continue
		}
		seals = append(seals, wire.TopicSealIn{RecipientPubkey: p.Pubkey, KeyGen: pend.KeyGen, Blob: blob, Nonce: nonce, Signature: sig})
	}
	for len(seals) > 0 {
		n := min(len(seals), 1000)
		if err := c.TopicSeal(ctx, topicID, seals[:n]); err != nil {
			return err
		}
		seals = seals[n:]
	}
	return nil
}

// Rotate makes generation t.KeyGen+1 and seals it to every current member
// of the topic (only to this member for general's first key: the others are
// then sealed for like joiners). Another member rotating first is not an
// error: this member then fetches the new key.
func (k *TopicKeeper) Rotate(ctx context.Context, c *Conn, t wire.TopicInfo) error {
	gen := t.KeyGen + 1
	for attempt := 0; attempt < 2; attempt++ {
		recipients := []string{k.Member.PublicHex()}
		if t.KeyGen > 0 {
			members, err := c.TopicMembers(ctx, t.ID)
			if err != nil {
				return err
			}
			recipients = recipients[:0]
			for _, m := range members {
				recipients = append(recipients, m.Pubkey)
			}
		}
		key := NewTopicKey()
		seals := make([]wire.TopicSealIn, 0, len(recipients))
		for _, r := range recipients {
			pub, err := cmcrypto.ParsePublicKey(r)
			if err != nil {
				continue
			}
			blob, nonce, sig, err := cmcrypto.SealTopicKey(k.MeshID, t.ID, gen, key, pub, k.Member)
			if err != nil {
				return wrapError(wire.CodeInvalidArgument, err, "sealing the new key")
			}
			seals = append(seals, wire.TopicSealIn{RecipientPubkey: r, KeyGen: gen, Blob: blob, Nonce: nonce, Signature: sig})
		}
		err := c.TopicRotate(ctx, t.ID, gen, seals)
		switch CodeOf(err) {
		case "":
			k.Ring.Put(t.ID, gen, key)
			k.log().Info("topic key rotated", "topic", t.Name, "keyGen", gen)
			if k.OnKey != nil {
				k.OnKey(t.ID)
			}
			return nil
		case wire.CodeStaleKeyGen:
			_, rerr := k.Refresh(ctx, c, t.ID)
			return rerr
		case wire.CodeIncompleteSeals:
			continue // the membership moved under us: read it again
		default:
			return err
		}
	}
	return nil
}

// OnEvent reacts to a topic system event. It returns at once (it may be
// called from a connection's reader); the work runs on its own goroutine,
// on the connection conn returns then, and is bounded by ctx.
func (k *TopicKeeper) OnEvent(ctx context.Context, p *wire.Push, conn func() *Conn) {
	switch p.Event {
	case wire.EventTopicSealed, wire.EventTopicMemberJoined, wire.EventTopicRekeyNeeded:
	default:
		return
	}
	var ev wire.TopicEvent
	raw, err := wire.Encode(p.EventData)
	if err != nil || wire.Decode(raw, &ev) != nil || !wire.ValidULID(ev.TopicID) {
		return
	}
	k.serialize(ev.TopicID, func() {
		c := conn()
		if c == nil {
			return
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		switch p.Event {
		case wire.EventTopicSealed:
			_, err = k.Refresh(ctx, c, ev.TopicID)
		case wire.EventTopicMemberJoined:
			k.pause(ctx)
			if !k.Ring.Has(ev.TopicID, ev.KeyGen) {
				_, err = k.Refresh(ctx, c, ev.TopicID)
			}
			if err == nil {
				err = k.SealPending(ctx, c, ev.TopicID)
			}
		case wire.EventTopicRekeyNeeded:
			k.pause(ctx)
			err = k.maintainByID(ctx, c, ev.TopicID)
		}
		if err != nil {
			k.log().Debug("topic event", "event", p.Event, "topic", ev.TopicName, "err", err)
		}
	})
}

// maintainByID re-reads a topic's state (the event may be stale) and
// maintains it.
func (k *TopicKeeper) maintainByID(ctx context.Context, c *Conn, topicID string) error {
	topics, err := c.TopicList(ctx)
	if err != nil {
		return err
	}
	for _, t := range topics {
		if t.ID == topicID && t.Joined && t.Encrypted {
			return k.Maintain(ctx, c, t)
		}
	}
	return nil
}

func (k *TopicKeeper) pause(ctx context.Context) {
	j := k.Jitter
	if j <= 0 {
		j = 200 * time.Millisecond
	}
	t := time.NewTimer(rand.N(j))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// serialize runs f for a topic on a goroutine, one at a time per topic, in
// the order of the calls.
func (k *TopicKeeper) serialize(topicID string, f func()) {
	k.mu.Lock()
	if k.queued == nil {
		k.queued = map[string][]func(){}
	}
	busy := len(k.queued[topicID]) > 0
	k.queued[topicID] = append(k.queued[topicID], f)
	k.mu.Unlock()
	if busy {
		return
	}
	go func() {
		next := f
		for next != nil {
			next()
			k.mu.Lock()
			q := k.queued[topicID][1:] // drop the one that ran
			next = nil
			if len(q) == 0 {
				delete(k.queued, topicID)
			} else {
				k.queued[topicID], next = q, q[0]
			}
			k.mu.Unlock()
		}
	}()
}
