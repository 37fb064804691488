// Package wire is the broker's WebSocket vocabulary (01-protocol.md §2): one
// Go type per frame, shared by the broker, the daemon and the one-shot CLI so
// that a field renamed in one place is renamed everywhere. Field names are
// exact camelCase; optional fields are omitted, never null.
package wire

// ProtocolVersion is the `protocol` number of challenge, hello and
// session_hello.
const ProtocolVersion = 1

// Frame type names.
const (
	TypeChallenge     = "challenge"
	TypeHello         = "hello"
	TypeSessionHello  = "session_hello"
	TypeHelloAck      = "hello_ack"
	TypeSend          = "send"
	TypeAck           = "ack"
	TypePush          = "push"
	TypeClientAck     = "client_ack"
	TypeAcked         = "acked"
	TypeReceipt       = "receipt"
	TypeFetchQueued   = "fetch_queued"
	TypeQueued        = "queued"
	TypeListPeers     = "list_peers"
	TypePeers         = "peers"
	TypeMembersList   = "members_list"
	TypeMembers       = "members"
	TypeSetStatus     = "set_status"
	TypeSetSummary    = "set_summary"
	TypeSetVisible    = "set_visible"
	TypeJoinGroup     = "join_group"
	TypeLeaveGroup    = "leave_group"
	TypeMessageStatus = "message_status"
	TypeMeshLeave     = "mesh_leave"
	TypeInviteCreate  = "invite_create"
	TypeInvite        = "invite"
	TypeInviteList    = "invite_list"
	TypeInvites       = "invites"
	TypeInviteRevoke  = "invite_revoke"
	TypeOK            = "ok"
	TypeError         = "error"
)

// Message kinds, priorities, roles and statuses.
const (
	KindBox   = "box"
	KindMulti = "multi"
	KindTopic = "topic"

	PriorityNow  = "now"
	PriorityNext = "next"
	PriorityLow  = "low"

	RoleControlPlane = "control-plane"
	RoleCLI          = "cli"
	RoleService      = "service"
	RoleSession      = "session"

	MemberOwner  = "owner"
	MemberAdmin  = "admin"
	MemberMember = "member"

	PeerAI        = "ai"
	PeerHuman     = "human"
	PeerConnector = "connector"

	StatusIdle    = "idle"
	StatusWorking = "working"
	StatusDND     = "dnd"

	StateDelivered = "delivered"
	StatePending   = "pending"
	StateExpired   = "expired"
)

// System push events (`push` with subtype "system").
const (
	SubtypeSystem     = "system"
	EventPeerJoined   = "peer_joined"
	EventPeerReturned = "peer_returned"
	EventPeerLeft     = "peer_left"
	// EventMemberChanged tells every presence of a mesh that a member
	// record changed (MemberEvent), so clients that cache the member list
	// never answer from a stale one.
	EventMemberChanged = "member_changed"
	// EventPeersChanged stands for presence events the broker did not
	// send one by one: a receiver that a burst of joins and leaves would
	// have sent more than a handful within one interval gets this single
	// event (PeersChangedEvent) instead, and re-reads list_peers if it
	// keeps a directory. It is what keeps a reconnect storm of N
	// presences at O(N) frames instead of O(N²).
	EventPeersChanged = "peers_changed"
)

// PeersChangedEvent is the eventData of peers_changed.
type PeersChangedEvent struct {
	// Events is how many presence events (peer_joined, peer_returned,
	// peer_left) the broker folded into this one.
	Events int `json:"events"`
}

// The `change` of a member_changed event.
const (
	MemberJoined      = "joined"       // enrolled with an invite
	MemberLeft        = "left"         // mesh_leave: the record is gone
	MemberBanned      = "banned"       // revoked (revokedAt set)
	MemberUnbanned    = "unbanned"     // restored
	MemberRoleChanged = "role_changed" // memberRole changed (set_role, ownership transfer)
	MemberRenamed     = "renamed"      // displayName changed
)

// Envelope is the part every frame shares; decoders read it first to learn
// which concrete type to decode into.
type Envelope struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId,omitempty"`
}

// Challenge is the broker's first frame on every connection. Its signature
// (broker key over crypto.ChallengeString) lets a client detect a server in
// the middle relaying a real broker's challenge.
type Challenge struct {
	Type          string `json:"type"`
	Nonce         string `json:"nonce"`
	ServerTime    int64  `json:"serverTime"`
	Protocol      int    `json:"protocol"`
	BrokerVersion string `json:"brokerVersion"`
	BrokerPubkey  string `json:"brokerPubkey"`
	Signature     string `json:"signature"`
}

// Group is a self-declared addressing label of a member or session.
type Group struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// Hello authenticates a member connection. Presence is a pointer because its
// default (true) differs from Go's zero value.
type Hello struct {
	Type        string  `json:"type"`
	Protocol    int     `json:"protocol"`
	MeshID      string  `json:"meshId"`
	MemberID    string  `json:"memberId"`
	Pubkey      string  `json:"pubkey"`
	Timestamp   int64   `json:"timestamp"`
	Challenge   string  `json:"challenge"`
	Signature   string  `json:"signature"`
	SessionID   string  `json:"sessionId"`
	Role        string  `json:"role,omitempty"`
	Presence    *bool   `json:"presence,omitempty"`
	PeerType    string  `json:"peerType,omitempty"`
	DisplayName string  `json:"displayName,omitempty"`
	PID         *int    `json:"pid,omitempty"`
	Cwd         string  `json:"cwd,omitempty"`
	Hostname    string  `json:"hostname,omitempty"`
	Channel     string  `json:"channel,omitempty"`
	Model       string  `json:"model,omitempty"`
	Groups      []Group `json:"groups,omitempty"`
}

// Attestation is the member key's signed statement that a session key
// belongs to it until ExpiresAt (crypto.SessionAttestString).
type Attestation struct {
	SessionPubkey string `json:"sessionPubkey"`
	ParentPubkey  string `json:"parentPubkey"`
	ExpiresAt     int64  `json:"expiresAt"`
	Signature     string `json:"signature"`
}

// SessionHello authenticates an agent-session connection under its own key.
type SessionHello struct {
	Type           string       `json:"type"`
	Protocol       int          `json:"protocol"`
	MeshID         string       `json:"meshId"`
	ParentMemberID string       `json:"parentMemberId"`
	ParentPubkey   string       `json:"parentPubkey"`
	SessionPubkey  string       `json:"sessionPubkey"`
	Attestation    *Attestation `json:"attestation"`
	Timestamp      int64        `json:"timestamp"`
	Challenge      string       `json:"challenge"`
	Signature      string       `json:"signature"`
	SessionID      string       `json:"sessionId"`
	DisplayName    string       `json:"displayName"`
	PeerType       string       `json:"peerType"`
	PID            *int         `json:"pid,omitempty"`
	Cwd            string       `json:"cwd,omitempty"`
	Hostname       string       `json:"hostname,omitempty"`
	Channel        string       `json:"channel,omitempty"`
	Model          string       `json:"model,omitempty"`
	Groups         []Group      `json:"groups,omitempty"`
}

// HelloAck accepts a hello. PresenceID is omitted for transient connections.
type HelloAck struct {
	Type         string   `json:"type"`
	PresenceID   string   `json:"presenceId,omitempty"`
	MeshID       string   `json:"meshId"`
	MeshName     string   `json:"meshName"`
	MemberID     string   `json:"memberId"`
	MemberRole   string   `json:"memberRole"`
	DisplayName  string   `json:"displayName"`
	BrokerPubkey string   `json:"brokerPubkey"`
	ServerTime   int64    `json:"serverTime"`
	Features     []string `json:"features"`
	// BrokerURLs is the cluster's public URLs (--public-urls), so a
	// connected client learns where else it can reach the mesh; omitted
	// by a broker run without that flag. Optional: clients may ignore it.
	BrokerURLs []string `json:"brokerUrls,omitempty"`
}

// MultiKey is one recipient's box of a multi message's content key.
type MultiKey struct {
	To    string `json:"to"`
	Nonce string `json:"nonce"`
	Box   string `json:"box"`
}

// Send carries one encrypted message to the broker.
type Send struct {
	Type            string     `json:"type"`
	ID              string     `json:"id"`
	ReqID           string     `json:"reqId,omitempty"`
	ClientMessageID string     `json:"clientMessageId,omitempty"`
	TargetSpec      string     `json:"targetSpec"`
	Kind            string     `json:"kind"`
	Priority        string     `json:"priority,omitempty"`
	Nonce           string     `json:"nonce"`
	Ciphertext      string     `json:"ciphertext"`
	Keys            []MultiKey `json:"keys,omitempty"`
	Signature       string     `json:"signature,omitempty"`
	KeyGen          *int       `json:"keyGen,omitempty"`
	BodyVersion     int        `json:"bodyVersion,omitzero"`
	ReplyToID       string     `json:"replyToId,omitempty"`
	Mentions        []string   `json:"mentions,omitempty"`
	Subtype         string     `json:"subtype,omitempty"`
	Receipts        *bool      `json:"receipts,omitempty"`
}

// AckError is the failure half of an ack.
type AckError struct {
	Code         string `json:"code"`
	Message      string `json:"message"`
	RetryAfterMs int64  `json:"retryAfterMs,omitzero"`
}

// Ack answers a send, correlated by ID. Success carries MessageID; failure
// carries Error. Queued is always true on success (the message is durable).
type Ack struct {
	Type      string    `json:"type"`
	ID        string    `json:"id"`
	ReqID     string    `json:"reqId,omitempty"`
	MessageID string    `json:"messageId,omitempty"`
	Queued    bool      `json:"queued,omitzero"`
	Online    *int      `json:"online,omitempty"`
	Pending   *int      `json:"pending,omitempty"`
	Duplicate bool      `json:"duplicate,omitzero"`
	Error     *AckError `json:"error,omitempty"`
}

// TopicRef names the topic of a topic push.
type TopicRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Push delivers a message (or, with Subtype "system", a presence event) to a
// recipient connection. For multi messages Key is that recipient's entry
// only; the broker serialises the shared part once per fan-out and splices
// each recipient's key in (see EncodePushWithKey).
type Push struct {
	Type               string       `json:"type"`
	MessageID          string       `json:"messageId"`
	MeshID             string       `json:"meshId,omitempty"`
	Kind               string       `json:"kind,omitempty"`
	TargetSpec         string       `json:"targetSpec,omitempty"`
	SenderPubkey       string       `json:"senderPubkey,omitempty"`
	SenderMemberPubkey string       `json:"senderMemberPubkey,omitempty"`
	SenderName         string       `json:"senderName,omitempty"`
	SenderAttestation  *Attestation `json:"senderAttestation,omitempty"`
	Priority           string       `json:"priority,omitempty"`
	Nonce              string       `json:"nonce,omitempty"`
	Ciphertext         string       `json:"ciphertext,omitempty"`
	Key                *MultiKey    `json:"key,omitempty"`
	Topic              *TopicRef    `json:"topic,omitempty"`
	KeyGen             *int         `json:"keyGen,omitempty"`
	Signature          string       `json:"signature,omitempty"`
	BodyVersion        int          `json:"bodyVersion,omitzero"`
	ReplyToID          string       `json:"replyToId,omitempty"`
	Mentions           []string     `json:"mentions,omitempty"`
	Subtype            string       `json:"subtype,omitempty"`
	Event              string       `json:"event,omitempty"`
	EventData          any          `json:"eventData,omitempty"`
	ClientMessageID    string       `json:"clientMessageId,omitempty"`
	CreatedAt          int64        `json:"createdAt"`
}

// PeerEvent is the eventData of peer_joined / peer_returned / peer_left.
type PeerEvent struct {
	Pubkey       string `json:"pubkey"`
	MemberPubkey string `json:"memberPubkey"`
	DisplayName  string `json:"displayName"`
	SessionID    string `json:"sessionId"`
	Role         string `json:"role"`
	PeerType     string `json:"peerType"`
}

// MemberEvent is the eventData of member_changed: what changed and the
// member's record as members_list would show it now (for "left", the record
// as it was). Previous holds the old value of a renamed or role_changed
// member.
type MemberEvent struct {
	Change   string          `json:"change"`
	Member   Member          `json:"member"`
	Previous *MemberPrevious `json:"previous,omitempty"`
}

// MemberPrevious is the value a member_changed event replaced.
type MemberPrevious struct {
	DisplayName string `json:"displayName,omitempty"`
	MemberRole  string `json:"memberRole,omitempty"`
}

// ClientAck settles deliveries (and receipts). MessageID is the accepted
// single-id form.
type ClientAck struct {
	Type       string   `json:"type"`
	ReqID      string   `json:"reqId,omitempty"`
	MessageIDs []string `json:"messageIds,omitempty"`
	MessageID  string   `json:"messageId,omitempty"`
}

// Acked confirms a client_ack that carried a reqId, after the durable commit.
type Acked struct {
	Type       string   `json:"type"`
	ReqID      string   `json:"reqId"`
	MessageIDs []string `json:"messageIds"`
}

// Receipt tells a sender that a recipient acknowledged its message.
type Receipt struct {
	Type            string `json:"type"`
	ReceiptID       string `json:"receiptId"`
	MessageID       string `json:"messageId"`
	ClientMessageID string `json:"clientMessageId"`
	RecipientPubkey string `json:"recipientPubkey"`
	DeliveredAt     int64  `json:"deliveredAt"`
}

// FetchQueued asks for what is queued for the connection's identity.
type FetchQueued struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
	Limit int    `json:"limit,omitzero"`
}

// Queued answers fetch_queued. Messages are raw push frames so the broker can
// hand out the bytes it stored without re-encoding them.
type Queued struct {
	Type     string    `json:"type"`
	ReqID    string    `json:"reqId"`
	Messages []RawJSON `json:"messages"`
	Receipts []Receipt `json:"receipts"`
	More     bool      `json:"more"`
}

// Request is the generic shape of reqId-only requests (list_peers,
// members_list, mesh_leave, invite_list).
type Request struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
}

// Peer is one presence (or, with --all, one offline member) as listed.
type Peer struct {
	Pubkey       string       `json:"pubkey"`
	MemberPubkey string       `json:"memberPubkey"`
	MemberID     string       `json:"memberId"`
	DisplayName  string       `json:"displayName"`
	Role         string       `json:"role"`
	MemberRole   string       `json:"memberRole"`
	Status       string       `json:"status"`
	Summary      string       `json:"summary,omitempty"`
	Groups       []Group      `json:"groups"`
	SessionID    string       `json:"sessionId"`
	Cwd          string       `json:"cwd,omitempty"`
	Hostname     string       `json:"hostname,omitempty"`
	PeerType     string       `json:"peerType"`
	Channel      string       `json:"channel,omitempty"`
	Model        string       `json:"model,omitempty"`
	ConnectedAt  int64        `json:"connectedAt"`
	Online       bool         `json:"online"`
	Visible      bool         `json:"visible"`
	Attestation  *Attestation `json:"attestation,omitempty"`
}

// Peers answers list_peers.
type Peers struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
	Peers []Peer `json:"peers"`
	// More says the list continues: ask again with After = Next. The
	// broker pages list_peers by bytes, so no mesh, however many
	// presences its members open, can make the answer outgrow the
	// requester's send buffer.
	More bool   `json:"more,omitzero"`
	Next string `json:"next,omitempty"`
}

// ListPeers is the list_peers request; After continues a paged list from
// the previous answer's Next.
type ListPeers struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
	After string `json:"after,omitempty"`
}

// Member is one row of members_list.
type Member struct {
	MemberID    string `json:"memberId"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	MemberRole  string `json:"memberRole"`
	JoinedAt    int64  `json:"joinedAt"`
	LastSeenAt  int64  `json:"lastSeenAt,omitzero"`
	Online      bool   `json:"online"`
	RevokedAt   int64  `json:"revokedAt,omitzero"`
}

// Members answers members_list.
type Members struct {
	Type    string   `json:"type"`
	ReqID   string   `json:"reqId"`
	Members []Member `json:"members"`
}

// ProfileUpdate is set_status, set_summary, set_visible, join_group and
// leave_group; which field matters depends on Type.
type ProfileUpdate struct {
	Type    string `json:"type"`
	ReqID   string `json:"reqId"`
	Status  string `json:"status,omitempty"`
	Summary string `json:"summary,omitempty"`
	Visible *bool  `json:"visible,omitempty"`
	Name    string `json:"name,omitempty"`
	Role    string `json:"role,omitempty"`
}

// MessageStatusRequest asks the broker for a sent message's delivery state.
type MessageStatusRequest struct {
	Type            string `json:"type"`
	ReqID           string `json:"reqId"`
	MessageID       string `json:"messageId,omitempty"`
	ClientMessageID string `json:"clientMessageId,omitempty"`
}

// RecipientState is one recipient's delivery state.
type RecipientState struct {
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	State       string `json:"state"`
	DeliveredAt int64  `json:"deliveredAt,omitzero"`
}

// MessageStatus answers message_status.
type MessageStatus struct {
	Type       string           `json:"type"`
	ReqID      string           `json:"reqId"`
	MessageID  string           `json:"messageId"`
	TargetSpec string           `json:"targetSpec"`
	CreatedAt  int64            `json:"createdAt"`
	Recipients []RecipientState `json:"recipients"`
	// Topic (an addition to 01-protocol) names the topic of a topic post,
	// whose targetSpec is "#<topicId>"; a post has no recipients (no
	// per-member delivery: members read the topic's history).
	Topic string `json:"topic,omitempty"`
}

// InviteCreate registers a signed invite token with the broker.
type InviteCreate struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
	Token string `json:"token"`
}

// InviteRevoke revokes a registered invite.
type InviteRevoke struct {
	Type     string `json:"type"`
	ReqID    string `json:"reqId"`
	InviteID string `json:"inviteId"`
}

// InviteInfo describes a registered invite.
type InviteInfo struct {
	InviteID  string `json:"inviteId"`
	Role      string `json:"role"`
	ExpiresAt int64  `json:"expiresAt"`
	MaxUses   int    `json:"maxUses"`
	Uses      int    `json:"uses"`
	CreatedAt int64  `json:"createdAt"`
	RevokedAt int64  `json:"revokedAt,omitzero"`
}

// InviteReply answers invite_create.
type InviteReply struct {
	Type       string `json:"type"`
	ReqID      string `json:"reqId"`
	InviteInfo `json:",inline"`
}

// Invites answers invite_list.
type Invites struct {
	Type    string       `json:"type"`
	ReqID   string       `json:"reqId"`
	Invites []InviteInfo `json:"invites"`
}

// OK answers a request that has no result.
type OK struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
}

// Error reports a failed request or a protocol violation.
type Error struct {
	Type       string      `json:"type"`
	ReqID      string      `json:"reqId,omitempty"`
	Code       string      `json:"code"`
	Message    string      `json:"message"`
	Candidates []Candidate `json:"candidates,omitempty"` // ambiguous_target only
	// RetryAfterMs comes with rate_limited: how long to wait before
	// trying again.
	RetryAfterMs int64 `json:"retryAfterMs,omitzero"`
}

// Administration (01-protocol §6).
const (
	TypeDisconnect  = "disconnect"
	TypeKick        = "kick"
	TypeBan         = "ban"
	TypeUnban       = "unban"
	TypeListBans    = "list_bans"
	TypeBans        = "bans"
	TypeSetRole     = "set_role"
	TypeAdminResult = "admin_result"

	CodeAmbiguousTarget = "ambiguous_target"
	CodeUnknownTarget   = "unknown_target"
)

// AdminRequest is disconnect, kick, ban, unban and set_role. Target is a
// display name, a full pubkey or a pubkey prefix of at least 8 hex; All and
// StaleMs select many (disconnect and kick only).
type AdminRequest struct {
	Type    string `json:"type"`
	ReqID   string `json:"reqId"`
	Target  string `json:"target,omitempty"`
	All     bool   `json:"all,omitzero"`
	StaleMs int64  `json:"staleMs,omitzero"`
	Reason  string `json:"reason,omitempty"`
	Role    string `json:"role,omitempty"`
}

// PeerRef names a peer in admin results. Reason says why a skipped peer
// was skipped (owner, admin, self, control-plane, already_banned, …).
type PeerRef struct {
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	Reason      string `json:"reason,omitempty"`
}

// AdminResult answers disconnect, kick, ban, unban and set_role.
type AdminResult struct {
	Type     string    `json:"type"`
	ReqID    string    `json:"reqId"`
	Affected []PeerRef `json:"affected"`
	Skipped  []PeerRef `json:"skipped"`
}

// BanInfo is one row of list_bans.
type BanInfo struct {
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	RevokedAt   int64  `json:"revokedAt"`
	Reason      string `json:"reason"`
	BannedBy    string `json:"bannedBy,omitempty"` // pubkey of the owner or admin who banned
}

// Bans answers list_bans.
type Bans struct {
	Type  string    `json:"type"`
	ReqID string    `json:"reqId"`
	Bans  []BanInfo `json:"bans"`
}

// Candidate is one match of an ambiguous target.
type Candidate struct {
	DisplayName string `json:"displayName"`
	Pubkey      string `json:"pubkey"`
	Kind        string `json:"kind"` // member | session
	// MemberName and MemberPubkey are a session's member (empty for a
	// member): two sessions of one name are told apart by whose they are,
	// the one thing the sender knows. Additions to the specification's
	// {displayName, pubkey, kind}, which clients may ignore.
	MemberName   string `json:"memberName,omitempty"`
	MemberPubkey string `json:"memberPubkey,omitempty"`
}
