package verbs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
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

func (d *direct) Send(ctx context.Context, m *config.Mesh, req sendRequest) (*sendResult, error) {
	c, err := d.dial(ctx, m, client.DialOptions{})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	members, peers, err := snapshot(ctx, c)
	if err != nil {
		return nil, err
	}
	t, err := client.ResolveTarget(req.To, members, peers, m.Pubkey)
	if err != nil {
		return nil, err
	}
	cmid := req.ClientMessageID
	if cmid == "" {
		cmid = client.NewID()
	}
	opts := client.SendOptions{ClientMessageID: cmid, Priority: req.Priority, ReplyToID: req.ReplyTo}
	var s *wire.Send
	if t.Kind == wire.KindBox {
		s, err = client.SealDM(t.Spec, []byte(req.Body), c.Self(), opts)
	} else {
		s, err = client.SealMulti(m.MeshID, t.Spec, []byte(req.Body), t.Recipients, c.Self(), opts)
	}
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, opTimeout)
	ack, err := c.Send(sctx, s)
	cancel()
	if err != nil {
		if code := client.CodeOf(err); code == client.CodeTimeout || code == client.CodeConnectionClosed {
			// The frame may have reached the broker: say how to find out
			// instead of inviting a blind re-send.
			return nil, fmt.Errorf("no answer from the broker, so the message may or may not have been accepted "+
				"(check with claudemesh message status %s): %w", cmid, err)
		}
		return nil, err
	}
	res := &sendResult{MessageID: ack.MessageID, ClientMessageID: cmid, Via: viaDirect, Duplicate: ack.Duplicate,
		Target: targetJSON{Kind: t.Kind, TargetSpec: t.Spec, DisplayName: t.DisplayName}}
	if t.Kind == wire.KindBox {
		online := t.Online
		res.Target.Online = &online
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
	if !req.Wait {
		return res, nil
	}
	if res.Recipients == 0 {
		// Nothing outstanding: a duplicate whose deliveries are all
		// settled is delivered; a fresh message nobody was listed for
		// never will be, and waiting cannot change that.
		if ack.Duplicate {
			res.Status = "delivered"
		}
		return res, nil
	}
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
			return res, ctx.Err()
		}
		if client.CodeOf(werr) == client.CodeTimeout {
			return res, cliui.Errorf(cliui.CodeWaitTimeout, "%s %s, but %d of %d recipients did not read it within %s",
				res.Status, res.MessageID, res.Recipients-len(receipts), res.Recipients, req.WaitTimeout).
				WithHint("it stays queued for them; check later with claudemesh message status " + res.MessageID)
		}
		return res, werr
	}
	res.Status = "delivered"
	return res, nil
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
		if all {
			members, peers, err = snapshot(ctx, c)
		} else {
			peers, err = c.ListPeers(ctx)
		}
		return meshError(m.Slug, err)
	})
	if err != nil {
		return nil, err
	}
	return peerRows(m, members, peers, all), nil
}

// peerRows turns the broker's lists into `peer list` rows. Without all,
// control-plane presences (daemons) are left out: they stand for their
// member, who is reachable by name anyway. With all, every active member
// that has no member presence listed and is not online through a session is
// added as an offline row.
func peerRows(m *config.Mesh, members []wire.Member, peers []wire.Peer, all bool) []peerRow {
	rows := make([]peerRow, 0, len(peers))
	listed := map[string]bool{}
	for _, p := range peers {
		if p.Role != wire.RoleSession {
			listed[p.MemberPubkey] = true
		}
		if !all && p.Role == wire.RoleControlPlane {
			continue
		}
		groups := p.Groups
		if groups == nil {
			groups = []wire.Group{}
		}
		rows = append(rows, peerRow{
			Mesh: m.Slug, Pubkey: p.Pubkey, MemberPubkey: p.MemberPubkey, DisplayName: p.DisplayName,
			Role: p.Role, MemberRole: p.MemberRole, Status: p.Status, Summary: p.Summary, Groups: groups,
			SessionID: p.SessionID, Cwd: p.Cwd, Hostname: p.Hostname, PeerType: p.PeerType, Online: p.Online,
			IsSelf: p.MemberPubkey == m.Pubkey, ConnectedAt: p.ConnectedAt,
		})
	}
	if !all {
		return rows
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
			if client.CodeOf(err) == wire.CodeNotFound {
				st, err = c.MessageStatus(ctx, "", id)
			}
		} else {
			st, err = c.MessageStatus(ctx, "", id)
		}
		if client.CodeOf(err) == wire.CodeNotFound {
			return messageNotFound(id, m.Slug)
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
