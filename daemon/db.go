package daemon

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	json "github.com/go-json-experiment/json"
	bolt "go.etcd.io/bbolt"

	"claudemesh/daemon/localapi"
	"claudemesh/store"
	"claudemesh/wire"
)

// daemon.db layout. Every row that changes state is written through the
// store's group committer, so many concurrent accepts share one fsync.
var (
	bOutbox     = []byte("outbox")      // seq → outboxRow (enqueue order)
	bOutboxCMID = []byte("outbox_cmid") // clientMessageId → seq (idempotency comes before the mesh)
	bInbox      = []byte("inbox")       // seq (event sequence) → inboxRow
	bInboxKey   = []byte("inbox_key")   // mesh ‖ 0 ‖ recipient ‖ 0 ‖ messageId → seq
	bInboxNonce = []byte("inbox_nonce") // mesh ‖ 0 ‖ sender ‖ 0 ‖ nonce → seq (replay guard)
	bEvents     = []byte("events")      // only its NextSequence: the shared event id
	bCache      = []byte("cache")       // meshId → meshCache (last known members and peers); meshId/topic-cursors → topics.go
	bSessions   = []byte("sessions")    // token hash → sessionRecord (the session registry)
	// bInboxSeen holds a session's read marks on rows it shares with its
	// member (session ‖ 0 ‖ seq → ms); rows addressed to the session keep
	// their own seenAt.
	bInboxSeen = []byte("inbox_seen")
	// bOutboxPending indexes rows waiting to be sent for the first time, or
	// again at once (meshId ‖ 0 ‖ seq), so a drain round is a prefix scan,
	// not a walk over every row ever sent.
	bOutboxPending = []byte("outbox_pending")
	// bOutboxRetry indexes pending rows backing off by when they are due
	// (meshId ‖ 0 ‖ nextAttemptAt ‖ seq): a drain round reads the ones due
	// and stops at the first that is not, instead of stepping over every
	// row backing off (a recipient's queue full at the broker can hold
	// thousands) on every round.
	bOutboxRetry = []byte("outbox_retry")
	// bOutboxCounts holds the number of outbox rows in each state (state →
	// uint64), kept in the same transaction as every row write, so `daemon
	// status` costs the same with ten rows or a million.
	bOutboxCounts = []byte("outbox_counts")
	// bOutboxUnsettled indexes the rows acked as queued or sent (seq),
	// kept in the same transaction as every row write (putOutbox): the
	// message_status check (expiry.go) reads the rows due among them, not
	// the whole outbox every round.
	bOutboxUnsettled = []byte("outbox_unsettled")
	// bJournal holds the accept journal's applied watermark (acceptlog.go),
	// written in the same transaction as the rows it covers.
	bJournal = []byte("journal")
)

// daemonMigrations is daemon.db's schema history.
var daemonMigrations = []store.Migration{
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bOutbox, bOutboxCMID, bOutboxPending, bInbox, bInboxKey, bInboxNonce, bEvents, bCache, bSessions} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 1 → 2: per-state outbox counts, computed once from the rows.
	func(tx *bolt.Tx) error {
		counts, err := tx.CreateBucketIfNotExists(bOutboxCounts)
		if err != nil {
			return err
		}
		return tx.Bucket(bOutbox).ForEach(func(_, v []byte) error {
			state, err := outboxRowState(v)
			if err != nil {
				return err
			}
			return addCount(counts, state, 1)
		})
	},
	// 2 → 3: outbox rows are written in the binary layout of
	// outboxrec.go. JSON rows are still read; the bump makes a daemon of
	// schema 2, which cannot read binary rows, refuse the file.
	func(tx *bolt.Tx) error { return nil },
	// 3 → 4: per-session read marks.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bInboxSeen)
		return err
	},
	// 4 → 5: the accept journal's applied watermark.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bJournal)
		return err
	},
	// 5 → 6: rows backing off move from the pending index to the retry
	// index. Both are rebuilt from the rows, so an entry the pending index
	// kept for a row no longer pending, or under another time than its
	// row's, does not live on in the retry index (inflight rows of older
	// versions are indexed by recoverOutbox at start, as before).
	func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bOutboxPending); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
			return err
		}
		for _, b := range [][]byte{bOutboxPending, bOutboxRetry} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		var pending []uint64
		err := tx.Bucket(bOutbox).ForEach(func(k, v []byte) error {
			if state, err := outboxRowState(v); err == nil && state == statePending {
				pending = append(pending, seqOf(k))
			}
			return nil // a corrupt row is left as it is, as at start
		})
		if err != nil {
			return err
		}
		for _, seq := range pending {
			r, err := getOutbox(tx, seq)
			if err != nil {
				continue
			}
			if err := setPendingIndex(tx, r, true); err != nil {
				return err
			}
		}
		return nil
	},
	// 6 → 7: an outbox row may carry the extra section of outboxrec.go
	// (onlineNow, errorCode); the bump makes a daemon of schema 6, which
	// cannot read it, refuse the file.
	func(tx *bolt.Tx) error { return nil },
	// 7 → 8: an outbox row may carry the expired count of outboxrec.go;
	// the bump makes a daemon of schema 7, which cannot read it, refuse
	// the file.
	func(tx *bolt.Tx) error { return nil },
	// 8 → 9: the index of rows acked as queued or sent, built from the
	// rows (a corrupt one is left out, as the check skipped it).
	func(tx *bolt.Tx) error {
		idx, err := tx.CreateBucketIfNotExists(bOutboxUnsettled)
		if err != nil {
			return err
		}
		return tx.Bucket(bOutbox).ForEach(func(k, v []byte) error {
			if state, err := outboxRowState(v); err == nil && unsettled(state) {
				return idx.Put(k, nil)
			}
			return nil
		})
	},
	// 9 → 10: an outbox row may carry the sendId of outboxrec.go; the
	// bump makes a daemon of schema 9, which cannot read it, refuse the
	// file.
	func(tx *bolt.Tx) error { return nil },
	// 10 → 11: an outbox row may be in the state untracked (outboxStates
	// code 7); the bump makes a daemon of schema 10, which cannot read
	// it, refuse the file.
	func(tx *bolt.Tx) error { return nil },
}

// unsettled reports whether a row in this state waits for its receipts.
func unsettled(state string) bool { return state == stateQueued || state == stateSent }

// Recipient kinds of an inbox row.
const (
	recipientMember  = "member"
	recipientSession = "session"
)

// Internal outbox states (03-daemon "Row fields").
const (
	statePending   = "pending"
	stateInflight  = "inflight"
	stateQueued    = "queued"
	stateSent      = "sent"
	stateDelivered = "delivered"
	stateDead      = "dead"
	stateAborted   = "aborted"
	// stateUntracked: the broker had taken the row (queued or sent) when
	// its mesh was left; the broker still delivers it, but no receipt or
	// status reaches this machine any more (failLeftMeshes).
	stateUntracked = "untracked"
)

// outboxStatuses are the values `outbox list --status` (GET
// /v1/outbox?status=) filters by: the public statuses, then the internal
// states.
var outboxStatuses = []string{
	localapi.StatusAccepted, localapi.StatusQueued, localapi.StatusSent, localapi.StatusDelivered, localapi.StatusFailed,
	statePending, stateInflight, stateDead, stateAborted, localapi.StatusUntracked,
}

// checkOutboxStatus refuses a --status no row can have (a typo listed an
// empty outbox, exit 0).
func checkOutboxStatus(s string) error {
	if s == "" || slices.Contains(outboxStatuses, s) {
		return nil
	}
	return fmt.Errorf("--status %q is not one of %s", s, strings.Join(outboxStatuses, ", "))
}

// publicStatus maps an internal state to the API vocabulary.
func publicStatus(state string) string {
	switch state {
	case statePending, stateInflight:
		return localapi.StatusAccepted
	case stateQueued:
		return localapi.StatusQueued
	case stateSent:
		return localapi.StatusSent
	case stateDelivered:
		return localapi.StatusDelivered
	case stateUntracked:
		return localapi.StatusUntracked
	default:
		return localapi.StatusFailed
	}
}

// outboxRow is one accepted message. The plaintext is not kept beyond a
// short preview for the human; what is stored is the ciphertext the drain
// sends as is, so a crash never needs the plaintext again.
type outboxRow struct {
	Seq             uint64          `json:"seq"`
	ClientMessageID string          `json:"clientMessageId"`
	Fingerprint     string          `json:"fingerprint"`
	Mesh            string          `json:"mesh"` // slug
	MeshID          string          `json:"meshId"`
	To              string          `json:"to"`
	DisplayName     string          `json:"displayName,omitempty"`
	TargetSpec      string          `json:"targetSpec"`
	Kind            string          `json:"kind"`
	Nonce           string          `json:"nonce"`
	Ciphertext      string          `json:"ciphertext"`
	Keys            []wire.MultiKey `json:"keys,omitempty"`
	KeyGen          *int            `json:"keyGen,omitempty"`
	Signature       string          `json:"signature,omitempty"`
	Priority        string          `json:"priority,omitempty"`
	ReplyToID       string          `json:"replyToId,omitempty"`
	Mentions        []string        `json:"mentions,omitempty"`
	SenderPubkey    string          `json:"senderPubkey"`
	SessionToken    string          `json:"sessionToken,omitempty"`
	Preview         string          `json:"preview,omitempty"`
	State           string          `json:"state"`
	Attempts        int             `json:"attempts"`
	NextAttemptAt   int64           `json:"nextAttemptAt,omitzero"`
	LastError       string          `json:"lastError,omitempty"`
	BrokerMessageID string          `json:"brokerMessageId,omitempty"`
	Pending         int             `json:"pending"`  // recipients with an open delivery record (ack)
	Receipts        int             `json:"receipts"` // distinct recipients that acked (len DeliveredTo)
	// Expired are the recipients (of Pending) whose delivery expired at
	// the broker before they had it (message_status, asked after a
	// duplicate ack): they send no receipt, and never will.
	Expired int `json:"expired,omitzero"`
	// DeliveredTo are the recipients whose receipt was counted: a
	// redelivered receipt must not count twice towards a multi message's
	// pending recipients.
	DeliveredTo []string `json:"deliveredTo,omitempty"`
	Acked       bool     `json:"acked,omitzero"`
	// OnlineNow is how many connections the broker pushed it to at once
	// (the ack's online).
	OnlineNow int `json:"onlineNow,omitzero"`
	// ErrorCode is the broker's code of a permanent refusal (the row is
	// dead): the CLI reports it, and its exit code, as the direct path
	// does; or delivery_expired (localapi.CodeDeliveryExpired) for a row
	// settled with Expired recipients.
	ErrorCode string `json:"errorCode,omitempty"`
	// SendID is the clientMessageId the row is sent with, when it is not
	// ClientMessageID: a requeued row the broker had taken (the broker
	// keeps a clientMessageId for its idempotency, and answered the
	// requeued send as a duplicate of the old, expired, message). It is
	// in outbox_cmid beside ClientMessageID, for the receipts, which
	// carry it.
	SendID      string `json:"sendId,omitempty"`
	SentAt      int64  `json:"sentAt,omitzero"`
	DeliveredAt int64  `json:"deliveredAt,omitzero"`
	EnqueuedAt  int64  `json:"enqueuedAt"`

	// stored is the state this row has in daemon.db ("" for a row not
	// written yet), so putOutbox can move it between the state counts.
	stored string
	// indexedAt is the nextAttemptAt this row has in daemon.db, so
	// setPendingIndex can find (and move) its entry in the retry index.
	indexedAt int64
}

func (r *outboxRow) api() localapi.OutboxRow {
	out := localapi.OutboxRow{
		ID: strconv.FormatUint(r.Seq, 10), ClientMessageID: r.ClientMessageID, MessageID: r.BrokerMessageID,
		Mesh: r.Mesh, TargetSpec: r.TargetSpec, DisplayName: r.DisplayName, Status: publicStatus(r.State),
		State: r.State, Attempts: r.Attempts, Error: r.LastError, Preview: r.Preview,
		Priority: r.Priority, ReplyToID: r.ReplyToID, SenderPubkey: r.SenderPubkey, EnqueuedAt: r.EnqueuedAt, SentAt: r.SentAt, DeliveredAt: r.DeliveredAt,
		ErrorCode: r.ErrorCode, Receipts: r.Receipts, OnlineNow: r.OnlineNow, Expired: r.Expired,
	}
	if r.Acked {
		n := r.Pending
		out.Recipients = &n
	}
	return out
}

// sendID is the clientMessageId the broker knows the row by.
func (r *outboxRow) sendID() string {
	if r.SendID != "" {
		return r.SendID
	}
	return r.ClientMessageID
}

// send builds the frame the drain writes. The frame id is fixed per row so a
// resend after a crash is recognised by the broker's idempotency.
func (r *outboxRow) send() *wire.Send {
	return &wire.Send{
		Type: wire.TypeSend, ID: r.sendID(), ClientMessageID: r.sendID(),
		TargetSpec: r.TargetSpec, Kind: r.Kind, Priority: r.Priority, Nonce: r.Nonce,
		Ciphertext: r.Ciphertext, Keys: r.Keys, Signature: r.Signature, KeyGen: r.KeyGen,
		ReplyToID: r.ReplyToID, Mentions: r.Mentions, BodyVersion: topicBodyVersion(r),
	}
}

// inboxRow is one received message, stored before it is acked.
type inboxRow struct {
	Seq             uint64 `json:"seq"`
	Mesh            string `json:"mesh"`
	MeshID          string `json:"meshId"`
	MessageID       string `json:"messageId"`
	ClientMessageID string `json:"clientMessageId,omitempty"`
	Kind            string `json:"kind"`
	// TargetSpec is the sender's spec verbatim (a pubkey, `@group`, `*`
	// or `#topicId`): it tells a broadcast from a group message. Rows
	// stored before it existed have none.
	TargetSpec   string `json:"targetSpec,omitempty"`
	Topic        string `json:"topic,omitempty"`
	SenderPubkey string `json:"senderPubkey"`
	SenderMember string `json:"senderMemberPubkey"`
	SenderName   string `json:"senderName"`
	// SenderMemberName is the enrolled name of SenderMember when the row
	// was stored (from the directory cache), for verified rows.
	SenderMemberName string `json:"senderMemberName,omitempty"`
	// FromSelf, Lookalike and LookalikeSelf are meshRT.senderMarks when
	// the row was stored, for verified rows.
	FromSelf        bool   `json:"fromSelf,omitempty"`
	Lookalike       string `json:"lookalike,omitempty"`
	LookalikeSelf   bool   `json:"lookalikeSelf,omitempty"`
	RecipientPubkey string `json:"recipientPubkey"`
	RecipientKind   string `json:"recipientKind"` // member | session
	Body            string `json:"body,omitempty"`
	DecryptError    string `json:"decryptError,omitempty"`
	Verified        bool   `json:"verified"`
	Plaintext       bool   `json:"plaintext,omitempty"` // a --plaintext topic's post: SenderName is the broker's word
	Priority        string `json:"priority"`
	ReplyToID       string `json:"replyToId,omitempty"`
	Subtype         string `json:"subtype,omitempty"`
	// MentionsYou: a topic post whose mentions name this member or one of
	// its agent sessions (topic post --mention).
	MentionsYou bool  `json:"mentionsYou,omitempty"`
	ReceivedAt  int64 `json:"receivedAt"`
	SentAt      int64 `json:"sentAt,omitzero"` // the broker's createdAt
	SeenAt      int64 `json:"seenAt,omitzero"`
	size        int   // bytes as stored, set by putInboxRow
}

func (r *inboxRow) api() localapi.InboxRow {
	out := localapi.InboxRow{
		ID: strconv.FormatUint(r.Seq, 10), MessageID: r.MessageID, ClientMessageID: r.ClientMessageID, Subtype: r.Subtype,
		Mesh: r.Mesh, Kind: r.Kind, Topic: r.Topic, SenderPubkey: r.SenderPubkey, Body: r.Body, DecryptError: r.DecryptError,
		RecipientPubkey: r.RecipientPubkey, RecipientKind: r.RecipientKind, TargetSpec: r.TargetSpec,
		Verified: r.Verified, Priority: r.Priority, ReceivedAt: r.ReceivedAt, SentAt: r.SentAt, SeenAt: r.SeenAt, ReplyToID: r.ReplyToID,
		MentionsYou: r.MentionsYou, Plaintext: r.Plaintext,
	}
	if r.Plaintext && !r.Verified {
		// A plaintext topic's post carries no signature: the name is the
		// broker's, given as such (Plaintext), never as a proven one.
		out.SenderName = r.SenderName
	}
	if r.Verified {
		// An unproven sender is never shown under a member's name.
		out.SenderName, out.SenderMemberPubkey, out.SenderMemberName = r.SenderName, r.SenderMember, r.SenderMemberName
		out.FromSelf, out.SenderLooksLike, out.SenderLooksLikeSelf = r.FromSelf, r.Lookalike, r.LookalikeSelf
	}
	return out
}

// meshCache is the last known membership of a mesh, refreshed at every
// hello_ack, so sends by name are accepted while the broker is away.
type meshCache struct {
	Members   []wire.Member `json:"members"`
	Peers     []wire.Peer   `json:"peers"`
	UpdatedAt int64         `json:"updatedAt"`
}

func seqKey(seq uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, seq)
	return b
}

func keyOf(parts ...string) []byte {
	var b bytes.Buffer
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(0)
		}
		b.WriteString(p)
	}
	return b.Bytes()
}

var errNotFound = errors.New("not found")

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, data)
}

func getJSON(b *bolt.Bucket, k []byte, v any) error {
	data := b.Get(k)
	if data == nil {
		return errNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("daemon.db: corrupt record: %w", err)
	}
	return nil
}

func getOutbox(tx *bolt.Tx, seq uint64) (*outboxRow, error) {
	v := tx.Bucket(bOutbox).Get(seqKey(seq))
	if v == nil {
		return nil, errNotFound
	}
	var r outboxRow
	if err := decodeOutbox(v, &r); err != nil {
		return nil, err
	}
	r.stored, r.indexedAt = r.State, r.NextAttemptAt
	return &r, nil
}

// putOutbox writes a row and moves it between the state counts. A row must
// come from getOutbox (or be new): a copy of a stored row counts as
// stored, so a new row made from one must clear stored first.
func putOutbox(tx *bolt.Tx, r *outboxRow) error {
	v, err := encodeOutbox(r)
	if err != nil {
		return err
	}
	b := tx.Bucket(bOutbox)
	b.FillPercent = outboxFill
	if err := b.Put(seqKey(r.Seq), v); err != nil {
		return err
	}
	if r.stored == r.State {
		return nil
	}
	// (A daemon.db of a schema before the index, written by a migration
	// test, has no index to keep.)
	if idx := tx.Bucket(bOutboxUnsettled); idx != nil && unsettled(r.stored) != unsettled(r.State) {
		if unsettled(r.State) {
			err = idx.Put(seqKey(r.Seq), nil)
		} else {
			err = idx.Delete(seqKey(r.Seq))
		}
		if err != nil {
			return err
		}
	}
	counts := tx.Bucket(bOutboxCounts)
	if r.stored != "" {
		if err := addCount(counts, r.stored, -1); err != nil {
			return err
		}
	}
	if err := addCount(counts, r.State, 1); err != nil {
		return err
	}
	r.stored = r.State
	return nil
}

func addCount(b *bolt.Bucket, state string, delta int64) error {
	var n int64
	if v := b.Get([]byte(state)); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	// The counts only serve `status`: a count gone wrong must never fail
	// the write of a message, so it is clamped (tests compare the counts
	// with the rows).
	n = max(n+delta, 0)
	return b.Put([]byte(state), seqKey(uint64(n)))
}

// outboxCounts reads the per-state counts.
func outboxCounts(tx *bolt.Tx) map[string]int {
	out := map[string]int{}
	tx.Bucket(bOutboxCounts).ForEach(func(k, v []byte) error {
		if len(v) == 8 {
			out[string(k)] = int(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return out
}

func outboxByCMID(tx *bolt.Tx, cmid string) (*outboxRow, error) {
	v := tx.Bucket(bOutboxCMID).Get([]byte(cmid))
	if v == nil {
		return nil, errNotFound
	}
	return getOutbox(tx, binary.BigEndian.Uint64(v))
}
