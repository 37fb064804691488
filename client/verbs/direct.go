package verbs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"claudemesh/client"
	"claudemesh/client/config"
	"claudemesh/internal/buildinfo"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// direct is the cold path of 04-cli: every call opens its own transient
// broker connection (hello with presence:false — not listed, no events, no
// live pushes) and closes it before returning.
type direct struct {
	home string
	log  *slog.Logger
	// topicKeys holds, per mesh id, the keyring inbox --follow opens topic
	// posts with (direct_topics.go).
	topicKeys sync.Map
}

const viaDirect = "direct"

// dial opens a connection for m, checking the pinned broker key.
func (d *direct) dial(ctx context.Context, m *config.Mesh, opts client.DialOptions) (*client.Conn, error) {
	id, err := identityOf(m)
	if err != nil {
		return nil, err
	}
	opts.Logger = d.log
	opts.Header = userAgent()
	c, err := client.Dial(ctx, id, opts)
	if err != nil {
		return nil, meshError(m.Slug, err)
	}
	if role := c.HelloAck().MemberRole; role != "" && role != m.Role {
		// An owner changed it, or handed the mesh over (config.RecordRole).
		if err := config.RecordRole(d.home, m.MeshID, role); err != nil {
			d.log.Warn("could not record the member's new role in config.json", "mesh", m.Slug, "err", err)
		}
		m.Role = role
	}
	return c, nil
}

// exchange runs call on a transient connection to m's broker, bounded by
// opTimeout (one request and its answer), then closes the connection.
func (d *direct) exchange(ctx context.Context, m *config.Mesh, call func(ctx context.Context, c *client.Conn) error) error {
	c, err := d.dial(ctx, m, client.DialOptions{})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	return call(ctx, c)
}

func userAgent() http.Header {
	return http.Header{"User-Agent": {"claudemesh/" + buildinfo.Read().Version}}
}

// snapshot fetches members and presences at once; both are needed to
// resolve a target (03-daemon "Outbox" step 3, cold: members_list, then
// list_peers).
func snapshot(ctx context.Context, c *client.Conn) ([]wire.Member, []wire.Peer, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	var (
		members    []wire.Member
		peers      []wire.Peer
		merr, perr error
		wg         sync.WaitGroup
	)
	wg.Go(func() { members, merr = c.MembersList(ctx) })
	wg.Go(func() { peers, perr = c.ListPeers(ctx) })
	wg.Wait()
	if merr != nil {
		return nil, nil, merr
	}
	return members, peers, perr
}

func (d *direct) Directory(ctx context.Context, m *config.Mesh) ([]wire.Member, []wire.Peer, error) {
	c, err := d.dial(ctx, m, client.DialOptions{})
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	members, peers, err := snapshot(ctx, c)
	return members, peers, meshError(m.Slug, err)
}

func (d *direct) Send(ctx context.Context, m *config.Mesh, req sendRequest) (_ *sendResult, err error) {
	defer func() { err = ownHints(err, d.home) }()
	if strings.HasPrefix(req.To, "#") {
		return d.sendTopic(ctx, m, req) // direct_topics.go
	}
	c, err := d.dial(ctx, m, client.DialOptions{})
	if err != nil {
		return nil, notSent(err)
	}
	defer closeSend(ctx, c)
	members, peers, err := snapshot(ctx, c)
	if err != nil {
		return nil, notSent(err)
	}
	t, err := client.ResolveTarget(req.To, members, peers, m.Pubkey)
	if err != nil {
		return nil, err
	}
	cmid := req.ClientMessageID
	if cmid == "" {
		cmid = client.NewID()
	}
	// Sealed deterministically from cmid: sent again with --id cmid, the
	// same message carries the same bytes, and the broker answers it as a
	// duplicate (sendAcked).
	opts := client.SendOptions{ClientMessageID: cmid, Priority: req.Priority, ReplyToID: req.ReplyTo, Deterministic: true, MeshID: m.MeshID}
	var s *wire.Send
	if t.Kind == wire.KindBox {
		s, err = client.SealDM(t.Spec, []byte(req.Body), c.Self(), opts)
	} else {
		s, err = client.SealMulti(m.MeshID, t.Spec, []byte(req.Body), t.Recipients, c.Self(), opts)
	}
	if err != nil {
		return nil, err
	}
	retry := dmRetry
	if t.Kind != wire.KindBox {
		retry = multiRetry
	}
	ack, err := sendAcked(ctx, c, s, cmid, "check with claudemesh message status "+cmid, retry)
	if err != nil {
		return nil, err
	}
	res := &sendResult{MessageID: ack.MessageID, ClientMessageID: cmid, Via: viaDirect, Duplicate: ack.Duplicate, Priority: req.Priority,
		Target: targetJSON{Kind: t.Kind, TargetSpec: t.Spec, DisplayName: t.DisplayName}}
	if t.Kind == wire.KindBox {
		online := t.Online
		res.Target.Online = &online
		if online {
			res.Target.Status = t.Status
		}
	}
	if ack.Online != nil {
		res.OnlineNow = *ack.Online
	}
	if ack.Pending != nil {
		res.Recipients = *ack.Pending
	}
	res.Status = "queued"
	if res.OnlineNow > 0 {
		res.Status = "sent"
	}
	allDelivered, known := false, false
	if ack.Duplicate && res.Recipients == 0 && ctx.Err() == nil {
		// A retry of a message none of whose deliveries is pending: ask
		// whether they were delivered ("queued" would be untrue; the
		// daemon's path says delivered from its outbox). Not after a
		// signal: the user asked to stop, and "already sent" is true.
		allDelivered, known = duplicateDelivered(ctx, c, ack.MessageID)
		if allDelivered {
			res.Status = "delivered"
		}
	}
	if !req.Wait {
		return res, nil
	}
	// With --wait, exit 0 means delivered (04-cli): every other outcome
	// below is an error naming the message.
	check := "check with claudemesh message status " + res.MessageID
	if res.Recipients == 0 {
		// Nothing outstanding, so nothing to wait for.
		switch {
		case allDelivered:
			return res, nil
		case !ack.Duplicate:
			// A fresh message nobody was listed for (grants, full
			// queues, an empty @group) never will be delivered.
			return res, notDelivered(res, check, "%s %s, but no recipient of it could be reached, so none will have it", res.Status, res.MessageID)
		case ctx.Err() != nil:
			return res, waitInterrupted(res, check)
		case known:
			// Settled, but not (all) delivered: expired or dropped.
			return res, notDelivered(res, check, "message %s was sent before, and will not be delivered to every recipient", res.MessageID)
		default:
			return res, notDelivered(res, check, "message %s was sent before; the broker did not say whether it was delivered", res.MessageID)
		}
	}
	if ctx.Err() != nil {
		// Signalled while the broker answered: the message is taken,
		// but the delivery --wait is for was never waited for. Exit 0
		// would say it was delivered; this is the error a signal during
		// the wait gives, with the ack printed before it.
		return res, waitInterrupted(res, "it stays queued for them; check later with claudemesh message status "+res.MessageID)
	}
	d.log.Debug("waiting for the delivery", "messageId", res.MessageID, "recipients", res.Recipients, "timeout", req.WaitTimeout)
	wctx, wcancel := context.WithTimeout(ctx, req.WaitTimeout)
	receipts, werr := c.WaitReceipts(wctx, ack.MessageID, res.Recipients)
	wcancel()
	// Settle the receipts that came, so they are not queued for this
	// member's next inbox; losing this ack only means they come again.
	if len(receipts) > 0 {
		ids := make([]string, len(receipts))
		for i, r := range receipts {
			ids[i] = r.ReceiptID
		}
		actx, acancel := context.WithTimeout(ctx, opTimeout)
		if err := c.ClientAck(actx, ids); err != nil {
			d.log.Debug("settling receipts", "err", err)
		}
		acancel()
	}
	if werr != nil {
		if ctx.Err() != nil {
			// A signal: the message is queued, only the wait ended.
			return res, waitInterrupted(res, "it stays queued for them; check later with claudemesh message status "+res.MessageID)
		}
		if client.CodeOf(werr) == client.CodeTimeout {
			return res, notDelivered(res, "it stays queued for them; check later with claudemesh message status "+res.MessageID,
				"%s %s, but it was not delivered to %d of %d recipients within %s", res.Status, res.MessageID, res.Recipients-len(receipts), res.Recipients, req.WaitTimeout)
		}
		return res, werr
	}
	if ack.Duplicate {
		// The receipts came for the deliveries that were pending; the
		// others were settled before, delivered or not.
		if all, _ := duplicateDelivered(ctx, c, ack.MessageID); !all {
			return res, notDelivered(res, check, "message %s was sent before; it reached the recipients it was waiting for, but the broker does not say that every recipient has it", res.MessageID)
		}
	}
	res.Status = "delivered"
	return res, nil
}

// notDelivered is --wait's wait_timeout (exit 7): the message was taken
// but is not, or will not be, delivered; it names the message, and hint
// says how to follow it up.
func notDelivered(res *sendResult, hint, format string, args ...any) error {
	return cliui.Errorf(cliui.CodeWaitTimeout, format, args...).WithHint(hint).WithMessage(res.MessageID, res.ClientMessageID)
}

// duplicateDelivered asks the broker whether every recipient of a message
// sent before has it (message_status): a duplicate's ack says only how
// many are pending. known is false when the broker did not say.
func duplicateDelivered(ctx context.Context, c *client.Conn, messageID string) (all, known bool) {
	// Not cut short by a signal: the answer says what was sent.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
	defer cancel()
	st, err := c.MessageStatus(sctx, messageID, "")
	if err != nil {
		return false, false
	}
	if len(st.Recipients) == 0 {
		return false, true // nobody was listed for it: delivered to no one
	}
	for _, r := range st.Recipients {
		if r.State != wire.StateDelivered {
			return false, true
		}
	}
	return true, true
}

// notSent is an error of a direct send before the message was written to
// the broker (the dial, the directory): when it is the broker's absence
// or silence, which says nothing of the message, it says that nothing was
// sent, so that a retry is plainly safe (the exit stays 5: nothing could
// be queued).
func notSent(err error) error {
	switch client.CodeOf(err) {
	case client.CodeUnreachable, client.CodeTimeout, client.CodeConnectionClosed, wire.CodeShuttingDown, wire.CodeUnavailable:
		if ce, ok := cliError(err).(*cliui.Error); ok {
			ce.Message += "; the message was not sent"
			return ce
		}
	}
	return err
}

// closeSend closes a send's connection. If the command was interrupted
// (a signal came while sendAcked held the broker's answer, and the
// default handling is back), it drops the connection instead of waiting
// up to a second for the broker's close frame: the answer is in hand, and
// it must be printed before a second Ctrl-C can end send without a word.
func closeSend(ctx context.Context, c *client.Conn) {
	if ctx.Err() != nil {
		c.Drop()
		return
	}
	c.Close()
}

// retryTerms are what sendAcked's hint says of a retry with the same id,
// per kind of send: what makes it differ from the first under the
// broker's fingerprint, and how long the broker remembers the id. After
// that window the broker takes an identical retry as a new message, and
// recipients drop it as a replay (the same sender and nonce).
type retryTerms struct{ differs, window string }

// The broker keeps a message's clientMessageId until the message is
// purged, --queue-ttl + 24 h after it was sent (broker/deliver.go sweep;
// 8 days by default), and a topic post's as long as it keeps the post
// (--topic-retention, by default forever). The CLI cannot ask for the
// flags, so it names them with their defaults.
const (
	messageIDWindow = "the broker's idempotency window (--queue-ttl + 24 h: 8 days by default)"
	postIDWindow    = "the broker's idempotency window (as long as it keeps the post: --topic-retention, by default forever)"
)

var (
	dmRetry    = retryTerms{differs: "another text", window: messageIDWindow}
	multiRetry = retryTerms{differs: "another text, or other recipients now", window: messageIDWindow}
	topicRetry = retryTerms{differs: "another text, or the topic's key rotated since", window: postIDWindow}
)

// sendAcked sends s on c and waits for the broker's ack, at most
// opTimeout. A first SIGINT or SIGTERM does not abandon the wait
// (cliui.Hold): the broker may already hold the message, and a caller
// told only "interrupted" could not know whether to send it again. A
// second one does, and the error (exit 130) says that the outcome is
// unknown and how to find out (check) and retry without a duplicate: the
// broker never takes the message's clientMessageId cmid twice from the
// same sender key, the member's on this direct path, hence --no-daemon
// (through the daemon, or from a launched session's key, the id is
// another's). The direct path seals deterministically from cmid
// (client.SendOptions.Deterministic), so the same message sent again with
// the same id and target carries the same bytes: the broker answers it
// with the original messageId as a duplicate if it has it, and takes it
// if it has not. Only a different message under the id is refused
// (idempotency_key_reused): retry names what differs for its kind (the
// text; for @group and * the recipients listed; for a #topic post the
// topic's key generation) and how long the broker remembers the id.
//
// An ack that does not come (opTimeout, or the connection closed) leaves
// the outcome as unknown: the error says so in the same words, with the
// same hint, instead of inviting a blind re-send.
func sendAcked(ctx context.Context, c *client.Conn, s *wire.Send, cmid, check string, retry retryTerms) (*wire.Ack, error) {
	var ack *wire.Ack
	hint := check + " before you send it again; sent again with --id " + cmid + " --no-daemon (this direct path, where the id is known) within " + retry.window +
		" it cannot be taken twice: if the broker has it, it delivers nothing again and answers with the first messageId (a duplicate), or with idempotency_key_reused if what is sent differs (" + retry.differs + ")"
	err := cliui.Hold(ctx, heldNote("broker"), func(hctx context.Context) error {
		sctx, cancel := context.WithTimeout(hctx, opTimeout)
		defer cancel()
		var err error
		ack, err = c.Send(sctx, s)
		if err != nil && hctx.Err() != nil {
			e := cliui.Errorf(cliui.CodeInterrupted, "stopped waiting for the broker's answer: message %s may or may not have been accepted", cmid).
				WithHint(hint).WithMessage("", cmid)
			e.Cause = err
			return e
		}
		return err
	})
	if err == nil {
		return ack, nil
	}
	var ce *cliui.Error
	if errors.As(err, &ce) && ce.Code == cliui.CodeInterrupted {
		return nil, err
	}
	if code := client.CodeOf(err); code == client.CodeTimeout || code == client.CodeConnectionClosed {
		// The frame may have reached the broker.
		ce := cliError(err).(*cliui.Error)
		ce.Message = fmt.Sprintf("no answer from the broker, so message %s may or may not have been accepted (%s): %s", cmid, check, ce.Message)
		ce.Code, ce.Exit, ce.Hint = cliui.CodeOutcomeUnknown, 0, hint // not 5: something may be queued
		return nil, ce.WithMessage("", cmid)
	}
	if client.CodeOf(err) == wire.CodeUnavailable {
		// A cluster without quorum did not acknowledge it, but may still
		// store it if the quorum comes back before the log gives it up
		// (wire.CodeUnavailable): the broker's words said "retry with
		// the same id" and no id, and exit 5 said nothing was queued.
		ce := cliError(err).(*cliui.Error)
		ce.Message = fmt.Sprintf("the broker did not acknowledge message %s (unavailable: its cluster could not make it durable in time, as a quorum of its nodes is unreachable or this node is catching up), "+
			"but may still store it if the quorum comes back at once: it may or may not have been accepted", cmid)
		ce.Code, ce.Exit, ce.Hint = cliui.CodeOutcomeUnknown, 0, "in a moment, "+hint
		return nil, ce.WithMessage("", cmid)
	}
	if ce, ok := cliError(err).(*cliui.Error); ok {
		return nil, ce.WithMessage("", cmid)
	}
	return nil, err
}

func (d *direct) Peers(ctx context.Context, meshes []config.Mesh, all bool) []meshPeers {
	return peersOfEach(meshes, func(m *config.Mesh) ([]peerRow, error) {
		return d.meshPeers(ctx, m, all)
	})
}

func (d *direct) meshPeers(ctx context.Context, m *config.Mesh, all bool) ([]peerRow, error) {
	var members []wire.Member
	var peers []wire.Peer
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) (err error) {
		members, peers, err = snapshot(ctx, c)
		return meshError(m.Slug, err)
	})
	if err != nil {
		return nil, err
	}
	return peerRows(m, members, peers, all, ""), nil
}

// peerRows turns the broker's lists into `peer list` rows (04-cli).
//
// By default each member with a listed presence appears once, online if
// any of its presences is, followed by its agent sessions (Nested): a
// member's daemon, `inbox --follow` and bot connections are one person, not
// three peers. The member row takes its connection fields (role,
// sessionId, status, connectedAt) from the member's earliest online member
// presence, else its earliest listed one; a member present only through
// sessions has none of them.
//
// With all, every presence is listed as the broker lists it, plus a row for
// each active member with no listed presence that members_list does not
// show online (offline members).
//
// this is the calling agent session's pubkey ("" when the caller is not a
// session): its row is marked isThisSession.
func peerRows(m *config.Mesh, members []wire.Member, peers []wire.Peer, all bool, this string) []peerRow {
	rows := groupedPeerRows(m, members, peers, all)
	for i := range rows {
		if this != "" && rows[i].Role == wire.RoleSession && rows[i].Pubkey == this {
			rows[i].IsThisSession = true
		}
		if !rows[i].Online {
			// What the member set (idle, working, dnd) says nothing
			// while nobody is connected; the human table says offline.
			rows[i].Status = peerOffline
		}
	}
	return rows
}

// peerOffline is the status of a peer list row that is not online.
const peerOffline = "offline"

func groupedPeerRows(m *config.Mesh, members []wire.Member, peers []wire.Peer, all bool) []peerRow {
	if all {
		return allPeerRows(m, members, peers)
	}
	byKey := map[string]*wire.Member{}
	for i := range members {
		byKey[members[i].Pubkey] = &members[i]
	}
	type group struct {
		member   *peerRow
		rep      *wire.Peer // the presence the member row describes
		sessions []peerRow
		channel  string // a channel an online member presence names (the human's chat page: web)
	}
	var order []string
	groups := map[string]*group{}
	for i := range peers {
		p := &peers[i]
		if mem := byKey[p.MemberPubkey]; mem != nil && mem.RevokedAt != 0 {
			continue
		}
		g := groups[p.MemberPubkey]
		if g == nil {
			g = &group{member: &peerRow{Mesh: m.Slug, Pubkey: p.MemberPubkey, MemberPubkey: p.MemberPubkey,
				MemberRole: p.MemberRole, Groups: []wire.Group{}, IsSelf: p.MemberPubkey == m.Pubkey}}
			if mem := byKey[p.MemberPubkey]; mem != nil {
				g.member.DisplayName, g.member.MemberRole = mem.DisplayName, mem.MemberRole
			}
			groups[p.MemberPubkey] = g
			order = append(order, p.MemberPubkey)
		}
		if p.Online {
			g.member.Online = true
		}
		if p.Role == wire.RoleSession {
			row := presenceRow(m, p)
			row.Nested = true
			g.sessions = append(g.sessions, row)
			continue
		}
		if g.rep == nil || betterRep(p, g.rep) {
			g.rep = p
		}
		if p.Online && p.Channel != "" && g.channel == "" {
			g.channel = p.Channel
		}
	}
	rows := make([]peerRow, 0, len(peers))
	for _, k := range order {
		g := groups[k]
		row := *g.member
		if p := g.rep; p != nil {
			if row.DisplayName == "" {
				row.DisplayName = p.DisplayName
			}
			row.Role, row.SessionID, row.Status, row.Summary = p.Role, p.SessionID, p.Status, p.Summary
			row.Hostname, row.PeerType, row.ConnectedAt = p.Hostname, p.PeerType, p.ConnectedAt
			row.Channel = p.Channel
			if p.Groups != nil {
				row.Groups = p.Groups
			}
		}
		if row.Channel == "" {
			// The member is also reachable there: agents see the human
			// on its chat page as channel web.
			row.Channel = g.channel
		}
		rows = append(rows, row)
		rows = append(rows, g.sessions...)
	}
	return rows
}

// betterRep reports whether p describes its member better than cur: an
// online presence over an offline one, then the daemon's control-plane
// presence (where the broker delivers the member's messages) over others.
// The broker lists presences in connection order, which a reconnect
// changes; the member row must not change its kind with it (the human's
// web presence made alice "control-plane (web)" one time, "cli (web)" the
// next).
func betterRep(p, cur *wire.Peer) bool {
	if p.Online != cur.Online {
		return p.Online
	}
	return p.Role == wire.RoleControlPlane && cur.Role != wire.RoleControlPlane
}

// presenceRow is one presence as listed.
func presenceRow(m *config.Mesh, p *wire.Peer) peerRow {
	groups := p.Groups
	if groups == nil {
		groups = []wire.Group{}
	}
	return peerRow{
		Mesh: m.Slug, Pubkey: p.Pubkey, MemberPubkey: p.MemberPubkey, DisplayName: p.DisplayName,
		Role: p.Role, MemberRole: p.MemberRole, Status: p.Status, Summary: p.Summary, Groups: groups,
		SessionID: p.SessionID, Cwd: p.Cwd, Hostname: p.Hostname, PeerType: p.PeerType, Channel: p.Channel, Online: p.Online,
		IsSelf: p.MemberPubkey == m.Pubkey, ConnectedAt: p.ConnectedAt,
	}
}

// allPeerRows is `peer list --all`: every presence, then the offline
// members.
func allPeerRows(m *config.Mesh, members []wire.Member, peers []wire.Peer) []peerRow {
	rows := make([]peerRow, 0, len(peers)+len(members))
	listed := map[string]bool{}
	for i := range peers {
		p := &peers[i]
		if p.Role != wire.RoleSession {
			listed[p.MemberPubkey] = true
		}
		rows = append(rows, presenceRow(m, p))
	}
	for _, mem := range members {
		if mem.RevokedAt != 0 || mem.Online || listed[mem.Pubkey] {
			continue
		}
		rows = append(rows, peerRow{
			Mesh: m.Slug, Pubkey: mem.Pubkey, MemberPubkey: mem.Pubkey, DisplayName: mem.DisplayName,
			MemberRole: mem.MemberRole, Groups: []wire.Group{}, IsSelf: mem.Pubkey == m.Pubkey,
		})
	}
	return rows
}

func (d *direct) MessageStatus(ctx context.Context, m *config.Mesh, id string) (*messageStatusJSON, error) {
	var st *wire.MessageStatus
	err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) (err error) {
		if wire.ValidULID(id) {
			st, err = c.MessageStatus(ctx, id, "")
			// A clientMessageId may be a ULID too (send mints one when --id
			// is not given), so a ULID that is no messageId is tried as one.
			if code := client.CodeOf(err); code == wire.CodeNotFound || code == wire.CodeExpired {
				purged := code == wire.CodeExpired
				st, err = c.MessageStatus(ctx, "", id)
				if client.CodeOf(err) == wire.CodeNotFound && purged {
					return messageNotFound(id, m.Slug, true)
				}
			}
		} else {
			st, err = c.MessageStatus(ctx, "", id)
		}
		if code := client.CodeOf(err); code == wire.CodeNotFound || code == wire.CodeExpired {
			return messageNotFound(id, m.Slug, code == wire.CodeExpired)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return messageStatusOf(st), nil
}

func (d *direct) Profile(ctx context.Context, m *config.Mesh, ch profileChange) error {
	return d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) error {
		switch ch.Op {
		case opStatus:
			return c.SetStatus(ctx, ch.Value)
		case opSummary:
			return c.SetSummary(ctx, ch.Value)
		case opGroupJoin:
			return c.JoinGroup(ctx, ch.Value, ch.Role)
		case opGroupLeave:
			return c.LeaveGroup(ctx, ch.Value)
		}
		return errors.New("unknown profile change " + ch.Op)
	})
}

func skillOf(slug string, s *wire.SkillInfo) skillJSON {
	tags := s.Tags
	if tags == nil {
		tags = []string{}
	}
	return skillJSON{Mesh: slug, Name: s.Name, Description: s.Description, Tags: tags, AuthorName: s.AuthorName,
		AuthorPubkey: s.AuthorPubkey, Size: s.Size, UpdatedAt: s.UpdatedAt}
}

func (d *direct) Skills(ctx context.Context, m *config.Mesh, query string) ([]skillJSON, error) {
	var list []wire.SkillInfo
	if err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) (err error) {
		list, err = c.SkillList(ctx, query)
		return err
	}); err != nil {
		return nil, err
	}
	out := make([]skillJSON, 0, len(list))
	for i := range list {
		out = append(out, skillOf(m.Slug, &list[i]))
	}
	return out, nil
}

func (d *direct) Skill(ctx context.Context, m *config.Mesh, name string) (*skillJSON, error) {
	var s *wire.Skill
	if err := d.exchange(ctx, m, func(ctx context.Context, c *client.Conn) (err error) {
		s, err = c.SkillGet(ctx, name)
		return err
	}); err != nil {
		return nil, err
	}
	out := skillOf(m.Slug, &s.SkillInfo)
	out.Body = &s.Body
	return &out, nil
}
