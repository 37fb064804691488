package client

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// CodeTopicNotFound is the broker's code for a topic that does not exist
// (or is private and the caller not in it); the CLI maps it to exit 3.
const CodeTopicNotFound = "topic_not_found"

// MinPrefix is the shortest pubkey prefix accepted as a target. Eight hex
// digits (32 bits) make an accidental match between members unlikely while
// staying short enough to type from `peer list`.
const MinPrefix = 8

// How a target matched (Target.Match). The daemon and the CLI report it so
// the user can tell "bob the member" from "bob the agent session".
const (
	MatchPubkey    = "pubkey"    // a full 64-hex key
	MatchPrefix    = "prefix"    // a pubkey prefix of at least MinPrefix hex
	MatchMember    = "member"    // a member's display name
	MatchSession   = "session"   // an agent session's display name
	MatchBroadcast = "broadcast" // "*"
	MatchGroup     = "group"     // "@group"
)

// Candidate kinds of an ambiguous_target error.
const (
	CandidateMember  = "member"
	CandidateSession = "session"
)

// Target is a resolved `TO`: what to seal to and what to send as
// targetSpec. It is computed from a snapshot of the mesh's members and
// peers, so the CLI's cold path (members_list + list_peers on a transient
// connection) and the daemon (its cached copy) resolve the same way.
type Target struct {
	// Kind is wire.KindBox or wire.KindMulti.
	Kind string
	// Spec is the wire targetSpec: a 64-hex pubkey, "*" or "@group".
	Spec string
	// DisplayName names the recipient of a box ("" for multi, and for a
	// full pubkey nobody in the snapshot holds).
	DisplayName string
	// Match says which rule matched (Match* constants).
	Match string
	// Online reports, for a box, whether a presence that receives the
	// message is connected right now; offline recipients get it queued.
	Online bool
	// Status is, for an online box recipient, the status of the presence
	// that receives it (idle, working, dnd): the broker holds next and low
	// messages while it is working or dnd.
	Status string
	// Recipients are the keys to seal to: the one key of a box, every
	// listed recipient of a multi (never the sender's own key).
	Recipients []string
}

// ResolveTarget resolves a user-typed send target against a mesh snapshot
// (03-daemon "Outbox" step 3), in this order:
//
//   - "*": every active member's key plus every listed session key, so
//     online peers get it now and offline members get it queued;
//   - "@group": every listed presence whose groups contain group or a
//     subgroup group/…; a session also counts its member's groups when a
//     member presence shows them. Offline members cannot be included:
//     members_list does not carry groups, so only presences are known to
//     be in a group;
//   - "#topic": topic_not_found (topics are resolved by the topic code
//     that posts to them, not here);
//   - a full 64-hex pubkey: a box to it, whoever holds it (the broker
//     refuses keys that are not in the mesh with unknown_recipient);
//   - a pubkey prefix of at least MinPrefix hex digits, matched against
//     active members and listed presences (a member presence counts as its
//     member); no match falls through to names, so a member may be called
//     "deadbeef". One match that is also the display name of another
//     member or session (members and sessions alike, as the broker's
//     admin targets) is ambiguous;
//   - a display name, exact and case-insensitive (crypto.NameKey): members
//     first (their member key), then agent session presences. A
//     control-plane presence is never picked: it is the member's daemon,
//     and messages to the member reach it anyway.
//
// Revoked members are skipped everywhere. self is the sender's own key
// (member or session), left out of multi recipients because the broker drops
// it anyway. Several matches at the level that matched is a *Error with code
// ambiguous_target and the Candidates; no match is unknown_target.
func ResolveTarget(to string, members []wire.Member, peers []wire.Peer, self string) (*Target, error) {
	return NewDirectory(members, peers).Resolve(to, self)
}

// Resolve is ResolveTarget against the directory's snapshot. A Directory
// is safe for concurrent use: a daemon keeps one per snapshot of its mesh
// and resolves every send against it, instead of copying and scanning
// the whole mesh again for each (from its second Resolve on, it answers
// from indexes of the presences and the names, each built once).
func (d *Directory) Resolve(to, self string) (*Target, error) {
	to = strings.TrimSpace(to)
	if to == "" {
		return nil, newError(wire.CodeInvalidArgument, "empty target")
	}
	d.resolves.Add(1)
	switch {
	case to == "*":
		return d.broadcast(self)
	case strings.HasPrefix(to, "@"):
		return d.group(to[1:], self)
	case strings.HasPrefix(to, "#"):
		// Topic targets are resolved against the topic list by the
		// callers that post (the daemon's outbox, the CLI's direct
		// path); here (a mention, a DM) a topic names no peer.
		return nil, newError(CodeTopicNotFound, "%q names a topic, not a member or session", to)
	}
	if lower := strings.ToLower(to); isHexString(lower) {
		if len(lower) == 64 {
			return d.pubkey(lower)
		}
		if len(lower) >= MinPrefix && len(lower) < 64 {
			t, err := d.prefix(lower)
			if err != nil {
				return nil, err
			}
			if t != nil {
				// A display name may look like a key prefix: every
				// member and every session so named is a match too (as
				// on the broker: members do not win over sessions here),
				// so that a name that is also a prefix of someone else's
				// key names neither. The target itself is listed once.
				if c := d.namedLike(t, to); len(c.list) > 1 {
					return nil, &Error{Code: wire.CodeAmbiguousTarget, Candidates: c.list,
						Message: fmt.Sprintf("%q is a prefix of %s's key and the name of another peer; use the full pubkey", to, t.DisplayName)}
				}
				return t, nil
			}
		}
	}
	return d.name(to)
}

// Directory is a snapshot of a mesh's members and presences, indexed for
// resolving targets (Resolve). It keeps copies of the two lists, so
// entries replaced or appended in the caller's slices later do not reach
// it (it is a shallow copy: a member's or a presence's own slices, such
// as its groups, are shared and must not be changed in place).
type Directory struct {
	members []wire.Member // active only, in broker order
	peers   []wire.Peer   // presences of active members, in broker order
	active  map[string]*wire.Member

	// The indexes are built from the second Resolve on, each when first
	// needed: the CLI's one-shot resolve scans instead, since building an
	// index costs more than one scan, and a full-key DM never computes a
	// name key.
	resolves     atomic.Int32
	presOnce     sync.Once
	presence     map[string]presenceState // presenceKey → what online reports
	sessionName  map[string]string        // session key → its display name
	namesOnce    sync.Once
	memberNames  map[string][]int // crypto.NameKey → indexes in members
	sessionNames map[string][]int // crypto.NameKey → indexes in peers (sessions)
}

// reused reports whether the directory has resolved before, so that its
// indexes pay for themselves.
func (d *Directory) reused() bool { return d.resolves.Load() > 1 }

// presenceState is what online reports for a key.
type presenceState struct {
	online bool
	status string
}

// NewDirectory indexes a snapshot of a mesh (members_list and list_peers)
// for Resolve.
func NewDirectory(members []wire.Member, peers []wire.Peer) *Directory {
	d := &Directory{active: make(map[string]*wire.Member, len(members))}
	revoked := map[string]bool{}
	for _, m := range members {
		if m.RevokedAt != 0 {
			revoked[m.Pubkey] = true
			continue
		}
		d.members = append(d.members, m)
	}
	for i := range d.members {
		d.active[d.members[i].Pubkey] = &d.members[i]
	}
	for _, p := range peers {
		if revoked[p.MemberPubkey] {
			continue
		}
		d.peers = append(d.peers, p)
	}
	return d
}

func isSession(p *wire.Peer) bool { return p.Role == wire.RoleSession }

// key is the identity a presence is addressed by: its own key for a session,
// the member key for every member presence (cli, service, control-plane).
func presenceKey(p *wire.Peer) string {
	if isSession(p) {
		return p.Pubkey
	}
	return p.MemberPubkey
}

// online reports whether a box to key would be pushed now — a connected
// session with that key, or a connected member presence of that member
// (the broker prefers the control-plane one) — and that presence's status.
func (d *Directory) online(key string) (bool, string) {
	if d.reused() {
		d.indexPresences()
		st := d.presence[key]
		return st.online, st.status
	}
	found, status := false, ""
	for i := range d.peers {
		p := &d.peers[i]
		if !p.Online || presenceKey(p) != key {
			continue
		}
		if !found || p.Role == wire.RoleControlPlane {
			status = p.Status
		}
		found = true
	}
	return found, status
}

// indexPresences maps each presence key to what online reports (the same
// rule as its scan), and each session key to its display name.
func (d *Directory) indexPresences() {
	d.presOnce.Do(func() {
		d.presence = make(map[string]presenceState, len(d.peers))
		d.sessionName = map[string]string{}
		for i := range d.peers {
			p := &d.peers[i]
			if isSession(p) {
				if _, ok := d.sessionName[p.Pubkey]; !ok {
					d.sessionName[p.Pubkey] = p.DisplayName
				}
			}
			if !p.Online {
				continue
			}
			k := presenceKey(p)
			st := d.presence[k]
			if !st.online || p.Role == wire.RoleControlPlane {
				st.status = p.Status
			}
			st.online = true
			d.presence[k] = st
		}
	})
}

// indexNames maps the members' and sessions' name keys (crypto.NameKey)
// to their places, in broker order.
func (d *Directory) indexNames() {
	d.namesOnce.Do(func() {
		d.memberNames = make(map[string][]int, len(d.members))
		for i := range d.members {
			k := cmcrypto.NameKey(d.members[i].DisplayName)
			d.memberNames[k] = append(d.memberNames[k], i)
		}
		d.sessionNames = map[string][]int{}
		for i := range d.peers {
			if p := &d.peers[i]; isSession(p) {
				k := cmcrypto.NameKey(p.DisplayName)
				d.sessionNames[k] = append(d.sessionNames[k], i)
			}
		}
	})
}

// membersNamed and sessionsNamed return the places of the members (the
// sessions) whose name key is want, in broker order: from the index once
// the directory is reused, else by scanning.
func (d *Directory) membersNamed(want string) (out []int) {
	if d.reused() {
		d.indexNames()
		return d.memberNames[want]
	}
	for i := range d.members {
		if cmcrypto.NameKey(d.members[i].DisplayName) == want {
			out = append(out, i)
		}
	}
	return out
}

func (d *Directory) sessionsNamed(want string) (out []int) {
	if d.reused() {
		d.indexNames()
		return d.sessionNames[want]
	}
	for i := range d.peers {
		if p := &d.peers[i]; isSession(p) && cmcrypto.NameKey(p.DisplayName) == want {
			out = append(out, i)
		}
	}
	return out
}

func (d *Directory) box(key, name, match string) *Target {
	online, status := d.online(key)
	return &Target{Kind: wire.KindBox, Spec: key, DisplayName: name, Match: match,
		Online: online, Status: status, Recipients: []string{key}}
}

func (d *Directory) pubkey(key string) (*Target, error) {
	name, known := "", false
	if m := d.active[key]; m != nil {
		name, known = m.DisplayName, true
	} else if d.reused() {
		d.indexPresences()
		name, known = d.sessionName[key]
	} else {
		for i := range d.peers {
			if p := &d.peers[i]; isSession(p) && p.Pubkey == key {
				name, known = p.DisplayName, true
				break
			}
		}
	}
	if !known {
		// Not listed here (an offline session, or no peer at all): a key
		// that is not a valid public key is nobody's, so say what the
		// broker says of a key it does not know instead of the crypto
		// check's wording ("point of small order"), which came with a
		// different exit code on each path.
		if _, err := cmcrypto.ParsePublicKey(key); err != nil {
			return nil, newError(wire.CodeUnknownRecipient, "no member or session of this mesh has key %s… (it is not a valid public key)", key[:8])
		}
	}
	return d.box(key, name, MatchPubkey), nil
}

// candidate is a box target as an ambiguous_target candidate.
func (d *Directory) candidate(t *Target) wire.Candidate {
	kind := CandidateMember
	if d.active[t.Spec] == nil {
		kind = CandidateSession
	}
	return wire.Candidate{DisplayName: t.DisplayName, Pubkey: t.Spec, Kind: kind}
}

// nameMembers fills in the member of each session candidate.
func (d *Directory) nameMembers(list []wire.Candidate) {
	for i := range list {
		if list[i].Kind != CandidateSession {
			continue
		}
		for j := range d.peers {
			if p := &d.peers[j]; isSession(p) && p.Pubkey == list[i].Pubkey {
				list[i].MemberPubkey = p.MemberPubkey
				if m := d.active[p.MemberPubkey]; m != nil {
					list[i].MemberName = m.DisplayName
				}
				break
			}
		}
	}
}

// candidates collects distinct keys in first-seen order.
type candidates struct {
	list []wire.Candidate
	seen map[string]bool
}

func (c *candidates) add(name, key, kind string) {
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	c.list = append(c.list, wire.Candidate{DisplayName: name, Pubkey: key, Kind: kind})
}

func (d *Directory) pick(c *candidates, to, match string) (*Target, error) {
	switch len(c.list) {
	case 0:
		return nil, nil
	case 1:
		return d.box(c.list[0].Pubkey, c.list[0].DisplayName, match), nil
	}
	d.nameMembers(c.list)
	return nil, &Error{Code: wire.CodeAmbiguousTarget, Candidates: c.list,
		Message: fmt.Sprintf("%q matches %d peers; use a longer pubkey prefix or the full pubkey", to, len(c.list))}
}

// prefix returns (nil, nil) when nothing matches, so names are tried next.
func (d *Directory) prefix(p string) (*Target, error) {
	var c candidates
	for _, m := range d.members {
		if strings.HasPrefix(m.Pubkey, p) {
			c.add(m.DisplayName, m.Pubkey, CandidateMember)
		}
	}
	for i := range d.peers {
		pr := &d.peers[i]
		key := presenceKey(pr)
		if !strings.HasPrefix(key, p) {
			continue
		}
		if isSession(pr) {
			c.add(pr.DisplayName, key, CandidateSession)
		} else {
			c.add(pr.DisplayName, key, CandidateMember)
		}
	}
	return d.pick(&c, p, MatchPrefix)
}

// namedLike is t, the one target a key prefix matched, and after it every
// member and every session whose display name is the prefix (crypto.NameKey),
// each key once: the broker's matches for a prefix (matchTargets).
func (d *Directory) namedLike(t *Target, to string) *candidates {
	want := cmcrypto.NameKey(to)
	var c candidates
	first := d.candidate(t)
	c.add(first.DisplayName, first.Pubkey, first.Kind)
	for _, i := range d.membersNamed(want) {
		m := &d.members[i]
		c.add(m.DisplayName, m.Pubkey, CandidateMember)
	}
	for _, i := range d.sessionsNamed(want) {
		p := &d.peers[i]
		c.add(p.DisplayName, p.Pubkey, CandidateSession)
	}
	return &c
}

func (d *Directory) name(to string) (*Target, error) {
	want := cmcrypto.NameKey(to)
	var c candidates
	for _, i := range d.membersNamed(want) {
		m := &d.members[i]
		c.add(m.DisplayName, m.Pubkey, CandidateMember)
	}
	if t, err := d.pick(&c, to, MatchMember); t != nil || err != nil {
		return t, err
	}
	for _, i := range d.sessionsNamed(want) {
		p := &d.peers[i]
		c.add(p.DisplayName, p.Pubkey, CandidateSession)
	}
	if t, err := d.pick(&c, to, MatchSession); t != nil || err != nil {
		return t, err
	}
	return nil, newError(wire.CodeUnknownTarget, "no member or session called %q", to)
}

// recipients is an ordered set of keys that leaves out self.
type recipients struct {
	self string
	keys []string
	seen map[string]bool
}

func (r *recipients) add(key string) {
	if key == "" || key == r.self || r.seen[key] {
		return
	}
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	r.seen[key] = true
	r.keys = append(r.keys, key)
}

func multi(spec, match string, keys []string) (*Target, error) {
	if len(keys) > cmcrypto.MaxRecipients {
		return nil, newError(wire.CodeInvalidArgument, "%s has %d recipients; one message can reach at most %d", spec, len(keys), cmcrypto.MaxRecipients)
	}
	return &Target{Kind: wire.KindMulti, Spec: spec, Match: match, Recipients: keys}, nil
}

func (d *Directory) broadcast(self string) (*Target, error) {
	r := recipients{self: self}
	for _, m := range d.members {
		r.add(m.Pubkey)
	}
	for i := range d.peers {
		r.add(presenceKey(&d.peers[i]))
	}
	if len(r.keys) == 0 {
		return nil, newError(wire.CodeUnknownTarget, "nobody else is in the mesh yet")
	}
	return multi("*", MatchBroadcast, r.keys)
}

func (d *Directory) group(name, self string) (*Target, error) {
	if !wire.ValidGroup(name) {
		return nil, newError(wire.CodeInvalidArgument, "%q is not a group name (lowercase letters, digits, _ and -, up to 4 levels separated by /)", name)
	}
	// Member-wide groups show on the member's presences; a session also
	// belongs to the groups of its member (01-protocol §4).
	memberGroups := map[string][]wire.Group{}
	for i := range d.peers {
		if p := &d.peers[i]; !isSession(p) {
			memberGroups[p.MemberPubkey] = append(memberGroups[p.MemberPubkey], p.Groups...)
		}
	}
	r := recipients{self: self}
	for i := range d.peers {
		p := &d.peers[i]
		groups := p.Groups
		if isSession(p) {
			groups = append(append([]wire.Group(nil), p.Groups...), memberGroups[p.MemberPubkey]...)
		}
		if inGroup(groups, name) {
			r.add(presenceKey(p))
		}
	}
	if len(r.keys) == 0 {
		return nil, newError(wire.CodeUnknownTarget, "no connected peer is in group %q (only connected peers' groups are known)", name)
	}
	return multi("@"+name, MatchGroup, r.keys)
}

// inGroup is the broker's rule: the group itself or a subgroup of it.
func inGroup(groups []wire.Group, name string) bool {
	for _, g := range groups {
		if g.Name == name || strings.HasPrefix(g.Name, name+"/") {
			return true
		}
	}
	return false
}

func isHexString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
