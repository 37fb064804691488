package client

import (
	"context"
	"net/http"
	"net/url"

	"claudemesh/wire"
)

// Governance requests (01-protocol §6) and the operator's membership routes
// (§7 and docs/operating-a-broker.md).

// AuditQuery reads entries of the mesh's audit chain, newest first (see
// wire.AuditQuery for the selection).
func (c *Conn) AuditQuery(ctx context.Context, q wire.AuditQuery) (*wire.AuditEntries, error) {
	q.Type = wire.TypeAuditQuery
	return roundTrip[wire.AuditEntries](ctx, c, &q, wire.TypeAuditEntries)
}

// AuditCheckpoint asks the broker to sign the head of the mesh's chain. The
// signature is not checked here; VerifyAudit does that against the pinned
// key.
func (c *Conn) AuditCheckpoint(ctx context.Context) (*wire.AuditCheckpoint, error) {
	return roundTrip[wire.AuditCheckpoint](ctx, c, &wire.Request{Type: wire.TypeAuditCheckpoint}, wire.TypeAuditCheckpoint)
}

// GrantsGet returns this member's explicit grants.
func (c *Conn) GrantsGet(ctx context.Context) (*wire.Grants, error) {
	return roundTrip[wire.Grants](ctx, c, &wire.Request{Type: wire.TypeGrantsGet}, wire.TypeGrants)
}

// GrantsSet changes this member's grants for the given sender member keys:
// a list of capabilities (empty blocks), or nil for the defaults. Senders
// not named keep what they had.
func (c *Conn) GrantsSet(ctx context.Context, grants map[string]*[]string) (*wire.Grants, error) {
	return roundTrip[wire.Grants](ctx, c, &wire.GrantsSet{Type: wire.TypeGrantsSet, Grants: grants}, wire.TypeGrants)
}

// SkillPublish stores (or, for its author, the owner or an admin,
// replaces) a shared skill.
func (c *Conn) SkillPublish(ctx context.Context, p wire.SkillPublish) (*wire.Skill, error) {
	p.Type = wire.TypeSkillPublish
	return roundTrip[wire.Skill](ctx, c, &p, wire.TypeSkill)
}

// SkillList lists the mesh's skills whose name, description or tags contain
// query (all when empty).
func (c *Conn) SkillList(ctx context.Context, query string) ([]wire.SkillInfo, error) {
	r, err := roundTrip[wire.Skills](ctx, c, &wire.SkillRequest{Type: wire.TypeSkillList, Query: query}, wire.TypeSkills)
	if err != nil {
		return nil, err
	}
	return r.Skills, nil
}

// SkillGet returns one skill with its body (not_found when there is none).
func (c *Conn) SkillGet(ctx context.Context, name string) (*wire.Skill, error) {
	return roundTrip[wire.Skill](ctx, c, &wire.SkillRequest{Type: wire.TypeSkillGet, Name: name}, wire.TypeSkill)
}

// SkillRemove deletes a skill (its author, the owner or an admin).
func (c *Conn) SkillRemove(ctx context.Context, name string) error {
	return c.expectOK(ctx, &wire.SkillRequest{Type: wire.TypeSkillRemove, Name: name})
}

// OperatorMembers lists a mesh's members for the broker's operator; mesh is
// its id or slug.
func OperatorMembers(ctx context.Context, brokerURL, operatorToken, mesh string) ([]wire.Member, error) {
	var out struct {
		Members []wire.Member `json:"members"`
	}
	u := RESTBase(brokerURL) + "/v1/admin/meshes/" + url.PathEscape(mesh) + "/members"
	if err := doJSON(ctx, http.MethodGet, u, operatorToken, nil, &out); err != nil {
		return nil, err
	}
	return out.Members, nil
}

// RemovedMember is the broker's answer to an operator removal.
type RemovedMember struct {
	MeshID            string      `json:"meshId"`
	Removed           wire.Member `json:"removed"`
	DroppedDeliveries int         `json:"droppedDeliveries"`
}

// RemoveMember removes a member as the broker's operator. target is a
// member id, a pubkey, a pubkey prefix (≥ 8 hex) or a display name; an
// ambiguous one is a *Error with Candidates.
func RemoveMember(ctx context.Context, brokerURL, operatorToken, mesh, target string) (*RemovedMember, error) {
	var out RemovedMember
	u := RESTBase(brokerURL) + "/v1/admin/meshes/" + url.PathEscape(mesh) + "/members/" + url.PathEscape(target)
	if err := doJSON(ctx, http.MethodDelete, u, operatorToken, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
