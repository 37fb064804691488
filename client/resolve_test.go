package client

import (
	"errors"
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
	kOther   = "0123456789abcdef" + strings.Repeat("9", 48)
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
	for _, tc := range cases {
		t.Run(tc.to, func(t *testing.T) {
			got, err := ResolveTarget(tc.to, members, peers, tc.self)
			if tc.want.code != "" {
				var e *Error
				if !errors.As(err, &e) || e.Code != tc.want.code {
					t.Fatalf("got %+v, %v; want code %s", got, err, tc.want.code)
				}
				var keys []string
				for _, c := range e.Candidates {
					keys = append(keys, c.Pubkey)
					if c.Kind != CandidateMember && c.Kind != CandidateSession {
						t.Errorf("candidate kind %q", c.Kind)
					}
				}
				if !slices.Equal(keys, tc.want.candidates) {
					t.Fatalf("candidates %v, want %v", keys, tc.want.candidates)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			if got.Kind != w.kind || got.Spec != w.spec || got.DisplayName != w.name || got.Match != w.match ||
				got.Online != w.online || !slices.Equal(got.Recipients, w.recipients) {
				t.Fatalf("got %+v\nwant %+v", *got, w)
			}
		})
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
