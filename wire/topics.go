package wire

// Topics, notifications and API keys (01-protocol §5 and §6). They live in a
// file of their own so the frames of the other features stay where they
// were.

// Topic frame types. Several requests are answered by a frame of the same
// name (topic_members, topic_history, topic_keys, topic_pending_seals).
const (
	TypeTopicCreate       = "topic_create"
	TypeTopic             = "topic"
	TypeTopicList         = "topic_list"
	TypeTopics            = "topics"
	TypeTopicJoin         = "topic_join"
	TypeTopicLeave        = "topic_leave"
	TypeTopicAdd          = "topic_add"
	TypeTopicRemove       = "topic_remove"
	TypeTopicMembers      = "topic_members"
	TypeTopicHistory      = "topic_history"
	TypeTopicKeys         = "topic_keys"
	TypeTopicPendingSeals = "topic_pending_seals"
	TypeTopicSeal         = "topic_seal"
	TypeTopicRotate       = "topic_rotate"
	TypeTopicMarkRead     = "topic_mark_read"
	TypeNotificationsList = "notifications_list"
	TypeNotifications     = "notifications"
	TypeNotificationsRead = "notifications_read"

	TypeAPIKeyCreate = "apikey_create"
	TypeAPIKey       = "apikey"
	TypeAPIKeyList   = "apikey_list"
	TypeAPIKeys      = "apikeys"
	TypeAPIKeyRevoke = "apikey_revoke"
)

// Topic vocabulary.
const (
	// GeneralTopic is the reserved topic every mesh has; every active
	// member belongs to it.
	GeneralTopic = "general"

	VisibilityPublic  = "public"
	VisibilityPrivate = "private"

	TopicLead     = "lead"
	TopicMember   = "member"
	TopicObserver = "observer"

	// BodyPlaintext (1) is a base64 plaintext body, allowed only in topics
	// created unencrypted; BodyEncrypted (2) is the secretbox format of
	// 02-crypto.
	BodyPlaintext = 1
	BodyEncrypted = 2

	// MaxTopicHistory is the largest topic_history page.
	MaxTopicHistory = 50
)

// System events about topics (`push` with subtype "system"). The broker sends
// them to the connected member presences (never sessions, which hold no
// member key) of the members concerned; docs/protocol.md describes them.
const (
	// EventTopicMemberJoined goes to the members who hold the topic's
	// current key when a member joins (or is added) without it: one of
	// them seals the key for the joiner.
	EventTopicMemberJoined = "topic_member_joined"
	// EventTopicRekeyNeeded goes to the current key holders when a member
	// left, was removed, kicked or banned: the first one online rotates.
	EventTopicRekeyNeeded = "topic_rekey_needed"
	// EventTopicSealed goes to a member when a seal for it was stored
	// (re-seal, rotation, creation): it fetches its keys again.
	EventTopicSealed = "topic_sealed"
)

// Error codes of topics and API keys.
const (
	CodeTopicNotFound     = "topic_not_found"
	CodeTopicExists       = "topic_exists"
	CodeIncompleteSeals   = "incomplete_seals"
	CodeTopicEncrypted    = "topic_encrypted"
	CodeAPIKeyInvalid     = "api_key_invalid"
	CodeMissingCapability = "missing_capability"
	CodeTopicOutOfScope   = "topic_out_of_scope"
	// CodeTooManyTopics and CodeTooManyAPIKeys refuse what would pass a
	// per-mesh or per-member cap (so one member cannot fill the store).
	CodeTooManyTopics  = "too_many_topics"
	CodeTooManyAPIKeys = "too_many_api_keys"
)

// TopicEvent is the eventData of the topic system events.
type TopicEvent struct {
	TopicID   string `json:"topicId"`
	TopicName string `json:"topicName"`
	KeyGen    int    `json:"keyGen"`
	// The member the event is about (topic_member_joined).
	MemberID     string `json:"memberId,omitempty"`
	MemberPubkey string `json:"memberPubkey,omitempty"`
	DisplayName  string `json:"displayName,omitempty"`
}

// TopicSealIn is one seal a client uploads (topic_seal, topic_rotate).
type TopicSealIn struct {
	RecipientPubkey string `json:"recipientPubkey"`
	KeyGen          int    `json:"keyGen"`
	Blob            string `json:"blob"`
	Nonce           string `json:"nonce"`
	Signature       string `json:"signature"`
}

// TopicSealOut is one of the caller's seals (topic_keys).
type TopicSealOut struct {
	KeyGen       int    `json:"keyGen"`
	Blob         string `json:"blob"`
	Nonce        string `json:"nonce"`
	SealerPubkey string `json:"sealerPubkey"`
	Signature    string `json:"signature"`
}

// TopicCreate creates a topic. ID is chosen by the creator (a ULID): the
// creator's seal of T_1 is signed over the topic id, so the id must be known
// before the broker sees the request. Encrypted defaults to true; Seal is
// required for an encrypted topic and absent for a plaintext one.
type TopicCreate struct {
	Type        string       `json:"type"`
	ReqID       string       `json:"reqId"`
	ID          string       `json:"id,omitempty"`
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Visibility  string       `json:"visibility,omitempty"`
	Encrypted   *bool        `json:"encrypted,omitempty"`
	Seal        *TopicSealIn `json:"seal,omitempty"`
}

// TopicInfo is one topic as listed. RekeyNeeded and Role are additions to
// 01-protocol's list (unknown fields are ignored by clients).
type TopicInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Visibility  string `json:"visibility"`
	Encrypted   bool   `json:"encrypted"`
	KeyGen      int    `json:"keyGen"`
	MemberCount int    `json:"memberCount"`
	Joined      bool   `json:"joined"`
	Unread      int    `json:"unread"`
	CreatedAt   int64  `json:"createdAt"`
	RekeyNeeded bool   `json:"rekeyNeeded,omitzero"`
	Role        string `json:"role,omitempty"`
}

// TopicReply answers topic_create.
type TopicReply struct {
	Type  string    `json:"type"`
	ReqID string    `json:"reqId"`
	Topic TopicInfo `json:"topic"`
}

// Topics answers topic_list.
type Topics struct {
	Type   string      `json:"type"`
	ReqID  string      `json:"reqId"`
	Topics []TopicInfo `json:"topics"`
}

// TopicRequest is every topic request that names a topic (by id or name):
// topic_join, topic_leave, topic_add, topic_remove, topic_members,
// topic_history, topic_keys, topic_pending_seals, topic_seal, topic_rotate,
// topic_mark_read. Which other fields matter depends on Type.
type TopicRequest struct {
	Type   string `json:"type"`
	ReqID  string `json:"reqId"`
	Topic  string `json:"topic"`
	Member string `json:"member,omitempty"` // topic_add, topic_remove: pubkey, memberId or display name
	Role   string `json:"role,omitempty"`   // topic_add
	Limit  int    `json:"limit,omitzero"`   // topic_history
	Before string `json:"before,omitempty"` // topic_history: newest first, older than this message id
	// After (an addition to 01-protocol) pages topic_history oldest
	// first, newer than this message id: how a client catches up.
	After  string        `json:"after,omitempty"`
	KeyGen int           `json:"keyGen,omitzero"` // topic_rotate
	Seals  []TopicSealIn `json:"seals,omitempty"` // topic_seal, topic_rotate
	UpTo   string        `json:"upTo,omitempty"`  // topic_mark_read
}

// TopicMemberInfo is one row of topic_members.
type TopicMemberInfo struct {
	MemberID      string `json:"memberId"`
	Pubkey        string `json:"pubkey"`
	DisplayName   string `json:"displayName"`
	Role          string `json:"role"`
	JoinedAt      int64  `json:"joinedAt"`
	HasCurrentKey bool   `json:"hasCurrentKey"`
}

// TopicMembers answers topic_members.
type TopicMembers struct {
	Type    string            `json:"type"`
	ReqID   string            `json:"reqId"`
	Members []TopicMemberInfo `json:"members"`
}

// TopicHistory answers topic_history: push-shaped messages, newest first
// (oldest first when the request used After).
type TopicHistory struct {
	Type     string    `json:"type"`
	ReqID    string    `json:"reqId"`
	Messages []RawJSON `json:"messages"`
	More     bool      `json:"more"`
}

// TopicKeys answers topic_keys with the caller's own seals, every
// generation it has one for.
type TopicKeys struct {
	Type   string         `json:"type"`
	ReqID  string         `json:"reqId"`
	KeyGen int            `json:"keyGen"`
	Seals  []TopicSealOut `json:"seals"`
}

// PendingMember is a topic member with no seal of the current generation.
type PendingMember struct {
	MemberID string `json:"memberId"`
	Pubkey   string `json:"pubkey"`
}

// TopicPendingSeals answers topic_pending_seals.
type TopicPendingSeals struct {
	Type    string          `json:"type"`
	ReqID   string          `json:"reqId"`
	KeyGen  int             `json:"keyGen"`
	Pending []PendingMember `json:"pending"`
}

// NotificationsListRequest is notifications_list.
type NotificationsListRequest struct {
	Type   string `json:"type"`
	ReqID  string `json:"reqId"`
	Since  int64  `json:"since,omitzero"`
	Unread bool   `json:"unread,omitzero"`
}

// Notification is one mention of the caller's member in a topic post.
type Notification struct {
	ID           string `json:"id"`
	TopicID      string `json:"topicId"`
	Topic        string `json:"topic"`
	MessageID    string `json:"messageId"`
	SenderPubkey string `json:"senderPubkey"`
	SenderName   string `json:"senderName"`
	CreatedAt    int64  `json:"createdAt"`
	ReadAt       int64  `json:"readAt,omitzero"`
}

// Notifications answers notifications_list.
type Notifications struct {
	Type          string         `json:"type"`
	ReqID         string         `json:"reqId"`
	Notifications []Notification `json:"notifications"`
}

// NotificationsReadRequest is notifications_read.
type NotificationsReadRequest struct {
	Type  string   `json:"type"`
	ReqID string   `json:"reqId"`
	IDs   []string `json:"ids"`
}

// API key capabilities.
const (
	CapRead  = "read"
	CapSend  = "send"
	CapAdmin = "admin"
)

// APIKeyCreate creates an API key acting as the caller's member.
type APIKeyCreate struct {
	Type         string   `json:"type"`
	ReqID        string   `json:"reqId"`
	Label        string   `json:"label"`
	Capabilities []string `json:"capabilities"`
	Topics       []string `json:"topics,omitempty"`
	ExpiresAt    int64    `json:"expiresAt,omitzero"`
}

// APIKeyInfo describes an API key; the secret itself is never listed.
type APIKeyInfo struct {
	ID           string   `json:"id"`
	Prefix       string   `json:"prefix"`
	Label        string   `json:"label"`
	Capabilities []string `json:"capabilities"`
	Topics       []string `json:"topics"`
	MemberPubkey string   `json:"memberPubkey"`
	CreatedAt    int64    `json:"createdAt"`
	ExpiresAt    int64    `json:"expiresAt,omitzero"`
	RevokedAt    int64    `json:"revokedAt,omitzero"`
	LastUsedAt   int64    `json:"lastUsedAt,omitzero"`
	// MemberRemoved (apikey_list) marks a key whose member is no longer an
	// active member of the mesh: the broker refuses it as it refuses a
	// revoked key.
	MemberRemoved bool `json:"memberRemoved,omitzero"`
}

// APIKeyReply answers apikey_create, with the secret: shown this once.
type APIKeyReply struct {
	Type       string `json:"type"`
	ReqID      string `json:"reqId"`
	Secret     string `json:"secret"`
	APIKeyInfo `json:",inline"`
}

// APIKeys answers apikey_list.
type APIKeys struct {
	Type  string       `json:"type"`
	ReqID string       `json:"reqId"`
	Keys  []APIKeyInfo `json:"keys"`
}

// APIKeyRevoke revokes an API key by id.
type APIKeyRevoke struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
	ID    string `json:"id"`
}
