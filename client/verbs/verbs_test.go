package verbs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	json "github.com/go-json-experiment/json"
	"github.com/urfave/cli/v2"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
	"claudemesh/daemon/localapi"
	"claudemesh/internal/cliui"
	"claudemesh/wire"
)

// The end-to-end behaviour of every verb is tested in /e2e against the real
// binary and broker; these tests cover what e2e cannot reach: malformed or
// forged pushes, the seen file's limits, and the output of partial failures.

func TestSeenStore(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	s, err := lockSeen(home)
	if err != nil {
		t.Fatal(err)
	}
	if s.has("m1", "id1", "snd", "n1") {
		t.Fatal("empty store has an id")
	}
	s.add("m1", "id1", "snd", "n1")
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	s.close()

	fi, err := os.Stat(filepath.Join(home, seenFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("seen file: %v %v", fi, err)
	}
	s, err = lockSeen(home)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !s.has("m1", "id1", "x", "y"):
		t.Fatal("id not remembered")
	case !s.has("m1", "other-id", "snd", "n1"):
		t.Fatal("a replay under a new id (same sender and nonce) is not recognised")
	case s.has("m1", "other-id", "other-sender", "n1"):
		t.Fatal("the nonce key must include the sender")
	case s.has("m2", "id1", "snd", "n1"):
		t.Fatal("meshes must not share their memory")
	}
	// The newest maxSeen entries are kept.
	for i := range maxSeen + 5 {
		s.add("m1", fmt.Sprintf("bulk%05d", i), "snd", fmt.Sprintf("bn%d", i))
	}
	if err := s.save(); err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = lockSeen(home)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if n := len(s.data.Meshes["m1"].IDs); n != maxSeen {
		t.Fatalf("%d ids kept", n)
	}
	if s.has("m1", "id1", "", "") || s.has("m1", "bulk00004", "", "") || !s.has("m1", "bulk00005", "", "") {
		t.Fatal("the oldest ids were not the ones dropped")
	}
}

// Two inbox runs in one home take turns: the second waits for the first's
// lock, so both cannot print the same message.
func TestSeenStoreLocks(t *testing.T) {
	home := t.TempDir()
	first, err := lockSeen(home)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *seenStore)
	go func() {
		s, err := lockSeen(home)
		if err != nil {
			t.Error(err)
		}
		got <- s
	}()
	first.add("m", "id", "", "")
	if err := first.save(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
		t.Fatal("second lock taken while the first was held")
	case <-time.After(100 * time.Millisecond):
	}
	first.close()
	second := <-got
	defer second.close()
	if !second.has("m", "id", "", "") {
		t.Fatal("second holder does not see the first's write")
	}
}

func TestSeenStoreRefusesReadableFile(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, seenFileName)
	if err := os.WriteFile(path, []byte(`{"version":1,"meshes":{}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	if _, err := lockSeen(home); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable seen file: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte(`not json`), 0o600)
	_, err := lockSeen(home)
	var ce *cliui.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Hint, "remove") {
		t.Fatalf("corrupt seen file: %v", err)
	}
}

func ident(t *testing.T) *cmcrypto.Identity {
	t.Helper()
	id, err := cmcrypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// pushOf turns a send into the push its recipient would get.
func pushOf(s *wire.Send, meshID string, from, member *cmcrypto.Identity, key *wire.MultiKey) *wire.Push {
	return &wire.Push{Type: wire.TypePush, MessageID: client.NewID(), MeshID: meshID, Kind: s.Kind, TargetSpec: s.TargetSpec,
		SenderPubkey: from.PublicHex(), SenderMemberPubkey: member.PublicHex(), SenderName: "alice",
		Nonce: s.Nonce, Ciphertext: s.Ciphertext, Signature: s.Signature, Key: key, CreatedAt: time.Now().UnixMilli()}
}

func TestOpenRow(t *testing.T) {
	alice, bob, eve := ident(t), ident(t), ident(t)
	m := &config.Mesh{MeshID: "01MESH", Slug: "acme", Pubkey: bob.PublicHex()}

	dm, err := client.SealDM(bob.PublicHex(), []byte("hi bob"), alice, client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	row := openRow(m, bob, pushOf(dm, m.MeshID, alice, alice, nil), 1)
	if row.Body == nil || *row.Body != "hi bob" || !row.Verified || row.SenderName != "alice" || row.DecryptError != "" ||
		row.ID != row.MessageID || row.Priority != wire.PriorityNext || row.Mesh != "acme" || row.SchemaVersion != 1 {
		t.Fatalf("good DM: %+v", row)
	}

	// A box that does not open is a row without body, never garbage.
	row = openRow(m, eve, pushOf(dm, m.MeshID, alice, alice, nil), 1)
	if row.Body != nil || row.DecryptError == "" || row.Verified {
		t.Fatalf("DM for someone else: %+v", row)
	}

	mu, err := client.SealMulti(m.MeshID, "*", []byte("to all"), []string{bob.PublicHex()}, alice, client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k := mu.Keys[0]
	row = openRow(m, bob, pushOf(mu, m.MeshID, alice, alice, &k), 1)
	if row.Body == nil || *row.Body != "to all" || !row.Verified || row.SenderName != "alice" {
		t.Fatalf("good multi: %+v", row)
	}
	// Someone holding the content key pairs it with a forged signature:
	// unverified, no body, and not shown under alice's name.
	forged := *mu
	forged.Signature = strings.Repeat("0", 128)
	row = openRow(m, bob, pushOf(&forged, m.MeshID, alice, alice, &k), 1)
	if row.Body != nil || row.Verified || row.SenderName != "" || !strings.Contains(row.DecryptError, "signature") {
		t.Fatalf("forged multi: %+v", row)
	}

	// A session sender without an attestation decrypts, but is not
	// proven to be alice's.
	session := ident(t)
	sdm, err := client.SealDM(bob.PublicHex(), []byte("from a session"), session, client.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	row = openRow(m, bob, pushOf(sdm, m.MeshID, session, alice, nil), 1)
	if row.Body == nil || row.Verified || row.SenderName != "" {
		t.Fatalf("unattested session: %+v", row)
	}
	var out, errb bytes.Buffer
	printMessage(cliui.NewOut(&out, &errb, false, false, false), row, false)
	if strings.Contains(out.String(), "alice") || !strings.Contains(out.String(), "unverified") {
		t.Fatalf("human output of an unverified message: %q", out.String())
	}

	// A session of bob's that calls itself "alice", with a valid
	// attestation by bob: verified (the key chain holds), but shown as
	// "alice (via bob)" with bob's key as the member (issue 12 item 2).
	bobMember := ident(t)
	p := pushOf(sdm, m.MeshID, session, bobMember, nil)
	exp := time.Now().Add(time.Hour).UnixMilli()
	as, _ := cmcrypto.SessionAttestString(m.MeshID, bobMember.PublicHex(), session.PublicHex(), exp)
	p.SenderAttestation = &wire.Attestation{SessionPubkey: session.PublicHex(), ParentPubkey: bobMember.PublicHex(), ExpiresAt: exp, Signature: bobMember.Sign(as)}
	row = openRow(m, bob, p, 1)
	row.SenderMemberName = "bob" // what the member list says
	if !row.Verified || row.SenderName != "alice" || row.SenderMemberPubkey != bobMember.PublicHex() {
		t.Fatalf("attested session: %+v", row)
	}
	out.Reset()
	printMessage(cliui.NewOut(&out, &errb, false, false, false), row, false)
	if !strings.Contains(out.String(), "alice (via bob)") {
		t.Fatalf("a session named like another member must show its member: %q", out.String())
	}
}

func TestPushRowUndecodable(t *testing.T) {
	m := &config.Mesh{MeshID: "01MESH", Slug: "acme"}
	id := client.NewID()
	raw := []byte(`{"type":"push","messageId":"` + id + `","kind":"box","nonce":42}`)
	row, _, _, ok := pushRow(m, nil, client.RawPush{Raw: raw, Err: errors.New("bad nonce")}, 1)
	if !ok || row.MessageID != id || row.DecryptError == "" || row.Body != nil {
		t.Fatalf("undecodable push with an id: %+v %v", row, ok)
	}
	if _, _, _, ok := pushRow(m, nil, client.RawPush{Raw: []byte(`{"type":"push"}`), Err: errors.New("x")}, 1); ok {
		t.Fatal("a push without an id cannot be settled and must be skipped")
	}
}

func TestReadMessage(t *testing.T) {
	cases := []struct {
		args  []string
		stdin string
		want  string
		code  string
	}{
		{args: []string{"hello", "there"}, want: "hello there"},
		{args: []string{"  spaced  "}, want: "  spaced  "},
		{args: []string{"-"}, stdin: "line one\nline two\n", want: "line one\nline two"},
		{args: []string{"-"}, stdin: "crlf\r\n", want: "crlf"},
		{args: []string{"-", "x"}, want: "- x"},
		{args: []string{"-"}, stdin: "\n", code: cliui.CodeUsage},
		{args: []string{" "}, code: cliui.CodeUsage},
		{args: []string{"-"}, stdin: strings.Repeat("é", client.MaxPlaintext/2) + "\n", want: strings.Repeat("é", client.MaxPlaintext/2)},
		{args: []string{"-"}, stdin: strings.Repeat("x", client.MaxPlaintext+1), code: wire.CodePayloadTooLarge},
		{args: []string{strings.Repeat("x", client.MaxPlaintext), "y"}, code: wire.CodePayloadTooLarge},
	}
	for i, tc := range cases {
		got, err := readMessage(tc.args, strings.NewReader(tc.stdin))
		var ce *cliui.Error
		switch {
		case tc.code != "" && (!errors.As(err, &ce) || ce.Code != tc.code):
			t.Errorf("#%d: want %s, got %q %v", i, tc.code, got, err)
		case tc.code == "" && (err != nil || got != tc.want):
			t.Errorf("#%d: got %q %v", i, got, err)
		}
	}
}

func TestPeerRows(t *testing.T) {
	me, bob, carol, gone, sess := strings.Repeat("1", 64), strings.Repeat("2", 64), strings.Repeat("3", 64), strings.Repeat("4", 64), strings.Repeat("5", 64)
	m := &config.Mesh{Slug: "acme", Pubkey: me}
	members := []wire.Member{
		{Pubkey: me, DisplayName: "me", MemberRole: "owner"},
		{Pubkey: bob, DisplayName: "bob", MemberRole: "member", Online: true},
		{Pubkey: carol, DisplayName: "carol", MemberRole: "member", Online: true},
		{Pubkey: gone, DisplayName: "gone", MemberRole: "member", RevokedAt: 5},
	}
	peers := []wire.Peer{
		{Pubkey: bob, MemberPubkey: bob, DisplayName: "bob", Role: wire.RoleControlPlane, Online: true, SessionID: "daemon", Status: "idle", ConnectedAt: 1},
		{Pubkey: sess, MemberPubkey: bob, DisplayName: "bob-agent", Role: wire.RoleSession, Online: true, SessionID: "s1", Status: "working", ConnectedAt: 2},
		{Pubkey: me, MemberPubkey: me, DisplayName: "me", Role: wire.RoleCLI, Online: false, SessionID: "cli-1", Status: "idle", ConnectedAt: 3},
	}
	// Default: each member once (bob through his daemon, with his agent
	// session under him; me offline within the grace period of my cli).
	rows := peerRows(m, members, peers, false, "")
	if len(rows) != 3 || rows[0].Pubkey != bob || rows[0].DisplayName != "bob" || !rows[0].Online || rows[0].Status != "idle" ||
		rows[0].Role != wire.RoleControlPlane || rows[0].Nested ||
		rows[1].Pubkey != sess || !rows[1].Nested || rows[1].MemberPubkey != bob ||
		rows[2].Pubkey != me || !rows[2].IsSelf || rows[2].Online || rows[0].IsSelf {
		t.Fatalf("default: %+v", rows)
	}
	// A member online only through a session is listed once, online,
	// without connection fields of its own.
	only := peerRows(m, members, peers[1:2], false, "")
	if len(only) != 2 || only[0].Pubkey != bob || only[0].DisplayName != "bob" || !only[0].Online || only[0].Role != "" ||
		only[0].SessionID != "" || !only[1].Nested {
		t.Fatalf("session only: %+v", only)
	}
	// Two member presences of one member are one row.
	two := append([]wire.Peer{{Pubkey: bob, MemberPubkey: bob, DisplayName: "bob", Role: wire.RoleCLI, Online: true, SessionID: "cli-2", ConnectedAt: 0}}, peers...)
	if rows := peerRows(m, members, two, false, ""); len(rows) != 3 || rows[0].Pubkey != bob || rows[1].Pubkey != sess {
		t.Fatalf("two presences: %+v", rows)
	}
	for _, r := range rows {
		if r.Groups == nil || r.Mesh != "acme" {
			t.Fatalf("row %+v", r)
		}
	}
	// --all adds the daemon presence; carol is online by members_list
	// (through a presence this snapshot does not show), so no offline row;
	// never a revoked member; and me only once (my cli presence is listed,
	// within its grace period).
	rows = peerRows(m, members, peers, true, "")
	var names []string
	for _, r := range rows {
		names = append(names, r.DisplayName+"/"+r.Role)
	}
	if got := strings.Join(names, ","); got != "bob/control-plane,bob-agent/session,me/cli" {
		t.Fatalf("--all: %s", got)
	}
	members[2].Online = false
	rows = peerRows(m, members, peers, true, "")
	last := rows[len(rows)-1]
	if last.DisplayName != "carol" || last.Online || last.Role != "" || last.SessionID != "" || last.Status != "offline" ||
		last.ConnectedAt != 0 || last.MemberRole != "member" || last.Pubkey != carol || last.MemberPubkey != carol {
		t.Fatalf("offline member row: %+v", last)
	}
	// The skill tells agents role, status, sessionId and peerType are
	// always there: an offline member's row has them too.
	data, err := json.Marshal(last)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{`"role":""`, `"status":"offline"`, `"sessionId":""`, `"peerType":""`} {
		if !strings.Contains(string(data), k) {
			t.Fatalf("offline member row %s lacks %s", data, k)
		}
	}
}

func TestCLIErrorMapping(t *testing.T) {
	cases := []struct {
		err  error
		code string
		exit int
	}{
		{&client.Error{Code: client.CodeUnreachable, Message: "down"}, "unreachable", 5},
		{meshError("acme", &client.Error{Code: client.CodeTimeout, Message: "slow"}), "timeout", 5},
		{&client.Error{Code: client.CodeConnectionClosed}, "connection_closed", 5},
		{&client.Error{Code: client.CodeBrokerKeyMismatch}, "broker_key_mismatch", 4},
		{&client.Error{Code: wire.CodeNotFound}, "not_found", 3},
		{&client.Error{Code: client.CodeTopicNotFound}, "topic_not_found", 3},
		{&client.Error{Code: wire.CodeAmbiguousTarget, Candidates: []wire.Candidate{{DisplayName: "w", Pubkey: "ab", Kind: "session"}}}, "ambiguous_target", 6},
		{&client.Error{Code: wire.CodeRateLimited}, "rate_limited", 1},
	}
	for _, tc := range cases {
		var ce *cliui.Error
		if !errors.As(cliError(tc.err), &ce) || ce.Code != tc.code {
			t.Fatalf("%v: %+v", tc.err, ce)
		}
		exit := ce.Exit
		if exit == 0 {
			exit = cliui.ExitCode(ce.Code)
		}
		if exit != tc.exit {
			t.Errorf("%s: exit %d, want %d", tc.code, exit, tc.exit)
		}
		if ce.Message == "" || strings.HasPrefix(ce.Message, ce.Code+":") {
			t.Errorf("%s: message %q", tc.code, ce.Message)
		}
	}
	ce := cliError(meshError("acme", &client.Error{Code: client.CodeUnreachable, Message: "connection refused"})).(*cliui.Error)
	if ce.Message != "acme: connection refused" || ce.Hint == "" {
		t.Fatalf("mesh prefix: %+v", ce)
	}
	ce = cliError(&client.Error{Code: wire.CodeAmbiguousTarget, Candidates: []wire.Candidate{{DisplayName: "w", Pubkey: "ab", Kind: "session"}}}).(*cliui.Error)
	if len(ce.Candidates) != 1 || ce.Candidates[0] != (cliui.Candidate{DisplayName: "w", Pubkey: "ab", Kind: "session"}) {
		t.Fatalf("candidates: %+v", ce.Candidates)
	}
}

// A multi-mesh read reports a failed mesh next to the others' rows; when
// every mesh failed it is the command's error, with nothing else printed.
func TestInboxPrinterFailures(t *testing.T) {
	body := "hi"
	row := inboxRow{SchemaVersion: 1, ID: "01A", MessageID: "01A", Mesh: "a", Kind: "box", Body: &body, Verified: true, Priority: "next"}
	down := meshError("b", &client.Error{Code: client.CodeUnreachable, Message: "refused"})

	var out, errb bytes.Buffer
	p := &inboxPrinter{out: cliui.NewOut(&out, &errb, true, false, false), multi: true}
	p.Rows([]inboxRow{row})
	p.MeshFailed("b", down)
	if err := p.finish(2); err != nil {
		t.Fatal(err)
	}
	want := `[{"schemaVersion":1,"id":"01A","messageId":"01A","mesh":"a","kind":"box","senderName":"","senderPubkey":"","body":"hi","verified":true,"priority":"next","receivedAt":0},` +
		`{"schemaVersion":1,"mesh":"b","error":{"code":"unreachable","message":"b: refused"}}]` + "\n"
	if out.String() != want || errb.Len() != 0 {
		t.Fatalf("partial failure:\n%s\nwant\n%s\nstderr %q", out.String(), want, errb.String())
	}

	out.Reset()
	p = &inboxPrinter{out: cliui.NewOut(&out, &errb, true, false, false), multi: true}
	p.MeshFailed("a", down)
	p.MeshFailed("b", down)
	if err := p.finish(2); err == nil || out.Len() != 0 {
		t.Fatalf("all failed: %v, printed %q", err, out.String())
	}

	out.Reset()
	p = &inboxPrinter{out: cliui.NewOut(&out, &errb, true, false, false)}
	if err := p.finish(1); err != nil || out.String() != "[]\n" {
		t.Fatalf("nothing: %v %q", err, out.String())
	}

	// Human: a warning naming the mesh on stderr, the rows on stdout.
	out.Reset()
	p = &inboxPrinter{out: cliui.NewOut(&out, &errb, false, false, false), multi: true}
	p.Rows([]inboxRow{row})
	p.MeshFailed("b", down)
	if err := p.finish(2); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "  hi\n") || !strings.Contains(errb.String(), "b: refused") {
		t.Fatalf("human: %q / %q", out.String(), errb.String())
	}
}

// A topic post says which topic it was posted in (it would read as a DM
// otherwise), with the name sanitised like everything a member chose.
func TestPrintMessageNamesItsTopic(t *testing.T) {
	body := "v1.4 is rolling out"
	var out, errb bytes.Buffer
	printMessage(cliui.NewOut(&out, &errb, false, false, false),
		inboxRow{SenderName: "alice", SenderPubkey: strings.Repeat("a", 64), Body: &body, Verified: true, Mesh: "m", Topic: "dep\x1b[2Jloys"}, false)
	if strings.ContainsRune(out.String(), 0x1b) || !strings.Contains(out.String(), "in #deploys") {
		t.Fatalf("%q", out.String())
	}
}

// The human inbox strips terminal escapes from everything a peer wrote.
func TestPrintMessageSanitises(t *testing.T) {
	body := "ok\x1b]0;pwned\x07 \x1b[31mred\x1b[0m\nline2"
	var out, errb bytes.Buffer
	printMessage(cliui.NewOut(&out, &errb, false, false, false),
		inboxRow{SenderName: "ev\x1b[2Jil", SenderPubkey: strings.Repeat("a", 64), Body: &body, Verified: true, Mesh: "m"}, false)
	if strings.ContainsRune(out.String(), 0x1b) || !strings.Contains(out.String(), "evil") || !strings.Contains(out.String(), "ok red\n    line2") {
		t.Fatalf("%q", out.String())
	}
}

// TestCommandTable: every entry of the verb table builds the command it is
// named after (Command finds verbs by the table's name, without building
// the others), names are unique, and Command builds a fresh copy each time.
func TestCommandTable(t *testing.T) {
	all := Commands()
	if len(all) != len(commands) {
		t.Fatalf("Commands built %d verbs, the table has %d", len(all), len(commands))
	}
	seen := map[string]bool{}
	for i, e := range commands {
		if seen[e.name] {
			t.Errorf("verb %q twice", e.name)
		}
		seen[e.name] = true
		if all[i].Name != e.name {
			t.Errorf("table entry %d is %q but builds %q", i, e.name, all[i].Name)
		}
		c := Command(e.name)
		if c == nil || c.Name != e.name {
			t.Fatalf("Command(%q) = %v", e.name, c)
		}
		if again := Command(e.name); again == c {
			t.Errorf("Command(%q) returned the same command twice", e.name)
		}
	}
	if c := Command("no-such-verb"); c != nil {
		t.Fatalf("Command(no-such-verb) = %q", c.Name)
	}
}

// TestSkipWhy: every reason the broker gives for skipping a peer has a
// reading; an unknown one has none (the reason itself is shown).
func TestSkipWhy(t *testing.T) {
	for _, r := range []string{wire.SkipSelf, wire.SkipOwner, wire.SkipAdmin, wire.SkipControlPlane, wire.SkipNotConnected,
		wire.SkipAlreadyBanned, wire.SkipNotBanned, wire.SkipUnchanged, wire.SkipBanned} {
		if skipWhy(r) == "" {
			t.Errorf("no reading for %q", r)
		}
	}
	if skipWhy(wire.SkipOwner) != "the owner" || skipWhy("something_new") != "" {
		t.Error("skipWhy is wrong")
	}
	if capList() != strings.Join(wire.DefaultCaps, ", ") {
		t.Error("capList")
	}
}

// TestInboxShowsWhenAQueuedMessageWasSent: a message that waited at the
// broker (its recipient offline) shows when it was sent beside when it
// arrived; one that came at once shows one time. inbox used to show only
// the arrival, so a message sent yesterday read as today's.
func TestInboxShowsWhenAQueuedMessageWasSent(t *testing.T) {
	body := "hi"
	now := time.Now()
	row := inboxRow{SenderName: "alice", SenderPubkey: strings.Repeat("a", 64), SenderMemberPubkey: strings.Repeat("a", 64),
		Verified: true, Body: &body, Priority: "next", ReceivedAt: now.UnixMilli(), SentAt: now.Add(-3 * time.Hour).UnixMilli()}
	var out, errb bytes.Buffer
	printMessage(cliui.NewOut(&out, &errb, false, false, false), row, false)
	if !strings.Contains(out.String(), "sent "+when(row.SentAt)) || !strings.Contains(out.String(), "received "+when(row.ReceivedAt)) {
		t.Fatalf("a message queued for 3 h: %q", out.String())
	}
	row.SentAt = now.Add(-2 * time.Second).UnixMilli()
	out.Reset()
	printMessage(cliui.NewOut(&out, &errb, false, false, false), row, false)
	if strings.Contains(out.String(), "sent ") || !strings.Contains(out.String(), when(row.ReceivedAt)) {
		t.Fatalf("a message that came at once: %q", out.String())
	}
}

// TestPrintSentMultiFromTheOutbox: a broadcast's result line from the
// daemon's outbox row says how many recipients the broker holds it for,
// and never "no recipient could be reached" when the row does not say (a
// daemon older than the CLI).
func TestPrintSentMultiFromTheOutbox(t *testing.T) {
	five, zero := 5, 0
	cases := []struct {
		row  localapi.OutboxRow
		want string
	}{
		{localapi.OutboxRow{Status: "sent", Recipients: &five, OnlineNow: 4}, "sent to everyone in acme (5 recipients; pushed to 4 connections now, queued for the others)"},
		{localapi.OutboxRow{Status: "queued", Recipients: &zero}, "accepted, but no recipient of everyone in acme could be reached"},
		{localapi.OutboxRow{Status: "sent"}, "sent to everyone in acme (pushed to connected recipients now)"},
		{localapi.OutboxRow{Status: "queued"}, "queued for everyone in acme (the broker holds it for them)"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		res := &sendResult{ClientMessageID: "c", Target: targetJSON{Kind: wire.KindMulti, TargetSpec: "*"}}
		progressOf(res, &c.row)
		printSent(&env{out: cliui.NewOut(&out, &errb, false, false, false)}, "acme", res)
		if !strings.Contains(out.String(), c.want) {
			t.Errorf("%+v: got %q, want %q", c.row, out.String(), c.want)
		}
	}
}

// TestDeliveryExpiredIsNotDelivered: a daemon row failed with
// delivery_expired (a resend answered as a duplicate, some recipients'
// deliveries expired) is "not delivered" (exit 7), as the direct path says
// of the same retry, not "the broker refused message" with a requeue hint
// (a requeue sends the same id: the same message, the same end).
func TestDeliveryExpiredIsNotDelivered(t *testing.T) {
	res := &sendResult{ClientMessageID: "c1", MessageID: "M1"}
	err := deliveryExpired(res, localapi.CodeDeliveryExpired+": the broker took it, but its delivery to 1 of 2 recipients expired before they had it; it reached 1")
	var ce *cliui.Error
	if !errors.As(err, &ce) || ce.Code != cliui.CodeWaitTimeout || cliui.ExitCode(ce.Code) != cliui.ExitTimeout ||
		strings.Contains(ce.Message, localapi.CodeDeliveryExpired+":") || !strings.Contains(ce.Message, "1 of 2 recipients expired") ||
		strings.Contains(ce.Hint, "requeue") {
		t.Fatalf("%#v", err)
	}
}

// TestMeshNamedOnce: an error that already names its mesh is not prefixed
// again ("acme: acme: no such member", "acme: mesh acme: …").
func TestMeshNamedOnce(t *testing.T) {
	inner := meshError("acme", &client.Error{Code: wire.CodeUnauthorized, Message: "no such member in this mesh"})
	if got := cliError(meshError("acme", inner)).Error(); got != "acme: no such member in this mesh" {
		t.Errorf("twice: %q", got)
	}
	if got := meshError("acme", errors.New("mesh acme: the broker refuses this member")).Error(); got != "mesh acme: the broker refuses this member" {
		t.Errorf("daemon's words: %q", got)
	}
	if got := meshError("acme", errors.New("acmecorp: x")).Error(); got != "acme: acmecorp: x" {
		t.Errorf("another mesh's name: %q", got)
	}
	var out, errb bytes.Buffer
	warnMesh(cliui.NewOut(&out, &errb, false, false, false), "acme", errors.New("mesh acme: the broker refuses this member"))
	if strings.Count(errb.String(), "acme") != 1 {
		t.Errorf("warning: %q", errb.String())
	}
	errb.Reset()
	printAuditReports(cliui.NewOut(&out, &errb, false, false, false), []auditReportJSON{{Mesh: "acme", Error: &errorJSON{Code: "unauthorized", Message: "acme: no such member in this mesh"}}})
	if strings.Count(errb.String(), "acme") != 1 {
		t.Errorf("audit verify: %q", errb.String())
	}
}

// TestAuditVerifyCountsInEnglish: a fresh mesh's one entry is "1 entry",
// not "1 entries".
func TestAuditVerifyCountsInEnglish(t *testing.T) {
	var out, errb bytes.Buffer
	printAuditReports(cliui.NewOut(&out, &errb, false, false, false), []auditReportJSON{
		{Mesh: "solo", OK: true, Entries: 1, Seq: 1}, {Mesh: "acme", OK: true, Entries: 7, Seq: 7}})
	if got := out.String(); !strings.Contains(got, "solo: 1 entry verified") || !strings.Contains(got, "acme: 7 entries verified") {
		t.Errorf("audit verify: %q", got)
	}
	for n, want := range map[int]string{0: "0 entries", 1: "1 entry", 2: "2 entries"} {
		if got := plural(n, "entry"); got != want {
			t.Errorf("plural(%d, entry) = %q", n, got)
		}
	}
	if got := plural(2, "key"); got != "2 keys" {
		t.Errorf("plural(2, key) = %q", got)
	}
}

// TestForbiddenHintsNameARealCommand: a refusal for want of a role names
// the command the owner (or an admin) runs, and every command a hint names
// is a command of the CLI with flags it takes.
func TestForbiddenHintsNameARealCommand(t *testing.T) {
	forbidden := &client.Error{Code: wire.CodeForbidden, Message: "only the mesh owner or an admin can do that"}
	member := &config.Mesh{Slug: "acme", Role: wire.MemberMember, DisplayName: "carol"}
	admin := &config.Mesh{Slug: "acme", Role: wire.MemberAdmin, DisplayName: "dave"}
	owner := &config.Mesh{Slug: "acme", Role: wire.MemberOwner, DisplayName: "alice"}
	hint := func(err error) string {
		var ce *cliui.Error
		if !errors.As(cliError(err), &ce) {
			t.Fatalf("not a cliui error: %v", err)
		}
		return ce.Hint
	}
	cases := []struct {
		m         *config.Mesh
		ownerOnly bool
		req       *wire.AdminRequest
		want      []string
	}{
		{member, false, &wire.AdminRequest{Type: wire.TypeKick, Target: "bob"}, []string{"claudemesh kick bob --mesh acme", "claudemesh role set carol admin --mesh acme"}},
		{member, false, &wire.AdminRequest{Type: wire.TypeDisconnect, StaleMs: 2 * 3600 * 1000}, []string{"claudemesh disconnect --stale 2h --mesh acme"}},
		{member, false, &wire.AdminRequest{Type: wire.TypeBan, Target: "mallory x"}, []string{"claudemesh ban 'mallory x' --mesh acme"}},
		{member, false, &wire.AdminRequest{Type: wire.TypeUnban, Target: "bob"}, []string{"claudemesh unban bob --mesh acme"}},
		{member, false, &wire.AdminRequest{Type: wire.TypeKick, All: true}, []string{"claudemesh kick --all --mesh acme"}},
		{admin, true, &wire.AdminRequest{Type: wire.TypeSetRole, Target: "bob", Role: "admin"}, []string{"claudemesh role set bob admin --mesh acme"}},
		{member, true, &wire.AdminRequest{Type: wire.TypeMeshTransfer, Target: "bob"}, []string{"claudemesh mesh transfer bob --mesh acme"}},
	}
	for _, c := range cases {
		h := hint(askWhoCan(forbidden, c.m, c.ownerOnly, adminCommandLine(c.req)))
		for _, w := range c.want {
			if !strings.Contains(h, w) {
				t.Errorf("%s by a %s: hint %q lacks %q", c.req.Type, c.m.Role, h, w)
			}
			checkCommandLine(t, w)
		}
	}
	for _, line := range []string{"claudemesh bans", "claudemesh invite", "claudemesh invite --role admin", "claudemesh invite list",
		"claudemesh invite revoke 01ARZ3NDEKTSV4RRFFQ69G5FAV", "claudemesh topic add deploys carol --role lead"} {
		checkCommandLine(t, hint(askWhoCan(forbidden, member, false, line))[len("ask the mesh owner or an admin to run: "):][:len(line)+len(" --mesh acme")])
	}
	checkCommandLine(t, strings.TrimPrefix(newInviteHint("acme"), "ask the mesh owner or an admin for a new invite: they run "))
	topic := hint(askTopicLead(&client.Error{Code: wire.CodeForbidden, Message: "#ops is private"}, member, "ops", "claudemesh topic add ops carol"))
	if want := "claudemesh topic add ops carol --mesh acme"; !strings.HasSuffix(topic, want) {
		t.Errorf("topic join: %q", topic)
	}
	// The owner is never told to ask the owner; other refusals and other
	// codes keep their hint.
	if h := hint(askWhoCan(forbidden, owner, false, "claudemesh kick bob")); strings.Contains(h, "claudemesh kick") {
		t.Errorf("the owner is told %q", h)
	}
	if h := hint(askWhoCan(&client.Error{Code: wire.CodeUnknownTarget, Message: "no bob"}, member, false, "claudemesh kick bob")); strings.Contains(h, "claudemesh kick") {
		t.Errorf("unknown target: %q", h)
	}
}

// checkCommandLine fails unless line is a claudemesh command of Commands()
// followed by arguments and flags that command (or the global set) takes.
func checkCommandLine(t *testing.T, line string) {
	t.Helper()
	words := strings.Fields(strings.ReplaceAll(line, "'mallory x'", "mallory"))
	if len(words) < 2 || words[0] != "claudemesh" {
		t.Fatalf("%q is not a claudemesh command line", line)
	}
	var cmd *cli.Command
	children := Commands()
	i := 1
	for ; i < len(words); i++ {
		var next *cli.Command
		for _, c := range children {
			if c.Name == words[i] {
				next = c
			}
		}
		if next == nil {
			break
		}
		cmd, children = next, next.Subcommands
	}
	if cmd == nil || len(cmd.Subcommands) > 0 && cmd.Action == nil {
		t.Fatalf("%q names no command", line)
	}
	for _, w := range words[i:] {
		name, ok := strings.CutPrefix(w, "--")
		if !ok || name == "mesh" {
			continue
		}
		found := false
		for _, f := range cmd.Flags {
			found = found || slices.Contains(f.Names(), name)
		}
		if !found {
			t.Errorf("%q: %s takes no --%s", line, cmd.Name, name)
		}
	}
}

// TestPrintSentWhileTheDaemonConnects: a send accepted by a daemon that
// is still making its first connection says the daemon is connecting, not
// that the broker is unreachable (a new user's trial: the first send after
// `daemon up` read "not reachable right now (connecting)" one time in
// three, and was delivered within milliseconds); after a lost connection
// it does say so.
func TestPrintSentWhileTheDaemonConnects(t *testing.T) {
	for state, want := range map[string]string{
		localapi.MeshConnecting:   "the daemon is connecting to the broker and sends it once connected",
		localapi.MeshReconnecting: "the broker is not reachable right now (reconnecting)",
	} {
		var out, errb bytes.Buffer
		res := &sendResult{ClientMessageID: "c", Status: "accepted", MeshState: state,
			Target: targetJSON{Kind: wire.KindBox, TargetSpec: strings.Repeat("ab", 32), DisplayName: "alice"}}
		printSent(&env{out: cliui.NewOut(&out, &errb, false, false, false)}, "acme", res)
		if !strings.Contains(out.String(), want) {
			t.Errorf("%s: got %q, want %q", state, out.String(), want)
		}
	}
}

// TestSkillAndGeneralHintsNameARealCommand: a member refused a skill's
// removal or replacement is told the command its author, the owner or an
// admin runs; leaving #general names mesh leave (it said "ask the mesh
// owner or an admin", who cannot help).
func TestSkillAndGeneralHintsNameARealCommand(t *testing.T) {
	member := &config.Mesh{Slug: "acme", Role: wire.MemberMember, DisplayName: "carol"}
	owner := &config.Mesh{Slug: "acme", Role: wire.MemberOwner, DisplayName: "alice"}
	forbidden := &client.Error{Code: wire.CodeForbidden, Message: "only the author (alice), the owner or an admin can remove deploy"}
	line := skillRemoveLine("deploy", member)
	checkCommandLine(t, line)
	var ce *cliui.Error
	if !errors.As(forbiddenHint(forbidden, member, "ask its author, the mesh owner or an admin to run: "+line), &ce) || !strings.HasSuffix(ce.Hint, "claudemesh skill remove deploy --mesh acme") {
		t.Errorf("member: %+v", ce)
	}
	if errors.As(forbiddenHint(forbidden, owner, "x"), &ce) && ce.Hint == "x" {
		t.Errorf("the owner is told to ask: %q", ce.Hint)
	}
	checkCommandLine(t, "claudemesh mesh leave acme")
	checkCommandLine(t, "claudemesh skill publish deploy.md --name deploy2")
}
