package store

import (
	"bytes"
	"errors"

	"claudemesh/wire"
)

// Errors the REST and hub layers map to wire codes.
var (
	ErrNotFound  = errors.New("store: not found")
	ErrSlugTaken = errors.New("store: slug taken")
	ErrNameTaken = errors.New("store: display name taken")
	ErrExists    = errors.New("store: already exists")
)

// Each mesh lives in its own sub-bucket of "meshes", holding these buckets.
var (
	keyInfo       = []byte("info")
	bMembers      = []byte("members")     // memberId → Member
	bPubkeys      = []byte("pubkeys")     // raw pubkey → memberId
	bNames        = []byte("names")       // case-folded display name → memberId
	bSessions     = []byte("sessions")    // raw session pubkey → Session
	bInvites      = []byte("invites")     // inviteId → Invite
	bMsgs         = []byte("msgs")        // messageId → Message
	bDlv          = []byte("dlv")         // messageId ‖ raw recipient → Delivery
	bQueue        = []byte("queue")       // raw recipient ‖ seq → QueueEntry
	bIdem         = []byte("idem")        // clientMessageId ‖ raw sender → messageId
	bBodies       = []byte("bodies")      // messageId → recipients left ‖ push frame (‖ nothing: large, below)
	bLargeBodies  = []byte("largeBodies") // messageId → a bucket of its own: push → frame (queue.go)
	bAudit        = []byte("audit")       // seq → wire.AuditEntry (the audit chain)
	bGrants       = []byte("grants")      // raw recipient member pubkey → its explicit grants
	bSkills       = []byte("skills")      // skill name → Skill
	meshSubBucket = [][]byte{bMembers, bPubkeys, bNames, bSessions, bInvites, bMsgs, bDlv, bQueue, bIdem, bBodies, bLargeBodies, bAudit, bGrants, bSkills}
)

// MaxGroups is the default cap on the groups one member (or one session)
// holds, and what the 2 → 3 migration trims stored records to.
const MaxGroups = 32

// TrimGroups keeps the first max groups with valid, distinct names (and
// valid roles), in order; it reports whether anything was dropped.
func TrimGroups(groups []wire.Group, max int) ([]wire.Group, bool) {
	out := make([]wire.Group, 0, min(len(groups), max))
	seen := make(map[string]bool, len(groups))
	for _, g := range groups {
		if len(out) >= max {
			break
		}
		if !wire.ValidGroup(g.Name) || !wire.ValidText(g.Role, 32) || seen[g.Name] {
			continue
		}
		seen[g.Name] = true
		out = append(out, g)
	}
	return out, len(out) != len(groups)
}

// trimGroups is the 2 → 3 migration: member and session records with more
// than MaxGroups groups (or invalid ones) are rewritten with the first
// MaxGroups valid ones. A record that does not decode is left alone for the
// broker to report at start-up.
func trimGroups(tx *Tx) error {
	meshes := tx.Bucket(bucketMeshes)
	if meshes == nil {
		return nil
	}
	return meshes.ForEachBucket(func(id []byte) error {
		mb := meshes.Bucket(id)
		if b := mb.Bucket(bMembers); b != nil {
			if err := rewrite(b, func(v []byte) ([]byte, bool) {
				var m Member
				if dec(v, &m) != nil {
					return nil, false
				}
				var cut bool
				if m.Groups, cut = TrimGroups(m.Groups, MaxGroups); !cut {
					return nil, false
				}
				return enc(&m), true
			}); err != nil {
				return err
			}
		}
		if b := mb.Bucket(bSessions); b != nil {
			return rewrite(b, func(v []byte) ([]byte, bool) {
				var s Session
				if dec(v, &s) != nil {
					return nil, false
				}
				var cut bool
				if s.Groups, cut = TrimGroups(s.Groups, MaxGroups); !cut {
					return nil, false
				}
				return enc(&s), true
			})
		}
		return nil
	})
}

// rewrite replaces the values fn changes (collected first: a bucket must
// not be written while a ForEach walks it).
func rewrite(b *Bucket, fn func(v []byte) ([]byte, bool)) error {
	var keys, vals [][]byte
	if err := b.ForEach(func(k, v []byte) error {
		if nv, ok := fn(v); ok {
			keys, vals = append(keys, bytes.Clone(k)), append(vals, nv)
		}
		return nil
	}); err != nil {
		return err
	}
	for i := range keys {
		if err := b.Put(keys[i], vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// Mesh is one mesh's identity.
type Mesh struct {
	ID        string `json:"id"`
	Slug      string `json:"slug"`
	Name      string `json:"name"`
	CreatedAt int64  `json:"createdAt"`
}

// Member is a person's enrolled key in a mesh, with the profile its member
// presences share (01-protocol §4 "Profile changes").
type Member struct {
	ID          string `json:"id"`
	Pubkey      string `json:"pubkey"`
	DisplayName string `json:"displayName"`
	NameKey     string `json:"nameKey"`
	Role        string `json:"role"`
	JoinedAt    int64  `json:"joinedAt"`
	LastSeenAt  int64  `json:"lastSeenAt,omitzero"`
	RevokedAt   int64  `json:"revokedAt,omitzero"`
	BanReason   string `json:"banReason,omitempty"`
	// BannedBy and BannedByRole record who banned the member and in which
	// role, so an admin cannot lift a ban the owner imposed.
	BannedBy     string       `json:"bannedBy,omitempty"`
	BannedByRole string       `json:"bannedByRole,omitempty"`
	InviteID     string       `json:"inviteId,omitempty"`
	Status       string       `json:"status,omitempty"`
	Summary      string       `json:"summary,omitempty"`
	Hidden       bool         `json:"hidden,omitzero"`
	Groups       []wire.Group `json:"groups,omitempty"`
}

// Session is an agent session key the mesh has seen, kept so DMs to a
// session that is away are queued rather than refused.
type Session struct {
	Pubkey         string           `json:"pubkey"`
	ParentMemberID string           `json:"parentMemberId"`
	ParentPubkey   string           `json:"parentPubkey"`
	SessionID      string           `json:"sessionId"`
	DisplayName    string           `json:"displayName"`
	Attestation    wire.Attestation `json:"attestation"`
	Groups         []wire.Group     `json:"groups,omitempty"`
	LastSeenAt     int64            `json:"lastSeenAt"`
	// HelloAt is when the hello that recorded the key was accepted (unix
	// ns): with Node, it tells one recording of a key from the next
	// (SameRecording), which LastSeenAt (touched at every disconnect)
	// does not. It is no order: two nodes' clocks need not agree. A key forgotten
	// and said hello with again is a new recording, which the deletion of
	// the forgotten one must leave alone (ForgetSession). 0 in records
	// written before it.
	HelloAt int64 `json:"helloAt,omitempty"`
	// Node is the cluster node that took that hello ("" on a single
	// broker): a connection of this recording is that node's, so while
	// it runs no other node forgets the recording (expiry, eviction),
	// whose view of presences may be stale.
	Node string `json:"node,omitempty"`
}

// Invite is a registered, signed invite token. Token is stored byte for byte:
// a join must present exactly this token.
type Invite struct {
	ID           string `json:"id"`
	Token        string `json:"token"`
	Role         string `json:"role"`
	IssuerPubkey string `json:"issuerPubkey"`
	ExpiresAt    int64  `json:"expiresAt"`
	MaxUses      int    `json:"maxUses"`
	Uses         int    `json:"uses"`
	CreatedAt    int64  `json:"createdAt"`
	RevokedAt    int64  `json:"revokedAt,omitzero"`
}

// Info converts an invite to its wire description.
func (inv *Invite) Info() wire.InviteInfo {
	return wire.InviteInfo{InviteID: inv.ID, Role: inv.Role, ExpiresAt: inv.ExpiresAt, MaxUses: inv.MaxUses, Uses: inv.Uses, CreatedAt: inv.CreatedAt, RevokedAt: inv.RevokedAt}
}

func meshBucket(tx *Tx, meshID string) *Bucket {
	if mb := tx.meshes[meshID]; mb != nil {
		return mb
	}
	mb := tx.Bucket(bucketMeshes).Bucket([]byte(meshID))
	if mb == nil || tx.rec != nil || !tx.tx.Writable() {
		return mb
	}
	// A write transaction remembers it (Tx.meshes). A mesh bucket is
	// never deleted, and one not found is not remembered.
	if tx.meshes == nil {
		tx.meshes = map[string]*Bucket{}
	}
	mb.kids = map[string]*Bucket{}
	tx.meshes[meshID] = mb
	return mb
}

func sub(tx *Tx, meshID string, name []byte) (*Bucket, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	return mb.Bucket(name), nil
}

// CreateMesh stores a new mesh with its owner as first member.
func CreateMesh(tx *Tx, m Mesh, owner *Member) error {
	slugs := tx.Bucket(bucketSlugs)
	if slugs.Get([]byte(m.Slug)) != nil {
		return ErrSlugTaken
	}
	meshes := tx.Bucket(bucketMeshes)
	if meshes.Bucket([]byte(m.ID)) != nil {
		return ErrExists
	}
	mb, err := meshes.CreateBucket([]byte(m.ID))
	if err != nil {
		return err
	}
	for _, name := range meshSubBucket {
		if _, err := mb.CreateBucket(name); err != nil {
			return err
		}
	}
	if err := mb.Put(keyInfo, enc(m)); err != nil {
		return err
	}
	if err := slugs.Put([]byte(m.Slug), []byte(m.ID)); err != nil {
		return err
	}
	if err := initMeshTopics(tx, mb, m.CreatedAt); err != nil {
		return err
	}
	return PutMember(tx, m.ID, owner)
}

// GetMesh loads a mesh by id.
func GetMesh(tx *Tx, meshID string) (*Mesh, error) {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return nil, ErrNotFound
	}
	var m Mesh
	return &m, dec(mb.Get(keyInfo), &m)
}

// ListMeshes returns every mesh.
func ListMeshes(tx *Tx) ([]Mesh, error) {
	var out []Mesh
	err := tx.Bucket(bucketMeshes).ForEachBucket(func(k []byte) error {
		m, err := GetMesh(tx, string(k))
		if err != nil {
			return err
		}
		out = append(out, *m)
		return nil
	})
	return out, err
}

// PutMember inserts or updates a member and its pubkey and name indexes.
// A name already held by another member is ErrNameTaken.
func PutMember(tx *Tx, meshID string, m *Member) error {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return ErrNotFound
	}
	members, names := mb.Bucket(bMembers), mb.Bucket(bNames)
	if holder := names.Get([]byte(m.NameKey)); holder != nil && string(holder) != m.ID {
		return ErrNameTaken
	}
	if prev := members.Get([]byte(m.ID)); prev != nil {
		var old Member
		if err := dec(prev, &old); err != nil {
			return err
		}
		if old.NameKey != m.NameKey {
			if err := names.Delete([]byte(old.NameKey)); err != nil {
				return err
			}
		}
	}
	if err := names.Put([]byte(m.NameKey), []byte(m.ID)); err != nil {
		return err
	}
	if err := mb.Bucket(bPubkeys).Put(pk(m.Pubkey), []byte(m.ID)); err != nil {
		return err
	}
	return members.Put([]byte(m.ID), enc(m))
}

// DeleteMember removes a member who left: its indexes go, so its name can be
// reused and its key is no longer recognised.
func DeleteMember(tx *Tx, meshID string, m *Member) error {
	mb := meshBucket(tx, meshID)
	if mb == nil {
		return ErrNotFound
	}
	if err := mb.Bucket(bNames).Delete([]byte(m.NameKey)); err != nil {
		return err
	}
	if err := mb.Bucket(bPubkeys).Delete(pk(m.Pubkey)); err != nil {
		return err
	}
	return mb.Bucket(bMembers).Delete([]byte(m.ID))
}

// NameTaken reports whether a case-folded display name is held by a member.
func NameTaken(tx *Tx, meshID, nameKey string) bool {
	b, err := sub(tx, meshID, bNames)
	return err == nil && b.Get([]byte(nameKey)) != nil
}

// GetMember loads a member by id.
func GetMember(tx *Tx, meshID, memberID string) (*Member, error) {
	b, err := sub(tx, meshID, bMembers)
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(memberID))
	if v == nil {
		return nil, ErrNotFound
	}
	var m Member
	return &m, dec(v, &m)
}

// MemberByPubkey loads a member by its 64-hex key.
func MemberByPubkey(tx *Tx, meshID, pubkey string) (*Member, error) {
	b, err := sub(tx, meshID, bPubkeys)
	if err != nil {
		return nil, err
	}
	id := b.Get(pk(pubkey))
	if id == nil {
		return nil, ErrNotFound
	}
	return GetMember(tx, meshID, string(id))
}

// ListMembers returns every member (revoked ones included).
func ListMembers(tx *Tx, meshID string) ([]Member, error) {
	b, err := sub(tx, meshID, bMembers)
	if err != nil {
		return nil, err
	}
	var out []Member
	err = b.ForEach(func(_, v []byte) error {
		var m Member
		if err := dec(v, &m); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

// PutSession records a session key as a hello recorded it: a new
// recording, which replaces whatever the store holds. Which of two
// recordings is the later is the order of their writes (in a cluster, of
// the log), never their HelloAt: that is the wall clock of whichever node
// took the hello, and two nodes' clocks need not agree (a node whose clock
// was behind had its newer hello left out, and the older recording's node
// then forgot a session connected elsewhere, with its queue).
func PutSession(tx *Tx, meshID string, s *Session) error {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return err
	}
	return b.Put(pk(s.Pubkey), enc(s))
}

// PutSessionOver writes a new recording (a hello's) unless the store holds
// one its hello was not admitted over: written only when the store holds
// nothing for the key, the same recording, prev (the recording the node
// knew when it admitted the hello; nil: none), or an earlier recording of
// the same node (one clock stamped both). Otherwise held is the stored
// recording, and nothing is written: another node's hello was written
// after this node admitted its own, so the write that comes later in the
// log is not the later hello (a node's write can wait in the log for
// seconds).
func PutSessionOver(tx *Tx, meshID string, s, prev *Session) (held *Session, err error) {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return nil, err
	}
	if v := b.Get(pk(s.Pubkey)); v != nil {
		var cur Session
		if dec(v, &cur) == nil && !SameRecording(&cur, s) && (prev == nil || !SameRecording(&cur, prev)) &&
			!(cur.Node == s.Node && cur.HelloAt < s.HelloAt) {
			return &cur, nil
		}
	}
	return nil, b.Put(pk(s.Pubkey), enc(s))
}

// UpdateSession writes a changed copy of a recording (a group change),
// only when the store holds that recording (SameRecording) or none of
// the key: a write of a recording that a later hello (here or on another
// node) replaced since must not bring it back.
func UpdateSession(tx *Tx, meshID string, s *Session) error {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return err
	}
	if v := b.Get(pk(s.Pubkey)); v != nil {
		var cur Session
		if dec(v, &cur) == nil && !SameRecording(&cur, s) {
			return nil
		}
	}
	return b.Put(pk(s.Pubkey), enc(s))
}

// SameRecording reports whether two records of a session key are copies
// of one recording (one hello's): the same HelloAt on the same node.
func SameRecording(a, b *Session) bool {
	return a.HelloAt == b.HelloAt && a.Node == b.Node
}

// ListSessions returns every known session of a mesh.
func ListSessions(tx *Tx, meshID string) ([]Session, error) {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return nil, err
	}
	var out []Session
	err = b.ForEach(func(_, v []byte) error {
		var s Session
		if err := dec(v, &s); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// DeleteSessionsOf forgets the sessions of a member (who left).
func DeleteSessionsOf(tx *Tx, meshID, memberID string) ([]string, error) {
	b, err := sub(tx, meshID, bSessions)
	if err != nil {
		return nil, err
	}
	var gone [][]byte
	var keys []string
	err = b.ForEach(func(k, v []byte) error {
		var s Session
		if err := dec(v, &s); err != nil {
			return err
		}
		if s.ParentMemberID == memberID {
			gone = append(gone, bytes.Clone(k))
			keys = append(keys, s.Pubkey)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range gone {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// PutInvite stores an invite.
func PutInvite(tx *Tx, meshID string, inv *Invite) error {
	b, err := sub(tx, meshID, bInvites)
	if err != nil {
		return err
	}
	return b.Put([]byte(inv.ID), enc(inv))
}

// GetInvite loads an invite by id.
func GetInvite(tx *Tx, meshID, inviteID string) (*Invite, error) {
	b, err := sub(tx, meshID, bInvites)
	if err != nil {
		return nil, err
	}
	v := b.Get([]byte(inviteID))
	if v == nil {
		return nil, ErrNotFound
	}
	var inv Invite
	return &inv, dec(v, &inv)
}

// ListInvites returns a mesh's invites in id (creation) order.
func ListInvites(tx *Tx, meshID string) ([]Invite, error) {
	b, err := sub(tx, meshID, bInvites)
	if err != nil {
		return nil, err
	}
	var out []Invite
	err = b.ForEach(func(_, v []byte) error {
		var inv Invite
		if err := dec(v, &inv); err != nil {
			return err
		}
		out = append(out, inv)
		return nil
	})
	return out, err
}
