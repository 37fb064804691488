// Package localapi is the daemon's local API contract (03-daemon.md "Local
// API"): the request and response shapes of the Unix-socket HTTP API and a
// small client for them. The CLI and the MCP server import this package, not
// the daemon itself, the way Tailscale's CLI talks to tailscaled through a
// local API client.
package localapi

import "claudemesh/wire"

// APIVersion is the `api` field of /v1/version.
const APIVersion = "v1"

// Public outbox statuses (03-daemon "Outbox"): one vocabulary for the API,
// `send --json` and `outbox list`.
const (
	StatusAccepted  = "accepted"  // in the outbox, not yet acked by the broker
	StatusQueued    = "queued"    // broker acked, no recipient online
	StatusSent      = "sent"      // broker acked and pushed to a recipient connection
	StatusDelivered = "delivered" // receipt(s) received
	StatusFailed    = "failed"    // dead or aborted, with error
	// StatusUntracked: the broker had taken it when its mesh was left;
	// the broker still delivers it, but this machine no longer learns
	// whether it was.
	StatusUntracked = "untracked"
)

// CodeDeliveryExpired is the errorCode of a failed row the broker had
// taken, whose delivery to some of its recipients expired before they had
// it (their queue timed out, or they left the mesh): it will never reach
// them. The daemon learns it from the broker's message_status (which lists
// each recipient's state): asked when a resend after a lost ack is
// answered as a duplicate, and now and then about rows left queued or
// sent (daemon/expiry.go).
const CodeDeliveryExpired = "delivery_expired"

// CodeSessionEnded is the errorCode of a failed row an agent session sent
// that nothing can send any more: the session ended before it went out,
// and its connection, which the daemon keeps until a departed session's
// rows are out, is refused for good (the member revoked, the session
// kicked), or the daemon lost the session's registration.
const CodeSessionEnded = "session_ended"

// CodeLeftMesh is the errorCode of a row that was not sent yet when its
// mesh was left (`mesh leave --force`, or the mesh removed from
// config.json): nothing can send it any more.
const CodeLeftMesh = "left_mesh"

// CodeLostByBroker is the errorCode of a row the broker had acked
// (queued or sent) and later said it has no record of, after looking at
// the end of its cluster's log: its store was restored from a backup
// taken before the message came. Nothing will deliver it, nor send a
// receipt; the daemon does not send it again on its own (a recipient may
// have had it before the restore), `daemon outbox requeue` does.
const CodeLostByBroker = "lost_by_broker"

// CodeRecordPurged is the errorCode of a row whose broker record was
// purged (a message is kept for the queue time plus a day) before this
// daemon learned how it ended: each recipient had it or its delivery
// expired, and which is not known any more.
const CodeRecordPurged = "record_purged"

// Mesh connection states reported by health and status.
const (
	MeshConnecting   = "connecting"
	MeshOpen         = "open"
	MeshReconnecting = "reconnecting"
	MeshClosed       = "closed"
	MeshKicked       = "kicked"
	MeshBanned       = "banned"
	// MeshBrokerKeyMismatch: the server at the broker URL cannot sign with
	// the pinned broker key; the daemon refuses sends to that mesh and
	// checks the broker again every few minutes (it stays in this state
	// until a connection proves the key).
	MeshBrokerKeyMismatch = "broker_key_mismatch"
	// MeshRemoved: the member was removed: the broker's operator closed
	// its connection 4001 removed (the daemon stops connecting), or the
	// broker refuses its hello as unknown (unauthorized: removed while the
	// daemon was away, or the mesh is gone from that broker; the daemon
	// keeps trying, as a cluster node may not know for a moment a member
	// that joined through another one). Sends are refused, and the rows
	// accepted before fail (CodeMemberRemoved) once the removal is
	// certain: at the operator's close, or after removedSettleAfter
	// refusals in a row.
	MeshRemoved = "removed"
)

// CodeMemberRemoved is the errorCode of a row the daemon accepted for a
// mesh whose broker then refused this member as unknown, again and again
// (MeshRemoved): it can never be sent as this member. The way back is a
// new invite, joined after mesh leave, as a new member.
const CodeMemberRemoved = "member_removed"

// Error is the API's error body: {"error":{"code","message"}}.
type Error struct {
	Code       string           `json:"code"`
	Message    string           `json:"message"`
	Candidates []wire.Candidate `json:"candidates,omitempty"`
	Status     string           `json:"status,omitempty"` // idempotency_key_reused: the existing row's status
	// Hint says what to do about it, for the CLI's human output.
	Hint string `json:"hint,omitempty"`
}

// ErrorBody wraps Error on the wire.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Version is GET /v1/version.
type Version struct {
	DaemonVersion string   `json:"daemonVersion"`
	API           string   `json:"api"`
	Features      []string `json:"features"`
	PID           int      `json:"pid"`
}

// Health is GET /v1/health.
type Health struct {
	OK     bool              `json:"ok"`
	PID    int               `json:"pid"`
	Meshes map[string]string `json:"meshes"`
	// MeshErrors says, for each mesh that is not open and has something to
	// report, why and what to do.
	MeshErrors map[string]Error `json:"meshErrors,omitempty"`
}

// Status is `daemon status --json` (04-cli): row counts by internal state.
type Status struct {
	Running   bool              `json:"running"`
	PID       int               `json:"pid,omitzero"`
	UptimeSec int64             `json:"uptimeSec"`
	Meshes    map[string]string `json:"meshes,omitempty"`
	// MeshErrors is as in Health, and also names an open mesh whose
	// broker refuses the daemon's messages (code unavailable: a cluster
	// without quorum).
	MeshErrors map[string]Error `json:"meshErrors,omitempty"`
	// MeshBrokers names, per mesh with a connection, the URL of the
	// broker node it is connected to (one of a cluster's nodes).
	MeshBrokers map[string]string `json:"meshBrokers,omitempty"`
	Outbox      *OutboxCounts     `json:"outbox,omitempty"`
	InboxUnread int               `json:"inboxUnread"`
	Sessions    int               `json:"sessions"`
	// InboxMentions is how many of the unread rows are topic posts that
	// mention this member or one of its sessions (topic post --mention).
	InboxMentions int `json:"inboxMentions,omitzero"`
	// Audit is the last background check of each mesh's audit chain.
	Audit map[string]AuditStatus `json:"audit,omitempty"`
	// Inbox is the inbox's size against its cap (daemon up
	// --inbox-max-bytes).
	Inbox *InboxUsage `json:"inbox,omitempty"`
	// Warnings are conditions the user should act on, in words (the
	// inbox over its cap).
	Warnings []string `json:"warnings,omitempty"`
	// Web is the local chat page's state (absent when not running).
	Web *WebStatus `json:"web,omitempty"`
	// TCP is the local API's TCP listener (daemon up --tcp ADDR), absent
	// without one.
	TCP *TCPStatus `json:"tcp,omitempty"`
}

// TCPStatus is `daemon up --tcp`'s listener: the address it is bound to
// (the port chosen when ADDR asked for 0), the file holding the bearer
// token it requires, and whether it serves TLS.
type TCPStatus struct {
	Addr      string `json:"addr"`
	TokenFile string `json:"tokenFile"`
	TLS       bool   `json:"tls,omitzero"`
}

// InboxUsage is the inbox's size: Bytes of Rows stored, MaxBytes the cap.
// Past the cap the oldest seen rows are dropped (DroppedSeen counts them
// since the daemon started); unseen rows are never dropped, and OverCap
// with UnseenHeld says they alone keep the inbox over its cap; at twice
// the cap it is Full.
type InboxUsage struct {
	Bytes       int64 `json:"bytes"`
	Rows        int   `json:"rows"`
	MaxBytes    int64 `json:"maxBytes"`
	DroppedSeen int64 `json:"droppedSeen"`
	OverCap     bool  `json:"overCap"`
	UnseenHeld  int   `json:"unseenHeld,omitzero"`
	// Full: unseen rows fill twice the cap, and new messages are left on
	// the broker (not acked) until some are read.
	Full bool `json:"full"`
	// OverShare lists the sending members that hold their share of the
	// inbox (half the cap) in unseen rows, or whose pushes wait for it:
	// only their new messages are left on the broker.
	OverShare []SenderShare `json:"overShare,omitempty"`
}

// SenderShare is one sending member over its share of the inbox. Name is
// the sender's, as a peer gave it: untrusted text, shown escaped.
type SenderShare struct {
	Pubkey      string `json:"pubkey"`
	Name        string `json:"name,omitempty"`
	UnseenBytes int64  `json:"unseenBytes"`
	// Waiting: pushes of theirs the daemon refused and keeps, to store
	// as soon as there is room.
	Waiting int `json:"waiting,omitzero"`
}

// WebStatus is the chat page in `daemon status`: State is "serving" (URL
// is where; `claudemesh ui` gives a login link), "off" (--web off) or
// "unavailable" (Addr could not be served; Error says why, for example
// another daemon of this machine has the port).
//
// PeerCheck, while serving, says whether the page checks that a local
// connection is this user's: "on", "off" (--web-any-local-user) or
// "unsupported" (not Linux).
type WebStatus struct {
	State     string `json:"state"`
	Addr      string `json:"addr,omitempty"`
	URL       string `json:"url,omitempty"`
	Error     string `json:"error,omitempty"`
	PeerCheck string `json:"peerCheck,omitempty"`
}

// OutboxCounts counts outbox rows by internal state.
type OutboxCounts struct {
	Pending   int `json:"pending"`
	Inflight  int `json:"inflight"`
	Queued    int `json:"queued"`
	Sent      int `json:"sent"`
	Delivered int `json:"delivered"`
	Dead      int `json:"dead"`
	Aborted   int `json:"aborted"`
	Untracked int `json:"untracked,omitzero"`
}

// SendRequest is POST /v1/send. The Idempotency-Key header is an
// alternative to ClientMessageID.
type SendRequest struct {
	To              string   `json:"to"`
	Message         string   `json:"message"`
	Mesh            string   `json:"mesh,omitempty"`
	Priority        string   `json:"priority,omitempty"`
	ClientMessageID string   `json:"clientMessageId,omitempty"`
	ReplyToID       string   `json:"replyToId,omitempty"`
	Mentions        []string `json:"mentions,omitempty"`
}

// Target describes what a send was resolved to.
type Target struct {
	Kind        string `json:"kind"`
	TargetSpec  string `json:"targetSpec"`
	DisplayName string `json:"displayName,omitempty"`
	Online      *bool  `json:"online,omitempty"`
	// Status of an online box recipient (idle, working, dnd): the broker
	// holds next and low messages while it is working or dnd.
	Status string `json:"status,omitempty"`
}

// SendResponse answers POST /v1/send: 202 when accepted, 200 with
// Duplicate for a repeat of the same request.
type SendResponse struct {
	ClientMessageID string `json:"clientMessageId"`
	MessageID       string `json:"messageId,omitempty"`
	Mesh            string `json:"mesh"`
	Status          string `json:"status"`
	Target          Target `json:"target"`
	Duplicate       bool   `json:"duplicate,omitzero"`
	Error           string `json:"error,omitempty"`
	// ErrorCode is, for a duplicate of a failed row, the broker's code of
	// its refusal (OutboxRow.ErrorCode).
	ErrorCode string `json:"errorCode,omitempty"`
	// MeshState is the mesh's broker connection when the send was
	// accepted (open: the daemon is sending it now; otherwise it goes out
	// when the broker is back).
	MeshState string `json:"meshState,omitempty"`
}

// OutboxRow is one row of GET /v1/outbox and `daemon outbox list --json`.
type OutboxRow struct {
	ID              string `json:"id"`
	ClientMessageID string `json:"clientMessageId"`
	MessageID       string `json:"messageId,omitempty"`
	Mesh            string `json:"mesh"`
	TargetSpec      string `json:"targetSpec"`
	DisplayName     string `json:"displayName,omitempty"`
	Status          string `json:"status"`
	State           string `json:"state"` // internal: pending|inflight|queued|sent|delivered|dead|aborted
	Attempts        int    `json:"attempts"`
	Error           string `json:"error,omitempty"`
	Preview         string `json:"preview,omitempty"`
	Priority        string `json:"priority,omitempty"`
	ReplyToID       string `json:"replyToId,omitempty"`
	// SenderPubkey is the key it is sent with: the member's, or one of
	// its agent sessions'.
	SenderPubkey string `json:"senderPubkey,omitempty"`
	EnqueuedAt   int64  `json:"enqueuedAt"`
	SentAt       int64  `json:"sentAt,omitzero"`
	DeliveredAt  int64  `json:"deliveredAt,omitzero"`
	// Recipients is how many recipients the broker holds the message for
	// (its ack's pending, every recipient's delivery counted: those that
	// got it, those still waiting and, after a duplicate ack, those whose
	// delivery expired), once the broker acked it; absent before. 0 means
	// nobody could be reached: it will never be delivered.
	Recipients *int `json:"recipients,omitzero"`
	// Receipts is how many recipients' delivery receipts came.
	Receipts int `json:"receipts,omitzero"`
	// Expired is how many recipients' deliveries expired before they had
	// it (known after a duplicate ack): they never will. A row whose
	// every recipient either has it or expired, some expired, is failed
	// with errorCode delivery_expired.
	Expired int `json:"expired,omitzero"`
	// OnlineNow is how many connections the broker pushed it to at once.
	OnlineNow int `json:"onlineNow,omitzero"`
	// ErrorCode is the broker's error code of a failed row it refused for
	// good (blocked_by_recipient, forbidden, …); absent when the daemon
	// gave up after its attempts.
	ErrorCode string `json:"errorCode,omitempty"`
}

// InboxRow is the `inbox --json` element (04-cli), also the data of an SSE
// `message` event.
type InboxRow struct {
	ID              string `json:"id"`
	MessageID       string `json:"messageId"`
	ClientMessageID string `json:"clientMessageId,omitempty"`
	Subtype         string `json:"subtype,omitempty"`
	Mesh            string `json:"mesh"`
	Kind            string `json:"kind"`
	Topic           string `json:"topic,omitempty"`
	SenderName      string `json:"senderName"`
	SenderPubkey    string `json:"senderPubkey"`
	// SenderMemberPubkey and SenderMemberName are the member the sending
	// key is proven to belong to and its enrolled name (verified rows
	// only); for an agent session they differ from senderPubkey and,
	// often, from senderName.
	SenderMemberPubkey string `json:"senderMemberPubkey,omitempty"`
	SenderMemberName   string `json:"senderMemberName,omitempty"`
	// FromSelf: the sender is this machine's own member (the user's CLI,
	// its chat page, or one of its agent sessions). Verified rows only.
	FromSelf bool `json:"fromSelf,omitzero"`
	// SenderLooksLike is, for a sender that is not that member, the name of
	// a member its display name or its member's name can be taken for
	// (case, Unicode confusables: "аlice", "a1ice"); SenderLooksLikeSelf
	// when that member is this machine's own. Verified rows only.
	SenderLooksLike     string `json:"senderLooksLike,omitempty"`
	SenderLooksLikeSelf bool   `json:"senderLooksLikeSelf,omitzero"`
	// RecipientPubkey is the key the message was addressed to: the
	// member's, or one of its sessions'.
	RecipientPubkey string `json:"recipientPubkey,omitempty"`
	RecipientKind   string `json:"recipientKind,omitempty"` // member | session
	// TargetSpec is the sender's spec verbatim (`*`, `@group`, a
	// pubkey): it tells a broadcast from a group message.
	TargetSpec   string `json:"targetSpec,omitempty"`
	Body         string `json:"body,omitempty"`
	DecryptError string `json:"decryptError,omitempty"`
	Verified     bool   `json:"verified"`
	// Plaintext: a post in a --plaintext topic, which no signature
	// covers: SenderName is the broker's word for who sent it (shown
	// as "not verified"), not a proven name.
	Plaintext  bool   `json:"plaintext,omitzero"`
	Priority   string `json:"priority"`
	ReceivedAt int64  `json:"receivedAt"`
	// SentAt is when the broker accepted the message (its createdAt):
	// a message queued for an offline recipient is received much later.
	// 0 in rows stored before it was kept.
	SentAt    int64  `json:"sentAt,omitzero"`
	SeenAt    int64  `json:"seenAt,omitzero"`
	ReplyToID string `json:"replyToId,omitempty"`
	// MentionsYou: a topic post that mentions this member or one of its
	// agent sessions (topic post --mention).
	MentionsYou bool `json:"mentionsYou,omitzero"`
}

// Peer is one row of GET /v1/peers: the broker's Peer tagged for the caller.
type Peer struct {
	Mesh string `json:"mesh"`
	wire.Peer
	IsSelf        bool `json:"isSelf"`
	IsThisSession bool `json:"isThisSession"`
}

// Member is one row of GET /v1/members.
type Member struct {
	Mesh string `json:"mesh"`
	wire.Member
}

// SeenRequest is POST /v1/inbox/seen.
type SeenRequest struct {
	IDs []string `json:"ids"`
}

// RequeueRequest is POST /v1/outbox/requeue.
type RequeueRequest struct {
	ID string `json:"id"`
}

// GroupRequest is POST /v1/groups.
type GroupRequest struct {
	Mesh string `json:"mesh,omitempty"`
	Op   string `json:"op"` // join | leave
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// ProfileRequest is POST /v1/profile.
type ProfileRequest struct {
	Mesh    string  `json:"mesh,omitempty"`
	Status  string  `json:"status,omitempty"`
	Summary *string `json:"summary,omitzero"` // omitzero: "" clears the summary (omitempty dropped it)
	Visible *bool   `json:"visible,omitempty"`
}

// OK is the body of routes with no result.
type OK struct {
	OK bool `json:"ok"`
}

// ReloadResponse is POST /v1/reload's answer: the slugs of the meshes the
// reload started, new in config.json or restarted after a kick or a ban
// (empty when nothing changed).
type ReloadResponse struct {
	OK      bool     `json:"ok"`
	Started []string `json:"started"`
}

// Event kinds of GET /v1/events.
const (
	EventMessage      = "message"
	EventPeerJoined   = "peer_joined"
	EventPeerLeft     = "peer_left"
	EventPeerReturned = "peer_returned"
	EventBrokerStatus = "broker_status"
	EventOutboxStatus = "outbox_status"
	EventSystem       = "system"
	// EventSessionStatus: the broker ended an agent session's own
	// connection for good (kicked, removed, banned). Only that session's
	// subscribers (and the member's, unscoped) get it.
	EventSessionStatus = "session_status"
)

// SessionStatusEvent is the data of a session_status event.
type SessionStatusEvent struct {
	Mesh      string `json:"mesh"`
	SessionID string `json:"sessionId"`
	Pubkey    string `json:"pubkey"`
	State     string `json:"state"`
	Error     string `json:"error,omitempty"`
	Hint      string `json:"hint,omitempty"`
}

// BrokerStatusEvent is the data of a broker_status event.
type BrokerStatusEvent struct {
	Mesh  string `json:"mesh"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// SessionRegister is POST /v1/sessions/register (03-daemon "Sessions"). The
// token is the caller's secret: the daemon keeps only its hash.
type SessionRegister struct {
	Token       string       `json:"token"`
	SessionID   string       `json:"sessionId"`
	Mesh        string       `json:"mesh,omitempty"`
	DisplayName string       `json:"displayName"`
	PID         int          `json:"pid"`
	Cwd         string       `json:"cwd,omitempty"`
	Groups      []wire.Group `json:"groups,omitempty"`
	PeerType    string       `json:"peerType,omitempty"`
	Channel     string       `json:"channel,omitempty"`
}

// Session is one registered session as the registry routes show it (no
// token, no key).
type Session struct {
	SessionID    string       `json:"sessionId"`
	Mesh         string       `json:"mesh"`
	Pubkey       string       `json:"pubkey"`
	MemberPubkey string       `json:"memberPubkey"`
	DisplayName  string       `json:"displayName"`
	PID          int          `json:"pid"`
	Cwd          string       `json:"cwd,omitempty"`
	Groups       []wire.Group `json:"groups"`
	PeerType     string       `json:"peerType"`
	Channel      string       `json:"channel,omitempty"`
	State        string       `json:"state"`  // the session connection's state (connecting, open, ...)
	Status       string       `json:"status"` // idle | working | dnd, as the session last set it
	Summary      string       `json:"summary,omitempty"`
	Error        string       `json:"error,omitempty"`
	RegisteredAt int64        `json:"registeredAt"`
}

// HookRequest is POST /v1/sessions/hook: what `claudemesh hook` learned
// from Claude Code. The session is the one registered with SessionID (the
// id `launch` gave claude), else the one registered with the nearest of
// PIDs (the hook's ancestors: ambient mode registers the `claude` pid).
type HookRequest struct {
	Event     string `json:"event"` // working | idle | dnd
	SessionID string `json:"sessionId,omitempty"`
	PIDs      []int  `json:"pids,omitempty"`
}

// HookResponse carries the session's unread messages (for working), oldest
// first, which the daemon marked seen for that session, and Context: the
// same messages rendered as the hook's additionalContext (agentview), within
// Claude Code's size limit. Unread messages that did not fit stay unread.
type HookResponse struct {
	Session     Session    `json:"session"`
	Messages    []InboxRow `json:"messages"`
	Context     string     `json:"context,omitempty"`
	StatusError string     `json:"statusError,omitempty"`
}

// ---- topics (03-daemon "Local API": /v1/topics…) ----
//
// Every topic route takes the mesh as ?mesh= (GET) or "mesh" in the body
// (POST); it may be omitted when one mesh is joined. {name} is a topic's
// name or id. Bodies are decrypted and verified by the daemon: a browser or
// agent using these routes never holds a key.

// Daemon events about topics (GET /v1/events).
const (
	// EventTopicMessage carries every topic post the daemon receives or
	// catches up on, the member's own included (a TopicMessage); posts by
	// others are also stored as inbox rows and sent as `message` events.
	EventTopicMessage = "topic_message"
	// EventTopicKey says the daemon opened new keys of a topic (a re-seal
	// or a rotation reached it): what could not be read now can be (a
	// TopicKeyEvent).
	EventTopicKey = "topic_key"
)

// Topic is one element of GET /v1/topics and the answer of POST /v1/topics.
type Topic struct {
	Mesh string `json:"mesh"`
	wire.TopicInfo
	// HasKey: this daemon holds the key of the current generation (always
	// false for plaintext topics, which have none).
	HasKey bool `json:"hasKey"`
}

// TopicCreateRequest is POST /v1/topics.
type TopicCreateRequest struct {
	Mesh        string `json:"mesh,omitempty"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Private     bool   `json:"private,omitzero"`
	Plaintext   bool   `json:"plaintext,omitzero"`
}

// TopicMeshRequest is the body of POST /v1/topics/{name}/join, …/leave and
// …/rotate.
type TopicMeshRequest struct {
	Mesh string `json:"mesh,omitempty"`
}

// TopicAddRequest is POST /v1/topics/{name}/add: a lead adds a member
// (pubkey, memberId or display name) with a role (lead, member or
// observer; "" = member), and the daemon seals the current key for it if
// it holds the key. The answer is the member's TopicMember row.
type TopicAddRequest struct {
	Mesh   string `json:"mesh,omitempty"`
	Member string `json:"member"`
	Role   string `json:"role,omitempty"`
}

// TopicReadRequest is POST /v1/topics/{name}/read: move the read marker to
// upTo (a message id; "" = the newest).
type TopicReadRequest struct {
	Mesh string `json:"mesh,omitempty"`
	UpTo string `json:"upTo,omitempty"`
}

// TopicMember is one element of GET /v1/topics/{name}/members.
type TopicMember struct {
	Mesh string `json:"mesh"`
	wire.TopicMemberInfo
}

// TopicMessage is a topic post decrypted for the caller: the
// `topic tail --json` line of 04-cli ({id, topic, senderName, senderPubkey,
// body, keyGen, verified, createdAt, replyToId?}) plus mesh, topicId and
// the reasons a post could not be read. SenderName is empty when Verified is
// false (except in plaintext topics, which carry no signatures: Plaintext
// says so).
type TopicMessage struct {
	ID                 string `json:"id"`
	Mesh               string `json:"mesh"`
	Topic              string `json:"topic"`
	TopicID            string `json:"topicId"`
	SenderName         string `json:"senderName"`
	SenderPubkey       string `json:"senderPubkey"`
	SenderMemberPubkey string `json:"senderMemberPubkey"`
	// SenderMemberName is that member's enrolled name, as the daemon
	// knows it (verified posts; "" when unknown).
	SenderMemberName string   `json:"senderMemberName,omitempty"`
	Body             string   `json:"body"`
	KeyGen           int      `json:"keyGen"`
	Verified         bool     `json:"verified"`
	Plaintext        bool     `json:"plaintext,omitzero"`
	CreatedAt        int64    `json:"createdAt"`
	ReplyToID        string   `json:"replyToId,omitempty"`
	Mentions         []string `json:"mentions,omitempty"`
	// DecryptError says why Body is empty; KeyMissing when it is for want
	// of the generation's key (a member who holds it shares it).
	DecryptError string `json:"decryptError,omitempty"`
	KeyMissing   bool   `json:"keyMissing,omitzero"`
}

// TopicMessages is GET /v1/topics/{name}/messages?mesh=&limit=&before=:
// a page of history, newest first.
type TopicMessages struct {
	Messages []TopicMessage `json:"messages"`
	More     bool           `json:"more"`
	// WaitingForKey: the daemon does not hold the current generation's key
	// yet; a member who holds it seals it for this member automatically
	// when online (a topic_key event follows).
	WaitingForKey bool `json:"waitingForKey"`
	// KeyGen is the topic's current key generation. A post of an older
	// generation whose key this member lacks (KeyMissing) stays
	// unreadable: members share only the current generation's key.
	KeyGen int `json:"keyGen"`
}

// TopicPostRequest is POST /v1/topics/{name}/messages: accepted into the
// outbox like POST /v1/send to "#name" (the answer is a SendResponse).
// Mentions are display names, pubkeys or pubkey prefixes.
type TopicPostRequest struct {
	Mesh            string   `json:"mesh,omitempty"`
	Message         string   `json:"message"`
	ClientMessageID string   `json:"clientMessageId,omitempty"`
	ReplyToID       string   `json:"replyToId,omitempty"`
	Mentions        []string `json:"mentions,omitempty"`
	Priority        string   `json:"priority,omitempty"`
}

// TopicKeyEvent is the data of a topic_key event.
type TopicKeyEvent struct {
	Mesh    string `json:"mesh"`
	TopicID string `json:"topicId"`
	Topic   string `json:"topic"`
}

// OutboxMessageStatus is GET /v1/messages/{id} for a message still in the
// outbox, not at the broker yet (or failed before it got there): its
// public status (accepted, failed) and no recipients, which are known only
// once the broker takes it.
type OutboxMessageStatus struct {
	MessageID       string                `json:"messageId"`
	ClientMessageID string                `json:"clientMessageId"`
	TargetSpec      string                `json:"targetSpec"`
	DisplayName     string                `json:"displayName,omitempty"`
	CreatedAt       int64                 `json:"createdAt"`
	Recipients      []wire.RecipientState `json:"recipients"`
	State           string                `json:"state"`
	Error           string                `json:"error,omitempty"`
	ErrorCode       string                `json:"errorCode,omitempty"`
}
