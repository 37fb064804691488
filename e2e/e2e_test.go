package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"claudemesh/client"
	"claudemesh/client/config"
	cmcrypto "claudemesh/crypto"
)

// 1. A DM sent while the recipient is offline is queued, shown decrypted by
// the recipient's next inbox exactly once, and not shown again.
func TestOfflineDMShownOnce(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]

	var sent struct {
		OK              bool   `json:"ok"`
		MessageID       string `json:"messageId"`
		ClientMessageID string `json:"clientMessageId"`
		Status          string `json:"status"`
		Via             string `json:"via"`
		Target          struct {
			Kind, TargetSpec, DisplayName string
			Online                        *bool
		} `json:"target"`
	}
	before := time.Now().UnixMilli()
	alice.json(&sent, "send", "bob", "hello", "bob,", "are you there?")
	after := time.Now().UnixMilli()
	if !sent.OK || sent.Status != "queued" || sent.Via != "direct" || sent.MessageID == "" || sent.ClientMessageID == "" ||
		sent.Target.Kind != "box" || sent.Target.TargetSpec != bob.pubkey || sent.Target.DisplayName != "bob" ||
		sent.Target.Online == nil || *sent.Target.Online {
		t.Fatalf("send: %+v", sent)
	}

	rows := bob.inbox()
	if len(rows) != 1 {
		t.Fatalf("inbox: %+v", rows)
	}
	r := rows[0]
	if r.body() != "hello bob, are you there?" || r.ID != sent.MessageID || r.MessageID != sent.MessageID ||
		r.Kind != "box" || r.Mesh != "test" || r.SenderName != "alice" || r.SenderPubkey != alice.pubkey ||
		!r.Verified || r.DecryptError != "" || r.Priority != "next" || r.ReceivedAt == 0 {
		t.Fatalf("row: %+v", r)
	}
	// sentAt is when the broker took it (a queued message arrives later).
	if r.SentAt < before || r.SentAt > after || r.SentAt > r.ReceivedAt {
		t.Fatalf("sentAt %d, want within the send (%d..%d) and not after receivedAt %d", r.SentAt, before, after, r.ReceivedAt)
	}
	if again := bob.inbox(); len(again) != 0 {
		t.Fatalf("second inbox shows %+v", again)
	}
	// Human output: nothing new, said plainly.
	if out := bob.ok("inbox").stdout; out != "  no new messages\n" {
		t.Fatalf("human inbox: %q", out)
	}
	// The sender's receipt was settled by its next cold inbox; alice has
	// no messages of her own.
	if rows := alice.inbox(); len(rows) != 0 {
		t.Fatalf("alice's inbox: %+v", rows)
	}
	var st struct {
		MessageID  string `json:"messageId"`
		TargetSpec string `json:"targetSpec"`
		Recipients []struct {
			Pubkey, DisplayName, State string
			DeliveredAt                int64
		} `json:"recipients"`
	}
	alice.json(&st, "message", "status", sent.MessageID)
	if st.MessageID != sent.MessageID || st.TargetSpec != bob.pubkey || len(st.Recipients) != 1 ||
		st.Recipients[0].State != "delivered" || st.Recipients[0].DisplayName != "bob" || st.Recipients[0].DeliveredAt == 0 {
		t.Fatalf("message status: %+v", st)
	}
	// By clientMessageId too.
	alice.json(&st, "message", "status", sent.ClientMessageID)
	if st.MessageID != sent.MessageID {
		t.Fatalf("message status by client id: %+v", st)
	}
	alice.fails(3, "not_found", "message", "status", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
}

// 2. A broadcast reaches every other member, connected or not; an @group
// message reaches the connected members of the group and its subgroups,
// and nobody else.
func TestBroadcastAndGroup(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob", "carol", "dave", "erin")
	alice, bob, carol, dave, erin := u[0], u[1], u[2], u[3], u[4]

	bob.json(new(any), "status", "group", "join", "ops")
	carol.json(new(any), "group", "join", "ops/east", "--role", "lead") // top-level alias
	erin.json(new(any), "status", "group", "join", "ops")               // in the group, but never connected

	fb, fc, fd := bob.follow(), carol.follow(), dave.follow()
	for _, x := range []*user{bob, carol, dave} {
		waitPresence(t, alice, x.pubkey, "cli")
	}

	var res struct {
		Status string
		Target struct{ Kind, TargetSpec string }
	}
	alice.json(&res, "send", "*", "broadcast-marker")
	if res.Target.Kind != "multi" || res.Target.TargetSpec != "*" || res.Status != "sent" {
		t.Fatalf("broadcast: %+v", res)
	}
	alice.json(&res, "send", "@ops", "group-marker")
	if res.Target.Kind != "multi" || res.Target.TargetSpec != "@ops" || res.Status != "sent" {
		t.Fatalf("group: %+v", res)
	}
	// A DM after both: FIFO per recipient means that once it arrived,
	// anything addressed to dave earlier has arrived too.
	alice.ok("send", "dave", "sentinel")

	for _, f := range []*follower{fb, fc} {
		for _, body := range []string{"broadcast-marker", "group-marker"} {
			r := f.waitFor(body)
			if r.Kind != "multi" || !r.Verified || r.SenderName != "alice" {
				t.Fatalf("%s: %+v", body, r)
			}
		}
	}
	fd.waitFor("broadcast-marker")
	fd.waitFor("sentinel")
	for _, r := range fd.all() {
		if r.body() == "group-marker" {
			t.Fatalf("dave is not in @ops but got %+v", r)
		}
	}
	// erin was offline: the broadcast was queued for her; the group
	// message was not, because offline members' groups are unknown.
	if got := bodies(erin.inbox()); !slices.Equal(got, []string{"broadcast-marker"}) {
		t.Fatalf("erin's inbox: %q", got)
	}
	// The sender is never a recipient of her own multi.
	if got := alice.inbox(); len(got) != 0 {
		t.Fatalf("alice got %+v", got)
	}
	// Each follower printed each message once.
	for _, f := range []*follower{fb, fc, fd} {
		f.stop()
		seen := map[string]int{}
		for _, r := range f.all() {
			seen[r.MessageID]++
		}
		for id, n := range seen {
			if n != 1 {
				t.Fatalf("message %s printed %d times", id, n)
			}
		}
	}
	// Nothing is left queued for those who were following.
	for _, x := range []*user{bob, carol, dave} {
		if got := x.inbox(); len(got) != 0 {
			t.Fatalf("%s has left-overs %+v", x.name, got)
		}
	}
}

// 3. Messages the broker acknowledged survive kill -9: after a restart on
// the same data dir and port, every one of them is delivered.
func TestKill9KeepsAckedMessages(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	b := startBroker(t, data, "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := u[0], u[1], u[2], u[3]
	// dave listens throughout: his follower must ride out the restart.
	fd := dave.follow()
	waitPresence(t, alice, dave.pubkey, "cli")
	alice.ok("send", "dave", "before-kill")
	fd.waitFor("before-kill")

	var want []string
	for i := range 8 {
		body := "durable-" + string(rune('a'+i))
		alice.ok("send", "bob", body) // exit 0 = acked after the durable commit
		want = append(want, body)
	}
	alice.ok("send", "*", "durable-broadcast")
	carol.ok("send", "bob", "durable-from-carol")
	want = append(want, "durable-broadcast", "durable-from-carol")

	b.kill()
	b2 := startBroker(t, data, b.addr)
	if b2.url != b.url || b2.pubkey != b.pubkey {
		t.Fatalf("restarted broker is %s %s, was %s %s", b2.url, b2.pubkey, b.url, b.pubkey)
	}
	got := bodies(bob.inbox())
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after kill -9 bob got %q, want %q", got, want)
	}
	if got := bodies(carol.inbox()); !slices.Equal(got, []string{"durable-broadcast"}) {
		t.Fatalf("carol got %q", got)
	}
	if again := bob.inbox(); len(again) != 0 {
		t.Fatalf("redelivered after restart: %+v", again)
	}
	// The follower reconnected on its own and gets new messages; what it
	// had already shown is not shown again.
	alice.ok("send", "dave", "after-restart")
	fd.waitFor("durable-broadcast")
	fd.waitFor("after-restart")
	fd.stop()
	count := map[string]int{}
	for _, r := range fd.all() {
		count[r.body()]++
	}
	if count["before-kill"] != 1 || count["durable-broadcast"] != 1 || count["after-restart"] != 1 {
		t.Fatalf("follower output: %v", count)
	}
}

// 4. The broker's store holds ciphertext only: none of the plaintext the
// test sent appears in broker.db.
func TestStoreHoldsNoPlaintext(t *testing.T) {
	t.Parallel()
	data := t.TempDir()
	b := startBroker(t, data, "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]
	bob.json(new(any), "group", "join", "ops")
	fb := bob.follow()
	waitPresence(t, alice, bob.pubkey, "cli")

	markers := []string{
		"PLAINTEXT-MARKER-dm-7f3a9c",
		"PLAINTEXT-MARKER-broadcast-b41d22",
		"PLAINTEXT-MARKER-group-0c9e51",
		"PLAINTEXT-MARKER-stdin-5aa8e3",
	}
	alice.ok("send", "carol", markers[0]) // queued: stored until read
	alice.ok("send", "*", markers[1])
	alice.ok("send", "@ops", markers[2])
	alice.runIn(markers[3]+"\n", "send", "carol", "-")
	fb.waitFor(markers[1])
	fb.waitFor(markers[2])
	if got := bodies(carol.inbox("--mesh", "test")); !slices.Contains(got, markers[0]) || !slices.Contains(got, markers[3]) {
		t.Fatalf("carol's inbox: %q", got)
	}
	// Queue one more that nobody reads, so it is certainly still stored.
	alice.ok("send", "carol", markers[0]+"-unread")

	b.stop()
	db, err := os.ReadFile(b.dbPath())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(db, []byte(alice.pubkey)) && !bytes.Contains(db, []byte("test")) {
		t.Fatalf("broker.db (%d bytes) does not even hold the mesh slug; is this the right file?", len(db))
	}
	for _, m := range markers {
		if bytes.Contains(db, []byte(m)) {
			t.Fatalf("broker.db contains plaintext %q", m)
		}
		if bytes.Contains(db, []byte(base64.StdEncoding.EncodeToString([]byte(m)))) {
			t.Fatalf("broker.db contains base64 plaintext of %q", m)
		}
	}
}

// 5. A server that cannot sign with the pinned broker key is refused: a
// fresh broker (new key) on the same address gets exit 4
// broker_key_mismatch, for reads and writes alike.
func TestPinnedBrokerKey(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.ok("peer", "list")

	b.stop()
	impostor := startBroker(t, t.TempDir(), b.addr)
	if impostor.url != b.url || impostor.pubkey == b.pubkey {
		t.Fatalf("impostor %s %s vs %s %s", impostor.url, impostor.pubkey, b.url, b.pubkey)
	}
	alice.fails(4, "broker_key_mismatch", "peer", "list")
	alice.fails(4, "broker_key_mismatch", "send", "bob", "secret")
	bob.fails(4, "broker_key_mismatch", "inbox")
	r := alice.run("send", "bob", "secret")
	if r.code != 4 || !strings.Contains(r.stderr, "pinned") {
		t.Fatalf("human error: %s", r)
	}
	// With the broker gone entirely, it is exit 5.
	impostor.stop()
	alice.fails(5, "unreachable", "peer", "list")
}

// 6. send's errors and --wait.
func TestSendErrorsAndWait(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob", "carol")
	alice, bob, carol := u[0], u[1], u[2]

	alice.fails(3, "unknown_target", "send", "nobody", "hi")
	alice.fails(3, "topic_not_found", "send", "#nope", "hi")
	alice.fails(1, "topic_key_missing", "send", "#general", "hi") // no owner client has made its key yet
	alice.fails(2, "invalid_argument", "send", "@Not A Group", "hi")
	alice.failsIn(strings.Repeat("x", 64<<10+1), 2, "payload_too_large", "send", "bob", "-")
	alice.fails(2, "usage", "send", "bob")
	// A flag where another flag's value should be: the value is missing
	// (it was taken as the mesh, "--home", and refused as not joined).
	alice.fails(2, "usage", "send", "bob", "hi", "--mesh", "--home", alice.home)
	r := alice.run("send", "nobody", "hi")
	if r.code != 3 || !strings.Contains(r.stderr, "peer list") {
		t.Fatalf("human unknown target: %s", r)
	}

	// Two agent sessions of bob named "worker" make the name ambiguous.
	// No verb opens sessions yet (that is the daemon's), so the test
	// opens them with the client library, with bob's own key.
	cfg, err := config.Load(bob.home)
	if err != nil {
		t.Fatal(err)
	}
	bm := cfg.Meshes[0]
	key, err := cmcrypto.ParseSecretKey(bm.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	var sessions []string
	for i := range 2 {
		sk, err := cmcrypto.GenerateIdentity()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := client.Dial(ctx, client.MeshIdentity{MeshID: bm.MeshID, MemberID: bm.MemberID, BrokerURL: bm.BrokerURL,
			BrokerPubkey: bm.BrokerPubkey, Member: key,
			Session: &client.SessionCreds{Key: sk, SessionID: "worker-" + string(rune('a'+i)), DisplayName: "worker"}},
			client.DialOptions{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sessions = append(sessions, sk.PublicHex())
	}
	e := alice.fails(6, "ambiguous_target", "send", "worker", "hi")
	var cands []string
	for _, c := range e.Error.Candidates {
		// Whose each is: the one thing the sender knows.
		if c.Kind != "session" || c.DisplayName != "worker" || c.MemberName != "bob" || c.MemberPubkey != bob.pubkey {
			t.Fatalf("candidate %+v", c)
		}
		cands = append(cands, c.Pubkey)
	}
	slices.Sort(cands)
	slices.Sort(sessions)
	if !slices.Equal(cands, sessions) {
		t.Fatalf("candidates %v, sessions %v", cands, sessions)
	}
	r = alice.run("send", "worker", "hi")
	if r.code != 6 || !strings.Contains(r.stderr, sessions[0][:16]) || !strings.Contains(r.stderr, sessions[1][:16]) || strings.Count(r.stderr, "session of bob") != 2 {
		t.Fatalf("human ambiguous: %s", r)
	}
	// A prefix of one session's key picks it.
	var res struct{ Status string }
	alice.json(&res, "send", sessions[0][:12], "to one session")
	if res.Status != "sent" {
		t.Fatalf("send to a session prefix: %+v", res)
	}

	// --wait: delivered once bob's follower read it.
	f := bob.follow()
	waitPresence(t, alice, bob.pubkey, "cli")
	var w struct {
		Status    string `json:"status"`
		MessageID string `json:"messageId"`
	}
	alice.json(&w, "send", "bob", "read me", "--wait")
	if w.Status != "delivered" {
		t.Fatalf("--wait: %+v", w)
	}
	if f.waitFor("read me").MessageID != w.MessageID {
		t.Fatal("follower printed another message id")
	}
	// Nobody reads carol's: exit 7 after --wait-timeout.
	start := time.Now()
	e = alice.fails(7, "wait_timeout", "send", "carol", "unread", "--wait", "--wait-timeout", "1s")
	if time.Since(start) < time.Second {
		t.Fatalf("wait_timeout after %v", time.Since(start))
	}
	if got := bodies(carol.inbox()); !slices.Equal(got, []string{"unread"}) {
		t.Fatalf("the timed-out message is still delivered later: %q", got)
	}

	// Two meshes: a write needs --mesh.
	alice.createMesh(b, "Second", "second")
	e = alice.fails(2, "mesh_required", "send", "bob", "hi")
	if !strings.Contains(e.Error.Message, "test") || !strings.Contains(e.Error.Message, "second") {
		t.Fatalf("mesh_required does not list the choices: %+v", e)
	}
	alice.ok("send", "bob", "hi", "--mesh", "test")
	alice.fails(3, "mesh_not_found", "send", "bob", "hi", "--mesh", "nope")
	// Reads cover both meshes.
	var peers []peerRow
	alice.json(&peers, "peer", "list", "--all")
	meshes := map[string]bool{}
	for _, p := range peers {
		meshes[p.Mesh] = true
	}
	if !meshes["test"] || !meshes["second"] {
		t.Fatalf("peer list --all across meshes: %+v", peers)
	}
}

// 7. Invites from the CLI: what the broker refuses, and what is refused
// locally before the broker is contacted.
func TestInvites(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]

	// A plain member cannot invite.
	bob.fails(4, "forbidden", "invite")

	// --uses 1 is used up by the first join.
	once := alice.invite("--uses", "1")
	if once.MaxUses != 1 || once.Role != "member" || once.ExpiresAt <= time.Now().UnixMilli() {
		t.Fatalf("invite: %+v", once)
	}
	newUser(t, "carol").join(once.Link)
	newUser(t, "dave").fails(4, "invite_exhausted", "join", once.Link, "--name", "dave")

	// Revoked.
	rev := alice.invite()
	var ok struct{ OK bool }
	alice.json(&ok, "invite", "revoke", rev.InviteID)
	if !ok.OK {
		t.Fatal("invite revoke")
	}
	newUser(t, "erin").fails(4, "invite_revoked", "join", rev.Link, "--name", "erin")
	var list []struct {
		InviteID  string `json:"inviteId"`
		Uses      int    `json:"uses"`
		MaxUses   int    `json:"maxUses"`
		RevokedAt int64  `json:"revokedAt"`
		CreatedAt int64  `json:"createdAt"`
	}
	alice.json(&list, "invite", "list")
	found := 0
	for _, i := range list {
		if i.InviteID == once.InviteID && i.Uses == 1 && i.MaxUses == 1 && i.RevokedAt == 0 && i.CreatedAt > 0 {
			found++
		}
		if i.InviteID == rev.InviteID && i.RevokedAt > 0 {
			found++
		}
	}
	if found != 2 {
		t.Fatalf("invite list: %+v", list)
	}
	alice.fails(3, "invite_not_found", "invite", "revoke", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
	// The owner is not told to ask the owner (issue 11 item 11).
	if r := alice.run("invite", "revoke", "01ARZ3NDEKTSV4RRFFQ69G5FAV"); r.code != 3 ||
		strings.Contains(r.stderr, "ask the mesh owner") || !strings.Contains(r.stderr, "invite list") {
		t.Fatalf("revoke of an unknown invite: %s", r)
	}

	// An admin invite lets its joiner invite.
	admin := newUser(t, "frank")
	if m := admin.join(alice.invite("--role", "admin").Link); m.Role != "admin" {
		t.Fatalf("admin join: %+v", m)
	}
	admin.invite()

	// Expiring and tampered invites are refused locally: with the broker
	// stopped, a check that needed it would exit 5, not 4.
	short := alice.invite("--expires", "1s")
	good := alice.invite()
	tampered := tamper(t, good.Link)
	b.stop()
	time.Sleep(time.Until(time.UnixMilli(short.ExpiresAt + 50))) // the clock must pass expiresAt
	g := newUser(t, "grace")
	g.fails(4, "invite_expired", "join", short.Link, "--name", "grace")
	g.fails(4, "bad_signature", "join", tampered, "--name", "grace")
	g.fails(2, "malformed", "join", "ic://join/not-a-token!", "--name", "grace")
	// The untouched link does go to the broker (and finds it gone).
	g.fails(5, "unreachable", "join", good.Link, "--name", "grace")
	if _, err := os.Stat(filepath.Join(g.home, "config.json")); err == nil {
		t.Fatal("a refused join wrote config.json")
	}
}

// tamper changes maxUses inside the signed JSON and re-encodes the token,
// so it still parses but its signature no longer verifies.
func tamper(t *testing.T, link string) string {
	t.Helper()
	tok := strings.TrimPrefix(link, "ic://join/")
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	changed := bytes.Replace(raw, []byte(`"maxUses":1,`), []byte(`"maxUses":9,`), 1)
	if bytes.Equal(changed, raw) {
		t.Fatalf("no maxUses in %s", raw)
	}
	return "https://broker.example.com/join/" + base64.RawURLEncoding.EncodeToString(changed)
}

// 8. config.json is private, and a config others can read is refused with
// the fix in the hint.
func TestConfigPermissions(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]
	alice.ok("send", "bob", "x")
	bob.inbox()
	for _, x := range []*user{alice, bob} {
		checkMode(t, x.home, 0o700)
		checkMode(t, filepath.Join(x.home, "config.json"), 0o600)
	}
	checkMode(t, filepath.Join(bob.home, "inbox-seen.json"), 0o600)

	cfgPath := filepath.Join(alice.home, "config.json")
	if err := os.Chmod(cfgPath, 0o644); err != nil {
		t.Fatal(err)
	}
	r := alice.run("whoami")
	if r.code != 4 || !strings.Contains(r.stderr, "chmod 600") || r.stdout != "" {
		t.Fatalf("world-readable config: %s", r)
	}
	alice.fails(4, "insecure_permissions", "send", "bob", "x")
	os.Chmod(cfgPath, 0o600)
	alice.ok("whoami")
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Fatalf("%s is %04o, want %04o", path, fi.Mode().Perm(), want)
	}
}

// 9. Flags go anywhere: `send bob hi --json` is `--json send bob hi`, and a
// message may start with a dash after --.
func TestFlagsAnywhere(t *testing.T) {
	t.Parallel()
	b := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b, "alice", "bob")
	alice, bob := u[0], u[1]

	shape := func(r result) map[string]any {
		t.Helper()
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%s", r)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		delete(m, "messageId")
		delete(m, "clientMessageId")
		return m
	}
	last := shape(alice.run("send", "bob", "hi", "--json"))
	first := shape(alice.run("--json", "send", "bob", "hi"))
	middle := shape(alice.run("send", "--json", "bob", "hi"))
	a, _ := json.Marshal(last)
	c, _ := json.Marshal(first)
	d, _ := json.Marshal(middle)
	if !bytes.Equal(a, c) || !bytes.Equal(a, d) {
		t.Fatalf("outputs differ:\n%s\n%s\n%s", a, c, d)
	}
	alice.ok("send", "bob", "--priority", "now", "--", "-dash", "first")
	// An unknown flag is a usage error with the closest flag suggested,
	// never message text (issue 11 item 4).
	e := alice.fails(2, "usage", "--mesh", "test", "send", "bob", "typo test", "-w")
	if !strings.Contains(e.Error.Message, "unknown flag -w") {
		t.Fatalf("-w: %+v", e)
	}
	if r := alice.run("send", "bob", "hi", "--bogus-flag"); r.code != 2 || !strings.Contains(r.stderr, "unknown flag --bogus-flag") {
		t.Fatalf("--bogus-flag: %s", r)
	}
	if r := alice.run("send", "bob", "typo", "-w"); r.code != 2 || !strings.Contains(r.stderr, "did you mean --wait?") {
		t.Fatalf("-w suggestion: %s", r)
	}
	alice.ok("--mesh", "test", "send", "bob", "--json", "--", "-x", "stays")
	got := bodies(bob.inbox())
	want := []string{"hi", "hi", "hi", "-dash first", "-x stays"}
	if !slices.Equal(got, want) {
		t.Fatalf("bob got %q, want %q", got, want)
	}
}

// Reads cover every joined mesh, and one mesh whose broker is down is
// reported beside the others instead of hiding them; mesh leave removes
// the membership on the broker and forgets the mesh here, except for the
// sole owner.
func TestMultiMeshReadsAndLeave(t *testing.T) {
	t.Parallel()
	b1 := startBroker(t, t.TempDir(), "127.0.0.1:0")
	b2 := startBroker(t, t.TempDir(), "127.0.0.1:0")
	u := setupMesh(t, b1, "alice", "bob")
	alice, bob := u[0], u[1]
	carol := newUser(t, "carol")
	carol.createMesh(b2, "Other", "other")
	bob.join(carol.invite().Link)
	alice.ok("send", "bob", "from-test")
	carol.ok("send", "bob", "from-other")

	type row struct {
		Mesh   string `json:"mesh"`
		Pubkey string `json:"pubkey"`
		Body   string `json:"body"`
		Error  *struct{ Code, Message string }
	}
	var rows []row
	bob.json(&rows, "peer", "list", "--all")
	meshes := map[string]int{}
	for _, r := range rows {
		meshes[r.Mesh]++
	}
	if meshes["test"] != 2 || meshes["other"] != 2 {
		t.Fatalf("peer list --all: %+v", rows)
	}

	b2.stop()
	bob.json(&rows, "peer", "list", "--all")
	last := rows[len(rows)-1]
	if last.Mesh != "other" || last.Error == nil || last.Error.Code != "unreachable" {
		t.Fatalf("unreachable mesh not reported: %+v", rows)
	}
	for _, r := range rows[:len(rows)-1] {
		if r.Mesh != "test" || r.Error != nil {
			t.Fatalf("row %+v", r)
		}
	}
	r := bob.run("peer", "list", "--all")
	if r.code != 0 || !strings.Contains(r.stderr, "other:") || !strings.Contains(r.stdout, "alice") {
		t.Fatalf("human partial peer list: %s", r)
	}
	bob.json(&rows, "inbox")
	if len(rows) != 2 || rows[0].Body != "from-test" || rows[1].Error == nil || rows[1].Mesh != "other" {
		t.Fatalf("partial inbox: %+v", rows)
	}
	bob.fails(5, "unreachable", "peer", "list", "--mesh", "other")

	alice.fails(4, "forbidden", "mesh", "leave", "test")
	var ok struct{ OK bool }
	bob.json(&ok, "mesh", "leave", "test")
	var list []struct{ Slug string }
	bob.json(&list, "mesh", "list")
	if !ok.OK || len(list) != 1 || list[0].Slug != "other" {
		t.Fatalf("after leave: %v %+v", ok, list)
	}
	var peers []peerRow
	alice.json(&peers, "peer", "list", "--all")
	if len(peers) != 1 || !peers[0].IsSelf {
		t.Fatalf("bob still listed after leaving: %+v", peers)
	}
	alice.fails(3, "unknown_target", "send", "bob", "are you gone?")
}
