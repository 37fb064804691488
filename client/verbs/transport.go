package verbs

import (
	"context"
	"sync"
	"time"

	"claudemesh/client/config"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// transport is how the verbs the daemon will serve reach a mesh. Its
// results are already the rows the verbs print (the --json shapes of
// 04-cli), so a daemon implementation (which gets those rows from its local
// API) and the direct one plug in behind the same output code. Nothing here
// mentions connections: that is the implementation's business.
type transport interface {
	// Send resolves req.To, encrypts and sends one message; with req.Wait
	// it also waits for delivery (status "delivered"). A wait that times
	// out returns the result so far and a wait_timeout error.
	Send(ctx context.Context, m *config.Mesh, req sendRequest) (*sendResult, error)
	// Peers lists the peers of each mesh, one result per mesh in the
	// given order; a mesh that could not be read has Err set.
	Peers(ctx context.Context, meshes []config.Mesh, all bool) []meshPeers
	// Directory is one mesh's members and presences, for resolving a PEER
	// argument (peer verify).
	Directory(ctx context.Context, m *config.Mesh) ([]wire.Member, []wire.Peer, error)
	// Inbox hands new messages of each mesh to sink.Rows before settling
	// them, so nothing is acknowledged that was not shown; a mesh that
	// fails is reported to sink.MeshFailed and the others still run.
	Inbox(ctx context.Context, meshes []config.Mesh, opts inboxOptions, sink inboxSink) error
	// Follow is Inbox that keeps listening until ctx ends, handing each
	// message to sink.Rows as it arrives.
	Follow(ctx context.Context, meshes []config.Mesh, opts inboxOptions, sink inboxSink) error
	// MessageStatus reports the delivery state of a message this member
	// sent, by broker messageId (a ULID) or by clientMessageId.
	MessageStatus(ctx context.Context, m *config.Mesh, id string) (*messageStatusJSON, error)
	// Profile changes this member's status, summary or groups.
	Profile(ctx context.Context, m *config.Mesh, ch profileChange) error
	// Skills lists the mesh's shared skills whose name, description or
	// tags contain query (all when empty); Skill reads one, with its body.
	Skills(ctx context.Context, m *config.Mesh, query string) ([]skillJSON, error)
	Skill(ctx context.Context, m *config.Mesh, name string) (*skillJSON, error)
}

// skillJSON is one element of `skill list --json` and, with Body,
// `skill get --json`.
type skillJSON struct {
	Mesh         string   `json:"mesh"`
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Tags         []string `json:"tags"`
	AuthorName   string   `json:"authorName"`
	AuthorPubkey string   `json:"authorPubkey"`
	Size         int      `json:"size"`
	UpdatedAt    int64    `json:"updatedAt"`
	Body         *string  `json:"body,omitzero"`
}

// sendRequest is one `send` as the user typed it.
type sendRequest struct {
	To              string
	Body            string
	Priority        string // now|next|low; "" = broker default (next)
	ReplyTo         string
	ClientMessageID string // "" = a fresh ULID
	Wait            bool
	WaitTimeout     time.Duration
	// Mentions are the members a topic post mentions (names, pubkeys or
	// prefixes; topic post --mention).
	Mentions []string
}

// sendResult is what became of a send.
type sendResult struct {
	MessageID       string
	ClientMessageID string
	// Status is accepted, queued, sent or delivered (03-daemon's
	// vocabulary, shared by both transports).
	Status string
	Via    string // "direct" or "daemon"
	Target targetJSON
	// Recipients is how many recipients the broker holds it for (the
	// ack's pending); OnlineNow how many connections got it at once.
	Recipients, OnlineNow int
	// RecipientsUnknown: the broker took it, but the daemon did not say
	// for how many recipients (a daemon older than the CLI), so Recipients
	// and OnlineNow say nothing.
	RecipientsUnknown bool
	// Duplicate: the broker had this clientMessageId already.
	Duplicate bool
	// MeshState is the daemon's connection to the mesh's broker when it
	// accepted the send ("" on the direct path).
	MeshState string
	// Priority is the send's priority as asked ("" = next).
	Priority string
}

// targetJSON is send's `target` object.
type targetJSON struct {
	Kind        string `json:"kind"`
	TargetSpec  string `json:"targetSpec"`
	DisplayName string `json:"displayName,omitzero"`
	Online      *bool  `json:"online,omitzero"`
	// Status of an online box recipient (idle, working or dnd).
	Status string `json:"status,omitzero"`
}

// meshPeers is one mesh's part of `peer list`.
type meshPeers struct {
	Slug string
	Rows []peerRow
	Err  error
}

// peersOfEach lists the peers of every mesh at once, one result per mesh in
// the given order (transport.Peers).
func peersOfEach(meshes []config.Mesh, list func(m *config.Mesh) ([]peerRow, error)) []meshPeers {
	out := make([]meshPeers, len(meshes))
	var wg sync.WaitGroup
	for i := range meshes {
		wg.Go(func() {
			m := &meshes[i]
			out[i].Slug = m.Slug
			out[i].Rows, out[i].Err = list(m)
		})
	}
	wg.Wait()
	return out
}

// peerRow is one element of `peer list --json` (04-cli): by default one
// row per member (its connection fields from one of its member presences)
// followed by a row per agent session of it; with --all, one row per
// presence plus offline members. role, status, sessionId and peerType are
// always there (the skill tells agents so): a row that is not online has
// status "offline"; a member with no presence of its own (offline, or
// present only through its agent sessions) has role, sessionId and
// peerType "" and no connectedAt.
type peerRow struct {
	Mesh         string       `json:"mesh"`
	Pubkey       string       `json:"pubkey"`
	MemberPubkey string       `json:"memberPubkey"`
	DisplayName  string       `json:"displayName"`
	Role         string       `json:"role"`
	MemberRole   string       `json:"memberRole"`
	Status       string       `json:"status"`
	Summary      string       `json:"summary,omitzero"`
	Groups       []wire.Group `json:"groups"`
	SessionID    string       `json:"sessionId"`
	Cwd          string       `json:"cwd,omitzero"`
	Hostname     string       `json:"hostname,omitzero"`
	PeerType     string       `json:"peerType"`
	// Channel is how a presence is attached when it says (the human's
	// chat page is "web"); beyond 04-cli's shape, omitted when empty. A
	// member row shows the channel of any of its online presences.
	Channel       string `json:"channel,omitzero"`
	Online        bool   `json:"online"`
	IsSelf        bool   `json:"isSelf"`
	IsThisSession bool   `json:"isThisSession"`
	ConnectedAt   int64  `json:"connectedAt,omitzero"`
	// Nested marks an agent session listed under its member (human
	// output indents it); not part of the JSON contract.
	Nested bool `json:"-"`
}

// inboxOptions are inbox's flags that reach the transport.
type inboxOptions struct {
	// Limit caps the messages shown (0 = all); the rest stay queued.
	Limit int
	// Unread and MarkSeen act on the daemon's stored rows; the cold path
	// shows each message once anyway and accepts them silently.
	Unread, MarkSeen bool
	// Left: the listing covers every mesh (no --mesh), so the daemon's
	// rows of meshes left come too, after the joined meshes' rows.
	Left bool
}

// inboxSink receives what Inbox and Follow find. Rows is called before the
// rows' messages are acknowledged: an error from it stops the transport
// without acknowledging them.
type inboxSink interface {
	Rows(rows []inboxRow) error
	MeshFailed(slug string, err error)
	// Notice is a non-fatal condition worth telling a human (a follow
	// connection that dropped and is being retried). slug "" is the
	// daemon path's own notice, whose text says it all.
	Notice(slug string, err error)
	// Following tells that Follow is now listening in a mesh.
	Following(slug string)
	// MeshProblem reports a mesh that can still be read but will get
	// nothing new (the daemon stopped connecting to its broker): a warning
	// beside the rows, not a failure of the read.
	MeshProblem(slug string, err error)
	// MeshBack tells that a mesh a MeshProblem was about is connected
	// again (msg says so in words).
	MeshBack(slug, msg string)
}

// inboxRow is one element of `inbox --json` (04-cli). SchemaVersion is a
// field rather than added at print time because Inbox output is streamed
// element by element.
type inboxRow struct {
	SchemaVersion int    `json:"schemaVersion"`
	ID            string `json:"id"`
	MessageID     string `json:"messageId"`
	Mesh          string `json:"mesh"`
	Kind          string `json:"kind"`
	Topic         string `json:"topic,omitzero"`
	SenderName    string `json:"senderName"`
	SenderPubkey  string `json:"senderPubkey"`
	// SenderMemberPubkey is the member the sending key is proven to
	// belong to (itself, or the member that attested the session), and
	// SenderMemberName that member's enrolled name. Both are set only
	// when verified; senderName is what a session calls itself.
	SenderMemberPubkey string `json:"senderMemberPubkey,omitzero"`
	SenderMemberName   string `json:"senderMemberName,omitzero"`
	// FromSelf, SenderLooksLike and SenderLooksLikeSelf are the daemon's
	// marks (localapi.InboxRow); the direct path sets none.
	FromSelf            bool    `json:"fromSelf,omitzero"`
	SenderLooksLike     string  `json:"senderLooksLike,omitzero"`
	SenderLooksLikeSelf bool    `json:"senderLooksLikeSelf,omitzero"`
	Body                *string `json:"body,omitzero"`
	DecryptError        string  `json:"decryptError,omitzero"`
	Verified            bool    `json:"verified"`
	// Plaintext: a post in a --plaintext topic; senderName is then the
	// broker's word for who sent it, which no signature proves.
	Plaintext  bool   `json:"plaintext,omitzero"`
	Priority   string `json:"priority"`
	ReceivedAt int64  `json:"receivedAt"`
	SentAt     int64  `json:"sentAt,omitzero"` // when the broker accepted it
	SeenAt     int64  `json:"seenAt,omitzero"`
	ReplyToID  string `json:"replyToId,omitzero"`
	// MentionsYou: a topic post that mentions you or one of your agent
	// sessions (topic post --mention; the daemon path).
	MentionsYou bool `json:"mentionsYou,omitzero"`
	// RecipientPubkey and RecipientKind (member | session) say whom the
	// stored copy was for: the member, or one of its agent sessions (the
	// daemon path; the direct path only ever reads the member's own).
	RecipientPubkey string `json:"recipientPubkey,omitzero"`
	RecipientKind   string `json:"recipientKind,omitzero"`
	// TargetSpec is shown to humans ("to @ops") but is not part of the
	// JSON contract.
	TargetSpec string `json:"-"`
	// forSession marks, for the human's view, a DM addressed to one of
	// its agent sessions alone.
	forSession    bool
	recipientName string // that session's name, when its daemon still has it
	// meshLeft: a row of a mesh left, which the daemon keeps (its mesh is
	// always named to a human).
	meshLeft bool
}

// messageStatusJSON is `message status --json` (04-cli).
type messageStatusJSON struct {
	MessageID  string          `json:"messageId"`
	TargetSpec string          `json:"targetSpec"`
	CreatedAt  int64           `json:"createdAt"`
	Recipients []recipientJSON `json:"recipients"`
	// Topic is the topic's name when the message is a topic post (no
	// recipients: members read it from the topic's history).
	Topic string `json:"topic,omitempty"`
	// State, for a message still in the daemon's outbox (not at the
	// broker yet, so no messageId and no recipients): accepted, or
	// failed with Error. ClientMessageID names it then.
	ClientMessageID string `json:"clientMessageId,omitempty"`
	State           string `json:"state,omitempty"`
	Error           string `json:"error,omitempty"`
	displayName     string
}

type recipientJSON struct {
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	State       string `json:"state"`
	DeliveredAt int64  `json:"deliveredAt,omitzero"`
}

// messageStatusOf is the broker's answer as `message status` prints it.
func messageStatusOf(st *wire.MessageStatus) *messageStatusJSON {
	out := &messageStatusJSON{MessageID: st.MessageID, TargetSpec: st.TargetSpec, CreatedAt: st.CreatedAt,
		Recipients: make([]recipientJSON, 0, len(st.Recipients)), Topic: st.Topic}
	for _, r := range st.Recipients {
		out.Recipients = append(out.Recipients, recipientJSON{Pubkey: r.Pubkey, DisplayName: r.DisplayName, State: r.State, DeliveredAt: r.DeliveredAt})
	}
	return out
}

// messageNotFound is `message status` for an id this member never sent in
// the mesh (exit 3), whichever transport asked; purged: the broker said
// the id is older than the records it keeps (expired), so it may have
// been sent and its record purged.
func messageNotFound(id, slug string, purged bool) error {
	if purged {
		e := cliui.Errorf(wire.CodeNotFound, "the broker has no message with id %s from you in %s: you sent none, or it is older than the records the broker keeps (its queue time plus a day)", id, slug).
			WithHint("give the messageId or the clientMessageId that send printed")
		e.Exit = cliui.ExitNotFound
		return e
	}
	e := cliui.Errorf(wire.CodeNotFound, "you sent no message with id %s in %s", id, slug).
		WithHint("give the messageId or the clientMessageId (id) that send or topic post printed")
	e.Exit = cliui.ExitNotFound
	return e
}

// profileChange is one of status set / summary / group join / group leave.
type profileChange struct {
	Op    string // one of the op* constants
	Value string // status, summary text or group name
	Role  string // group role (join only)
}

const (
	opStatus     = "status"
	opSummary    = "summary"
	opGroupJoin  = "group_join"
	opGroupLeave = "group_leave"
)
