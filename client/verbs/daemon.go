package verbs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	json "github.com/go-json-experiment/json"

	"claudemesh/client/config"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// viaDaemon is the thin path: the verbs become requests to the local
// daemon, which holds the broker connections, the durable outbox and the
// inbox. A send is accepted into the outbox in milliseconds and never lost;
// the daemon drains it whenever the broker is reachable.
type viaDaemon struct {
	api *localapi.Client
	log *slog.Logger
	// home is the daemon's home, for a follower that must reach (or
	// start) the daemon again after it went away.
	home string
}

const viaDaemonName = "daemon"

// daemonError turns the daemon's API error into the CLI's error, keeping
// its code (and candidates) so exit codes follow 04-cli.
func daemonError(err error) error {
	var ae *localapi.APIError
	if !errors.As(err, &ae) {
		if errors.Is(err, localapi.ErrUnreachable) {
			e := cliui.Errorf(cliui.CodeUnreachable, "the daemon stopped answering (%s)", noAnswerWhy(err)).WithHint("claudemesh daemon status")
			e.Cause = err
			return e
		}
		return err
	}
	e := cliui.Errorf(ae.Body.Code, "%s", ae.Body.Message)
	e.Hint = ae.Body.Hint
	if e.Hint == "" {
		e.Hint = hintFor(ae.Body.Code)
	}
	for _, c := range ae.Body.Candidates {
		e.Candidates = append(e.Candidates, cliui.Candidate(c))
	}
	switch ae.Body.Code {
	case wire.CodeAmbiguousTarget:
		e.Hint = "use a longer pubkey prefix or the full pubkey"
	case "unknown_target":
		e.Hint = "run claudemesh peer list --all to see who is in the mesh"
	case "mesh_required":
		e.Hint = "choose one with --mesh SLUG"
	case wire.CodeNotFound:
		e.Exit = cliui.ExitNotFound
	}
	return e
}

func (v *viaDaemon) Send(ctx context.Context, m *config.Mesh, req sendRequest) (_ *sendResult, err error) {
	defer func() { err = ownHints(err, v.home) }()
	body := localapi.SendRequest{To: req.To, Message: req.Body, Mesh: m.Slug, Priority: req.Priority,
		ClientMessageID: req.ClientMessageID, ReplyToID: req.ReplyTo, Mentions: req.Mentions}
	// With --wait, listen before sending so the delivery event cannot be
	// missed.
	var stream *localapi.EventStream
	if req.Wait {
		var err error
		stream, err = v.api.Events(ctx, "", "mesh="+url.QueryEscape(m.Slug))
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err() // interrupted: nothing was sent
			}
			return nil, daemonError(err)
		}
		defer stream.Close()
	}
	// The accept is not abandoned at the first signal (cliui.Hold): a
	// SIGINT or SIGTERM (send catches them from its start, 04-cli) must
	// not abandon a request the daemon may already have put in its
	// outbox, which would leave the caller not knowing whether to send
	// again. The round trip is local but the daemon may wait on the
	// broker meanwhile (a mesh still connecting, a name it must look up:
	// up to ~10 s), so the first signal says on stderr what send waits
	// for; the wait is bounded by the API client's timeout (30 s). What
	// the daemon answers is printed, so an accepted message is always
	// reported. A second signal stops waiting, with an error that says
	// the outcome is unknown and how to find out.
	var resp *localapi.SendResponse
	err = cliui.Hold(ctx, heldNote("daemon"), func(hctx context.Context) error {
		var err error
		resp, err = v.api.Send(hctx, body)
		if err != nil && hctx.Err() != nil {
			return daemonAbandoned(req.ClientMessageID, err)
		}
		if err != nil && errors.Is(err, localapi.ErrUnreachable) && !dialFailed(err) {
			// No answer (the client's 30 s timeout, the connection
			// closed) to a request the daemon may have read.
			return daemonNoAnswer(req.ClientMessageID, err)
		}
		return err
	})
	if err != nil {
		var ce *cliui.Error
		if errors.As(err, &ce) || errors.Is(err, context.Canceled) {
			return nil, err // said already (daemonAbandoned, daemonNoAnswer), or nothing sent
		}
		return nil, daemonError(err)
	}
	res := &sendResult{MessageID: resp.MessageID, ClientMessageID: resp.ClientMessageID, Status: resp.Status,
		Via: viaDaemonName, Duplicate: resp.Duplicate, MeshState: resp.MeshState, Priority: req.Priority,
		Target: targetJSON{Kind: resp.Target.Kind, TargetSpec: resp.Target.TargetSpec, DisplayName: resp.Target.DisplayName,
			Online: resp.Target.Online, Status: resp.Target.Status}}
	if resp.Status == localapi.StatusFailed && resp.ErrorCode == localapi.CodeDeliveryExpired {
		return res, deliveryExpired(res, resp.Error)
	}
	if resp.Status == localapi.StatusFailed {
		return nil, outboxFailed(resp.ClientMessageID, resp.MessageID, resp.ErrorCode, resp.Error, true)
	}
	if !req.Wait || res.Status == localapi.StatusDelivered {
		return res, nil
	}
	if ctx.Err() != nil {
		// Signalled during the accept: the daemon took the message, but
		// the delivery --wait is for was never waited for. Exit 0 would
		// say it was delivered; this is the error a signal during the
		// wait gives, with the accept printed before it.
		return res, waitInterrupted(res, "it stays in the outbox; check with claudemesh message status "+res.ClientMessageID)
	}
	return v.waitDelivered(ctx, stream, res, req.WaitTimeout)
}

// ownHints puts the home's --home into the commands of an error's hint
// that act on the caller's own daemon and messages (its outbox, a
// message's status, the peers it sees): copied as printed, they looked at
// ~/.claudemesh, another identity or none. Commands for someone else to
// run (an owner's unban) are left as they are.
func ownHints(err error, home string) error {
	var ce *cliui.Error
	if err == nil || home == "" || !errors.As(err, &ce) {
		return err
	}
	cm := config.Invocation(home)
	if cm == "claudemesh" {
		return err
	}
	for _, verb := range []string{"daemon outbox ", "message status ", "peer list", "daemon status", "inbox "} {
		ce.Hint = strings.ReplaceAll(ce.Hint, "claudemesh "+verb, cm+" "+verb)
		ce.Message = strings.ReplaceAll(ce.Message, "claudemesh "+verb, cm+" "+verb)
	}
	return err
}

// daemonAbandoned is a send whose accept a second signal stopped waiting
// for: the daemon may or may not have taken the message. With the
// caller's clientMessageId (--id) it can be sent again safely through the
// daemon, which answers the repeat as a duplicate; hence --strict, since
// a send that cannot reach the daemon falls back to a direct connection,
// where the broker de-duplicates per sender key (the member's, not a
// session's) and a message still in the daemon's outbox is not known at
// all. Without an id the daemon's outbox tells.
func daemonAbandoned(cmid string, cause error) error {
	e := cliui.Errorf(cliui.CodeInterrupted, "stopped waiting for the daemon's answer: it may or may not have taken the message").
		WithHint("check with claudemesh daemon outbox list before you send it again (only a send with --id ID --strict, which goes through the daemon or fails, can be repeated without a duplicate)")
	if cmid != "" {
		e.Message = "stopped waiting for the daemon's answer: it may or may not have taken message " + cmid
		e.Hint = "check with claudemesh daemon outbox list, or send the same message again with --id " + cmid + " --strict (the daemon does not send it twice; --strict keeps send from falling back to a direct connection, which could)"
		e.ClientMessageID = cmid
	}
	e.Cause = cause
	return e
}

// daemonNoAnswer is a send whose accept got no answer, the request
// written: as for daemonAbandoned, the daemon may or may not have taken
// the message, and the hint is the same. It is outcome_unknown (exit 8),
// not unreachable (exit 5: nothing could be queued, which a script
// retries); the message says what happened in the user's words, not the
// HTTP client's (`Post "http://localhost/v1/send": unexpected EOF`).
func daemonNoAnswer(cmid string, cause error) error {
	e := daemonAbandoned(cmid, cause).(*cliui.Error)
	e.Code = cliui.CodeOutcomeUnknown
	what := "the message"
	if cmid != "" {
		what = "message " + cmid
	}
	e.Message = fmt.Sprintf("the daemon stopped answering after it was handed %s (%s): it may or may not have taken it", what, noAnswerWhy(cause))
	return e
}

// noAnswerWhy says in the user's words why a request to the daemon got no
// answer (err wraps localapi.ErrUnreachable), without the HTTP client's
// text (`Post "http://localhost/v1/send": unexpected EOF`), which names a
// host and a URL the user never used.
func noAnswerWhy(err error) string {
	var ne net.Error
	switch {
	case dialFailed(err):
		return "nothing answers on its socket"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "no answer in 30 s"
	default:
		return "its connection closed before the answer"
	}
}

// dialFailed says whether err is a failure to connect to the daemon at
// all: nothing was sent.
func dialFailed(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// outboxFailed is a send the daemon's outbox recorded as failed. A
// permanent refusal keeps the broker's code (blocked_by_recipient,
// forbidden, …), so the exit code is the one the direct path gives for the
// same refusal; a row the daemon gave up on after its attempts is
// send_failed. earlier: the row failed before this request (a duplicate).
func outboxFailed(cmid, messageID, code, text string, earlier bool) error {
	c, msg, hint := "send_failed", text, ""
	if code != "" {
		c, msg, hint = code, strings.TrimPrefix(text, code+": "), hintFor(code)
	}
	var e *cliui.Error
	if earlier {
		e = cliui.Errorf(c, "this message (id %s) failed earlier: %s", cmid, msg)
		if hint == "" {
			hint = "claudemesh daemon outbox requeue " + cmid
		}
	} else {
		e = cliui.Errorf(c, "the broker refused message %s: %s", cmid, msg)
		if code == "" {
			e.Message = fmt.Sprintf("message %s failed: %s", cmid, msg)
		}
		if hint == "" {
			hint = "claudemesh daemon outbox list --status failed"
		}
	}
	return e.WithHint(hint).WithMessage(messageID, cmid)
}

// deliveryExpired is a row the broker took whose delivery to some of its
// recipients expired before they had it (known after a resend was answered
// as a duplicate): not delivered, and never will be, as the direct path
// says of a retry whose deliveries expired (exit 7). The broker keeps one
// message per clientMessageId, so only a new message reaches them.
func deliveryExpired(res *sendResult, text string) error {
	return notDelivered(res, "check with claudemesh message status "+res.ClientMessageID+"; to reach them, send it again as a new message (without --id)",
		"message %s will not be delivered to every recipient: %s", res.ClientMessageID, strings.TrimPrefix(text, localapi.CodeDeliveryExpired+": "))
}

// progressOf copies what the outbox row says about the send into res:
// status, message id and, once the broker acked it, how many recipients
// it holds the message for and how many connections got it at once.
func progressOf(res *sendResult, row *localapi.OutboxRow) {
	res.Status, res.MessageID = row.Status, row.MessageID
	res.RecipientsUnknown = false
	switch {
	case row.Recipients != nil:
		res.Recipients, res.OnlineNow = *row.Recipients, row.OnlineNow
	case row.Status == localapi.StatusQueued || row.Status == localapi.StatusSent:
		res.RecipientsUnknown = true
	}
}

// unreachable says whether an acked row has nobody to deliver to (the
// broker listed no recipient: grants, full queues, nobody in the group):
// it will never be delivered.
func unreachable(row *localapi.OutboxRow) bool {
	return row.Recipients != nil && *row.Recipients == 0 &&
		(row.Status == localapi.StatusQueued || row.Status == localapi.StatusSent)
}

// waitDelivered follows outbox_status events of the row until it is
// delivered, failed, or known never to be delivered; at the timeout it
// looks at the row once more, so the error says how many recipients are
// still waiting, as the direct path's does.
func (v *viaDaemon) waitDelivered(ctx context.Context, stream *localapi.EventStream, res *sendResult, timeout time.Duration) (*sendResult, error) {
	type outcome struct {
		row localapi.OutboxRow
		err error
	}
	ch := make(chan outcome, 1)
	// The reader keeps the row's progress here, not in res, which this
	// function reads and returns while the reader may still run.
	var mu sync.Mutex
	var last *localapi.OutboxRow
	progress := func() {
		mu.Lock()
		if last != nil {
			progressOf(res, last)
		}
		mu.Unlock()
	}
	go func() {
		for {
			ev, err := stream.Next()
			if err != nil {
				ch <- outcome{err: err}
				return
			}
			if ev.Type != localapi.EventOutboxStatus {
				continue
			}
			var row localapi.OutboxRow
			if json.Unmarshal(ev.Data, &row) != nil || row.ClientMessageID != res.ClientMessageID {
				continue
			}
			if row.Status == localapi.StatusDelivered || row.Status == localapi.StatusFailed || row.Status == localapi.StatusUntracked || unreachable(&row) {
				ch <- outcome{row: row}
				return
			}
			mu.Lock()
			last = &row
			mu.Unlock()
		}
	}()
	if v.log != nil {
		v.log.Debug("waiting for the delivery", "clientMessageId", res.ClientMessageID, "timeout", timeout)
	}
	// A signal ends the wait (the message stays in the outbox) with an
	// error that names it; the stream, opened under ctx, may end first.
	interrupted := func() error {
		progress()
		where := "the broker holds it for its recipients"
		if res.Status == localapi.StatusAccepted {
			// Not taken by the broker yet (it may be unreachable).
			where = "it stays in the daemon's outbox, which sends it once the broker takes it"
		}
		return waitInterrupted(res, where+"; check with claudemesh message status "+res.ClientMessageID)
	}
	// settled is the answer for a row that reached an end.
	settled := func(row *localapi.OutboxRow) (*sendResult, error) {
		progressOf(res, row)
		switch {
		case row.Status == localapi.StatusFailed && row.ErrorCode == localapi.CodeDeliveryExpired:
			return res, deliveryExpired(res, row.Error)
		case row.Status == localapi.StatusFailed:
			return nil, outboxFailed(res.ClientMessageID, res.MessageID, row.ErrorCode, row.Error, false)
		case row.Status == localapi.StatusDelivered:
			return res, nil
		case row.Status == localapi.StatusUntracked:
			return res, notDelivered(res, "the broker still delivers it to recipients who come back, but this machine no longer learns whether",
				"%s %s, but its mesh was left before it was delivered", res.Status, res.MessageID)
		}
		// unreachable: what the direct path says of it.
		return res, notDelivered(res, "check with claudemesh message status "+res.MessageID,
			"%s %s, but no recipient of it could be reached, so none will have it", res.Status, res.MessageID)
	}
	select {
	case o := <-ch:
		progress() // the reader has returned
		if o.err != nil && ctx.Err() != nil {
			return res, interrupted()
		}
		if o.err != nil {
			// The message was accepted (the daemon answered the send):
			// it is in the daemon's durable outbox, or the broker has
			// it, so this is no "nothing could be queued" (exit 5),
			// which a script retries, sending it twice. Not confirmed
			// delivered within the wait: exit 7.
			return res, lostDaemon(res, o.err)
		}
		return settled(&o.row)
	case <-time.After(timeout):
		progress()
		// The last look: receipts that came without a change of state
		// sent no event, and the row may have settled a moment ago.
		if row := v.outboxRow(ctx, res.ClientMessageID); row != nil {
			if row.Status == localapi.StatusDelivered || row.Status == localapi.StatusFailed || row.Status == localapi.StatusUntracked || unreachable(row) {
				return settled(row)
			}
			progressOf(res, row)
			if row.Recipients != nil {
				n := *row.Recipients
				return res, notDelivered(res, "it stays queued for them; check later with claudemesh message status "+res.MessageID,
					"%s %s, but it was not delivered to %d of %d recipients within %s", res.Status, res.MessageID, n-min(row.Receipts, n), n, timeout)
			}
		}
		return res, cliui.Errorf(cliui.CodeWaitTimeout, "%s, but not delivered within %s", res.Status, timeout).
			WithHint("it stays in the outbox; check with claudemesh daemon outbox list").
			WithMessage(res.MessageID, res.ClientMessageID)
	case <-ctx.Done():
		return res, interrupted()
	}
}

// lostDaemon is a --wait whose daemon stopped answering (it died, or was
// stopped) after it accepted the message: it is not lost, and it is not
// confirmed delivered either (exit 7, as at the wait's timeout).
func lostDaemon(res *sendResult, err error) error {
	id := res.MessageID
	if id == "" {
		id = res.ClientMessageID
	}
	where := "it stays in the daemon's outbox, which sends it when the daemon runs again (claudemesh daemon up)"
	if res.Status != localapi.StatusAccepted {
		where = "the broker holds it for its recipients"
	}
	return cliui.Errorf(cliui.CodeWaitTimeout, "message %s was %s, but the daemon stopped answering while send waited for its delivery (%v), so it is not confirmed delivered", id, res.Status, err).
		WithHint(where+"; check with claudemesh message status "+res.ClientMessageID+"; do not send it again as a new message (a retry with --id "+res.ClientMessageID+" is the same message)").
		WithMessage(res.MessageID, res.ClientMessageID)
}

// outboxRow is the daemon's outbox row of a clientMessageId, nil when the
// daemon cannot say. limit=1 is for a daemon older than this CLI, which
// does not know clientMessageId: it answers with its newest row (this one,
// or none of ours) instead of the whole outbox.
func (v *viaDaemon) outboxRow(ctx context.Context, cmid string) *localapi.OutboxRow {
	var rows []localapi.OutboxRow
	if _, err := v.api.Do(ctx, "GET", "/v1/outbox?limit=1&clientMessageId="+url.QueryEscape(cmid), nil, &rows); err != nil {
		return nil
	}
	for i := range rows {
		if rows[i].ClientMessageID == cmid {
			return &rows[i]
		}
	}
	return nil
}

func (v *viaDaemon) directory(ctx context.Context, slug string) ([]wire.Member, []wire.Peer, error) {
	members, peers, _, err := v.directoryThis(ctx, slug)
	return members, peers, err
}

// directoryThis is directory plus the pubkey the daemon marked as the
// caller's own presence when the caller is an agent session ("" else).
func (v *viaDaemon) directoryThis(ctx context.Context, slug string) ([]wire.Member, []wire.Peer, string, error) {
	q := "?mesh=" + url.QueryEscape(slug)
	var peers []localapi.Peer
	var members []localapi.Member
	var perr, merr error
	var wg sync.WaitGroup
	wg.Go(func() { _, perr = v.api.Do(ctx, "GET", "/v1/peers"+q, nil, &peers) })
	wg.Go(func() { _, merr = v.api.Do(ctx, "GET", "/v1/members"+q, nil, &members) })
	wg.Wait()
	if err := errors.Join(perr, merr); err != nil {
		return nil, nil, "", daemonError(err)
	}
	ws := make([]wire.Member, len(members))
	for i, m := range members {
		ws[i] = m.Member
	}
	wp := make([]wire.Peer, len(peers))
	this := ""
	for i, p := range peers {
		wp[i] = p.Peer
		if p.IsThisSession && v.api.SessionToken != "" {
			this = p.Pubkey
		}
	}
	return ws, wp, this, nil
}

func (v *viaDaemon) Directory(ctx context.Context, m *config.Mesh) ([]wire.Member, []wire.Peer, error) {
	return v.directory(ctx, m.Slug)
}

func (v *viaDaemon) Peers(ctx context.Context, meshes []config.Mesh, all bool) []meshPeers {
	return peersOfEach(meshes, func(m *config.Mesh) ([]peerRow, error) {
		members, peers, this, err := v.directoryThis(ctx, m.Slug)
		if err != nil {
			return nil, err
		}
		return peerRows(m, members, peers, all, this), nil
	})
}

// inboxRowOf converts a stored row; only a verified sender keeps its name.
func inboxRowOf(r localapi.InboxRow) inboxRow {
	row := inboxRow{SchemaVersion: 1, ID: r.ID, MessageID: r.MessageID, Mesh: r.Mesh, Kind: r.Kind, Topic: r.Topic,
		SenderName: r.SenderName, SenderPubkey: r.SenderPubkey, SenderMemberPubkey: r.SenderMemberPubkey,
		SenderMemberName: r.SenderMemberName, DecryptError: r.DecryptError, Verified: r.Verified,
		Priority: r.Priority, ReceivedAt: r.ReceivedAt, SentAt: r.SentAt, SeenAt: r.SeenAt, ReplyToID: r.ReplyToID, TargetSpec: r.TargetSpec, MentionsYou: r.MentionsYou,
		RecipientPubkey: r.RecipientPubkey, RecipientKind: r.RecipientKind, Plaintext: r.Plaintext && !r.Verified}
	if r.Verified {
		row.FromSelf, row.SenderLooksLike, row.SenderLooksLikeSelf = r.FromSelf, r.SenderLooksLike, r.SenderLooksLikeSelf
	}
	if r.DecryptError == "" {
		body := r.Body
		row.Body = &body
	}
	if !r.Verified {
		row.SenderMemberPubkey, row.SenderMemberName = "", ""
		if !row.Plaintext {
			row.SenderName = ""
		}
	}
	return row
}

// meshProblems reports the selected meshes that are not connected (a
// broker that cannot be reached or cannot prove its key, a kick or ban):
// what is stored can still be read, but the user must learn that what the
// broker holds could not be collected, or will never be.
func (v *viaDaemon) meshProblems(ctx context.Context, meshes []config.Mesh, sink inboxSink, failed map[string]bool) (reported map[string]bool) {
	reported = map[string]bool{}
	var h localapi.Health
	if _, err := v.api.Do(ctx, "GET", "/v1/health", nil, &h); err != nil {
		return reported
	}
	for _, m := range meshes {
		p, ok := h.MeshErrors[m.Slug]
		if !ok || failed[m.Slug] {
			continue // failed meshes were reported already
		}
		sink.MeshProblem(m.Slug, &cliui.Error{Code: p.Code, Message: p.Message, Hint: p.Hint})
		reported[m.Slug] = true
	}
	return reported
}

// storedRows lists a mesh's stored rows, oldest first (unread only when
// asked), after the daemon collected what the broker holds. limit takes
// the oldest unread rows with unread (a backlog is read in order, the rest
// stay for next time, as on the direct path), else the newest rows.
func (v *viaDaemon) storedRows(ctx context.Context, slug string, unread bool, limit int) ([]localapi.InboxRow, error) {
	// sync: the daemon first collects what the broker holds, so a daemon
	// started by this very command shows queued messages too.
	return v.inboxRows(ctx, url.Values{"mesh": {slug}, "sync": {"true"}}, unread, limit)
}

// keptRows lists, as storedRows, the rows the daemon keeps of meshes it
// no longer serves (mesh leave): of mesh slug, or of every such mesh
// ("" ), with no broker to collect from.
func (v *viaDaemon) keptRows(ctx context.Context, slug string, unread bool, limit int) ([]localapi.InboxRow, error) {
	q := url.Values{"left": {"true"}}
	if slug != "" {
		q.Set("mesh", slug)
	}
	return v.inboxRows(ctx, q, unread, limit)
}

func (v *viaDaemon) inboxRows(ctx context.Context, q url.Values, unread bool, limit int) ([]localapi.InboxRow, error) {
	if unread {
		q.Set("unreadOnly", "true")
		q.Set("oldest", "true")
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var rows []localapi.InboxRow
	if _, err := v.api.Do(ctx, "GET", "/v1/inbox?"+q.Encode(), nil, &rows); err != nil {
		return nil, daemonError(err)
	}
	// Oldest first by the daemon's sequence, whichever order it answered
	// in (a daemon of an older version ignores oldest).
	slices.SortStableFunc(rows, func(a, b localapi.InboxRow) int { return cmp.Compare(seqOfRow(a), seqOfRow(b)) })
	return rows, nil
}

// seqOfRow is a stored row's place in the daemon's inbox (its id).
func seqOfRow(r localapi.InboxRow) uint64 {
	n, _ := strconv.ParseUint(r.ID, 10, 64)
	return n
}

// show hands rows to the sink and then, with --mark-seen, marks them seen
// (only after they were shown).
func (v *viaDaemon) show(ctx context.Context, rows []localapi.InboxRow, markSeen bool, sink inboxSink) error {
	return v.showRows(ctx, rows, markSeen, sink, false)
}

// showRows is show; left: the rows are of meshes left, which a human's
// listing names whatever else it shows.
func (v *viaDaemon) showRows(ctx context.Context, rows []localapi.InboxRow, markSeen bool, sink inboxSink, left bool) error {
	if len(rows) == 0 {
		return nil
	}
	out := make([]inboxRow, len(rows))
	ids := make([]string, 0, len(rows))
	for i, r := range rows {
		out[i] = inboxRowOf(r)
		out[i].meshLeft = left
		if r.SeenAt == 0 {
			ids = append(ids, r.ID)
		}
	}
	if err := sink.Rows(out); err != nil {
		return err
	}
	if markSeen && len(ids) > 0 {
		if _, err := v.api.Do(ctx, "POST", "/v1/inbox/seen", localapi.SeenRequest{IDs: ids}, nil); err != nil {
			return daemonError(err)
		}
	}
	return nil
}

// readKeptSink is an inbox sink that says, when no new message was shown,
// that messages read before are kept (a human's listing).
type readKeptSink interface {
	WantsReadKept() bool
	ReadKept()
}

// Inbox lists the daemon's stored rows, oldest first: the unread ones
// (opts.Unread), else all of them. With opts.MarkSeen, rows are marked only
// after they were shown.
func (v *viaDaemon) Inbox(ctx context.Context, meshes []config.Mesh, opts inboxOptions, sink inboxSink) error {
	failed := map[string]bool{}
	shown := 0
	for _, m := range meshes {
		if opts.Limit > 0 && shown >= opts.Limit {
			break // --limit counts across meshes, as on the direct path
		}
		limit := 0
		if opts.Limit > 0 {
			limit = opts.Limit - shown
		}
		rows, err := v.storedRows(ctx, m.Slug, opts.Unread, limit)
		if errors.Is(err, localapi.ErrUnreachable) {
			// The daemon itself does not answer: every further request
			// (the next mesh, the mesh check) would wait as long again.
			return err
		}
		if err != nil {
			sink.MeshFailed(m.Slug, err)
			failed[m.Slug] = true
			continue
		}
		if err := v.show(ctx, rows, opts.MarkSeen, sink); err != nil {
			return err
		}
		shown += len(rows)
	}
	if opts.Left && (opts.Limit == 0 || shown < opts.Limit) {
		// What the daemon keeps of meshes left (mesh leave says inbox
		// reads it), after the joined meshes' rows.
		limit := 0
		if opts.Limit > 0 {
			limit = opts.Limit - shown
		}
		rows, err := v.keptRows(ctx, "", opts.Unread, limit)
		if errors.Is(err, localapi.ErrUnreachable) {
			return err
		}
		if err == nil {
			rows = slices.DeleteFunc(rows, func(r localapi.InboxRow) bool {
				return slices.ContainsFunc(meshes, func(m config.Mesh) bool { return m.Slug == r.Mesh || m.MeshID == r.Mesh })
			})
			if err := v.showRows(ctx, rows, opts.MarkSeen, sink, true); err != nil {
				return err
			}
			shown += len(rows)
		}
	}
	if k, ok := sink.(readKeptSink); ok && shown == 0 && opts.Unread && k.WantsReadKept() {
		// Nothing new: say where the messages read before are, if any.
		read := opts.Left && v.keeps(ctx, "")
		for _, m := range meshes {
			if read || failed[m.Slug] {
				continue
			}
			var one []localapi.InboxRow
			q := url.Values{"mesh": {m.Slug}, "limit": {"1"}}
			if _, err := v.api.Do(ctx, "GET", "/v1/inbox?"+q.Encode(), nil, &one); err == nil && len(one) > 0 {
				read = true
			}
		}
		if read {
			k.ReadKept()
		}
	}
	// Reported after the listing, whose sync waits for a mesh that is
	// still connecting.
	v.meshProblems(ctx, meshes, sink, failed)
	return nil
}

// InboxKept lists what a running daemon keeps of the meshes left (mesh
// leave): of mesh slug, or of all of them (""), as Inbox lists a mesh's.
func (v *viaDaemon) InboxKept(ctx context.Context, slug string, opts inboxOptions, sink inboxSink) error {
	rows, err := v.keptRows(ctx, slug, opts.Unread, opts.Limit)
	if err != nil {
		return err
	}
	if err := v.showRows(ctx, rows, opts.MarkSeen, sink, true); err != nil {
		return err
	}
	if k, ok := sink.(readKeptSink); ok && len(rows) == 0 && opts.Unread && k.WantsReadKept() {
		if v.keeps(ctx, slug) {
			k.ReadKept()
		}
	}
	return nil
}

// keeps reports whether the daemon keeps a row of mesh slug left (of any
// mesh left: "").
func (v *viaDaemon) keeps(ctx context.Context, slug string) bool {
	q := url.Values{"left": {"true"}, "limit": {"1"}}
	if slug != "" {
		q.Set("mesh", slug)
	}
	var one []localapi.InboxRow
	_, err := v.api.Do(ctx, "GET", "/v1/inbox?"+q.Encode(), nil, &one)
	return err == nil && len(one) > 0
}

// Follow prints the unseen messages first (as the direct path prints what
// the broker held), then streams the daemon's message events; a dropped
// stream resumes from the last event id, so nothing is skipped or shown
// twice. It listens before it lists, and skips the events of rows the
// backlog already showed.
func (v *viaDaemon) Follow(ctx context.Context, meshes []config.Mesh, opts inboxOptions, sink inboxSink) error {
	want := map[string]bool{}
	q := ""
	for _, m := range meshes {
		want[m.Slug] = true
	}
	if len(meshes) == 1 {
		q = "mesh=" + url.QueryEscape(meshes[0].Slug)
	}
	stream, err := v.api.Events(ctx, "", q)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return daemonError(err)
	}
	// last is where a stream that ended resumes (Last-Event-ID): the
	// newest stored row before the backlog is read. Older rows the
	// backlog shows (the unread ones); newer ones come as events, or in
	// the replay of a resumed stream.
	last, err := v.newestRow(ctx, q)
	if err != nil {
		stream.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return daemonError(err)
	}
	states := map[string]string{} // the meshes' states as broker_status events said
	// seed takes the meshes' states from the daemon (at the start, and
	// from a daemon started again): a mesh lost while it is open is said
	// so, not one a daemon is connecting for the first time. At the start
	// it runs before the backlog is listed, right after the stream is
	// subscribed: a state read later could already be that of an outage
	// whose event waits in the stream, which would then change nothing,
	// and the outage went unsaid (a broker stopped while a long backlog
	// was printed, or on a loaded machine just after a short one).
	seed := func() {
		clear(states)
		var st localapi.Status
		if _, err := v.api.Do(ctx, "GET", "/v1/status", nil, &st); err == nil {
			maps.Copy(states, st.Meshes)
		}
	}
	seed()
	// The meshes said to be in trouble: one whose connection to its
	// broker is lost while it is followed is said so once, and once more
	// when it is back (a script could not tell "nobody writes" from "the
	// broker is gone").
	troubled := v.meshProblems(ctx, meshes, sink, nil)
	shown := 0
	var backlog uint64 // the newest row the backlog showed
	for _, m := range meshes {
		rows, err := v.storedRows(ctx, m.Slug, true, 0)
		if err != nil {
			sink.MeshFailed(m.Slug, err)
			continue
		}
		if opts.Limit > 0 && len(rows) > opts.Limit-shown {
			rows = rows[:opts.Limit-shown]
		}
		for _, r := range rows {
			if n, _ := strconv.ParseUint(r.ID, 10, 64); n > backlog {
				backlog = n
			}
		}
		if err := v.show(ctx, rows, opts.MarkSeen, sink); err != nil {
			stream.Close()
			return err
		}
		shown += len(rows)
		sink.Following(m.Slug)
	}
	if opts.Limit > 0 && shown >= opts.Limit {
		stream.Close()
		return nil
	}
	notice := func(code, msg string) { sink.Notice("", cliui.Errorf(code, "%s", msg)) }
	for {
		if stream == nil {
			if stream, err = v.resubscribe(ctx, last, q, notice); err != nil {
				return err
			}
			seed()
		}
		ev, err := stream.Next()
		if err != nil {
			stream.Close()
			stream = nil
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		}
		if ev.ID != "" {
			last = ev.ID
		}
		if ev.Type == localapi.EventBrokerStatus {
			// A mesh whose member was kicked, removed or banned will not
			// come back by itself: stop following it and say why. One whose
			// broker cannot prove its key is checked again by the daemon
			// now and then: say so, once, and go on following.
			var bs localapi.BrokerStatusEvent
			if json.Unmarshal(ev.Data, &bs) != nil || !want[bs.Mesh] {
				continue
			}
			was := states[bs.Mesh]
			states[bs.Mesh] = bs.State
			switch {
			case (bs.State == localapi.MeshReconnecting || bs.State == localapi.MeshConnecting) && was == localapi.MeshOpen && !troubled[bs.Mesh]:
				troubled[bs.Mesh] = true
				sink.MeshProblem(bs.Mesh, meshError(bs.Mesh, cliui.Errorf(cliui.CodeUnreachable,
					"the daemon lost its connection to the broker and reconnects by itself; this follow goes on, and what arrives meanwhile is shown once it is back")))
			case bs.State == localapi.MeshOpen && troubled[bs.Mesh]:
				delete(troubled, bs.Mesh)
				sink.MeshBack(bs.Mesh, "mesh "+bs.Mesh+": the daemon is connected to the broker again")
			}
			if bs.State == localapi.MeshBrokerKeyMismatch && was != bs.State {
				msg := strings.TrimPrefix(bs.Error, bs.State+": ")
				if msg == "" {
					msg = "the server at the broker's address cannot prove the pinned broker key"
				}
				sink.MeshProblem(bs.Mesh, meshError(bs.Mesh, cliui.Errorf(bs.State, "%s; nothing new arrives until the real broker answers there again (the daemon checks every few minutes)", msg).
					WithHint(hintFor(bs.State))))
			}
			if err := meshEnded(bs); err != nil {
				delete(want, bs.Mesh)
				if len(want) == 0 {
					stream.Close()
					return err
				}
				sink.MeshFailed(bs.Mesh, err)
			}
			continue
		}
		if ev.Type != localapi.EventMessage {
			continue
		}
		var r localapi.InboxRow
		if json.Unmarshal(ev.Data, &r) != nil || !want[r.Mesh] {
			continue
		}
		if n, _ := strconv.ParseUint(r.ID, 10, 64); n <= backlog {
			continue // shown with the backlog
		}
		if err := v.show(ctx, []localapi.InboxRow{r}, opts.MarkSeen, sink); err != nil {
			stream.Close()
			return err
		}
		shown++
		if opts.Limit > 0 && shown >= opts.Limit {
			stream.Close()
			return nil
		}
	}
}

// meshEnded is the error of a broker_status event that says this
// member was kicked, removed or banned (nil for any other state): the
// mesh will not come back by itself, and a follower stops and says why.
func meshEnded(bs localapi.BrokerStatusEvent) error {
	if bs.State != localapi.MeshKicked && bs.State != localapi.MeshRemoved && bs.State != localapi.MeshBanned {
		return nil
	}
	msg := strings.TrimPrefix(bs.Error, bs.State+": ")
	switch {
	case bs.State == localapi.MeshBanned:
		msg = bannedText // the broker's words say "removed"
	case msg == "":
		msg = "the broker ended this member's connection (" + bs.State + ")"
	}
	return meshError(bs.Mesh, cliui.Errorf(bs.State, "%s", msg).WithHint(hintFor(bs.State)))
}

// newestRow is the id of the newest row in the daemon's inbox (of the
// mesh q names, else of all), "0" when there is none.
func (v *viaDaemon) newestRow(ctx context.Context, q string) (string, error) {
	path := "/v1/inbox?limit=1"
	if q != "" {
		path += "&" + q
	}
	var rows []localapi.InboxRow
	if _, err := v.api.Do(ctx, "GET", path, nil, &rows); err != nil {
		return "", err
	}
	var newest uint64
	for _, r := range rows {
		newest = max(newest, seqOfRow(r))
	}
	return strconv.FormatUint(newest, 10), nil
}

// The codes of a follower's notices about its daemon (resubscribe), the
// `notice` of inbox --follow --json's notice lines.
const (
	noticeDaemonRestarted   = "daemon_restarted"
	noticeDaemonUnavailable = "daemon_unavailable"
)

// followRetryMax caps the wait between a follower's attempts to reach the
// daemon again.
const followRetryMax = 5 * time.Second

// resubscribe opens the daemon's event stream again for a follower
// (inbox --follow, topic tail) whose stream ended, replaying the message
// events after last when it is not empty. A daemon that stopped (a crash,
// a restart, an upgrade) is waited for, and started again as any verb
// would start it, unless `daemon down` stopped it (then only waited for:
// localapi.Reconnect), with a growing pause between attempts: a
// follower runs for hours and does not give up because the daemon was
// away. notice tells a human that the daemon was gone once it is back, and
// once per reason why it cannot be started meanwhile. Only a daemon that
// answers with a refusal, an unsafe socket or the end of ctx ends it.
func (v *viaDaemon) resubscribe(ctx context.Context, last, q string, notice func(code, msg string)) (*localapi.EventStream, error) {
	gone, said := false, ""
	for attempt := 0; ; attempt++ {
		stream, err := v.api.Events(ctx, last, q)
		if err == nil {
			if gone {
				notice(noticeDaemonRestarted, "the daemon stopped or restarted; reconnected, following again")
			}
			return stream, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, localapi.ErrUnreachable) {
			return nil, daemonError(err)
		}
		gone = true
		api, cerr := localapi.Reconnect(ctx, v.home)
		switch {
		case cerr == nil:
			api.SessionToken = v.api.SessionToken
			v.api = api
			if attempt == 0 {
				continue // try the stream at once
			}
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(cerr, localapi.ErrUnsafeSocket):
			return nil, cliui.Errorf("unreachable", "the daemon cannot be used: %v", cerr).
				WithHint("remove the socket or fix its directory's owner and mode, then claudemesh daemon up")
		case errors.Is(cerr, localapi.ErrStoppedByUser):
			if msg := "the daemon was stopped with daemon down; following again once " + config.Invocation(v.home) + " daemon up (or another verb) starts it"; msg != said {
				notice(noticeDaemonUnavailable, msg)
				said = msg
			}
		default:
			if msg := "the daemon stopped and could not be started again (" + startFailure(cerr) + "); trying again every few seconds"; msg != said {
				notice(noticeDaemonUnavailable, msg)
				said = msg
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(200*time.Millisecond<<min(attempt, 5), followRetryMax)):
		}
	}
}

func (v *viaDaemon) MessageStatus(ctx context.Context, m *config.Mesh, id string) (*messageStatusJSON, error) {
	// The broker's message_status, or (state set) the outbox's word on a
	// message not at the broker yet.
	var st struct {
		wire.MessageStatus
		ClientMessageID string `json:"clientMessageId"`
		DisplayName     string `json:"displayName"`
		State           string `json:"state"`
		Error           string `json:"error"`
	}
	if _, err := v.api.Do(ctx, "GET", "/v1/messages/"+url.PathEscape(id)+"?mesh="+url.QueryEscape(m.Slug), nil, &st); err != nil {
		var ae *localapi.APIError
		if errors.As(err, &ae) && (ae.Body.Code == wire.CodeNotFound || ae.Body.Code == wire.CodeExpired) {
			return nil, messageNotFound(id, m.Slug, ae.Body.Code == wire.CodeExpired)
		}
		return nil, daemonError(err)
	}
	out := messageStatusOf(&st.MessageStatus)
	if st.State != "" {
		out.ClientMessageID, out.State, out.Error, out.displayName = st.ClientMessageID, st.State, st.Error, st.DisplayName
	}
	return out, nil
}

func (v *viaDaemon) Profile(ctx context.Context, m *config.Mesh, ch profileChange) error {
	var err error
	switch ch.Op {
	case opStatus:
		_, err = v.api.Do(ctx, "POST", "/v1/profile", localapi.ProfileRequest{Mesh: m.Slug, Status: ch.Value}, nil)
	case opSummary:
		s := ch.Value
		_, err = v.api.Do(ctx, "POST", "/v1/profile", localapi.ProfileRequest{Mesh: m.Slug, Summary: &s}, nil)
	case opGroupJoin:
		_, err = v.api.Do(ctx, "POST", "/v1/groups", localapi.GroupRequest{Mesh: m.Slug, Op: "join", Name: ch.Value, Role: ch.Role}, nil)
	case opGroupLeave:
		_, err = v.api.Do(ctx, "POST", "/v1/groups", localapi.GroupRequest{Mesh: m.Slug, Op: "leave", Name: ch.Value}, nil)
	default:
		return errors.New("unknown profile change " + ch.Op)
	}
	if err != nil {
		return daemonError(err)
	}
	return nil
}

func skillOfAPI(s *localapi.Skill) skillJSON {
	tags := s.Tags
	if tags == nil {
		tags = []string{}
	}
	return skillJSON{Mesh: s.Mesh, Name: s.Name, Description: s.Description, Tags: tags, AuthorName: s.AuthorName,
		AuthorPubkey: s.AuthorPubkey, Size: s.Size, UpdatedAt: s.UpdatedAt}
}

func (v *viaDaemon) Skills(ctx context.Context, m *config.Mesh, query string) ([]skillJSON, error) {
	q := url.Values{"mesh": {m.Slug}}
	if query != "" {
		q.Set("query", query)
	}
	var list []localapi.Skill
	if _, err := v.api.Do(ctx, "GET", "/v1/skills?"+q.Encode(), nil, &list); err != nil {
		return nil, daemonError(err)
	}
	out := make([]skillJSON, 0, len(list))
	for i := range list {
		out = append(out, skillOfAPI(&list[i]))
	}
	return out, nil
}

func (v *viaDaemon) Skill(ctx context.Context, m *config.Mesh, name string) (*skillJSON, error) {
	var s localapi.Skill
	if _, err := v.api.Do(ctx, "GET", "/v1/skills/"+url.PathEscape(name)+"?mesh="+url.QueryEscape(m.Slug), nil, &s); err != nil {
		return nil, daemonError(err)
	}
	out := skillOfAPI(&s)
	out.Body = &s.Body
	return &out, nil
}

// sessionNames are the daemon's registered sessions' names by pubkey (for
// the human's inbox: "for your agent session alice-api"); empty when the
// daemon cannot say.
func (v *viaDaemon) sessionNames(ctx context.Context) map[string]string {
	out := map[string]string{}
	var list []localapi.Session
	if _, err := v.api.Do(ctx, "GET", "/v1/sessions", nil, &list); err == nil {
		for _, s := range list {
			out[s.Pubkey] = s.DisplayName
		}
	}
	return out
}

// startFailure is why localapi.Connect could not start the daemon, in
// words: what `daemon up` said.
func startFailure(err error) string {
	var se *localapi.StartError
	if errors.As(err, &se) {
		return se.Reason
	}
	return err.Error()
}
