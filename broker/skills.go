package broker

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// Shared skills (01-protocol §6): instructions a member publishes for every
// agent of the mesh to read. They are plaintext by nature — an agent reads
// them as they are — so the broker's operator can read them too, which the
// docs say wherever skills are described. Limits keep one member from
// filling the broker's disk or every reader's context.
const (
	maxSkillBody        = wire.MaxSkillBody // bytes of one skill's body
	maxSkillDescription = 280               // code points
	maxSkillTags        = 16
	maxSkillsPerMesh    = 500
	maxSkillsPerMember  = 50
)

// validSkillName: ^[a-z0-9][a-z0-9._-]{0,63}$ — a file-name-like word.
func validSkillName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// validSkillBody: UTF-8 text whose only control characters are newline,
// carriage return and tab.
func validSkillBody(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\r' && r != '\t') || r == 0x7f {
			return false
		}
	}
	return true
}

func skillInfo(s *store.Skill) wire.SkillInfo {
	tags := s.Tags
	if tags == nil {
		tags = []string{}
	}
	return wire.SkillInfo{Name: s.Name, Description: s.Description, Tags: tags, AuthorPubkey: s.AuthorPubkey,
		AuthorName: s.AuthorName, Size: len(s.Body), UpdatedAt: s.UpdatedAt}
}

func (c *conn) handleSkill(data []byte, env wire.Envelope) {
	if !c.requireReqID(env) {
		return
	}
	if env.Type == wire.TypeSkillPublish {
		var p wire.SkillPublish
		if err := wire.Decode(data, &p); err != nil {
			c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
			return
		}
		c.handleSkillPublish(&p)
		return
	}
	var r wire.SkillRequest
	if err := wire.Decode(data, &r); err != nil {
		c.sendError(env.ReqID, wire.CodeInvalidArgument, err.Error())
		return
	}
	switch r.Type {
	case wire.TypeSkillList:
		c.handleSkillList(&r)
	case wire.TypeSkillGet:
		c.handleSkillGet(&r)
	case wire.TypeSkillRemove:
		c.handleSkillRemove(&r)
	}
}

func (c *conn) handleSkillPublish(p *wire.SkillPublish) {
	switch {
	case !validSkillName(p.Name):
		c.sendError(p.ReqID, wire.CodeInvalidArgument, "skill names match ^[a-z0-9][a-z0-9._-]{0,63}$")
		return
	case utf8.RuneCountInString(p.Description) > maxSkillDescription || !wire.ValidText(p.Description, 4*maxSkillDescription):
		c.sendError(p.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("the description is at most %d characters without control characters", maxSkillDescription))
		return
	case p.Body == "":
		c.sendError(p.ReqID, wire.CodeInvalidArgument, "the skill body is empty")
		return
	case len(p.Body) > maxSkillBody:
		c.sendError(p.ReqID, wire.CodePayloadTooLarge, fmt.Sprintf("the skill body is %d bytes; the limit is %d", len(p.Body), maxSkillBody))
		return
	case !validSkillBody(p.Body):
		c.sendError(p.ReqID, wire.CodeInvalidArgument, "the skill body must be UTF-8 text (control characters other than newline and tab are refused)")
		return
	case len(p.Tags) > maxSkillTags:
		c.sendError(p.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("at most %d tags", maxSkillTags))
		return
	}
	for _, t := range p.Tags {
		if !wire.ValidGroup(t) || strings.Contains(t, "/") {
			c.sendError(p.ReqID, wire.CodeInvalidArgument, fmt.Sprintf("tag %q: lowercase letters, digits, _ and -, up to 32", t))
			return
		}
	}
	ms := c.ms
	me := c.mem.Pubkey
	now := time.Now().UnixMilli()
	var saved store.Skill
	c.adminTx(p.ReqID, func(tx *store.Tx, meRec *store.Member) *adminError {
		prev, err := store.GetSkill(tx, ms.id, p.Name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return refusal(wire.CodeInternal, "could not read the skill")
		}
		all, err := store.ListSkills(tx, ms.id)
		if err != nil {
			return refusal(wire.CodeInternal, "could not read the skills")
		}
		if prev != nil && prev.AuthorPubkey != me && !isManager(meRec.Role) {
			return refusal(wire.CodeForbidden, "skill "+p.Name+" was published by "+prev.AuthorName+"; only its author, the owner or an admin can replace it")
		}
		if prev == nil {
			mine := 0
			for i := range all {
				if all[i].AuthorPubkey == me {
					mine++
				}
			}
			switch {
			case len(all) >= maxSkillsPerMesh:
				return refusal(wire.CodeInvalidArgument, fmt.Sprintf("this mesh has %d skills, the limit; remove one first", len(all)))
			case mine >= maxSkillsPerMember:
				return refusal(wire.CodeInvalidArgument, fmt.Sprintf("you have published %d skills, the limit; remove one first", mine))
			}
		}
		saved = store.Skill{Name: p.Name, Description: p.Description, Body: p.Body, Tags: p.Tags,
			AuthorPubkey: me, AuthorName: meRec.DisplayName, CreatedAt: now, UpdatedAt: now}
		if prev != nil {
			saved.CreatedAt = prev.CreatedAt
		}
		if err := store.PutSkill(tx, ms.id, &saved); err != nil {
			return refusal(wire.CodeInternal, "could not save the skill")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditSkillPublished, Actor: me, Payload: map[string]any{
			"name": p.Name, "size": len(p.Body), "bodySha256": cmcrypto.SHA256Hex([]byte(p.Body)), "replaced": prev != nil}}); err != nil {
			return refusal(wire.CodeInternal, "could not record the skill")
		}
		return nil
	}, func() {
		c.reply(wire.Skill{Type: wire.TypeSkill, ReqID: p.ReqID, SkillInfo: skillInfo(&saved)})
	})
}

func (c *conn) handleSkillList(r *wire.SkillRequest) {
	var all []store.Skill
	if err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		all, err = store.ListSkills(tx, c.ms.id)
		return err
	}); err != nil {
		c.sendError(r.ReqID, wire.CodeInternal, "could not read the skills")
		return
	}
	q := strings.ToLower(strings.TrimSpace(r.Query))
	out := wire.Skills{Type: wire.TypeSkills, ReqID: r.ReqID, Skills: []wire.SkillInfo{}}
	for i := range all {
		s := &all[i]
		if q != "" && !strings.Contains(strings.ToLower(s.Name+"\n"+s.Description+"\n"+strings.Join(s.Tags, " ")), q) {
			continue
		}
		out.Skills = append(out.Skills, skillInfo(s))
	}
	sort.Slice(out.Skills, func(i, j int) bool { return out.Skills[i].Name < out.Skills[j].Name })
	c.reply(out)
}

func (c *conn) handleSkillGet(r *wire.SkillRequest) {
	var s *store.Skill
	err := c.b.store.View(func(tx *store.Tx) error {
		var err error
		s, err = store.GetSkill(tx, c.ms.id, r.Name)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		c.sendError(r.ReqID, wire.CodeNotFound, "no skill called "+r.Name+" in this mesh")
		return
	}
	if err != nil {
		c.sendError(r.ReqID, wire.CodeInternal, "could not read the skill")
		return
	}
	c.reply(wire.Skill{Type: wire.TypeSkill, ReqID: r.ReqID, SkillInfo: skillInfo(s), Body: s.Body})
}

func (c *conn) handleSkillRemove(r *wire.SkillRequest) {
	ms := c.ms
	me := c.mem.Pubkey
	c.adminTx(r.ReqID, func(tx *store.Tx, meRec *store.Member) *adminError {
		s, err := store.GetSkill(tx, ms.id, r.Name)
		if errors.Is(err, store.ErrNotFound) {
			return refusal(wire.CodeNotFound, "no skill called "+r.Name+" in this mesh")
		}
		if err != nil {
			return refusal(wire.CodeInternal, "could not read the skill")
		}
		if s.AuthorPubkey != me && !isManager(meRec.Role) {
			return refusal(wire.CodeForbidden, "only the author ("+s.AuthorName+"), the owner or an admin can remove "+r.Name)
		}
		if err := store.DeleteSkill(tx, ms.id, r.Name); err != nil {
			return refusal(wire.CodeInternal, "could not remove the skill")
		}
		if _, err := store.AppendAudit(tx, ms.id, store.AuditEvent{Type: wire.AuditSkillRemoved, Actor: me, Payload: map[string]any{
			"name": s.Name, "author": s.AuthorPubkey}}); err != nil {
			return refusal(wire.CodeInternal, "could not record the removal")
		}
		return nil
	}, func() { c.sendOK(r.ReqID) })
}
