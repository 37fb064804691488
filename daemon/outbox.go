package daemon

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/journal"
	"claudemesh/wire"
)

func pendingKey(meshID string, seq uint64) []byte {
	return append(append([]byte(meshID), 0), seqKey(seq)...)
}

// retryKey is a row's key in the retry index: its mesh, then when it is
// due, then its seq.
func retryKey(meshID string, at int64, seq uint64) []byte {
	k := append(append([]byte(meshID), 0), seqKey(uint64(at))...)
	return append(k, seqKey(seq)...)
}

// setPendingIndex puts a pending row in the index its nextAttemptAt
// belongs to (the pending index when it may go at once, the retry index
// when it backs off) and takes it out of the one it was in, or, with on
// false, out of both. The entry it had is found by the nextAttemptAt read
// with the row (indexedAt); a new row has none.
func setPendingIndex(tx *bolt.Tx, r *outboxRow, on bool) error {
	pending, retry := tx.Bucket(bOutboxPending), tx.Bucket(bOutboxRetry)
	pending.FillPercent = outboxFill
	if r.indexedAt > 0 && (!on || r.indexedAt != r.NextAttemptAt) {
		if err := retry.Delete(retryKey(r.MeshID, r.indexedAt, r.Seq)); err != nil {
			return err
		}
	}
	pk := pendingKey(r.MeshID, r.Seq)
	switch {
	case !on:
		if err := pending.Delete(pk); err != nil {
			return err
		}
	case r.NextAttemptAt > 0:
		if r.indexedAt <= 0 {
			if err := pending.Delete(pk); err != nil {
				return err
			}
		}
		if err := retry.Put(retryKey(r.MeshID, r.NextAttemptAt, r.Seq), nil); err != nil {
			return err
		}
	default:
		if err := pending.Put(pk, nil); err != nil {
			return err
		}
	}
	r.indexedAt = r.NextAttemptAt
	return nil
}

// outboxFill is how full bbolt packs the pages of the outbox and its
// pending index when it splits them. Both are keyed in enqueue order, so
// rows arrive at the right edge, and bbolt's default (half full) left
// every page of them half empty: twice the pages to write and to read.
// A little room stays for the row's growth (its broker message id, the
// receipts' recipients) when it is rewritten.
const outboxFill = 0.9

func seqOf(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

func bytesContains(b []byte, s string) bool { return bytes.Contains(b, []byte(s)) }

// Drain tuning (03-daemon "Drain").
const (
	maxAttempts  = 25
	drainWindow  = 64 // sends in flight per mesh
	previewChars = 80
)

// permanent broker errors kill a row; anything else is retried.
var permanentCodes = map[string]bool{
	wire.CodeInvalidArgument: true, wire.CodeUnknownRecipient: true, wire.CodeBlockedByRecipient: true,
	wire.CodeForbidden: true, wire.CodePayloadTooLarge: true, wire.CodeIdempotencyKeyReused: true,
	wire.CodeNotAMember: true, wire.CodeStaleKeyGen: true, wire.CodeTopicKeyMissing: true,
}

// backoff returns the retry delay after a counted attempt: 1, 2, 4, 8, 16,
// then 30 s, with jitter (the client package's schedule).
func backoff(attempts int) time.Duration { return client.Backoff(attempts-1, 0) }

// accept runs the outbox accept algorithm in 03-daemon's order:
// idempotency, mesh, resolution, encryption, durable store, then 202.
//
// A session (sess non-nil) writing to its own mesh sends as its session key;
// its rows go out on its own connection.
func (d *Daemon) accept(ctx context.Context, req localapi.SendRequest, idemHeader string, sess *sessionRT) (*localapi.SendResponse, int, *apiError) {
	if req.ClientMessageID == "" {
		req.ClientMessageID = idemHeader
	}
	if req.ClientMessageID == "" {
		req.ClientMessageID = client.NewID()
	} else if !wire.ValidReqID(req.ClientMessageID) {
		return nil, 0, badRequest("invalid_argument", "clientMessageId must match ^[A-Za-z0-9._:-]{1,64}$")
	}
	if strings.TrimSpace(req.To) == "" {
		return nil, 0, badRequest("invalid_argument", "to is required")
	}
	if req.Message == "" {
		return nil, 0, badRequest("invalid_argument", "message is required")
	}
	if len(req.Message) > client.MaxPlaintext {
		return nil, 0, badRequest(wire.CodePayloadTooLarge, "message is larger than 64 KiB")
	}
	if !utf8.ValidString(req.Message) {
		return nil, 0, badRequest("invalid_argument", "message is not valid UTF-8")
	}
	switch req.Priority {
	case "", wire.PriorityNow, wire.PriorityNext, wire.PriorityLow:
	default:
		return nil, 0, badRequest("invalid_argument", "priority must be now, next or low")
	}
	fp := fingerprint(req)

	// 1. Idempotency first, without touching the network.
	if resp, status, aerr := d.existing(req.ClientMessageID, fp); resp != nil || aerr != nil {
		return resp, status, aerr
	}
	// 2. The mesh: the named one, else the calling session's, else the
	// only one.
	slug := req.Mesh
	if slug == "" && sess != nil {
		slug = sess.rec.MeshID
	}
	m, aerr := d.chooseMesh(slug)
	if aerr != nil {
		return nil, 0, aerr
	}
	if aerr := m.refusesSends(); aerr != nil {
		return nil, 0, aerr
	}
	if sess != nil && sess.rec.MeshID == m.cfg.MeshID {
		if aerr := sess.refusal(m); aerr != nil {
			return nil, 0, aerr
		}
	}
	// 3. Resolve.
	sender := m.key
	if sess != nil && sess.rec.MeshID == m.cfg.MeshID {
		sender = sess.key
	}
	self := sender.PublicHex()
	t, aerr := m.resolve(ctx, req.To, self)
	if aerr != nil {
		return nil, 0, aerr
	}
	// 4. Encrypt now: the plaintext is never stored.
	row := &outboxRow{
		ClientMessageID: req.ClientMessageID, Fingerprint: fp, Mesh: m.cfg.Slug, MeshID: m.cfg.MeshID,
		To: req.To, DisplayName: t.DisplayName, TargetSpec: t.Spec, Kind: t.Kind, Priority: req.Priority,
		ReplyToID: req.ReplyToID, Mentions: req.Mentions, SenderPubkey: self, Preview: preview(req.Message),
		State: statePending, EnqueuedAt: time.Now().UnixMilli(),
	}
	if id := d.sentID(m.cfg.MeshID, req.ReplyToID); id != "" {
		// A reply to a message or post of ours by the id send printed
		// (the clientMessageId): readers know it by the broker's id.
		row.ReplyToID = id
	} else if req.ReplyToID != "" && !wire.ValidULID(req.ReplyToID) && !d.sentHere(m.cfg.MeshID, req.ReplyToID) {
		// Neither a message id (a ULID, as inbox shows it) nor the id of
		// a message of ours: readers would be shown a reply to nothing.
		return nil, 0, badRequest(wire.CodeInvalidArgument, fmt.Sprintf("replyToId %q is not a message id: it is the messageId of the message this answers "+
			"(26 characters, as inbox --json shows it), or the id send printed for a message of yours in %s", clipID(req.ReplyToID), m.cfg.Slug))
	}
	if err := d.seal(m, sender, row, t, []byte(req.Message)); err != nil {
		return nil, 0, clientError(err)
	}
	// 5. Store durably (in the accept journal: acceptlog.go), then
	// answer. The drain is woken once the row is in daemon.db.
	for {
		dup, stored, err := d.acc.add(row)
		if errors.Is(err, journal.ErrFull) {
			return nil, 0, d.acc.fullError()
		}
		if err != nil {
			return nil, 0, internalError(err)
		}
		if dup != nil && dup.err != nil {
			continue // a concurrent request's write failed: try ours
		}
		if dup != nil || stored {
			// A concurrent identical request won the race.
			return d.existing(row.ClientMessageID, fp)
		}
		break
	}
	if d.failpoint == failAcceptKill {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	online := t.Online
	state, _ := m.stateOf()
	resp := &localapi.SendResponse{
		ClientMessageID: row.ClientMessageID, Mesh: m.cfg.Slug, Status: localapi.StatusAccepted, MeshState: state,
		Target: localapi.Target{Kind: t.Kind, TargetSpec: t.Spec, DisplayName: t.DisplayName},
	}
	if t.Kind == wire.KindBox {
		resp.Target.Online = &online
		if online {
			resp.Target.Status = t.Status
		}
	}
	return resp, 202, nil
}

// existing answers a repeat of a clientMessageId: the same request returns
// the row (200, duplicate), a different one is a 409.
func (d *Daemon) existing(cmid, fp string) (*localapi.SendResponse, int, *apiError) {
	// The journal first: a row leaves it only once it is in daemon.db.
	prev := d.acc.lookup(cmid)
	if prev == nil && d.cmids.mayHave(cmid) {
		d.db.View(func(tx *bolt.Tx) error {
			prev, _ = outboxByCMID(tx, cmid)
			return nil
		})
	}
	if prev == nil {
		return nil, 0, nil
	}
	if prev.Fingerprint != fp {
		return nil, 0, &apiError{status: 409, code: wire.CodeIdempotencyKeyReused,
			msg: "clientMessageId " + cmid + " was already used for a different message", rowStatus: publicStatus(prev.State)}
	}
	resp := &localapi.SendResponse{
		ClientMessageID: prev.ClientMessageID, MessageID: prev.BrokerMessageID, Mesh: prev.Mesh,
		Status: publicStatus(prev.State), Duplicate: true, Error: prev.LastError, ErrorCode: prev.ErrorCode,
		Target: localapi.Target{Kind: prev.Kind, TargetSpec: prev.TargetSpec, DisplayName: prev.DisplayName},
	}
	return resp, 200, nil
}

// sentID is the broker's id of what this daemon sent in the mesh under a
// clientMessageId (the id send and topic post print), or "" when it sent
// nothing under it or the broker has not taken it yet.
func (d *Daemon) sentID(meshID, cmid string) string {
	if cmid == "" || !d.cmids.mayHave(cmid) {
		return ""
	}
	var id string
	d.db.View(func(tx *bolt.Tx) error {
		if row, _ := outboxByCMID(tx, cmid); row != nil && row.MeshID == meshID {
			id = row.BrokerMessageID
		}
		return nil
	})
	return id
}

// sentHere reports whether cmid is the clientMessageId of a row this
// daemon accepted for the mesh (sent or not yet).
func (d *Daemon) sentHere(meshID, cmid string) bool {
	// The journal first: a row leaves it only once it is in daemon.db.
	if prev := d.acc.lookup(cmid); prev != nil {
		return prev.MeshID == meshID
	}
	if !d.cmids.mayHave(cmid) {
		return false
	}
	found := false
	d.db.View(func(tx *bolt.Tx) error {
		row, _ := outboxByCMID(tx, cmid)
		found = row != nil && row.MeshID == meshID
		return nil
	})
	return found
}

// clipID shortens an id a caller gave for an error message.
func clipID(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// resolve resolves a send target (03-daemon "Outbox" step 3) against the
// directory, which member_changed and presence events keep current. A
// group is resolved against the broker's live list when the mesh is open
// (group membership is not announced by events). A target the directory
// does not know is looked up on the broker before the send is refused:
// unknown_target only when the broker itself does not know it, and when
// the broker cannot be asked, an unreachable error that says so — never a
// "no member called" that is only the cache's opinion.
func (m *meshRT) resolve(ctx context.Context, to, self string) (*client.Target, *apiError) {
	if strings.HasPrefix(strings.TrimSpace(to), "#") {
		return m.topics.target(ctx, to) // topics.go
	}
	since := time.Now()
	if m.neverConnected() {
		// A mesh joined a moment ago has no directory yet: give its first
		// connection a moment.
		m.waitOpen(connectWait)
	}
	dir := m.directoryResolver()
	live := false
	if strings.HasPrefix(strings.TrimSpace(to), "@") && m.conn() != nil {
		if lm, lp, err := m.liveDirectory(ctx, since); err == nil {
			dir, live = client.NewDirectory(lm, lp), true
		}
	}
	t, err := dir.Resolve(to, self)
	if err == nil || client.CodeOf(err) != wire.CodeUnknownTarget || live {
		if err != nil {
			return nil, clientError(err)
		}
		return t, nil
	}
	members, peers, lerr := m.liveDirectory(ctx, since)
	if lerr != nil {
		u := m.unavailable()
		if !errors.Is(lerr, errNotConnected) {
			u = &apiError{status: 503, code: client.CodeUnreachable, hint: u.hint,
				msg: fmt.Sprintf("mesh %s: could not ask the broker at %s (%v)", m.cfg.Slug, m.cfg.BrokerURL, lerr)}
		}
		if u.code != client.CodeUnreachable {
			// The broker answered and refuses this member (removed,
			// kicked, banned, not the pinned key): that is the news, with
			// its own advice; "retry once the broker is reachable" was not.
			return nil, u
		}
		spec := strings.TrimSpace(to)
		status := config.InvocationWithHome(m.d.home) + " daemon status"
		if group, ok := strings.CutPrefix(spec, "@"); ok {
			// A group is not a member: its members are whoever the
			// broker says is in it when the message is sent.
			u.msg = fmt.Sprintf("nobody in the last known peer list of %s is in group %s, and who is in it cannot be checked now: %s",
				m.cfg.Slug, strconv.Quote(group), u.msg)
			u.hint = "nothing was sent; a group's members are looked up on the broker: retry once it is reachable (" + status + ")"
			return nil, u
		}
		u.msg = fmt.Sprintf("%s is not in the last known member list of %s, and it cannot be checked now: %s",
			strconv.Quote(spec), m.cfg.Slug, u.msg)
		// Nothing was accepted: say how to send it anyway.
		u.hint = "nothing was sent; retry once the broker is reachable (" + status + "), or send to the full 64-hex pubkey, which is queued while the broker is away"
		return nil, u
	}
	t, err = client.ResolveTarget(to, members, peers, self)
	if err != nil {
		return nil, clientError(err)
	}
	return t, nil
}

// fingerprint identifies a send request for idempotency (03-daemon step 1).
func fingerprint(r localapi.SendRequest) string {
	h := sha256.New()
	for _, p := range []string{r.Mesh, r.To, r.Priority, r.ReplyToID, r.Message} {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func preview(s string) string {
	if utf8.RuneCountInString(s) <= previewChars {
		return s
	}
	r := []rune(s)
	return string(r[:previewChars]) + "…"
}

// seal encrypts the message per 02-crypto into the row, as sender (the
// member key, or the calling session's key).
func (d *Daemon) seal(m *meshRT, sender *cmcrypto.Identity, row *outboxRow, t *client.Target, plaintext []byte) error {
	switch t.Kind {
	case wire.KindBox:
		pub, err := cmcrypto.ParsePublicKey(t.Spec)
		if err != nil {
			return err
		}
		k, err := cmcrypto.Precompute(pub, sender) // cached per pair
		if err != nil {
			return err
		}
		row.Nonce, row.Ciphertext = k.Seal(plaintext)
		return nil
	case wire.KindMulti:
		s, err := client.SealMulti(m.cfg.MeshID, t.Spec, plaintext, t.Recipients, sender, client.SendOptions{})
		if err != nil {
			return err
		}
		row.Nonce, row.Ciphertext, row.Signature, row.Keys = s.Nonce, s.Ciphertext, s.Signature, s.Keys
		return nil
	case wire.KindTopic:
		return m.topics.sealTopicRow(sender, row, t, plaintext) // topics.go
	}
	return errors.New("unsupported target kind " + t.Kind)
}

// drain is a mesh's worker: while the mesh is open it sends due pending rows
// in enqueue order, up to drainWindow in flight, and records each outcome.
// While the mesh is not open, rows wait as pending and use no attempts, so a
// long broker outage never kills queued messages.
//
// A row being sent is "inflight" in memory only (d.claims), not in
// daemon.db: in daemon.db it stays pending until its outcome is recorded.
// Storing inflight cost a commit per drain round, which the drain waited
// for, and a row write per message, and bought nothing: a crash put every
// inflight row back to pending at the next start anyway (recoverOutbox),
// which is what a row that stayed pending is. The status counts and the
// outbox list show the in-memory state (inflightCount, isSending).
func (m *meshRT) drain(ctx context.Context) {
	defer m.endClaims() // once the sends in flight have recorded theirs
	var inflight sync.WaitGroup
	defer inflight.Wait()
	sem := make(chan struct{}, drainWindow)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := time.Duration(-1)
		if m.conn() != nil {
			due, wait := m.due(cap(sem) - len(sem))
			next = wait
			// Each row goes out on the connection of its sender (the
			// mesh's, or its session's), taken now: a row whose
			// connection dropped since due() read it waits for the next
			// round. The rows due() returned are claimed (sendclaim.go).
			var rows []*outboxRow
			conns := map[uint64]*client.Conn{}
			for _, r := range due {
				if c := m.sendConn(r.SenderPubkey); c != nil {
					rows = append(rows, r)
					conns[r.Seq] = c
				} else {
					m.d.unclaim(r.Seq)
				}
			}
			// The frames are written here, in enqueue order, and only the
			// waits for their acks run concurrently: sends to one
			// recipient must reach the broker in the order they were
			// accepted (it keeps FIFO per recipient from there).
			for _, r := range rows {
				c := conns[r.Seq]
				sem <- struct{}{}
				inflight.Add(1)
				m.order.fly(r.Seq, orderKey(r))
				await := m.startSend(ctx, c, r)
				go func() {
					defer inflight.Done()
					// The window is of frames the broker has not acked: a
					// slot is free once the ack is here, while the ack's
					// record waits for its commit (up to commitLinger). The
					// row stays claimed until recorded (and until the next
					// round, sendclaim.go), so no round sends it again
					// meanwhile. Holding the slot through the commit
					// capped the drain at drainWindow rows a commit, and it
					// fell behind a burst of accepts. A failed send keeps
					// its slot until its failure is recorded (and its line
					// held, outboxorder.go), as before.
					freed := false
					await(func() {
						freed = true
						<-sem
						m.kick()
					})
					m.order.landed(r.Seq)
					m.d.settle(m, r.Seq)
					if !freed {
						<-sem
					}
					m.kick()
				}()
			}
		}
		if m.conn() == nil {
			// No round runs while the mesh is not open: the claims of
			// recorded outcomes go now (sendclaim.go; failRemoved's
			// rows among them), as a round would release them.
			m.releaseBetweenRounds()
			if m.takeSettleRemoved() {
				m.failRemoved()
			}
			m.freshMu.Lock()
			m.fresh = nil // read from daemon.db once the mesh is open
			m.freshMu.Unlock()
		}
		if next < 0 {
			next = time.Hour
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// due returns up to n pending rows of this mesh that are due and not
// claimed, the earliest accepted first, each now claimed for the drain
// (sendclaim.go: the caller sends or unclaims it), and how long until
// the next one that is not yet due (-1: none). The candidates are the rows not tried yet (the
// pending index, in enqueue order) and the rows backing off whose time has
// come (the retry index, read up to its first key not yet due): a round
// decodes the rows it returns and those it passes over (of a session that
// is not connected), not the rows claimed or backing off.
//
// A row the applier handed over (fresh) is used as it was copied: found
// in an index and not claimed, it is pending; what due and the send use of it
// (its frame, its sender) never changes, and recordSend reads the row
// again. The hand-over is taken whole each round:
// rows not reached are read from daemon.db later.
func (m *meshRT) due(n int) ([]*outboxRow, time.Duration) {
	m.freshMu.Lock()
	fresh := m.fresh
	m.fresh = nil
	m.freshMu.Unlock()
	var out []*outboxRow
	wait := time.Duration(-1)
	waitFor := func(at, now int64) {
		if d := time.Duration(at-now) * time.Millisecond; wait < 0 || d < wait {
			wait = d
		}
	}
	now := time.Now().UnixMilli()
	prefix := append([]byte(m.cfg.MeshID), 0)
	m.lineMu.Lock()
	defer m.lineMu.Unlock()
	// Before the read: the claims of rows whose outcomes are committed by
	// now, which this round's read holds (later ones wait for the next).
	m.releaseSettled()
	m.d.db.View(func(tx *bolt.Tx) error {
		g := m.order.gate(tx, m.cfg.MeshID)
		m.forgetReleasedLines(g.heads)
		// consider adds the row seq to out, claimed, when it can go now
		// (once: the claim keeps an index gone wrong from sending a row
		// twice in a round).
		consider := func(seq uint64) {
			if k, known := m.lineOf[seq]; known && !g.mayLine(seq, k) {
				return // behind its held line's head, as a round read before
			}
			if m.d.claimed(seq) {
				return
			}
			r := fresh[seq]
			if r == nil {
				var err error
				if r, err = getOutbox(tx, seq); err != nil {
					return
				}
			}
			if r.State != statePending {
				return
			}
			if r.SenderPubkey != "" && r.SenderPubkey != m.key.PublicHex() && m.sendConn(r.SenderPubkey) == nil {
				return // its session is not connected: it waits, using no attempt
			}
			if k := orderKey(r); !g.mayLine(r.Seq, k) {
				// An earlier row of its line goes again first
				// (outboxorder.go). Remembered, so the next rounds pass
				// over it unread while the line is held.
				if _, known := m.lineOf[seq]; !known && len(m.lineOf) < maxLineOf {
					if m.lineOf == nil {
						m.lineOf, m.lineRows = map[uint64]string{}, map[string][]uint64{}
					}
					m.lineOf[seq] = k
					m.lineRows[k] = append(m.lineRows[k], seq)
				}
				return
			}
			if r.NextAttemptAt > now {
				waitFor(r.NextAttemptAt, now)
				return
			}
			if m.d.claimForSend(seq) {
				out = append(out, r)
			}
		}
		// The seqs of the rows whose retry time has come, from their keys
		// alone, up to the first key not yet due.
		var retries []uint64
		rc := tx.Bucket(bOutboxRetry).Cursor()
		for k, _ := rc.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = rc.Next() {
			if len(k) != len(prefix)+16 {
				continue // not a retryKey
			}
			if at := int64(binary.BigEndian.Uint64(k[len(prefix):])); at > now {
				waitFor(at, now)
				break
			}
			retries = append(retries, seqOf(k))
		}
		slices.Sort(retries)
		// Merged with the pending index in enqueue order: with one place
		// free in the window, the earliest accepted row that may go goes.
		c := tx.Bucket(bOutboxPending).Cursor()
		k, _ := c.Seek(prefix)
		for len(out) < n {
			more := k != nil && bytes.HasPrefix(k, prefix)
			switch {
			case len(retries) > 0 && (!more || retries[0] < seqOf(k)):
				consider(retries[0])
				retries = retries[1:]
			case more:
				consider(seqOf(k))
				k, _ = c.Next()
			default:
				return nil
			}
		}
		return nil
	})
	return out, wait
}

// forgetReleasedLines forgets the rows remembered behind lines that are
// not held any more (heads: the held lines' heads): they are sent, or
// will be read again in turn. Without it, a line's rows stayed for as long
// as any other line was held, and filled the places for the rows behind a
// line held for long.
func (m *meshRT) forgetReleasedLines(heads map[string]uint64) {
	if len(heads) == 0 {
		m.lineOf, m.lineRows = nil, nil
		return
	}
	for k, seqs := range m.lineRows {
		if _, held := heads[k]; held {
			continue
		}
		for _, seq := range seqs {
			delete(m.lineOf, seq)
		}
		delete(m.lineRows, k)
	}
}

// maxLineOf bounds meshRT.lineOf: the first rows of a long backlog behind
// a held line are the ones each round walks first (~100 bytes a row).
const maxLineOf = 1 << 14

// startSend queues a row's frame on c now and returns the wait for its ack,
// which calls acked once the broker has acked the send (not when it failed),
// then records the outcome.
func (m *meshRT) startSend(ctx context.Context, c *client.Conn, r *outboxRow) func(acked func()) {
	actx, cancel := context.WithTimeout(ctx, m.d.opts.AckTimeout)
	s := r.send()
	ch, err := c.SendAsync(actx, s)
	return func(acked func()) {
		defer cancel()
		var ack *wire.Ack
		var st *wire.MessageStatus
		if err == nil {
			ack, err = c.AwaitAck(actx, s, ch)
		}
		if err == nil && ack.Duplicate {
			// A resend after a lost ack: the broker's answer counts only
			// the recipients still waiting, so ask it who the message's
			// recipients are and who has it (applyAck). Without an
			// answer the counts are the ack's, as before.
			st, _ = c.MessageStatus(actx, ack.MessageID, "")
		}
		if err == nil {
			acked()
		}
		m.recordSend(ctx, r, ack, st, err, c.Identity().BrokerURL)
	}
}

// applyAck records the broker's ack of a row's send: its message id, and
// queued, sent or (when every receipt came first) delivered. st is the
// broker's message_status, asked after a duplicate ack (nil otherwise, or
// when it did not answer).
func applyAck(cur *outboxRow, ack *wire.Ack, st *wire.MessageStatus, now int64) {
	cur.BrokerMessageID = ack.MessageID
	cur.Acked, cur.SentAt, cur.LastError, cur.ErrorCode = true, now, "", ""
	if ack.Pending != nil {
		cur.Pending = *ack.Pending
		if ack.Duplicate {
			// A duplicate's pending counts only the recipients still
			// waiting: those whose receipts came (before this ack, on
			// another connection after a lost ack — a broker restart, a
			// cluster fail-over) are delivered, not gone. Without them
			// a row whose every receipt came first stayed queued.
			cur.Pending += cur.Receipts
		}
	}
	if ack.Duplicate && st != nil && len(st.Recipients) > 0 {
		// Every recipient of the message, and who has it already: the
		// receipts of those may still be on their way (a duplicate's
		// pending leaves them out), and would come after the counts
		// said nobody, or too few, had been waiting. A receipt that
		// comes later for one of them is not counted twice.
		// An expired recipient (its queue timed out, its member or
		// session gone) will never have it and sends no receipt: it is
		// counted among the recipients, as a fresh ack's pending counts
		// every recipient, and in Expired, so the row is not waited on
		// for it and does not claim it was delivered (settle).
		applyStatus(cur, st)
	}
	cur.State, cur.OnlineNow = stateQueued, 0
	if ack.Online != nil {
		cur.OnlineNow = *ack.Online
	}
	if cur.OnlineNow > 0 {
		cur.State = stateSent
	}
	settle(cur, now)
}

// applyStatus counts the broker's message_status of an acked row: every
// recipient of the message, who has it (delivered: a receipt that comes
// later for one of them is not counted twice) and whose delivery expired
// (never will have it, and sends no receipt).
func applyStatus(cur *outboxRow, st *wire.MessageStatus) {
	cur.Pending, cur.Expired = len(st.Recipients), 0
	for _, r := range st.Recipients {
		switch {
		case r.State == wire.StateDelivered && !slices.Contains(cur.DeliveredTo, r.Pubkey):
			cur.DeliveredTo = append(cur.DeliveredTo, r.Pubkey)
		case r.State == wire.StateExpired && !slices.Contains(cur.DeliveredTo, r.Pubkey):
			cur.Expired++
		}
	}
	cur.Receipts = len(cur.DeliveredTo)
}

// settle ends an acked row every recipient of which is accounted for: its
// receipt came, or (after a duplicate ack) its delivery expired. Every
// recipient has it: delivered. Some expired: they never will, so the row
// is failed with delivery_expired, saying how many have it; it is not left
// queued or sent for ever, nor called delivered. A row with recipients
// still to hear from is left as it is, and so is one the broker listed
// nobody for (recipients 0: nobody could be reached).
func settle(cur *outboxRow, now int64) {
	if !cur.Acked || cur.Receipts+cur.Expired == 0 || cur.Receipts+cur.Expired < cur.Pending {
		return
	}
	if cur.Expired == 0 {
		cur.State, cur.DeliveredAt = stateDelivered, now
		return
	}
	cur.State, cur.ErrorCode = stateDead, localapi.CodeDeliveryExpired
	cur.LastError = fmt.Sprintf("%s: the broker took it, but its delivery to %d of %d recipients expired before they had it (their queue timed out, or they left the mesh); it reached %d",
		localapi.CodeDeliveryExpired, cur.Expired, cur.Pending, min(cur.Receipts, cur.Pending))
}

// recordSend records what became of one send of a row, made on the
// connection to the node at via.
func (m *meshRT) recordSend(ctx context.Context, r *outboxRow, ack *wire.Ack, st *wire.MessageStatus, err error, via string) {
	now := time.Now().UnixMilli()
	if err == nil && m.d.killAfter > 0 && m.d.acked.Add(1) == m.d.killAfter {
		// Failpoint: die mid-drain, after the broker acked this row but
		// before the ack is recorded.
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	// A topic post sealed under a generation the topic has left (rotated
	// by another member after the accept, before this daemon knew) is
	// sealed again under the current one and sent again: it was accepted,
	// and must not be lost (reseal).
	var resealed *wire.Send
	var resealErr error
	resealPermanent := false
	if client.CodeOf(err) == wire.CodeStaleKeyGen && r.Kind == wire.KindTopic {
		resealed, resealPermanent, resealErr = m.topics.reseal(r)
	}
	m.d.updateRow(r.Seq, func(cur *outboxRow) bool {
		// In flight, the row is pending in daemon.db (drain); an
		// inflight row is one an earlier version stored.
		if cur.State != statePending && cur.State != stateInflight {
			return false
		}
		switch {
		case err == nil:
			applyAck(cur, ack, st, now)
		case resealed != nil || (resealErr != nil && !resealPermanent):
			// Counted: a post the topic keeps rotating away from ends
			// after maxAttempts like any other.
			cur.Attempts++
			cur.State, cur.NextAttemptAt = statePending, 0
			if resealed != nil && cur.Ciphertext == r.Ciphertext {
				cur.Nonce, cur.Ciphertext, cur.Signature, cur.KeyGen = resealed.Nonce, resealed.Ciphertext, resealed.Signature, resealed.KeyGen
				cur.LastError, cur.ErrorCode = "", ""
			} else if resealed == nil {
				cur.LastError = fmt.Sprintf("%v; it is sealed again under the new key when it can be (%v)", err, resealErr)
				cur.NextAttemptAt = now + backoff(cur.Attempts).Milliseconds()
			}
			if cur.Attempts >= maxAttempts {
				cur.State, cur.ErrorCode = stateDead, wire.CodeStaleKeyGen
				cur.LastError = fmt.Sprintf("%v; it could not be sealed under the new key in %d attempts", err, cur.Attempts)
			}
		case resealErr != nil:
			cur.State, cur.ErrorCode = stateDead, wire.CodeStaleKeyGen
			cur.LastError = fmt.Sprintf("%v; it could not be sealed under the new key: %v", err, resealErr)
		case client.IsPermanent(err):
			cur.State, cur.LastError, cur.ErrorCode = stateDead, err.Error(), client.CodeOf(err)
		default:
			counted, outage := classifyFailure(client.CodeOf(err), ctx.Err() != nil)
			if counted {
				cur.Attempts++
			}
			cur.LastError = err.Error()
			if cur.Attempts >= maxAttempts {
				cur.State = stateDead
				break
			}
			cur.State = statePending
			delay := time.Duration(0)
			if outage {
				delay = max(client.RetryAfter(err), backoff(3))
			}
			if counted {
				delay = backoff(cur.Attempts)
				if ra := client.RetryAfter(err); ra > delay {
					delay = ra
				}
			}
			cur.NextAttemptAt = now + delay.Milliseconds()
		}
		if err != nil && cur.State == statePending {
			m.order.hold(orderKey(cur), cur.Seq)
		}
		return true
	})
	switch {
	case err == nil:
		m.writesAccepted()
	case client.CodeOf(err) == wire.CodeUnavailable:
		m.writesRefusedBy(err, via)
	}
	if r.SenderPubkey != "" && r.SenderPubkey != m.key.PublicHex() && m.d.isDeparting(r.SenderPubkey) {
		m.d.wakeDeparted() // perhaps its last row: its connection can close
	}
}

// updateRow applies fn to a row in a transaction; when fn reports a change
// the row is stored, its pending index fixed and an outbox_status event
// published after the commit.
func (d *Daemon) updateRow(seq uint64, fn func(*outboxRow) bool) {
	var changed []rowEvent
	err := d.updateLazy(func(tx *bolt.Tx) error {
		changed = changed[:0]
		cur, err := getOutbox(tx, seq)
		if err != nil {
			return nil
		}
		before := cur.State
		if !fn(cur) {
			return nil
		}
		changed, err = writeRow(tx, cur, before, changed)
		return err
	}, func() { d.publishRows(changed) })
	if err != nil {
		d.log.Error("outbox update", "err", err)
	}
}

// rowEvent is a row whose state changed in a commit, with its event id.
type rowEvent struct {
	row *outboxRow
	id  uint64
}

// writeRow stores a changed row and fixes its pending index; when its state
// changed it allocates an event id and appends the row to changed.
func writeRow(tx *bolt.Tx, cur *outboxRow, before string, changed []rowEvent) ([]rowEvent, error) {
	if err := putOutbox(tx, cur); err != nil {
		return changed, err
	}
	// A pending row is (re)indexed even if it was pending before: its
	// nextAttemptAt is the index value.
	if before == statePending || cur.State == statePending {
		if err := setPendingIndex(tx, cur, cur.State == statePending); err != nil {
			return changed, err
		}
	}
	if before != cur.State {
		id, err := tx.Bucket(bEvents).NextSequence()
		if err != nil {
			return changed, err
		}
		changed = append(changed, rowEvent{cur, id})
	}
	return changed, nil
}

// publishRows publishes the outbox_status events of a commit, in order.
func (d *Daemon) publishRows(changed []rowEvent) {
	for _, c := range changed {
		d.events.publish(event{id: c.id, kind: localapi.EventOutboxStatus, meshID: c.row.MeshID, data: c.row.api(), outbox: c.row})
	}
}

// recordReceipts counts delivery receipts against their rows — matched by
// clientMessageId, which receipts carry, so a receipt racing its ack is
// still counted — all in one commit, and only then settles them with the
// broker (unless ack is false: the caller settles them itself). A burst of
// receipts costs one commit, not one each.
func (d *Daemon) recordReceipts(items []inboxItem, ack bool) error {
	var changed []rowEvent
	err := d.updateLazy(func(tx *bolt.Tx) error {
		changed = changed[:0]
		for _, it := range items {
			r := it.receipt
			// Read in the transaction: an earlier receipt of this batch
			// for the same (multi) row is already in it.
			cur, err := outboxByCMID(tx, r.ClientMessageID)
			if err != nil || r.ClientMessageID != cur.sendID() || (cur.BrokerMessageID != "" && cur.BrokerMessageID != r.MessageID) {
				continue // another row's (a requeued row's old message)
			}
			if cur.State == stateDelivered || cur.State == stateDead || cur.State == stateAborted {
				continue
			}
			if slices.Contains(cur.DeliveredTo, r.RecipientPubkey) {
				continue // a redelivered receipt
			}
			before := cur.State
			cur.DeliveredTo = append(cur.DeliveredTo, r.RecipientPubkey)
			cur.Receipts = len(cur.DeliveredTo)
			settle(cur, r.DeliveredAt)
			if changed, err = writeRow(tx, cur, before, changed); err != nil {
				return err
			}
		}
		return nil
	}, func() { d.publishRows(changed) })
	if err != nil {
		// Not acked: the broker delivers the receipts again.
		d.log.Error("recording receipts", "err", err)
		return err
	}
	if !ack {
		return nil
	}
	settleItems(items, func(it inboxItem) string { return it.receipt.ReceiptID })
	return nil
}

// requeue copies a failed row's routing fields into a new pending row and
// aborts the old one, in one transaction. A row the broker had taken gets
// a new id to be sent with (SendID).
func (d *Daemon) requeue(id uint64) (*outboxRow, *apiError) {
	// A row of a mesh this daemon no longer has would wait for ever.
	var meshID, slug, sender, code string
	var enqueuedAt int64
	d.db.View(func(tx *bolt.Tx) error {
		if r, err := getOutbox(tx, id); err == nil {
			meshID, slug, sender, code, enqueuedAt = r.MeshID, r.Mesh, r.SenderPubkey, r.ErrorCode, r.EnqueuedAt
		}
		return nil
	})
	m := d.meshByID(meshID)
	if meshID != "" && m == nil {
		// Whatever it failed with: every row of a mesh left is sealed
		// and signed with a key of the membership that left, and a join
		// again has a new one (told "join it again, then requeue", the
		// user joined, and the requeue was refused for good).
		return nil, leftKeyGone(slug)
	}
	if m != nil && sender != "" && sender != m.key.PublicHex() && d.sessionBySender(sender) == nil {
		// The row is sealed and signed with a key this daemon cannot send
		// as: the member's before it left the mesh (a join again has a
		// new key) or an ended session's. Requeued, it waited for ever
		// for that key's connection; and sent as the new member, the
		// broker would take it as a new message (its idempotency is per
		// sender key) though it may have reached it already. Which of
		// the two is the key's, not the failure's: a session's row that
		// failed delivery_expired, its session ended since, was said to
		// be sealed "with the key you had before you left".
		if code == localapi.CodeLeftMesh || m.earlierMembership(sender, enqueuedAt) {
			return nil, leftKeyGone(slug)
		}
		return nil, &apiError{status: 409, code: localapi.CodeSessionEnded, msg: "it cannot be sent again: it was sealed and signed with the key of an agent session that ended; send it anew"}
	}
	var fresh *outboxRow
	var aerr *apiError
	err := d.db.Update(func(tx *bolt.Tx) error {
		fresh, aerr = nil, nil
		old, err := getOutbox(tx, id)
		if err != nil {
			aerr = &apiError{status: 404, code: "not_found", msg: "no outbox row with that id"}
			return nil
		}
		if old.State != stateDead && old.State != stateAborted {
			msg := "only failed rows can be requeued (this one is " + publicStatus(old.State) + ")"
			if old.State == statePending || old.State == stateInflight {
				// An ended session's rows are still sent (departing.go).
				msg = "only failed rows can be requeued: this one is accepted, and the daemon is still sending it (it fails, with the reason, if it never can)"
			}
			aerr = &apiError{status: 409, code: "not_failed", msg: msg}
			return nil
		}
		n := *old
		n.stored, n.indexedAt = "", 0 // a new row, not the stored one
		seq, err := tx.Bucket(bOutbox).NextSequence()
		if err != nil {
			return err
		}
		n.Seq, n.State, n.Attempts, n.NextAttemptAt, n.LastError = seq, statePending, 0, 0, ""
		n.BrokerMessageID, n.Pending, n.Receipts, n.Acked, n.SentAt, n.DeliveredAt = "", 0, 0, false, 0, 0
		n.DeliveredTo, n.OnlineNow, n.ErrorCode, n.Expired = nil, 0, "", 0
		n.EnqueuedAt = time.Now().UnixMilli()
		if old.BrokerMessageID != "" {
			// The broker took it: under the id it knows, a send is a
			// duplicate of that message (expired, or settled), and
			// the row would fail again at once. It goes as a new one.
			n.SendID = client.NewID()
			if err := tx.Bucket(bOutboxCMID).Put([]byte(n.SendID), seqKey(seq)); err != nil {
				return err
			}
		}
		old.State = stateAborted
		if err := putOutbox(tx, old); err != nil {
			return err
		}
		if err := putOutbox(tx, &n); err != nil {
			return err
		}
		if err := tx.Bucket(bOutboxCMID).Put([]byte(n.ClientMessageID), seqKey(seq)); err != nil {
			return err
		}
		fresh = &n
		return setPendingIndex(tx, &n, true)
	})
	if err != nil {
		return nil, internalError(err)
	}
	if aerr != nil {
		return nil, aerr
	}
	if fresh.SendID != "" {
		d.cmids.add(fresh.SendID)
	}
	if m := d.meshBySlug(fresh.MeshID); m != nil {
		m.kick()
	}
	return fresh, nil
}

// leftKeyGone is the refusal to requeue a row sealed with the key the
// member had in mesh slug before it left.
func leftKeyGone(slug string) *apiError {
	return &apiError{status: 409, code: localapi.CodeLeftMesh, msg: "it cannot be sent again: it was sealed and signed with the key you had in " + slug +
		" before you left, which is gone (joining again gives a new key); send it anew, after checking with its recipients: if a send of it was under way when you left, the broker may have delivered it"}
}

// pruneBatch bounds the outbox rows one prune transaction deletes, so a
// first prune of a large daemon.db does not hold the committer for long.
var pruneBatch = 5000 // a variable for the tests

// pruneOutbox deletes finished rows (delivered, dead, aborted) enqueued
// more than PruneAfter ago, with their clientMessageId index entries, so
// daemon.db does not grow with every message ever sent. 03-daemon gives
// the inbox a 30-day retention and says nothing of the outbox; the same
// retention is used here. Rows still on their way (pending, inflight,
// queued, sent) are kept however old. A clientMessageId reused after its
// row was pruned is a new message (the broker's own idempotency window,
// queue TTL plus a day, is far shorter).
func (d *Daemon) pruneOutbox() {
	cutoff := time.Now().Add(-d.opts.PruneAfter).UnixMilli()
	var after uint64 // the last row looked at by a committed round
	for {
		n, more, last := 0, false, after
		// The function may run twice (store.Update retries a write alone
		// when a neighbour in its batch failed): it only reads after.
		err := d.db.Update(func(tx *bolt.Tx) error {
			n, more, last = 0, false, after
			var dead []*outboxRow
			scanned := 0
			c := tx.Bucket(bOutbox).Cursor()
			for k, v := c.Seek(seqKey(after + 1)); k != nil; k, v = c.Next() {
				if scanned == pruneBatch {
					more = true
					break
				}
				scanned++
				last = seqOf(k)
				var r outboxRow
				if err := decodeOutbox(v, &r); err != nil {
					continue // a corrupt row is left for a human to look at
				}
				if r.EnqueuedAt >= cutoff {
					break // rows are in enqueue order
				}
				if r.State == stateDelivered || r.State == stateDead || r.State == stateAborted || r.State == stateUntracked {
					dead = append(dead, &r)
				}
			}
			counts, cmids := tx.Bucket(bOutboxCounts), tx.Bucket(bOutboxCMID)
			for _, r := range dead {
				if err := tx.Bucket(bOutbox).Delete(seqKey(r.Seq)); err != nil {
					return err
				}
				// A requeued message's id points at its newer row.
				for _, id := range []string{r.ClientMessageID, r.SendID} {
					if v := cmids.Get([]byte(id)); id != "" && len(v) == 8 && binary.BigEndian.Uint64(v) == r.Seq {
						if err := cmids.Delete([]byte(id)); err != nil {
							return err
						}
					}
				}
				if err := addCount(counts, r.State, -1); err != nil {
					return err
				}
			}
			n = len(dead)
			return nil
		})
		if err != nil {
			d.log.Error("outbox prune", "err", err)
			return
		}
		after = last
		if n > 0 {
			d.threadsChanged()
			d.log.Info("outbox pruned", "rows", n)
		}
		if !more {
			return
		}
	}
}

// sendConn is the open connection that sends as sender: the mesh's own for
// the member key, else the connection of the registered session with that
// key (nil while it is not connected, or not registered: its rows wait).
func (m *meshRT) sendConn(sender string) *client.Conn {
	if sender == "" || sender == m.key.PublicHex() {
		return m.conn()
	}
	if s := m.d.sessionBySender(sender); s != nil && s.rec.MeshID == m.cfg.MeshID {
		return s.conn()
	}
	return nil
}

// classifyFailure says whether a send's transient failure counts as one
// of the row's attempts (maxAttempts make it dead), and whether it is an
// outage (retried after a pause, never counted). Only a transient answer
// on an open connection, or no ack in time, counts; a dropped connection
// does not (the row waits for the next one), nor does a cancelled drain.
// `unavailable` is a broker cluster without quorum: an outage, like a
// dropped connection, however long it lasts (docs/protocol.md
// "Readings").
func classifyFailure(code string, cancelled bool) (counted, outage bool) {
	if code == wire.CodeUnavailable {
		return false, true
	}
	counted = code != "connection_closed" && code != "unreachable" && code != "canceled" && !cancelled
	return counted, false
}
