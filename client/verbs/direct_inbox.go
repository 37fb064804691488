package verbs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"sync/atomic"
	"time"

	json "github.com/go-json-experiment/json"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// fetchPage is the most fetch_queued may return at once (01-protocol §2).
const fetchPage = 500

// errStop is returned by the sink when output failed; the transport then
// stops without acknowledging anything more.
var errStop = errors.New("output failed")

// Inbox is the cold inbox of 04-cli: per mesh, a transient connection asks
// fetch_queued; each page is decrypted, filtered against inbox-seen.json,
// handed to the sink, remembered, and only then settled with a client_ack
// that waits for `acked`. fetch_queued has no cursor — it returns what is
// still unsettled — so settling each page is also what moves on to the
// next, until more:false.
func (d *direct) Inbox(ctx context.Context, meshes []config.Mesh, opts inboxOptions, sink inboxSink) error {
	shown := 0
	for i := range meshes {
		m := &meshes[i]
		if opts.Limit > 0 && shown >= opts.Limit {
			break
		}
		n, err := d.inboxMesh(ctx, m, opts.Limit-shown, opts.Limit > 0, sink)
		shown += n
		if errors.Is(err, errStop) {
			return err
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			sink.MeshFailed(m.Slug, err)
		}
	}
	return nil
}

func (d *direct) inboxMesh(ctx context.Context, m *config.Mesh, remaining int, limited bool, sink inboxSink) (shown int, err error) {
	c, err := d.dial(ctx, m, client.DialOptions{})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	names := &memberNames{conn: func() *client.Conn { return c }, ctx: ctx}
	for {
		limit := fetchPage
		if limited && remaining-shown < limit {
			limit = remaining - shown
		}
		fctx, cancel := context.WithTimeout(ctx, opTimeout)
		page, err := c.FetchQueued(fctx, limit)
		cancel()
		if err != nil {
			return shown, meshError(m.Slug, err)
		}
		n, settle, err := d.showPage(m, c.Self(), page, names, sink)
		shown += n
		if err != nil {
			return shown, err
		}
		if len(settle) > 0 {
			actx, cancel := context.WithTimeout(ctx, opTimeout)
			err := c.ClientAck(actx, settle)
			cancel()
			if err != nil {
				return shown, meshError(m.Slug, err)
			}
		}
		if !page.More || (limited && shown >= remaining) || len(settle) == 0 {
			// len(settle) == 0 with more:true would fetch the same
			// page forever.
			return shown, nil
		}
	}
}

// showPage prints what is new in page and returns the ids to settle:
// everything that was shown, everything already shown before, and the
// receipts (this member's delivery receipts, which the cold path only
// needs to settle).
func (d *direct) showPage(m *config.Mesh, key *cmcrypto.Identity, page *client.FetchResult, names *memberNames, sink inboxSink) (int, []string, error) {
	seen, err := lockSeen(d.home)
	if err != nil {
		return 0, nil, err
	}
	defer seen.close()
	var rows []inboxRow
	var settle []string
	now := time.Now().UnixMilli()
	for _, rp := range page.Messages {
		row, sender, nonce, ok := pushRow(m, key, rp, now)
		if !ok {
			continue // no id to settle it by; it stays queued
		}
		settle = append(settle, row.MessageID)
		if seen.has(m.MeshID, row.MessageID, sender, nonce) {
			continue
		}
		seen.add(m.MeshID, row.MessageID, sender, nonce)
		names.fill(&row)
		rows = append(rows, row)
	}
	for _, r := range page.Receipts {
		settle = append(settle, r.ReceiptID)
	}
	if len(rows) > 0 {
		if err := sink.Rows(rows); err != nil {
			return 0, nil, errStop
		}
		if err := seen.save(); err != nil {
			return len(rows), nil, err
		}
	}
	return len(rows), settle, nil
}

// pushRow opens one queued push. A push that does not decode or decrypt
// still becomes a row (with decryptError and no body) so the user learns
// something arrived, and is settled like any other; only a frame without a
// message id is skipped. sender and nonce are the replay key.
func pushRow(m *config.Mesh, key *cmcrypto.Identity, rp client.RawPush, now int64) (row inboxRow, sender, nonce string, ok bool) {
	if rp.Push == nil {
		var loose struct {
			MessageID    string `json:"messageId"`
			SenderPubkey string `json:"senderPubkey"`
			Kind         string `json:"kind"`
		}
		json.Unmarshal(rp.Raw, &loose)
		if !wire.ValidULID(loose.MessageID) {
			return inboxRow{}, "", "", false
		}
		msg := "undecodable message"
		if rp.Err != nil {
			msg = rp.Err.Error()
		}
		return inboxRow{SchemaVersion: 1, ID: loose.MessageID, MessageID: loose.MessageID, Mesh: m.Slug, Kind: loose.Kind,
			SenderPubkey: loose.SenderPubkey, DecryptError: msg, Priority: wire.PriorityNext, ReceivedAt: now}, "", "", true
	}
	return openRow(m, key, rp.Push, now), rp.Push.SenderPubkey, rp.Push.Nonce, true
}

// openRow decrypts a push into an inbox row. Only a verified sender keeps
// its name: an unverified one (bad multi signature, unproven session) is
// shown without it, so nobody can borrow a member's name.
func openRow(m *config.Mesh, key *cmcrypto.Identity, p *wire.Push, now int64) inboxRow {
	row := inboxRow{SchemaVersion: 1, ID: p.MessageID, MessageID: p.MessageID, Mesh: m.Slug, Kind: p.Kind,
		SenderName: p.SenderName, SenderPubkey: p.SenderPubkey, Priority: p.Priority, ReceivedAt: now, SentAt: p.CreatedAt,
		ReplyToID: wire.ShownReplyToID(p.ReplyToID), TargetSpec: wire.ShownTargetSpec(p.TargetSpec)}
	if row.Priority == "" {
		row.Priority = wire.PriorityNext
	}
	if p.Topic != nil {
		row.Topic = p.Topic.Name
	}
	body, verified, err := client.Open(p, m.MeshID, key, nil)
	if err != nil {
		row.DecryptError = err.Error()
		row.SenderName = ""
		return row
	}
	row.Body, row.Verified = &body, verified
	if !verified {
		row.SenderName = ""
		return row
	}
	row.SenderMemberPubkey = p.SenderMemberPubkey
	if p.SenderPubkey == p.SenderMemberPubkey {
		// A member sends under its enrolled name (the broker never lets a
		// member presence choose another).
		row.SenderMemberName = p.SenderName
	}
	return row
}

// memberNames looks up members' enrolled names for rows sent by agent
// sessions, so a session is shown with the member it belongs to. The
// member list is fetched once, and only when a session's message needs it.
type memberNames struct {
	conn   func() *client.Conn
	ctx    context.Context
	names  map[string]string
	loaded bool
}

func (n *memberNames) fill(row *inboxRow) {
	if row.SenderMemberPubkey == "" || row.SenderMemberName != "" {
		return
	}
	if !n.loaded {
		n.loaded = true
		if c := n.conn(); c != nil {
			ctx, cancel := context.WithTimeout(n.ctx, opTimeout)
			members, err := c.MembersList(ctx)
			cancel()
			if err == nil {
				n.names = map[string]string{}
				for _, m := range members {
					n.names[m.Pubkey] = m.DisplayName
				}
			}
		}
	}
	row.SenderMemberName = n.names[row.SenderMemberPubkey]
}

// followItem is one thing a follow connection received, handed from the
// connection's reader goroutine to the single follow worker.
type followItem struct {
	mesh    int
	push    *wire.Push
	receipt string
}

// Follow keeps one member presence per mesh (role "cli", sessionId
// "cli-<random>") and prints each message as it is pushed, then settles
// it; the presence reconnects on its own after a broker restart, and what
// was queued meanwhile is pushed on attach. A mesh whose first connection
// fails is reported to the sink and left out; Follow fails when every mesh
// did, and otherwise runs until ctx ends (or opts.Limit messages).
func (d *direct) Follow(ctx context.Context, meshes []config.Mesh, opts inboxOptions, sink inboxSink) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	items := make(chan followItem, 64)
	hostname, _ := os.Hostname()
	cwd, _ := os.Getwd()
	presences := make([]*client.Presence, len(meshes))
	var firstErr error
	live := 0
	for i := range meshes {
		m := &meshes[i]
		id, err := identityOf(m)
		if err != nil {
			sink.MeshFailed(m.Slug, err)
			firstErr = firstOf(firstErr, err)
			continue
		}
		var opened, lost atomic.Bool
		p := client.StartPresence(ctx, id, client.DialOptions{
			Role: wire.RoleCLI, Presence: true, SessionID: "cli-" + randomHex(6), PeerType: wire.PeerHuman,
			Hostname: hostname, Cwd: cwd, PID: os.Getpid(), Logger: d.log, Header: userAgent(),
			OnPush: func(_ []byte, p *wire.Push) {
				select {
				case items <- followItem{mesh: i, push: p}:
				case <-ctx.Done():
				}
			},
			OnReceipt: func(r *wire.Receipt) {
				select {
				case items <- followItem{mesh: i, receipt: r.ReceiptID}:
				case <-ctx.Done():
				}
			},
		}, client.PresenceOptions{
			OnState: func(s client.State, err error) {
				// Said once when the connection is lost (not at every
				// retry) and once when it is back.
				if s == client.StateOpen {
					opened.Store(true)
					if lost.Swap(false) {
						sink.MeshBack(m.Slug, "mesh "+m.Slug+": connected to the broker again")
					}
				} else if s == client.StateReconnecting && err != nil && opened.Load() && !lost.Swap(true) {
					sink.MeshProblem(m.Slug, meshError(m.Slug, cliui.Errorf(cliui.CodeUnreachable,
						"the connection to the broker was lost (%s); this follow reconnects by itself and goes on",
						cliui.SanitizePeerText(err.Error()))))
				}
			},
		})
		st, err := p.WaitState(ctx, client.StateOpen, client.StateReconnecting)
		if st != client.StateOpen {
			if err == nil {
				err = ctx.Err()
			}
			p.Close()
			if ctx.Err() != nil {
				closeAll(presences)
				return nil
			}
			sink.MeshFailed(m.Slug, meshError(m.Slug, err))
			firstErr = firstOf(firstErr, meshError(m.Slug, err))
			continue
		}
		presences[i] = p
		live++
		sink.Following(m.Slug)
	}
	defer closeAll(presences)
	if live == 0 {
		return firstErr
	}
	ended := make(chan int, len(meshes))
	for i, p := range presences {
		if p != nil {
			go func() {
				select {
				case <-p.Done():
					ended <- i
				case <-ctx.Done():
				}
			}()
		}
	}
	shown := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case i := <-ended:
			if ctx.Err() != nil {
				return nil // the presence ended because we are stopping
			}
			_, err := presences[i].State()
			if err == nil {
				err = errors.New("connection closed")
			}
			err = meshError(meshes[i].Slug, err)
			sink.MeshFailed(meshes[i].Slug, err)
			if live--; live == 0 {
				return err
			}
		case it := <-items:
			if presences[it.mesh] == nil {
				// From a mesh whose first connection opened and dropped
				// before it counted as connected: left out, so not shown
				// and not settled; the broker keeps it queued.
				continue
			}
			n, err := d.followItem(&meshes[it.mesh], presences[it.mesh], it, sink)
			if err != nil {
				return err
			}
			if shown += n; opts.Limit > 0 && shown >= opts.Limit {
				return nil
			}
		}
	}
}

// followItem shows one push (unless it was shown before) and settles it on
// whatever connection the presence has now; if it has none, the broker
// pushes the message again after the reconnect and the seen file catches
// it.
func (d *direct) followItem(m *config.Mesh, p *client.Presence, it followItem, sink inboxSink) (int, error) {
	settle := func(id string) {
		if c := p.Conn(); c != nil {
			c.ClientAckAsync([]string{id})
		}
	}
	if it.receipt != "" {
		settle(it.receipt)
		return 0, nil
	}
	key, err := cmcrypto.ParseSecretKey(m.SecretKey)
	if err != nil {
		return 0, err
	}
	seen, err := lockSeen(d.home)
	if err != nil {
		return 0, err
	}
	defer seen.close()
	pu := it.push
	topic := pu.Kind == wire.KindTopic
	if topic {
		// Topic posts have no delivery record to settle, and the member's
		// own are not news to it.
		settle = func(string) {}
		if pu.SenderPubkey == m.Pubkey {
			return 0, nil
		}
	}
	if seen.has(m.MeshID, pu.MessageID, pu.SenderPubkey, pu.Nonce) {
		settle(pu.MessageID)
		return 0, nil
	}
	row := openRow(m, key, pu, time.Now().UnixMilli())
	if topic {
		row = d.topicRow(m, p.Conn(), pu, row)
	}
	(&memberNames{conn: p.Conn, ctx: context.Background()}).fill(&row)
	if err := sink.Rows([]inboxRow{row}); err != nil {
		return 0, errStop
	}
	seen.add(m.MeshID, pu.MessageID, pu.SenderPubkey, pu.Nonce)
	if err := seen.save(); err != nil {
		return 1, err
	}
	settle(pu.MessageID)
	return 1, nil
}

func closeAll(ps []*client.Presence) {
	for _, p := range ps {
		if p != nil {
			p.Close()
		}
	}
}

func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
