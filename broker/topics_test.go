package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"claudemesh/client"
	cmcrypto "claudemesh/crypto"
	"claudemesh/store"
	"claudemesh/wire"
)

// A creates #ops; B joins and cannot read until a key holder seals for it;
// A's keeper re-seals on the broker's topic_member_joined, and then B reads
// the history and the live posts.
func TestTopicJoinerGetsKeyByReseal(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	ops := alice.create("ops", client.TopicCreateOptions{Description: "operations"})
	if ops.KeyGen != 1 || !ops.Encrypted || !ops.Joined || ops.Role != wire.TopicLead {
		t.Fatalf("created: %+v", ops)
	}
	if _, err := alice.post(ops, 1, "before bob"); err != nil {
		t.Fatal(err)
	}

	// bob is not a member yet: no history, no keys.
	if _, err := bob.conn.TopicHistory(bob.ctx(), "ops", client.HistoryPage{}); errCodeOf(err) != wire.CodeNotAMember {
		t.Fatalf("history before joining: %v", err)
	}
	if err := bob.conn.TopicJoin(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	// The broker told alice, whose keeper seals for bob; bob's keeper
	// fetches the seal when told (topic_sealed).
	bob.waitKey(ops.ID, 1)

	msgs, more := bob.history(ops.ID, client.HistoryPage{})
	if more || len(msgs) != 1 || msgs[0].Body != "before bob" || !msgs[0].Verified || msgs[0].SenderName != "alice" {
		t.Fatalf("bob's history: %+v", msgs)
	}
	ack, err := alice.post(ops, 1, "live for bob")
	if err != nil {
		t.Fatal(err)
	}
	if *ack.Online < 2 || *ack.Pending != 0 {
		t.Fatalf("ack: online %d pending %d", *ack.Online, *ack.Pending)
	}
	push := bob.nextTopicPush()
	if m := bob.open(push, ops.ID); m.Body != "live for bob" || !m.Verified || m.SenderName != "alice" || m.Topic != "ops" {
		t.Fatalf("bob's live post: %+v", m)
	}
	members, err := alice.conn.TopicMembers(alice.ctx(), "ops")
	if err != nil || len(members) != 2 {
		t.Fatalf("members: %+v %v", members, err)
	}
	for _, m := range members {
		if !m.HasCurrentKey {
			t.Fatalf("%s has no key after the re-seal: %+v", m.DisplayName, members)
		}
	}
}

// A joiner whose only seals are forged, unsigned, or signed for another
// topic or generation refuses them all and keeps waiting; a valid seal then
// works.
func TestTopicForgedSealsRefused(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob", "carol")
	alice, bob, carol := peers[0], peers[1], peers[2]
	ops := alice.create("ops", client.TopicCreateOptions{})
	other := alice.create("other", client.TopicCreateOptions{})
	key := alice.keeper.Ring.Get(ops.ID, 1)
	// alice goes transient (no events), so nothing seals for bob but what
	// this test stores: the broker's part is played by the test.
	alice.conn.Close()
	alice = connectPeer(t, b, alice.id, false)
	if err := bob.conn.TopicJoin(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	meshID, bobPub := bob.id.meshID, bob.id.key.Public()
	outsider, _ := cmcrypto.GenerateIdentity()
	// forge seals the real key for bob, signed by signer over (topicID,
	// gen), filed under ops, generation 1, sealer filedAs.
	forge := func(signer *cmcrypto.Identity, topicID string, gen int, filedAs string) *store.TopicSeal {
		blob, nonce, sig, err := cmcrypto.SealTopicKey(meshID, topicID, gen, key, bobPub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return &store.TopicSeal{Recipient: bob.id.pub(), KeyGen: 1, Sealer: filedAs, Blob: blob, Nonce: nonce, Signature: sig}
	}
	plant := func(s *store.TopicSeal) {
		t.Helper()
		if err := b.store.Update(func(tx *store.Tx) error { return store.PutTopicSeal(tx, meshID, ops.ID, s) }); err != nil {
			t.Fatal(err)
		}
	}
	unsigned := forge(carol.id.key, ops.ID, 1, carol.id.pub())
	unsigned.Signature = strings.Repeat("0", 128)
	plant(forge(outsider, ops.ID, 1, outsider.PublicHex())) // by a non-member
	plant(unsigned)                                         // by a member, without a valid signature
	plant(forge(alice.id.key, ops.ID, 2, alice.id.pub()))   // signed for generation 2
	var rejected []client.RejectedSeal
	bob.keeper.OnRejected = func(_ string, r client.RejectedSeal) { rejected = append(rejected, r) }
	refuseAll := func() {
		t.Helper()
		rejected = nil
		opened, err := bob.keeper.Refresh(bob.ctx(), bob.conn, ops.ID)
		if err != nil || len(opened) != 0 || bob.keeper.Ring.Has(ops.ID, 1) {
			t.Fatalf("bob used a forged seal: opened %v, err %v", opened, err)
		}
		if len(rejected) != 3 {
			t.Fatalf("want 3 refusals, got %v", rejected)
		}
		for _, r := range rejected {
			t.Logf("refused: %s", r)
		}
	}
	refuseAll()
	plant(forge(alice.id.key, other.ID, 1, alice.id.pub())) // signed for another topic
	refuseAll()
	// A genuine seal (replacing the last forgery) is used, and bob's keeper
	// fetches it on the broker's topic_sealed.
	blob, nonce, sig, _ := cmcrypto.SealTopicKey(meshID, ops.ID, 1, key, bobPub, alice.id.key)
	if err := alice.conn.TopicSeal(alice.ctx(), "ops", []wire.TopicSealIn{{RecipientPubkey: bob.id.pub(), KeyGen: 1, Blob: blob, Nonce: nonce, Signature: sig}}); err != nil {
		t.Fatal(err)
	}
	bob.waitKey(ops.ID, 1)
	if got := bob.keeper.Ring.Get(ops.ID, 1); *got != *key {
		t.Fatal("bob opened a different key")
	}
}

// The broker refuses seals and posts whose signature does not verify.
func TestTopicBrokerChecksSignatures(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	ops := alice.create("ops", client.TopicCreateOptions{})
	if err := bob.conn.TopicJoin(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	key := alice.keeper.Ring.Get(ops.ID, 1)
	// A seal signed by bob's key uploaded by alice: not hers.
	blob, nonce, sig, _ := cmcrypto.SealTopicKey(alice.id.meshID, ops.ID, 1, key, bob.id.key.Public(), bob.id.key)
	err := alice.conn.TopicSeal(alice.ctx(), "ops", []wire.TopicSealIn{{RecipientPubkey: bob.id.pub(), KeyGen: 1, Blob: blob, Nonce: nonce, Signature: sig}})
	if errCodeOf(err) != wire.CodeBadSignature {
		t.Fatalf("seal signed by someone else: %v", err)
	}
	// A post signed by another key than the sender's.
	s, _ := client.SealTopicPost(alice.id.meshID, ops.ID, 1, key, []byte("forged"), bob.id.key, client.SendOptions{})
	if _, err := alice.conn.Send(alice.ctx(), s); errCodeOf(err) != wire.CodeBadSignature {
		t.Fatalf("post signed by another key: %v", err)
	}
	// A post signed for another topic.
	s, _ = client.SealTopicPost(alice.id.meshID, newID(), 1, key, []byte("elsewhere"), alice.id.key, client.SendOptions{})
	s.TargetSpec = "#" + ops.ID
	if _, err := alice.conn.Send(alice.ctx(), s); errCodeOf(err) != wire.CodeBadSignature {
		t.Fatalf("post signed for another topic: %v", err)
	}
	// Plaintext to an encrypted topic.
	s, _ = client.SealTopicPost(alice.id.meshID, ops.ID, 0, nil, []byte("plain"), alice.id.key, client.SendOptions{})
	if _, err := alice.conn.Send(alice.ctx(), s); errCodeOf(err) != wire.CodeTopicEncrypted {
		t.Fatalf("plaintext to an encrypted topic: %v", err)
	}
}

// A post whose signature does not match its sender is flagged unverified
// and never shown under that sender's name; a post the broker replays into
// another topic fails verification; neither stops the reader.
func TestTopicForgedPostsUnverified(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	ops := alice.create("ops", client.TopicCreateOptions{})
	dev := alice.create("dev", client.TopicCreateOptions{})
	if _, err := alice.post(ops, 1, "genuine"); err != nil {
		t.Fatal(err)
	}
	key := alice.keeper.Ring.Get(ops.ID, 1)
	// The broker claims bob wrote what alice signed.
	nonce, ct, sig, _ := cmcrypto.SealTopicPost(alice.id.meshID, ops.ID, 1, []byte("said by alice"), key, alice.id.key)
	one := 1
	forged := wire.Push{Type: wire.TypePush, MessageID: newID(), MeshID: alice.id.meshID, Kind: wire.KindTopic, TargetSpec: "#" + ops.ID,
		SenderPubkey: bob.id.pub(), SenderMemberPubkey: bob.id.pub(), SenderName: "bob", Nonce: nonce, Ciphertext: ct,
		Topic: &wire.TopicRef{ID: ops.ID, Name: "ops"}, KeyGen: &one, Signature: sig, BodyVersion: 2, CreatedAt: time.Now().UnixMilli()}
	inject := func(topicID string, push wire.Push) {
		t.Helper()
		err := b.store.Update(func(tx *store.Tx) error {
			_, err := store.AppendTopicPost(tx, alice.id.meshID, &store.TopicPost{ID: push.MessageID, TopicID: topicID,
				SenderPubkey: push.SenderPubkey, SenderMember: push.SenderMemberPubkey, ClientMessageID: push.MessageID,
				CreatedAt: push.CreatedAt, Push: wire.MustEncode(push)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	inject(ops.ID, forged)
	// The genuine post of #ops, replayed by the broker into #dev.
	h, err := alice.conn.TopicHistory(alice.ctx(), ops.ID, client.HistoryPage{Limit: 50})
	if err != nil {
		t.Fatal(err)
	}
	genuine := *h.Messages[len(h.Messages)-1].Push
	replayed := genuine
	replayed.MessageID = newID()
	replayed.Topic = &wire.TopicRef{ID: dev.ID, Name: "dev"}
	replayed.TargetSpec = "#" + dev.ID
	inject(dev.ID, replayed)

	msgs, _ := alice.history(ops.ID, client.HistoryPage{})
	if len(msgs) != 2 {
		t.Fatalf("history: %+v", msgs)
	}
	if m := msgs[0]; m.Verified || m.SenderName != "" || m.Body != "said by alice" {
		t.Fatalf("forged sender shown as verified or named: %+v", m)
	}
	if m := msgs[1]; !m.Verified || m.SenderName != "alice" || m.Body != "genuine" {
		t.Fatalf("genuine post: %+v", m)
	}
	// Even a reader holding #ops's key for #dev: the signature binds the
	// topic id, so the replay is unverified.
	ring := func(g int) *[32]byte { return key }
	if m := client.OpenTopicPush(&replayed, alice.id.meshID, dev.ID, ring); m.Verified || m.SenderName != "" {
		t.Fatalf("a post replayed into another topic verified: %+v", m)
	}
	if m := client.OpenTopicPush(&replayed, alice.id.meshID, dev.ID, func(g int) *[32]byte { return alice.keeper.Ring.Get(dev.ID, g) }); m.Verified || m.DecryptError == "" {
		t.Fatalf("a post replayed into another topic opened under its key: %+v", m)
	}
}

// After a member leaves a topic (and, separately, after a member is banned)
// the topic is rekeyed by the next key holder: the removed member cannot
// decrypt new posts, a post under the old generation gets stale_key_gen and
// a rotation missing a member's seal gets incomplete_seals.
func TestTopicRotationAfterLeaveAndBan(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob", "carol")
	alice, bob, carol := peers[0], peers[1], peers[2]
	ops := alice.create("ops", client.TopicCreateOptions{})
	joinAndWaitKey(t, ops, bob, carol)
	if _, err := bob.post(ops, 1, "bob was here"); err != nil {
		t.Fatal(err)
	}

	// A rotation that forgets carol is refused.
	key2 := client.NewTopicKey()
	var seals []wire.TopicSealIn
	for _, p := range []*topicPeer{alice, bob} {
		blob, nonce, sig, _ := cmcrypto.SealTopicKey(alice.id.meshID, ops.ID, 2, key2, p.id.key.Public(), alice.id.key)
		seals = append(seals, wire.TopicSealIn{RecipientPubkey: p.id.pub(), KeyGen: 2, Blob: blob, Nonce: nonce, Signature: sig})
	}
	if err := alice.conn.TopicRotate(alice.ctx(), "ops", 2, seals); errCodeOf(err) != wire.CodeIncompleteSeals {
		t.Fatalf("rotation without carol's seal: %v", err)
	}
	if err := alice.conn.TopicRotate(alice.ctx(), "ops", 3, seals); errCodeOf(err) != wire.CodeStaleKeyGen {
		t.Fatalf("rotation skipping a generation: %v", err)
	}

	// bob leaves: the topic is marked and a key holder rotates to 2.
	if err := bob.conn.TopicLeave(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	alice.waitKey(ops.ID, 2)
	carol.waitKey(ops.ID, 2)
	if got := alice.topic("ops"); got.KeyGen != 2 || got.RekeyNeeded {
		t.Fatalf("after bob left: %+v", got)
	}
	if _, err := bob.keeper.Refresh(bob.ctx(), bob.conn, ops.ID); errCodeOf(err) != wire.CodeNotAMember {
		t.Fatalf("bob fetching keys after leaving: %v", err)
	}
	if bob.keeper.Ring.Has(ops.ID, 2) {
		t.Fatal("bob holds generation 2")
	}
	// Posts under generation 1 are stale now.
	if _, err := carol.post(ops, 1, "old key"); errCodeOf(err) != wire.CodeStaleKeyGen {
		t.Fatalf("post under the old generation: %v", err)
	}
	if _, err := carol.post(ops, 2, "new key"); err != nil {
		t.Fatal(err)
	}
	// Old generations stay readable by those who had them.
	msgs, _ := carol.history(ops.ID, client.HistoryPage{})
	if len(msgs) != 2 || msgs[0].Body != "new key" || msgs[0].KeyGen != 2 || msgs[1].Body != "bob was here" || msgs[1].KeyGen != 1 {
		t.Fatalf("carol's history: %+v", msgs)
	}
	// What bob could still see of the new post (had the broker leaked it)
	// does not open under the keys he has.
	h, _ := alice.conn.TopicHistory(alice.ctx(), ops.ID, client.HistoryPage{Limit: 1})
	if m := bob.open(h.Messages[0].Push, ops.ID); m.Body != "" || !m.KeyMissing {
		t.Fatalf("bob read a post of generation 2: %+v", m)
	}

	// carol is banned from the mesh: rotation to 3, sealed to alice only.
	r, err := alice.conn.Admin(alice.ctx(), &wire.AdminRequest{Type: wire.TypeBan, Target: "carol"})
	if err != nil || len(r.Affected) != 1 {
		t.Fatalf("ban: %+v %v", r, err)
	}
	alice.waitKey(ops.ID, 3)
	members, err := alice.conn.TopicMembers(alice.ctx(), "ops")
	if err != nil || len(members) != 1 || members[0].Pubkey != alice.id.pub() {
		t.Fatalf("members after the ban: %+v %v", members, err)
	}
	// general was rekeyed too, once it had a key: it has none here (no
	// owner client made one), so it is untouched.
	if g := alice.topic(wire.GeneralTopic); g.RekeyNeeded {
		t.Fatalf("general without a key marked for rekey: %+v", g)
	}
	// Creation and both rotations are in the audit chain.
	for event, want := range map[string]int{wire.AuditTopicCreated: 1, wire.AuditTopicRotated: 2} {
		got, err := alice.conn.AuditQuery(alice.ctx(), wire.AuditQuery{Type: wire.TypeAuditQuery, EventType: event, Limit: 10})
		if err != nil || len(got.Entries) != want {
			t.Fatalf("audit %s: %+v %v", event, got, err)
		}
	}
}

// The reserved general topic exists in every mesh with keyGen 0; posts get
// topic_key_missing until the owner's client makes generation 1, after
// which members get seals like joiners.
func TestTopicGeneralFirstKey(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	g := bob.topic(wire.GeneralTopic)
	if g.KeyGen != 0 || !g.Joined || !g.Encrypted || g.MemberCount != 2 {
		t.Fatalf("general: %+v", g)
	}
	key := client.NewTopicKey()
	s, _ := client.SealTopicPost(bob.id.meshID, g.ID, 1, key, []byte("hello"), bob.id.key, client.SendOptions{})
	if _, err := bob.conn.Send(bob.ctx(), s); errCodeOf(err) != wire.CodeTopicKeyMissing {
		t.Fatalf("post to general before its key: %v", err)
	}
	// bob is no owner or admin: his sweep leaves general alone.
	if err := bob.keeper.Sweep(bob.ctx(), bob.conn); err != nil {
		t.Fatal(err)
	}
	if got := bob.topic(wire.GeneralTopic); got.KeyGen != 0 {
		t.Fatalf("a member made general's key: %+v", got)
	}
	// alice's sweep makes it, and bob is sealed for at once.
	if err := alice.keeper.Sweep(alice.ctx(), alice.conn); err != nil {
		t.Fatal(err)
	}
	bob.waitKey(g.ID, 1)
	g = bob.topic(wire.GeneralTopic)
	if _, err := bob.post(g, 1, "hello general"); err != nil {
		t.Fatal(err)
	}
	if m := alice.open(alice.nextTopicPush(), g.ID); m.Body != "hello general" || !m.Verified {
		t.Fatalf("alice reads general: %+v", m)
	}
	// general cannot be left.
	if err := bob.conn.TopicLeave(bob.ctx(), wire.GeneralTopic); errCodeOf(err) != wire.CodeForbidden {
		t.Fatalf("leaving general: %v", err)
	}
	// A member who enrolls later is sealed for as soon as it joins.
	carolID := addMember(t, b, alice.id, "acme", "carol")
	carol := connectPeer(t, b, carolID, true)
	if _, err := carol.keeper.Refresh(carol.ctx(), carol.conn, g.ID); err != nil {
		t.Fatal(err)
	}
	carol.waitKey(g.ID, 1)
}

// Private topics are invisible to non-members, joined only through a lead's
// topic_add; observers read but do not post.
func TestTopicPrivateAndRoles(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob", "carol")
	alice, bob, carol := peers[0], peers[1], peers[2]
	sec := alice.create("sec", client.TopicCreateOptions{Private: true})
	for _, tp := range mustList(t, bob) {
		if tp.Name == "sec" {
			t.Fatalf("bob sees a private topic: %+v", tp)
		}
	}
	if err := bob.conn.TopicJoin(bob.ctx(), "sec"); errCodeOf(err) != wire.CodeForbidden {
		t.Fatalf("joining a private topic: %v", err)
	}
	if _, err := bob.conn.TopicMembers(bob.ctx(), "sec"); errCodeOf(err) != wire.CodeTopicNotFound {
		t.Fatalf("members of a private topic from outside: %v", err)
	}
	if err := bob.conn.TopicAdd(bob.ctx(), "sec", "carol", ""); errCodeOf(err) != wire.CodeTopicNotFound {
		t.Fatalf("a non-member adds to a private topic: %v", err)
	}
	if err := alice.conn.TopicAdd(alice.ctx(), "sec", "bob", wire.TopicObserver); err != nil {
		t.Fatal(err)
	}
	bob.waitKey(sec.ID, 1)
	if _, err := bob.post(sec, 1, "observer speaks"); errCodeOf(err) != wire.CodeForbidden {
		t.Fatalf("an observer posts: %v", err)
	}
	if err := bob.conn.TopicAdd(bob.ctx(), "sec", "carol", ""); errCodeOf(err) != wire.CodeForbidden {
		t.Fatalf("an observer adds: %v", err)
	}
	if _, err := alice.post(sec, 1, "for the few"); err != nil {
		t.Fatal(err)
	}
	if m := bob.open(bob.nextTopicPush(), sec.ID); m.Body != "for the few" {
		t.Fatalf("observer reads: %+v", m)
	}
	// carol, outside #sec, gets the next post of a public topic she is in
	// and nothing of #sec before it.
	pub := alice.create("pub", client.TopicCreateOptions{})
	joinAndWaitKey(t, pub, carol)
	if _, err := alice.post(pub, 1, "for everyone"); err != nil {
		t.Fatal(err)
	}
	if p := carol.nextTopicPush(); p.Topic.ID != pub.ID {
		t.Fatalf("carol got a post of a private topic: %+v", p)
	}
	// Removing bob rekeys.
	if err := alice.conn.TopicRemove(alice.ctx(), "sec", bob.id.pub()); err != nil {
		t.Fatal(err)
	}
	alice.waitKey(sec.ID, 2)
}

func mustList(t *testing.T, p *topicPeer) []wire.TopicInfo {
	t.Helper()
	l, err := p.conn.TopicList(p.ctx())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// History pages newest first with before (≤ 50 a page) and oldest first
// with after; unread counts follow the read marker; mentions notify.
func TestTopicHistoryUnreadMentions(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	ops := alice.create("ops", client.TopicCreateOptions{})
	if err := bob.conn.TopicJoin(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	bob.waitKey(ops.ID, 1)
	const n = 120
	for i := range n {
		s, _ := client.SealTopicPost(alice.id.meshID, ops.ID, 1, alice.keeper.Ring.Get(ops.ID, 1), []byte("post "+strconv.Itoa(i)), alice.id.key, client.SendOptions{})
		if i == n-1 {
			s.Mentions = []string{bob.id.pub()}
		}
		if _, err := alice.conn.Send(alice.ctx(), s); err != nil {
			t.Fatal(err)
		}
	}
	var all []client.TopicMessage
	page := client.HistoryPage{}
	for {
		msgs, more := bob.history(ops.ID, page)
		if len(msgs) > wire.MaxTopicHistory {
			t.Fatalf("page of %d", len(msgs))
		}
		all = append(all, msgs...)
		if !more {
			break
		}
		page.Before = msgs[len(msgs)-1].ID
	}
	if len(all) != n {
		t.Fatalf("paged %d posts, want %d", len(all), n)
	}
	for i, m := range all {
		if want := "post " + strconv.Itoa(n-1-i); m.Body != want {
			t.Fatalf("post %d is %q, want %q", i, m.Body, want)
		}
	}
	after, _ := bob.history(ops.ID, client.HistoryPage{After: all[10].ID, Limit: 5})
	if len(after) != 5 || after[0].Body != "post "+strconv.Itoa(n-10) {
		t.Fatalf("after: %+v", after)
	}
	if got := bob.topic("ops"); got.Unread != n {
		t.Fatalf("bob's unread: %d", got.Unread)
	}
	if got := alice.topic("ops"); got.Unread != 0 {
		t.Fatalf("alice's own posts count as unread: %d", got.Unread)
	}
	if err := bob.conn.TopicMarkRead(bob.ctx(), "ops", all[20].ID); err != nil {
		t.Fatal(err)
	}
	if got := bob.topic("ops"); got.Unread != 20 {
		t.Fatalf("unread after marking: %d", got.Unread)
	}
	if err := bob.conn.TopicMarkRead(bob.ctx(), "ops", ""); err != nil {
		t.Fatal(err)
	}
	if got := bob.topic("ops"); got.Unread != 0 {
		t.Fatalf("unread after marking all: %d", got.Unread)
	}
	notes, err := bob.conn.NotificationsList(bob.ctx(), 0, true)
	if err != nil || len(notes) != 1 || notes[0].MessageID != all[0].ID || notes[0].Topic != "ops" || notes[0].SenderName != "alice" {
		t.Fatalf("notifications: %+v %v", notes, err)
	}
	if err := bob.conn.NotificationsRead(bob.ctx(), []string{notes[0].ID}); err != nil {
		t.Fatal(err)
	}
	if notes, _ := bob.conn.NotificationsList(bob.ctx(), 0, true); len(notes) != 0 {
		t.Fatalf("unread notifications after reading: %+v", notes)
	}
	if notes, _ := alice.conn.NotificationsList(alice.ctx(), 0, false); len(notes) != 0 {
		t.Fatalf("alice sees bob's notifications: %+v", notes)
	}
}

// The broker's bbolt file holds the posts' ciphertext but neither their
// plaintext nor the topic key, in any encoding.
func TestTopicStoreHoldsNoPlaintextOrKey(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob")
	alice, bob := peers[0], peers[1]
	ops := alice.create("ops", client.TopicCreateOptions{})
	if err := bob.conn.TopicJoin(bob.ctx(), "ops"); err != nil {
		t.Fatal(err)
	}
	bob.waitKey(ops.ID, 1)
	secret := make([]byte, 12)
	rand.Read(secret)
	text := "the launch code is " + hex.EncodeToString(secret)
	if _, err := alice.post(ops, 1, text); err != nil {
		t.Fatal(err)
	}
	key := alice.keeper.Ring.Get(ops.ID, 1)
	h, _ := bob.conn.TopicHistory(bob.ctx(), ops.ID, client.HistoryPage{})
	ct := h.Messages[0].Push.Ciphertext
	alice.conn.Close()
	bob.conn.Close()
	path := b.StorePath()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte(ct)) {
		t.Fatal("the post's ciphertext is not in the store: the check would prove nothing")
	}
	for what, needle := range map[string][]byte{
		"plaintext": []byte(text), "plaintext secret": []byte(hex.EncodeToString(secret)),
		"raw key": key[:], "hex key": []byte(hex.EncodeToString(key[:])), "base64 key": []byte(cmcrypto.EncodeB64(key[:])),
	} {
		if bytes.Contains(data, needle) {
			t.Fatalf("the store holds the %s", what)
		}
	}
}

// A kick marks the kicked member's topics for a new key (it stays a
// member: the new generation is sealed to it too); mesh_leave removes the
// member and the next key holder rotates it out.
func TestTopicRekeyOnKickAndMeshLeave(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	peers := topicMesh(t, b, "acme", "alice", "bob", "carol")
	alice, bob, carol := peers[0], peers[1], peers[2]
	ops := alice.create("ops", client.TopicCreateOptions{})
	joinAndWaitKey(t, ops, bob, carol)
	if r, err := alice.conn.Admin(alice.ctx(), &wire.AdminRequest{Type: wire.TypeKick, Target: "bob"}); err != nil || len(r.Affected) != 1 {
		t.Fatalf("kick: %+v %v", r, err)
	}
	alice.waitKey(ops.ID, 2)
	carol.waitKey(ops.ID, 2)
	// bob is still a member: his seal of generation 2 is there for him.
	bob2 := connectPeer(t, b, bob.id, false)
	if _, err := bob2.keeper.Refresh(bob2.ctx(), bob2.conn, ops.ID); err != nil || !bob2.keeper.Ring.Has(ops.ID, 2) {
		t.Fatalf("the kicked member's seal of the refreshed key: %v", err)
	}
	if err := carol.conn.MeshLeave(carol.ctx()); err != nil {
		t.Fatal(err)
	}
	alice.waitKey(ops.ID, 3)
	members, err := alice.conn.TopicMembers(alice.ctx(), "ops")
	if err != nil || len(members) != 2 {
		t.Fatalf("members after carol left the mesh: %+v %v", members, err)
	}
}

// --topic-retention deletes old posts (the ack says the post was stored;
// nothing here checks its presence in between, which a loaded machine
// could outlast).
func TestTopicRetention(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.TopicRetention = 300 * time.Millisecond })
	alice := topicMesh(t, b, "acme", "alice")[0]
	ops := alice.create("ops", client.TopicCreateOptions{})
	if _, err := alice.post(ops, 1, "short-lived"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		msgs, _ := alice.history(ops.ID, client.HistoryPage{})
		if len(msgs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the post outlived --topic-retention")
		}
		time.Sleep(20 * time.Millisecond) // polling a wall-clock expiry, not synchronising
	}
	if got := alice.topic("ops"); got.Unread != 0 {
		t.Fatalf("unread counts an expired post: %+v", got)
	}
}

// TestTopicsPerMemberAreCapped: one member creates at most
// MaxTopicsPerMember topics, so that it cannot use up the mesh's
// MaxTopicsPerMesh and leave the others none; the mesh's cap still holds
// for everyone. Before the per-member cap bob's third topic was created.
func TestTopicsPerMemberAreCapped(t *testing.T) {
	t.Parallel()
	b := startBroker(t, func(c *Config) { c.MaxTopicsPerMember, c.MaxTopicsPerMesh = 2, 5 })
	peers := topicMesh(t, b, "acme", "alice", "bob", "carol")
	alice, bob, carol := peers[0], peers[1], peers[2]
	bob.create("b1", client.TopicCreateOptions{})
	bob.create("b2", client.TopicCreateOptions{Plaintext: true})
	_, _, err := bob.conn.TopicCreate(bob.ctx(), client.TopicCreateOptions{Name: "b3"})
	if errCodeOf(err) != wire.CodeTooManyTopics || !strings.Contains(err.Error(), "the most one member may") {
		t.Fatalf("bob's third topic: %v, want too_many_topics for his share", err)
	}
	if got := counterValue(t, b, "claudemesh_limits_tripped_total", "topics_per_member"); got != 1 {
		t.Fatalf("limits_tripped{topics_per_member} = %v, want 1", got)
	}
	alice.create("a1", client.TopicCreateOptions{}) // general, b1, b2, a1
	carol.create("c1", client.TopicCreateOptions{}) // the mesh's fifth
	_, _, err = carol.conn.TopicCreate(carol.ctx(), client.TopicCreateOptions{Name: "c2"})
	if errCodeOf(err) != wire.CodeTooManyTopics || !strings.Contains(err.Error(), "this mesh already has 5 topics") {
		t.Fatalf("a sixth topic in the mesh: %v, want too_many_topics for the mesh", err)
	}
}
