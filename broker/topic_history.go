package broker

import (
	"errors"
	"fmt"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// Topic history (newest first with before, oldest first with after), read
// markers and mention notifications.

// postSeq resolves a message id of this topic to its seq for paging.
func postSeq(tx *store.Tx, meshID, topicID, messageID string) (uint64, error) {
	tid, seq, err := store.TopicPostLocation(tx, meshID, messageID)
	if err != nil {
		return 0, err
	}
	if tid != topicID {
		return 0, store.ErrNotFound
	}
	return seq, nil
}

// ownPost finds a post this connection sent (its key, or its member's)
// under a clientMessageId: the id `topic post` prints when the post goes
// through the daemon's outbox, which is all the poster has seen of it.
func (c *conn) ownPost(tx *store.Tx, cmid string) (*store.TopicPost, error) {
	p, err := store.LookupTopicIdempotent(tx, c.ms.id, c.pubkey, cmid)
	if errors.Is(err, store.ErrNotFound) && c.mem.Pubkey != c.pubkey {
		p, err = store.LookupTopicIdempotent(tx, c.ms.id, c.mem.Pubkey, cmid)
	}
	return p, err
}

// postSeqOf resolves a post id of this topic to its seq for paging: the
// broker's post id, or the clientMessageId of a post the caller made.
func (c *conn) postSeqOf(tx *store.Tx, topicID, id string) (uint64, error) {
	seq, err := postSeq(tx, c.ms.id, topicID, id)
	if !errors.Is(err, store.ErrNotFound) {
		return seq, err
	}
	p, err := c.ownPost(tx, id)
	if err != nil {
		return 0, err
	}
	if p.TopicID != topicID {
		return 0, store.ErrNotFound
	}
	return p.Seq, nil
}

// noSuchPost is the refusal of a post id the topic does not have. Its code
// stays invalid_argument: daemons read it as "the cursor's post was purged".
func (c *conn) noSuchPost(reqID, id string, t topicState) {
	why := ""
	if keep := c.b.cfg.TopicRetention; keep > 0 {
		why = " (this broker removes posts older than " + keep.String() + ")"
	}
	what := "that id"
	if wire.ValidReqID(id) {
		what = "id " + id
	}
	c.sendError(reqID, wire.CodeInvalidArgument, "no post with "+what+" in #"+t.Name+why)
}

func (c *conn) handleTopicHistory(r wire.TopicRequest, t topicState) {
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	limit := r.Limit
	if limit <= 0 || limit > wire.MaxTopicHistory {
		limit = wire.MaxTopicHistory
	}
	if r.Before != "" && r.After != "" {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, "give before or after, not both")
		return
	}
	ms := c.ms
	out := wire.TopicHistory{Type: wire.TypeTopicHistory, ReqID: r.ReqID, Messages: []wire.RawJSON{}}
	err := c.b.store.View(func(tx *store.Tx) error {
		var posts []store.TopicPost
		var err error
		switch {
		case r.After != "":
			var seq uint64
			if seq, err = c.postSeqOf(tx, t.ID, r.After); err != nil {
				return err
			}
			posts, out.More, err = store.TopicPostsAfter(tx, ms.id, t.ID, seq, limit)
		case r.Before != "":
			var seq uint64
			if seq, err = c.postSeqOf(tx, t.ID, r.Before); err != nil {
				return err
			}
			posts, out.More, err = store.TopicPostsBefore(tx, ms.id, t.ID, seq, limit)
		default:
			posts, out.More, err = store.TopicPostsBefore(tx, ms.id, t.ID, 0, limit)
		}
		for _, p := range posts {
			out.Messages = append(out.Messages, p.Push)
		}
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		id := r.Before
		if id == "" {
			id = r.After
		}
		c.noSuchPost(r.ReqID, id, t)
		return
	}
	if err != nil {
		c.sendError(r.ReqID, wire.CodeInternal, "could not read the history")
		return
	}
	c.reply(out)
}

func (c *conn) handleTopicMarkRead(r wire.TopicRequest, t topicState) {
	if !c.requireTopicMember(r.ReqID, &t) {
		return
	}
	ms := c.ms
	me := c.mem
	err := c.b.store.Update(func(tx *store.Tx) error {
		seq := store.TopicLastSeq(tx, ms.id, t.ID)
		if r.UpTo != "" {
			var err error
			if seq, err = c.postSeqOf(tx, t.ID, r.UpTo); err != nil {
				return err
			}
		}
		rec, err := store.GetTopicMember(tx, ms.id, t.ID, me.Pubkey)
		if errors.Is(err, store.ErrNotFound) && t.General {
			rec, err = &store.TopicMember{MemberID: me.ID, Pubkey: me.Pubkey, Role: wire.TopicMember, JoinedAt: me.JoinedAt}, nil
		}
		if err != nil {
			return err
		}
		if seq <= rec.ReadSeq {
			return nil
		}
		rec.ReadSeq = seq
		return store.PutTopicMember(tx, ms.id, t.ID, rec)
	})
	if errors.Is(err, store.ErrNotFound) {
		c.noSuchPost(r.ReqID, r.UpTo, t)
		return
	}
	if err != nil {
		c.storeFailed(r.ReqID, err, "could not store the read marker", "the read marker")
		return
	}
	c.sendOK(r.ReqID)
}

// ---- notifications ----

const maxNotifications = 500

func (c *conn) handleNotifications(data []byte, env wire.Envelope) {
	ms := c.ms
	me := c.mem.Pubkey
	if env.Type == wire.TypeNotificationsList {
		var r wire.NotificationsListRequest
		if err := wire.Decode(data, &r); err != nil {
			c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
			return
		}
		list, err := c.b.listNotifications(ms, me, r.Since, r.Unread)
		if err != nil {
			c.sendError(r.ReqID, wire.CodeInternal, "could not read the notifications")
			return
		}
		c.reply(wire.Notifications{Type: wire.TypeNotifications, ReqID: r.ReqID, Notifications: list})
		return
	}
	var r wire.NotificationsReadRequest
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	if len(r.IDs) == 0 || len(r.IDs) > maxNotifications {
		c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("notifications_read carries 1 to %d ids", maxNotifications))
		return
	}
	for _, id := range r.IDs {
		if !wire.ValidULID(id) {
			c.sendError(r.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("%q is not a notification id", id))
			return
		}
	}
	now := time.Now().UnixMilli()
	err := c.b.store.Update(func(tx *store.Tx) error {
		_, err := store.MarkNotificationsRead(tx, ms.id, me, r.IDs, now)
		return err
	})
	if err != nil {
		c.storeFailed(r.ReqID, err, "could not mark the notifications", "the change")
		return
	}
	c.sendOK(r.ReqID)
}

func (b *Broker) listNotifications(ms *meshState, member string, since int64, unread bool) ([]wire.Notification, error) {
	var recs []store.Notification
	err := b.store.View(func(tx *store.Tx) error {
		var err error
		recs, err = store.ListNotifications(tx, ms.id, member, since, unread, maxNotifications)
		return err
	})
	out := make([]wire.Notification, 0, len(recs))
	for _, n := range recs {
		out = append(out, wire.Notification{ID: n.ID, TopicID: n.TopicID, Topic: n.Topic, MessageID: n.MessageID,
			SenderPubkey: n.SenderPubkey, SenderName: n.SenderName, CreatedAt: n.CreatedAt, ReadAt: n.ReadAt})
	}
	return out, err
}
