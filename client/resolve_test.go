package client

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"claudemesh/wire"
)

// Keys chosen so that prefixes collide on purpose: alice and amy share
// "aaaaaaaa", and two of bob's sessions share "cccccccc".
var (
	kAlice   = strings.Repeat("a", 56) + "00000001"
	kAmy     = strings.Repeat("a", 56) + "00000002"
	kBob     = strings.Repeat("b", 64)
	kCarol   = strings.Repeat("d", 64)
	kGone    = strings.Repeat("e", 64) // revoked member
	kSessA   = strings.Repeat("c", 56) + "00000001"
	kSessB   = strings.Repeat("c", 56) + "00000002"
	kSessC   = "cafe" + strings.Repeat("0", 60)
	kGoneSes = strings.Repeat("f", 64) // session of the revoked member
	// kOther is a valid public key of nobody in the snapshot (the others
	// are patterns, listed here; an unlisted key must be a valid one).
	kOther = "c5908b4c679d2f09e75727a27573417338e36520f1b155fa2792bbf99e64efc4"
)

func snapshot() ([]wire.Member, []wire.Peer) {
	members := []wire.Member{
		{Pubkey: kAlice, DisplayName: "alice", MemberRole: "owner", Online: true},
		{Pubkey: kAmy, DisplayName: "Amy", MemberRole: "member"},
		{Pubkey: kBob, DisplayName: "bob", MemberRole: "member", Online: true},
		{Pubkey: kCarol, DisplayName: "carol", MemberRole: "member"},
		{Pubkey: kGone, DisplayName: "mallory", MemberRole: "member", RevokedAt: 1},
	}
	peers := []wire.Peer{
		// bob's daemon, in ops
		{Pubkey: kBob, MemberPubkey: kBob, DisplayName: "bob", Role: wire.RoleControlPlane, Online: true, Groups: []wire.Group{{Name: "ops"}}},
		// two sessions of bob with the same name, one in ops/east
		{Pubkey: kSessA, MemberPubkey: kBob, DisplayName: "worker", Role: wire.RoleSession, Online: true, Groups: []wire.Group{{Name: "ops/east"}}},
		{Pubkey: kSessB, MemberPubkey: kBob, DisplayName: "Worker", Role: wire.RoleSession, Online: false},
		// a session of alice called "carol" (members win) and one called "reviewer"
		{Pubkey: kSessC, MemberPubkey: kAlice, DisplayName: "carol", Role: wire.RoleSession, Online: true},
		// alice's inbox --follow
		{Pubkey: kAlice, MemberPubkey: kAlice, DisplayName: "alice", Role: wire.RoleCLI, Online: true, Groups: []wire.Group{{Name: "dev"}}},
		// a presence of the revoked member (stale) must never be picked
		{Pubkey: kGoneSes, MemberPubkey: kGone, DisplayName: "ghost", Role: wire.RoleSession, Online: true, Groups: []wire.Group{{Name: "ops"}}},
	}
	return members, peers
}

func TestResolveTarget(t *testing.T) {
	members, peers := snapshot()
	type want struct {
		kind, spec, name, match string
		online                  bool
		recipients              []string
		code                    string
		candidates              []string // pubkeys
	}
	cases := []struct {
		to, self string
		want     want
	}{
		{"bob", kAlice, want{kind: "box", spec: kBob, name: "bob", match: MatchMember, online: true, recipients: []string{kBob}}},
		{"BOB", kAlice, want{kind: "box", spec: kBob, name: "bob", match: MatchMember, online: true, recipients: []string{kBob}}},
		{"  amy ", kAlice, want{kind: "box", spec: kAmy, name: "Amy", match: MatchMember, recipients: []string{kAmy}}},
		// Offline member by name: queued delivery, online false.
		{"carol", kAlice, want{kind: "box", spec: kCarol, name: "carol", match: MatchMember, recipients: []string{kCarol}}},
		// Sessions by name when no member has it; case-insensitive collision → ambiguous.
		{"worker", kAlice, want{code: wire.CodeAmbiguousTarget, candidates: []string{kSessA, kSessB}}},
		{"mallory", kAlice, want{code: wire.CodeUnknownTarget}},
		{"ghost", kAlice, want{code: wire.CodeUnknownTarget}},
		{"nobody", kAlice, want{code: wire.CodeUnknownTarget}},
		// Full pubkeys, any case, known or not.
		{kBob, kAlice, want{kind: "box", spec: kBob, name: "bob", match: MatchPubkey, online: true, recipients: []string{kBob}}},
		{strings.ToUpper(kSessA), kAlice, want{kind: "box", spec: kSessA, name: "worker", match: MatchPubkey, online: true, recipients: []string{kSessA}}},
		{kSessB, kAlice, want{kind: "box", spec: kSessB, name: "Worker", match: MatchPubkey, recipients: []string{kSessB}}},
		{kOther, kAlice, want{kind: "box", spec: kOther, match: MatchPubkey, recipients: []string{kOther}}},
		// A key that is no valid public key is nobody's: unknown_recipient,
		// as the broker answers for a key it does not know.
		{strings.Repeat("0", 64), kAlice, want{code: wire.CodeUnknownRecipient}},
		{"0123456789abcdef" + strings.Repeat("9", 48), kAlice, want{code: wire.CodeUnknownRecipient}},
		// Prefixes.
		{kBob[:8], kAlice, want{kind: "box", spec: kBob, name: "bob", match: MatchPrefix, online: true, recipients: []string{kBob}}},
		{"cafe0000", kAlice, want{kind: "box", spec: kSessC, name: "carol", match: MatchPrefix, online: true, recipients: []string{kSessC}}},
		{"aaaaaaaa", kBob, want{code: wire.CodeAmbiguousTarget, candidates: []string{kAlice, kAmy}}},
		{kAlice[:63], kBob, want{code: wire.CodeAmbiguousTarget, candidates: []string{kAlice, kAmy}}},
		{kBob[:20], kAlice, want{kind: "box", spec: kBob, name: "bob", match: MatchPrefix, online: true, recipients: []string{kBob}}},
		{"cccccccc", kAlice, want{code: wire.CodeAmbiguousTarget, candidates: []string{kSessA, kSessB}}},
		{"ffffffff", kAlice, want{code: wire.CodeUnknownTarget}}, // revoked member's session
		{"bbbbbbb", kAlice, want{code: wire.CodeUnknownTarget}},  // 7 hex: a name, and nobody has it
		// Broadcast: every active member and listed session, minus self.
		{"*", kAlice, want{kind: "multi", spec: "*", match: MatchBroadcast, recipients: []string{kAmy, kBob, kCarol, kSessA, kSessB, kSessC}}},
		// Groups: presences only; a session inherits its member's groups.
		{"@ops", kAlice, want{kind: "multi", spec: "@ops", match: MatchGroup, recipients: []string{kBob, kSessA, kSessB}}},
		{"@ops/east", kAlice, want{kind: "multi", spec: "@ops/east", match: MatchGroup, recipients: []string{kSessA}}},
		{"@ops", kBob, want{kind: "multi", spec: "@ops", match: MatchGroup, recipients: []string{kSessA, kSessB}}},
		{"@op", kAlice, want{code: wire.CodeUnknownTarget}},
		// alice's own session inherits her member-wide group; alice is left out.
		{"@dev", kAlice, want{kind: "multi", spec: "@dev", match: MatchGroup, recipients: []string{kSessC}}},
		{"@dev", kSessC, want{kind: "multi", spec: "@dev", match: MatchGroup, recipients: []string{kAlice}}},
		{"@Bad Group", kAlice, want{code: wire.CodeInvalidArgument}},
		{"#general", kAlice, want{code: CodeTopicNotFound}},
		{"", kAlice, want{code: wire.CodeInvalidArgument}},
	}
	// The same answers from a directory that has resolved before (a
	// daemon's, which resolves from its indexes) as from a fresh one.
	reused := NewDirectory(members, peers)
	reused.Resolve("*", "")
	for _, tc := range cases {
		for _, how := range []string{"fresh", "reused"} {
			t.Run(how+"/"+tc.to, func(t *testing.T) {
				got, err := ResolveTarget(tc.to, members, peers, tc.self)
				if how == "reused" {
					got, err = reused.Resolve(tc.to, tc.self)
				}
				checkResolved(t, got, err, tc.want.code, tc.want.candidates, func(got *Target) bool {
					w := tc.want
					return got.Kind == w.kind && got.Spec == w.spec && got.DisplayName == w.name && got.Match == w.match &&
						got.Online == w.online && slices.Equal(got.Recipients, w.recipients)
				}, tc.want)
			})
		}
	}
}

// checkResolved checks a resolution against an error code and its
// candidates' keys or, with code "", against ok.
func checkResolved(t *testing.T, got *Target, err error, code string, candidates []string, ok func(*Target) bool, want any) {
	t.Helper()
	if code != "" {
		var e *Error
		if !errors.As(err, &e) || e.Code != code {
			t.Fatalf("got %+v, %v; want code %s", got, err, code)
		}
		var keys []string
		for _, c := range e.Candidates {
			keys = append(keys, c.Pubkey)
			if c.Kind != CandidateMember && c.Kind != CandidateSession {
				t.Errorf("candidate kind %q", c.Kind)
			}
		}
		if !slices.Equal(keys, candidates) {
			t.Fatalf("candidates %v, want %v", keys, candidates)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !ok(got) {
		t.Fatalf("got %+v\nwant %+v", *got, want)
	}
}

// A member named like a hex prefix is still reachable by name when no key
// has that prefix.
func TestResolveHexLookingName(t *testing.T) {
	members := []wire.Member{{Pubkey: kBob, DisplayName: "deadbeef"}}
	got, err := ResolveTarget("deadbeef", members, nil, kAlice)
	if err != nil || got.Spec != kBob || got.Match != MatchMember {
		t.Fatalf("%+v %v", got, err)
	}
}

// A member named like a prefix of another member's key is neither: the
// target is ambiguous (with both as candidates), on a fresh directory and
// on one reused (indexed), so nobody is reached by a name chosen to look
// like someone's key.
func TestResolveNameThatIsAnotherKeysPrefix(t *testing.T) {
	members := []wire.Member{{Pubkey: kBob, DisplayName: "bob"}, {Pubkey: kCarol, DisplayName: kBob[:8]}}
	d := NewDirectory(members, nil)
	for i := range 2 { // the second Resolve answers from the indexes
		got, err := d.Resolve(kBob[:8], kAlice)
		var e *Error
		if !errors.As(err, &e) || e.Code != wire.CodeAmbiguousTarget || len(e.Candidates) != 2 ||
			e.Candidates[0].Pubkey != kBob || e.Candidates[1].Pubkey != kCarol {
			t.Fatalf("resolve %d: %+v %v", i, got, err)
		}
	}
	// A longer prefix is bob's alone.
	if got, err := d.Resolve(kBob[:9], kAlice); err != nil || got.Spec != kBob {
		t.Fatalf("longer prefix: %+v %v", got, err)
	}
}

// A key prefix that several sessions are named (case-folded) is ambiguous
// too: the name lookup's own ambiguity was dropped, and the prefix's
// member alone was picked. Fresh and reused (indexed) directories.
func TestResolvePrefixThatSessionsAreNamed(t *testing.T) {
	members := []wire.Member{{Pubkey: kBob, DisplayName: "bob"}, {Pubkey: kCarol, DisplayName: "carol"}}
	peers := []wire.Peer{
		{Pubkey: kSessA, MemberPubkey: kCarol, Role: wire.RoleSession, DisplayName: kBob[:8]},
		{Pubkey: kSessB, MemberPubkey: kCarol, Role: wire.RoleSession, DisplayName: strings.ToUpper(kBob[:8])},
	}
	for round := range 2 {
		d := NewDirectory(members, peers)
		var err error
		for range round + 1 {
			_, err = d.Resolve(kBob[:8], kAlice)
		}
		if CodeOf(err) != wire.CodeAmbiguousTarget {
			t.Errorf("round %d: %v, want ambiguous_target", round, err)
		}
	}
}

// Members win over sessions with the same name, and the control-plane
// presence is never picked by name.
func TestResolveMembersFirst(t *testing.T) {
	members, peers := snapshot()
	got, err := ResolveTarget("carol", members, peers, kAlice)
	if err != nil || got.Spec != kCarol || got.Match != MatchMember {
		t.Fatalf("%+v %v", got, err)
	}
	// Only a daemon presence carries the name: nothing to pick.
	got, err = ResolveTarget("daemon-only", nil, []wire.Peer{{Pubkey: kBob, MemberPubkey: kBob, DisplayName: "daemon-only", Role: wire.RoleControlPlane, Online: true}}, kAlice)
	if CodeOf(err) != wire.CodeUnknownTarget {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestResolveBroadcastLimits(t *testing.T) {
	if _, err := ResolveTarget("*", []wire.Member{{Pubkey: kAlice, DisplayName: "alice"}}, nil, kAlice); CodeOf(err) != wire.CodeUnknownTarget {
		t.Fatalf("alone in the mesh: %v", err)
	}
	var many []wire.Member
	for i := range 1001 {
		k := []byte(strings.Repeat("0", 64))
		copy(k[60:], []byte{"0123456789abcdef"[i>>8&15], "0123456789abcdef"[i>>4&15], "0123456789abcdef"[i&15], '1'})
		many = append(many, wire.Member{Pubkey: string(k), DisplayName: "m"})
	}
	if _, err := ResolveTarget("*", many, nil, kAlice); CodeOf(err) != wire.CodeInvalidArgument {
		t.Fatalf("1001 recipients: %v", err)
	}
	if got, err := ResolveTarget("*", many[:1000], nil, kAlice); err != nil || len(got.Recipients) != 1000 {
		t.Fatalf("1000 recipients: %v", err)
	}
}

// TestResolveReusedMatchesFresh: in a larger mesh with repeated names,
// offline presences and presences of one member in different states, a
// directory that resolves from its indexes gives exactly what a fresh
// one that scans gives, for every key, name and some prefixes.
func TestResolveReusedMatchesFresh(t *testing.T) {
	members, peers := bigMesh(200)
	statuses := []string{"idle", "working", "dnd"}
	for i := range peers {
		peers[i].Online = i%7 != 3
		peers[i].Status = statuses[i%3]
		if i%11 == 0 {
			peers[i].DisplayName = "twin" // repeated names, members' and sessions'
		}
	}
	for i := range members {
		if i%13 == 0 {
			members[i].DisplayName = "Twin"
		}
	}
	// A member with a CLI presence listed before its daemon's: the
	// daemon's status wins.
	if d := peers[8]; d.MemberPubkey != members[4].Pubkey || d.Role != wire.RoleControlPlane || !d.Online || d.Status != "dnd" {
		t.Fatalf("member 4's daemon presence: %+v", d)
	}
	peers = append([]wire.Peer{{Pubkey: members[4].Pubkey, MemberPubkey: members[4].Pubkey, DisplayName: "cli", Role: wire.RoleCLI, Online: true, Status: "idle"}}, peers...)
	var targets []string
	for _, m := range members {
		targets = append(targets, m.Pubkey, m.DisplayName, m.Pubkey[:10])
	}
	for _, p := range peers {
		targets = append(targets, p.Pubkey, p.DisplayName)
	}
	targets = append(targets, "twin", "nobody", "*")
	reused := NewDirectory(members, peers)
	reused.Resolve("*", "")
	for _, to := range targets {
		want, werr := ResolveTarget(to, members, peers, "")
		got, gerr := reused.Resolve(to, "")
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gerr, werr) {
			t.Fatalf("%q: reused %+v, %v; fresh %+v, %v", to, got, gerr, want, werr)
		}
	}
}

// A key prefix that is bob's own name (members win at the name level)
// and another member's session's name too is ambiguous, as on the broker
// (matchTargets): the client returned bob. When the name lookup is itself
// ambiguous and includes the prefix's own target, that target is listed
// once. Fresh and reused (indexed) directories.
func TestResolvePrefixNamedByItsOwnerAndASession(t *testing.T) {
	members := []wire.Member{{Pubkey: kBob, DisplayName: strings.ToUpper(kBob[:8])}, {Pubkey: kCarol, DisplayName: "carol"}}
	peers := []wire.Peer{{Pubkey: kSessA, MemberPubkey: kCarol, Role: wire.RoleSession, DisplayName: kBob[:8]}}
	// kSessA's prefix "cccccccc" is also its own name and another session's.
	peers2 := []wire.Peer{
		{Pubkey: kSessA, MemberPubkey: kCarol, Role: wire.RoleSession, DisplayName: kSessA[:8]},
		{Pubkey: kSessC, MemberPubkey: kCarol, Role: wire.RoleSession, DisplayName: strings.ToUpper(kSessA[:8])},
	}
	for round := range 2 {
		for _, c := range []struct {
			peers []wire.Peer
			to    string
			want  []string
		}{{peers, kBob[:8], []string{kBob, kSessA}}, {peers2, kSessA[:8], []string{kSessA, kSessC}}} {
			d := NewDirectory(members, c.peers)
			var err error
			for range round + 1 {
				_, err = d.Resolve(c.to, kAlice)
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != wire.CodeAmbiguousTarget {
				t.Errorf("round %d %s: %v, want ambiguous_target", round, c.to, err)
				continue
			}
			var got []string
			for _, k := range e.Candidates {
				got = append(got, k.Pubkey)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("round %d %s: candidates %v, want %v (each once)", round, c.to, got, c.want)
			}
		}
	}
}
