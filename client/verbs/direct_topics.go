package verbs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// The topic verbs on the cold path: a transient connection per command
// (a presence for `topic tail`, which receives live posts), with the keys
// fetched from this member's seals each time and verified as 02-crypto
// says. Nothing is kept on disk.

// findTopic resolves a topic name or id among the topics the member sees.
func findTopic(ctx context.Context, c *client.Conn, ref string) (wire.TopicInfo, error) {
	ref = strings.TrimPrefix(ref, "#")
	list, err := c.TopicList(ctx)
	if err != nil {
		return wire.TopicInfo{}, err
	}
	for _, t := range list {
		if t.Name == ref || t.ID == ref {
			return t, nil
		}
	}
	return wire.TopicInfo{}, &client.Error{Code: client.CodeTopicNotFound, Message: fmt.Sprintf("no topic %q in this mesh (or it is private and you are not in it)", ref)}
}

// keeperFor is a member's key keeper on a connection of this command.
func keeperFor(m *config.Mesh, c *client.Conn) *client.TopicKeeper {
	return &client.TopicKeeper{MeshID: m.MeshID, Member: c.Identity().Member, Ring: client.NewTopicKeyring()}
}

// hasKey fetches the member's seals of a joined encrypted topic and reports
// whether the current generation opens.
func hasKey(ctx context.Context, k *client.TopicKeeper, c *client.Conn, t wire.TopicInfo) bool {
	if !t.Joined || !t.Encrypted || t.KeyGen == 0 {
		return false
	}
	k.Refresh(ctx, c, t.ID)
	return k.Ring.Has(t.ID, t.KeyGen)
}

func (d *direct) TopicList(ctx context.Context, meshes []config.Mesh) []meshTopics {
	out := make([]meshTopics, len(meshes))
	var wg sync.WaitGroup
	for i := range meshes {
		wg.Go(func() {
			m := &meshes[i]
			out[i].Slug = m.Slug
			out[i].Err = d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
				list, err := c.TopicList(ctx)
				if err != nil {
					return meshError(m.Slug, err)
				}
				k := keeperFor(m, c)
				out[i].Rows = make([]topicRow, 0, len(list))
				for _, t := range list {
					out[i].Rows = append(out[i].Rows, topicRowOf(m.Slug, t, hasKey(ctx, k, c, t)))
				}
				return nil
			})
		})
	}
	wg.Wait()
	return out
}

func (d *direct) TopicCreate(ctx context.Context, m *config.Mesh, o client.TopicCreateOptions) (*topicRow, error) {
	var row topicRow
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		info, key, err := c.TopicCreate(ctx, o)
		if err != nil {
			return err
		}
		row = topicRowOf(m.Slug, *info, key != nil)
		return nil
	})
	return &row, err
}

func (d *direct) TopicJoin(ctx context.Context, m *config.Mesh, name string) (*topicRow, error) {
	var row topicRow
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		// By name, as the daemon does: the broker's answer for a private
		// topic says who adds members (the list does not show it).
		ref := strings.TrimPrefix(name, "#")
		if err := c.TopicJoin(ctx, ref); err != nil {
			return err
		}
		t, err := findTopic(ctx, c, ref)
		if err != nil {
			return err
		}
		row = topicRowOf(m.Slug, t, hasKey(ctx, keeperFor(m, c), c, t))
		return nil
	})
	return &row, err
}

func (d *direct) TopicLeave(ctx context.Context, m *config.Mesh, name string) error {
	return d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		return c.TopicLeave(ctx, strings.TrimPrefix(name, "#"))
	})
}

func (d *direct) TopicMarkRead(ctx context.Context, m *config.Mesh, name, upTo string) error {
	return d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		return c.TopicMarkRead(ctx, strings.TrimPrefix(name, "#"), upTo)
	})
}

func (d *direct) TopicMembers(ctx context.Context, m *config.Mesh, name string) ([]topicMemberRow, error) {
	var rows []topicMemberRow
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		list, err := c.TopicMembers(ctx, strings.TrimPrefix(name, "#"))
		for _, tm := range list {
			rows = append(rows, topicMemberRow{Mesh: m.Slug, MemberID: tm.MemberID, Pubkey: tm.Pubkey, DisplayName: tm.DisplayName,
				Role: tm.Role, JoinedAt: tm.JoinedAt, HasCurrentKey: tm.HasCurrentKey})
		}
		return err
	})
	return rows, err
}

func (d *direct) TopicAdd(ctx context.Context, m *config.Mesh, name, member, role string) (*topicMemberRow, error) {
	var row *topicMemberRow
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		ref := strings.TrimPrefix(name, "#")
		if err := c.TopicAdd(ctx, ref, member, role); err != nil {
			return err
		}
		// The key share the new member needs, when this member holds
		// the key (other key holders online do it too).
		if t, err := findTopic(ctx, c, ref); err == nil && t.Encrypted {
			if k := keeperFor(m, c); hasKey(ctx, k, c, t) {
				k.SealPending(ctx, c, t.ID)
			}
		}
		list, err := c.TopicMembers(ctx, ref)
		if err != nil {
			return err
		}
		tm, ok := client.FindTopicMember(list, member)
		if !ok {
			return &client.Error{Code: wire.CodeInternal, Message: "the member was added but is not among the topic's members"}
		}
		row = &topicMemberRow{Mesh: m.Slug, MemberID: tm.MemberID, Pubkey: tm.Pubkey, DisplayName: tm.DisplayName,
			Role: tm.Role, JoinedAt: tm.JoinedAt, HasCurrentKey: tm.HasCurrentKey}
		return nil
	})
	return row, err
}

func (d *direct) TopicRotate(ctx context.Context, m *config.Mesh, name string) (*topicRow, error) {
	var row topicRow
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		t, err := findTopic(ctx, c, name)
		if err != nil {
			return err
		}
		k := keeperFor(m, c)
		if err := k.Rotate(ctx, c, t); err != nil {
			return err
		}
		if t, err = findTopic(ctx, c, t.ID); err != nil {
			return err
		}
		row = topicRowOf(m.Slug, t, k.Ring.Has(t.ID, t.KeyGen))
		return nil
	})
	return &row, err
}

func (d *direct) TopicHistory(ctx context.Context, m *config.Mesh, name string, limit int, before string) (*topicPage, error) {
	var page topicPage
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		t, err := findTopic(ctx, c, name)
		if err != nil {
			return err
		}
		k := keeperFor(m, c)
		page.WaitingForKey = t.Encrypted && !hasKey(ctx, k, c, t)
		page.KeyGen = t.KeyGen
		h, err := c.TopicHistory(ctx, t.ID, client.HistoryPage{Limit: limit, Before: before})
		if err != nil {
			return err
		}
		page.More = h.More
		for _, raw := range h.Messages {
			if raw.Push != nil {
				page.Lines = append(page.Lines, lineOf(t.Name, client.OpenTopicPush(raw.Push, m.MeshID, t.ID, ringOf(k, t.ID))))
			}
		}
		newTopicMemberNames(c).fill(ctx, page.Lines)
		return nil
	})
	return &page, err
}

func ringOf(k *client.TopicKeeper, topicID string) func(int) *[32]byte {
	return func(g int) *[32]byte { return k.Ring.Get(topicID, g) }
}

// TopicTail runs a presence connection (it gets the live posts and the
// broker's topic events): the history first, then each post as it comes.
// Its keeper does this member's key duties meanwhile, so a running tail is
// a key holder other members get their seals from.
func (d *direct) TopicTail(ctx context.Context, m *config.Mesh, name string, limit int, follow bool, sink topicSink) error {
	pushes := make(chan *wire.Push, 1024)
	keys := make(chan string, 16)
	var cur atomic.Pointer[client.Conn]
	var k *client.TopicKeeper
	var topicID atomic.Value
	topicID.Store("")
	opts := client.DialOptions{Presence: follow, Role: wire.RoleCLI, SessionID: "tail-" + client.NewID()[20:],
		OnPush: func(_ []byte, p *wire.Push) {
			if p.Kind == wire.KindTopic && p.Topic != nil && p.Topic.ID == topicID.Load() {
				select {
				case pushes <- p:
				default: // a reader this far behind catches up from the history
				}
			}
		},
		OnSystem: func(p *wire.Push) {
			if k != nil {
				k.OnEvent(ctx, p, func() *client.Conn { return cur.Load() })
			}
		},
	}
	c, err := d.dial(ctx, m, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	cur.Store(c)
	k = keeperFor(m, c)
	k.OnKey = func(id string) {
		select {
		case keys <- id:
		default:
		}
	}
	rctx, cancel := context.WithTimeout(ctx, opTimeout)
	t, err := findTopic(rctx, c, name)
	cancel()
	if err != nil {
		return err
	}
	if !t.Joined {
		return &client.Error{Code: wire.CodeNotAMember, Message: "you are not a member of #" + t.Name + "; join it with claudemesh topic join " + t.Name}
	}
	topicID.Store(t.ID)
	p := newTailPrinter(t.Name, t.KeyGen, sink)
	names := newTopicMemberNames(c)
	// read prints the newest posts (the first time) or everything after
	// the last one printed.
	last := ""
	read := func() error {
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		defer cancel()
		var lines []topicLine
		if last == "" {
			h, err := c.TopicHistory(rctx, t.ID, client.HistoryPage{Limit: limit})
			if err != nil {
				return err
			}
			for _, raw := range h.Messages {
				if raw.Push != nil {
					lines = append(lines, lineOf(t.Name, client.OpenTopicPush(raw.Push, m.MeshID, t.ID, ringOf(k, t.ID))))
				}
			}
			lines = reversed(lines)
		} else {
			for more := true; more; {
				h, err := c.TopicHistory(rctx, t.ID, client.HistoryPage{After: last})
				if err != nil {
					return err
				}
				more = h.More
				for _, raw := range h.Messages {
					if raw.Push != nil {
						lines = append(lines, lineOf(t.Name, client.OpenTopicPush(raw.Push, m.MeshID, t.ID, ringOf(k, t.ID))))
					}
				}
			}
		}
		names.fill(ctx, lines)
		all, err := p.offer(lines)
		p.setWaiting(!all || (t.Encrypted && !k.Ring.Has(t.ID, t.KeyGen)))
		for _, l := range lines {
			if p.printed[l.ID] {
				last = l.ID // until something is printed, the next read is the newest page again
			}
		}
		return err
	}
	mctx, mcancel := context.WithTimeout(ctx, opTimeout)
	if t.Encrypted {
		if err := k.Maintain(mctx, c, t); err != nil && !errors.Is(err, context.Canceled) {
			sink.Notice(fmt.Errorf("key maintenance of #%s: %w", t.Name, err))
		}
	}
	mcancel()
	if err := read(); err != nil {
		return err
	}
	if !follow {
		if p.waiting {
			return errKeyMissing(t.Name)
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("the broker connection ended: %w", c.Err())
		case <-keys:
			// A key came: perhaps a rotation's, so read the topic's
			// generation again (a wait is for the current one).
			rctx, cancel := context.WithTimeout(ctx, opTimeout)
			if nt, err := findTopic(rctx, c, t.ID); err == nil {
				t = nt
				p.curGen = max(p.curGen, t.KeyGen)
			}
			cancel()
			if err := read(); err != nil {
				return err
			}
		case push := <-pushes:
			if p.waiting {
				continue // the history read that follows the key has it
			}
			line := lineOf(t.Name, client.OpenTopicPush(push, m.MeshID, t.ID, ringOf(k, t.ID)))
			if line.keyMissing {
				// A rotation this tail has not fetched yet.
				p.setWaiting(true)
				go func() {
					rctx, cancel := context.WithTimeout(ctx, opTimeout)
					defer cancel()
					k.Refresh(rctx, c, t.ID)
				}()
				continue
			}
			one := []topicLine{line}
			names.fill(ctx, one)
			if _, err := p.offer(one); err != nil {
				return err
			}
			last = line.ID
		}
	}
}

// sendTopic is `send "#topic"` and `topic post` on the cold path.
func (d *direct) sendTopic(ctx context.Context, m *config.Mesh, req sendRequest) (*sendResult, error) {
	if req.Wait {
		return nil, cliui.UsageErrorf("--wait does not apply to topic posts: they have no delivery receipts (read the topic with claudemesh topic tail)")
	}
	c, err := d.dial(ctx, m, client.DialOptions{})
	if err != nil {
		return nil, notSent(err)
	}
	defer closeSend(ctx, c) // the command's context, not the timeout's below
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	t, err := findTopic(ctx, c, req.To)
	if err != nil {
		return nil, notSent(err)
	}
	if !t.Joined {
		return nil, &client.Error{Code: wire.CodeNotAMember, Message: "you are not a member of #" + t.Name + "; join it with claudemesh topic join " + t.Name}
	}
	if t.Role == wire.TopicObserver {
		return nil, cliui.Errorf(wire.CodeForbidden, "%s", client.ObserverRefusal(t.Name)).WithHint(client.ObserverHint(t.Name, m.DisplayName))
	}
	var key *[32]byte
	if t.Encrypted {
		k := keeperFor(m, c)
		if t.KeyGen == 0 {
			return nil, cliui.Errorf(wire.CodeTopicKeyMissing, "#%s has no key yet", t.Name).
				WithHint("the mesh owner's or an admin's client makes it when it connects (claudemesh daemon up, or claudemesh topic tail " + t.Name + ")")
		}
		if !hasKey(ctx, k, c, t) {
			if members, err := c.TopicMembers(ctx, t.ID); err == nil && len(members) > 0 && client.HoldersOfCurrentKey(members) == 0 {
				return nil, cliui.Errorf(wire.CodeTopicKeyMissing, "%s", client.NobodyHoldsKeyRefusal(t.Name)).WithHint(client.NobodyHoldsKeyHint(t.Name))
			}
			return nil, cliui.Errorf(wire.CodeTopicKeyMissing, "you do not hold the key of #%s yet", t.Name).
				WithHint("a member who holds it shares it automatically when online (their daemon, or a running claudemesh topic tail)")
		}
		key = k.Ring.Get(t.ID, t.KeyGen)
	}
	var mentions []string
	if len(req.Mentions) > 0 {
		members, peers, err := snapshot(ctx, c)
		if err != nil {
			return nil, notSent(err)
		}
		for _, who := range req.Mentions {
			mt, err := client.ResolveTarget(who, members, peers, "")
			if err != nil {
				return nil, err
			}
			if mt.Kind != wire.KindBox {
				return nil, cliui.UsageErrorf("--mention names one member or session, not %q", who)
			}
			mentions = append(mentions, mt.Spec)
		}
	}
	cmid := req.ClientMessageID
	if cmid == "" {
		cmid = client.NewID()
	}
	s, err := client.SealTopicPost(m.MeshID, t.ID, t.KeyGen, key, []byte(req.Body), c.Self(),
		client.SendOptions{ClientMessageID: cmid, Priority: req.Priority, ReplyToID: req.ReplyTo, Mentions: mentions, Deterministic: true})
	if err != nil {
		return nil, err
	}
	ack, err := sendAcked(ctx, c, s, cmid, "look for it with claudemesh topic history "+t.Name, topicRetry)
	if err != nil {
		return nil, err
	}
	res := &sendResult{MessageID: ack.MessageID, ClientMessageID: cmid, Via: viaDirect, Duplicate: ack.Duplicate, Priority: req.Priority,
		Target: targetJSON{Kind: wire.KindTopic, TargetSpec: "#" + t.ID, DisplayName: "#" + t.Name}, Status: "queued"}
	if ack.Online != nil && *ack.Online > 0 {
		res.Status, res.OnlineNow = "sent", *ack.Online
	}
	return res, nil
}

// topicRow opens a topic post that `inbox --follow` received live on the
// cold path, fetching this member's seals when it lacks the post's key.
func (d *direct) topicRow(m *config.Mesh, c *client.Conn, p *wire.Push, row inboxRow) inboxRow {
	if p.Topic == nil || c == nil {
		return row
	}
	v, _ := d.topicKeys.LoadOrStore(m.MeshID, &client.TopicKeeper{MeshID: m.MeshID, Member: c.Identity().Member, Ring: client.NewTopicKeyring()})
	k := v.(*client.TopicKeeper)
	tm := client.OpenTopicPush(p, m.MeshID, p.Topic.ID, ringOf(k, p.Topic.ID))
	if tm.KeyMissing {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		k.Refresh(ctx, c, p.Topic.ID)
		cancel()
		tm = client.OpenTopicPush(p, m.MeshID, p.Topic.ID, ringOf(k, p.Topic.ID))
	}
	row.Topic, row.DecryptError, row.Body, row.Verified, row.SenderName = tm.Topic, tm.DecryptError, nil, tm.Verified, tm.SenderName
	if tm.DecryptError == "" {
		body := tm.Body
		row.Body = &body
	}
	row.SenderMemberPubkey, row.SenderMemberName = "", ""
	if tm.Verified {
		row.SenderMemberPubkey = p.SenderMemberPubkey
		if p.SenderPubkey == p.SenderMemberPubkey {
			row.SenderMemberName = p.SenderName
		}
	}
	return row
}
