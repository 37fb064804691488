package wire

// Governance frames (01-protocol §6): the audit chain, grants, shared
// skills and ownership transfer. Kept apart from frames.go so the
// administration vocabulary reads in one place.

// Frame types.
const (
	TypeAuditQuery      = "audit_query"
	TypeAuditEntries    = "audit_entries"
	TypeAuditCheckpoint = "audit_checkpoint" // request and answer share the name

	TypeGrantsSet = "grants_set"
	TypeGrantsGet = "grants_get"
	TypeGrants    = "grants"

	TypeSkillPublish = "skill_publish"
	TypeSkillList    = "skill_list"
	TypeSkillGet     = "skill_get"
	TypeSkillRemove  = "skill_remove"
	TypeSkill        = "skill"
	TypeSkills       = "skills"

	// TypeMeshTransfer hands ownership to another member (owner only):
	// the target becomes owner, the caller admin. Answered by admin_result.
	TypeMeshTransfer = "mesh_transfer"
)

// Audit event types: the eventType of an audit entry. Every change
// 01-protocol §6 lists is one of these; `audit log --type` filters on them.
const (
	AuditMeshCreated          = "mesh_created"
	AuditMemberJoined         = "member_joined"
	AuditMemberLeft           = "member_left"
	AuditMemberRemoved        = "member_removed" // by the operator (REST)
	AuditMemberBanned         = "member_banned"
	AuditMemberUnbanned       = "member_unbanned"
	AuditRoleChanged          = "role_changed"
	AuditOwnershipTransferred = "ownership_transferred"
	AuditKick                 = "kick"
	AuditDisconnect           = "disconnect"
	AuditGrantsChanged        = "grants_changed"
	AuditTopicCreated         = "topic_created"
	AuditTopicRotated         = "topic_rotated"
	AuditInviteCreated        = "invite_created"
	AuditInviteRevoked        = "invite_revoked"
	AuditAPIKeyCreated        = "apikey_created"
	AuditAPIKeyRevoked        = "apikey_revoked"
	AuditSkillPublished       = "skill_published"
	AuditSkillRemoved         = "skill_removed"
	AuditMessageSent          = "message_sent" // only with --audit-messages
)

// AuditEventTypes lists every event type, for validation and help text.
var AuditEventTypes = []string{
	AuditMeshCreated, AuditMemberJoined, AuditMemberLeft, AuditMemberRemoved, AuditMemberBanned,
	AuditMemberUnbanned, AuditRoleChanged, AuditOwnershipTransferred, AuditKick, AuditDisconnect,
	AuditGrantsChanged, AuditTopicCreated, AuditTopicRotated, AuditInviteCreated, AuditInviteRevoked,
	AuditAPIKeyCreated, AuditAPIKeyRevoked, AuditSkillPublished, AuditSkillRemoved, AuditMessageSent,
}

// AuditEntry is one link of a mesh's audit chain (02-crypto "Audit
// chain"). Payload is the event's JSON object in canonical form; CreatedAt
// is RFC 3339 UTC with nanoseconds (crypto.AuditTimeLayout).
type AuditEntry struct {
	Seq         uint64  `json:"seq"`
	EventType   string  `json:"eventType"`
	ActorPubkey string  `json:"actorPubkey"`
	Payload     RawJSON `json:"payload"`
	PrevHash    string  `json:"prevHash"`
	Hash        string  `json:"hash"`
	CreatedAt   string  `json:"createdAt"`
}

// AuditQuery asks for entries newest first: at most Limit (1..500,
// default 100), only those with seq < Before when Before is set, only
// EventType when set.
type AuditQuery struct {
	Type      string `json:"type"`
	ReqID     string `json:"reqId"`
	Limit     int    `json:"limit,omitzero"`
	Before    uint64 `json:"before,omitzero"`
	EventType string `json:"eventType,omitempty"`
}

// AuditEntries answers audit_query. More says older matching entries
// remain (ask again with before = the last entry's seq).
type AuditEntries struct {
	Type    string       `json:"type"`
	ReqID   string       `json:"reqId"`
	Entries []AuditEntry `json:"entries"`
	More    bool         `json:"more"`
}

// AuditCheckpoint is the broker's signed statement of a chain's head:
// Signature is the broker key over
// claudemesh/audit-head/v1|<meshId>|<seq>|<hash>. An empty chain has seq 0
// and the genesis hash (64 zeros).
type AuditCheckpoint struct {
	Type         string `json:"type"`
	ReqID        string `json:"reqId"`
	MeshID       string `json:"meshId"`
	Seq          uint64 `json:"seq"`
	Hash         string `json:"hash"`
	Signature    string `json:"signature"`
	BrokerPubkey string `json:"brokerPubkey"`
}

// Capabilities a recipient grants a sender (grants).
const (
	CapDM        = "dm"
	CapBroadcast = "broadcast"
)

// DefaultCaps are what a sender without an explicit grant may do.
var DefaultCaps = []string{CapDM, CapBroadcast}

// GrantsSet changes the caller's grants: for each sender member pubkey,
// its capabilities ([] blocks it), or null to return it to the defaults.
type GrantsSet struct {
	Type   string               `json:"type"`
	ReqID  string               `json:"reqId"`
	Grants map[string]*[]string `json:"grants"`
}

// Grants answers grants_set and grants_get: the caller's explicit grants
// (senders absent here have the defaults).
type Grants struct {
	Type     string              `json:"type"`
	ReqID    string              `json:"reqId"`
	Grants   map[string][]string `json:"grants"`
	Defaults []string            `json:"defaults"`
}

// MaxSkillBody is the most bytes a skill's body may have: the broker
// refuses more (payload_too_large), and the CLI says so before sending.
const MaxSkillBody = 64 << 10

// SkillPublish stores (or replaces) a shared skill under Name.
type SkillPublish struct {
	Type        string   `json:"type"`
	ReqID       string   `json:"reqId"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Body        string   `json:"body"`
	Tags        []string `json:"tags,omitempty"`
}

// SkillRequest is skill_list (Query), skill_get and skill_remove (Name).
type SkillRequest struct {
	Type  string `json:"type"`
	ReqID string `json:"reqId"`
	Name  string `json:"name,omitempty"`
	Query string `json:"query,omitempty"`
}

// SkillInfo describes a skill without its body.
type SkillInfo struct {
	Name         string   `json:"name"`
	Description  string   `json:"description"`
	Tags         []string `json:"tags"`
	AuthorPubkey string   `json:"authorPubkey"`
	AuthorName   string   `json:"authorName"`
	Size         int      `json:"size"`
	UpdatedAt    int64    `json:"updatedAt"`
}

// Skill answers skill_publish and skill_get (Body only for skill_get).
type Skill struct {
	Type      string `json:"type"`
	ReqID     string `json:"reqId"`
	SkillInfo `json:",inline"`
	Body      string `json:"body,omitempty"`
}

// Skills answers skill_list.
type Skills struct {
	Type   string      `json:"type"`
	ReqID  string      `json:"reqId"`
	Skills []SkillInfo `json:"skills"`
}

// Why an admin action skipped a peer (PeerRef.Reason in admin_result).
const (
	SkipSelf          = "self"           // the caller's own member
	SkipOwner         = "owner"          // admins cannot act on the owner
	SkipAdmin         = "admin"          // admins cannot act on other admins
	SkipControlPlane  = "control_plane"  // kick --all/--stale leave daemons connected
	SkipNotConnected  = "not_connected"  // nothing of the target is online
	SkipAlreadyBanned = "already_banned" // ban of a banned member
	SkipNotBanned     = "not_banned"     // unban of a member in good standing
	SkipUnchanged     = "unchanged"      // set_role to the role it has
	SkipBanned        = "banned"         // role change of a banned member
)
