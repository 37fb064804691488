package broker

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	cmcrypto "claudemesh/crypto"
	"claudemesh/wire"
)

// auditChain reads a mesh's whole chain over the wire, oldest first.
func auditChain(t *testing.T, c *rawConn) []wire.AuditEntry {
	t.Helper()
	var all []wire.AuditEntry
	var before uint64
	for {
		var page wire.AuditEntries
		q := map[string]any{"type": "audit_query", "limit": 4}
		if before != 0 {
			q["before"] = before
		}
		c.request(q, &page, wire.TypeAuditEntries)
		all = append(all, page.Entries...)
		if !page.More {
			break
		}
		before = page.Entries[len(page.Entries)-1].Seq
	}
	for i, j := 0, len(all)-1; i < j; i, j = i+1, j-1 {
		all[i], all[j] = all[j], all[i]
	}
	return all
}

// checkChain recomputes every hash and link of a chain read over the wire.
func checkChain(t *testing.T, meshID string, chain []wire.AuditEntry) {
	t.Helper()
	prev := cmcrypto.AuditGenesisHash
	for i, e := range chain {
		canon, err := cmcrypto.CanonicalJSON(e.Payload)
		if err != nil {
			t.Fatalf("seq %d: %v", e.Seq, err)
		}
		h, err := cmcrypto.AuditHash(e.PrevHash, meshID, e.Seq, e.EventType, e.ActorPubkey, canon, e.CreatedAt)
		if e.Seq != uint64(i+1) || e.PrevHash != prev || err != nil || h != e.Hash {
			t.Fatalf("entry %d (seq %d, %s) does not chain: prev %s want %s, hash %s recomputed %s %v",
				i, e.Seq, e.EventType, e.PrevHash, prev, e.Hash, h, err)
		}
		prev = e.Hash
	}
}

func eventTypes(chain []wire.AuditEntry) string {
	var s []string
	for _, e := range chain {
		s = append(s, e.EventType)
	}
	return strings.Join(s, ",")
}

// TestAuditChainRecordsGovernance: mesh creation, invites, joins, bans,
// role changes, kicks and leaves each land in the chain once, in order,
// with a checkpoint signed by the broker key over the head.
func TestAuditChainRecordsGovernance(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	owner := createMesh(t, b, "gov", "alice")
	bob := addMember(t, b, owner, "gov", "bob")
	carol := addMember(t, b, owner, "gov", "carol")
	oc := connect(t, b, owner, false, nil)

	var res wire.AdminResult
	oc.request(map[string]any{"type": "set_role", "target": "carol", "role": "admin"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("set_role: %+v", res)
	}
	bc := connect(t, b, bob, true, nil)
	oc.request(map[string]any{"type": "kick", "target": bob.pub()[:10]}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("kick: %+v", res)
	}
	bc.expectRefusal(wire.ReasonKicked, wire.CloseKicked, wire.ReasonKicked)
	oc.request(map[string]any{"type": "ban", "target": "BOB", "reason": "spam <b>|&"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("ban: %+v", res)
	}
	cc := connect(t, b, carol, false, nil)
	var ok wire.OK
	cc.request(map[string]any{"type": "mesh_leave"}, &ok, wire.TypeOK)

	chain := auditChain(t, oc)
	checkChain(t, owner.meshID, chain)
	want := "mesh_created,invite_created,member_joined,invite_created,member_joined,role_changed,kick,member_banned,member_left"
	if got := eventTypes(chain); got != want {
		t.Fatalf("events %s\nwant   %s", got, want)
	}
	if chain[0].ActorPubkey != b.PublicKey() || chain[7].ActorPubkey != owner.pub() || chain[8].ActorPubkey != carol.pub() {
		t.Errorf("actors: %s %s %s", chain[0].ActorPubkey, chain[7].ActorPubkey, chain[8].ActorPubkey)
	}
	if !strings.Contains(string(chain[7].Payload), `"reason":"spam <b>|&"`) {
		t.Errorf("ban payload %s", chain[7].Payload)
	}

	// A plain member reads the same chain and gets a checkpoint over its
	// head signed by the broker key.
	dave := addMember(t, b, owner, "gov", "dave")
	dc := connect(t, b, dave, false, nil)
	chain = auditChain(t, dc)
	checkChain(t, owner.meshID, chain)
	var cp wire.AuditCheckpoint
	dc.request(map[string]any{"type": "audit_checkpoint"}, &cp, wire.TypeAuditCheckpoint)
	head := chain[len(chain)-1]
	if cp.MeshID != owner.meshID || cp.Seq != head.Seq || cp.Hash != head.Hash || cp.BrokerPubkey != b.PublicKey() {
		t.Fatalf("checkpoint %+v, head %d %s", cp, head.Seq, head.Hash)
	}
	s, _ := cmcrypto.AuditHeadString(cp.MeshID, cp.Seq, cp.Hash)
	pub, _ := cmcrypto.ParsePublicKey(b.PublicKey())
	if err := cmcrypto.Verify(pub, s, cp.Signature); err != nil {
		t.Fatalf("checkpoint signature: %v", err)
	}

	// Filters.
	var page wire.AuditEntries
	dc.request(map[string]any{"type": "audit_query", "eventType": "member_joined"}, &page, wire.TypeAuditEntries)
	if len(page.Entries) != 3 || page.More {
		t.Errorf("member_joined: %d entries, more %v", len(page.Entries), page.More)
	}
	var e wire.Error
	dc.request(map[string]any{"type": "audit_query", "limit": 501}, &e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument {
		t.Errorf("limit 501: %+v", e)
	}
}

// TestAdminEdgeCases covers issue 12 item 18 and the role rules of §6.
func TestAdminEdgeCases(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	owner := createMesh(t, b, "edge", "alice")
	bob := addMember(t, b, owner, "edge", "bob")
	carol := addMember(t, b, owner, "edge", "carol")
	dave := addMember(t, b, owner, "edge", "dave")
	oc := connect(t, b, owner, false, nil)
	var res wire.AdminResult
	oc.request(map[string]any{"type": "set_role", "target": "carol", "role": "admin"}, &res, wire.TypeAdminResult)
	bobPresence := connect(t, b, bob, true, nil)

	// staleMs:-1 is refused, not read as "all".
	cc := connect(t, b, carol, false, nil)
	var e wire.Error
	cc.request(map[string]any{"type": "disconnect", "staleMs": -1}, &e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument {
		t.Fatalf("staleMs -1: %+v", e)
	}
	cc.request(map[string]any{"type": "kick", "target": "bob", "all": true}, &e, wire.TypeError)
	if e.Code != wire.CodeInvalidArgument {
		t.Fatalf("target and all: %+v", e)
	}
	// A real staleMs selects only connections quiet that long: bob was
	// active within the hour.
	cc.request(map[string]any{"type": "disconnect", "staleMs": 3600000}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 0 || len(res.Skipped) != 0 {
		t.Fatalf("staleMs 1h: %+v", res)
	}
	bobPresence.expectSilence(100 * time.Millisecond)

	// An admin cannot ban or kick the owner or another admin.
	for _, f := range []map[string]any{
		{"type": "ban", "target": "alice"}, {"type": "kick", "target": "alice"},
		{"type": "set_role", "target": "dave", "role": "admin"},
	} {
		cc.request(f, &e, wire.TypeError)
		if e.Code != wire.CodeForbidden {
			t.Errorf("admin %v: %+v", f, e)
		}
	}
	oc.request(map[string]any{"type": "set_role", "target": "dave", "role": "admin"}, &res, wire.TypeAdminResult)
	cc.request(map[string]any{"type": "ban", "target": "dave"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden {
		t.Errorf("admin bans admin: %+v", e)
	}
	oc.request(map[string]any{"type": "set_role", "target": "dave", "role": "member"}, &res, wire.TypeAdminResult)

	// The owner bans bob; the admin may not lift it. A ban by the admin
	// (dave) the admin may lift.
	oc.request(map[string]any{"type": "ban", "target": "bob"}, &res, wire.TypeAdminResult)
	bobPresence.expectRefusal(wire.CodeRevoked, wire.CloseBanned, wire.ReasonBanned)
	cc.request(map[string]any{"type": "unban", "target": "bob"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden || !strings.Contains(e.Message, "owner") {
		t.Fatalf("admin lifts the owner's ban: %+v", e)
	}
	cc.request(map[string]any{"type": "ban", "target": "dave"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("admin bans dave: %+v", res)
	}
	cc.request(map[string]any{"type": "unban", "target": "dave"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("admin unbans dave: %+v", res)
	}
	oc.request(map[string]any{"type": "unban", "target": "bob"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("owner unbans bob: %+v", res)
	}
	oc.request(map[string]any{"type": "unban", "target": "bob"}, &res, wire.TypeAdminResult)
	if len(res.Skipped) != 1 || res.Skipped[0].Reason != wire.SkipNotBanned {
		t.Fatalf("unban twice: %+v", res)
	}

	// A plain member gets forbidden for every admin frame.
	dc := connect(t, b, dave, false, nil)
	for _, ty := range []string{"kick", "disconnect", "ban", "unban", "list_bans", "set_role", "mesh_transfer"} {
		dc.request(map[string]any{"type": ty, "target": "bob", "role": "admin"}, &e, wire.TypeError)
		if e.Code != wire.CodeForbidden {
			t.Errorf("member %s: %+v", ty, e)
		}
		// The owner's alone are not said to be an admin's too.
		if ownerOnly := ty == "set_role" || ty == "mesh_transfer"; ownerOnly == strings.Contains(e.Message, "or an admin") {
			t.Errorf("member %s: %q", ty, e.Message)
		}
	}

	// subtype "System" in any case is reserved.
	s := dm(t, dave, owner.pub(), "hi")
	for _, st := range []string{"System", "SYSTEM", "system"} {
		s.ID, s.Subtype = "s-"+st, st
		if ack := dc.sendAck(s); ack.Error == nil || ack.Error.Code != wire.CodeInvalidArgument {
			t.Errorf("subtype %q: %+v", st, ack)
		}
	}
}

// TestMeshTransfer: the new owner can set roles, the old one (now admin)
// cannot, and the chain records the hand-over.
func TestMeshTransfer(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	owner := createMesh(t, b, "xfer", "alice")
	bob := addMember(t, b, owner, "xfer", "bob")
	addMember(t, b, owner, "xfer", "carol")
	oc := connect(t, b, owner, false, nil)
	var res wire.AdminResult
	oc.request(map[string]any{"type": "mesh_transfer", "target": "bob"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 || res.Affected[0].Pubkey != bob.pub() {
		t.Fatalf("transfer: %+v", res)
	}
	var e wire.Error
	oc.request(map[string]any{"type": "set_role", "target": "carol", "role": "admin"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden {
		t.Fatalf("old owner sets a role: %+v", e)
	}
	oc.request(map[string]any{"type": "mesh_transfer", "target": "carol"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden {
		t.Fatalf("old owner transfers again: %+v", e)
	}
	bc := connect(t, b, bob, false, nil)
	bc.request(map[string]any{"type": "set_role", "target": "carol", "role": "admin"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("new owner sets a role: %+v", res)
	}
	// The old owner is an admin now: the new owner can demote it.
	bc.request(map[string]any{"type": "set_role", "target": "alice", "role": "member"}, &res, wire.TypeAdminResult)
	if len(res.Affected) != 1 {
		t.Fatalf("new owner demotes alice: %+v", res)
	}
	var members wire.Members
	bc.request(map[string]any{"type": "members_list"}, &members, wire.TypeMembers)
	roles := map[string]string{}
	for _, m := range members.Members {
		roles[m.DisplayName] = m.MemberRole
	}
	if roles["alice"] != "member" || roles["bob"] != "owner" || roles["carol"] != "admin" {
		t.Fatalf("roles after transfer: %v", roles)
	}
	chain := auditChain(t, bc)
	checkChain(t, owner.meshID, chain)
	if !strings.Contains(eventTypes(chain), "ownership_transferred,role_changed,role_changed") {
		t.Fatalf("chain: %s", eventTypes(chain))
	}
	// After a restart the roles are the stored ones.
	b.Close()
	b2 := startWith(t, b.cfg)
	ac := connect(t, b2, owner, false, nil)
	ac.request(map[string]any{"type": "list_bans"}, &e, wire.TypeError)
	if e.Code != wire.CodeForbidden {
		t.Fatalf("demoted alice after restart: %+v", e)
	}
}

// TestConcurrentAdminActions: 50 admin actions at once across two meshes
// leave one valid chain per mesh with every action in it exactly once.
func TestConcurrentAdminActions(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	type meshSet struct {
		owner   ident
		members []ident
		conns   []*rawConn
	}
	var sets []meshSet
	for _, slug := range []string{"one", "two"} {
		s := meshSet{owner: createMesh(t, b, slug, "owner-"+slug)}
		for i := range 5 {
			s.members = append(s.members, addMember(t, b, s.owner, slug, fmt.Sprintf("m%d-%s", i, slug)))
		}
		for range 5 {
			s.conns = append(s.conns, connect(t, b, s.owner, false, nil))
		}
		sets = append(sets, s)
	}
	before := make([]int, len(sets))
	for i, s := range sets {
		before[i] = len(auditChain(t, s.conns[0]))
	}
	// Each action changes state (ban then unban, or a role to admin then
	// back), so each must be recorded exactly once.
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, s := range sets {
		for j, m := range s.members {
			c := s.conns[j]
			wg.Go(func() {
				steps := []map[string]any{
					{"type": "ban", "target": m.pub(), "reason": fmt.Sprintf("r%d%d", i, j)},
					{"type": "unban", "target": m.pub()},
					{"type": "set_role", "target": m.pub(), "role": "admin"},
					{"type": "set_role", "target": m.pub(), "role": "member"},
					{"type": "ban", "target": m.pub(), "reason": fmt.Sprintf("final%d%d", i, j)},
				}
				for _, f := range steps {
					f["reqId"] = fmt.Sprintf("r-%d-%d-%s", i, j, f["type"])
					var res wire.AdminResult
					c.write(f)
					c.next(&res, wire.TypeAdminResult)
					if len(res.Affected) != 1 {
						errs <- fmt.Errorf("%v: %+v", f, res)
					}
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i, s := range sets {
		chain := auditChain(t, s.conns[0])
		checkChain(t, s.owner.meshID, chain)
		added := chain[before[i]:]
		if len(added) != 25 {
			t.Fatalf("mesh %d: %d new entries, want 25", i, len(added))
		}
		count := map[string]int{}
		for _, e := range added {
			count[e.EventType+" "+string(e.Payload)]++
		}
		for k, n := range count {
			if n != 1 && !strings.HasPrefix(k, "member_unbanned") && !strings.HasPrefix(k, "role_changed") {
				t.Errorf("mesh %d: %q recorded %d times", i, k, n)
			}
		}
		per := map[string]int{}
		for _, e := range added {
			per[e.EventType]++
		}
		if per["member_banned"] != 10 || per["member_unbanned"] != 5 || per["role_changed"] != 10 {
			t.Errorf("mesh %d: %v", i, per)
		}
	}
}

// TestRaceRejoinRoleAdmin (issue 12 item 10): idempotent re-joins, role
// changes and admin checks on the same member at once. Under -race this
// failed while re-join replaced the member record in place and admin
// checks read the role without the mesh lock.
func TestRaceRejoinRoleAdmin(t *testing.T) {
	t.Parallel()
	b := startBroker(t, nil)
	owner := createMesh(t, b, "race", "alice")
	token, ic := invite(t, b, owner, "race", "member", 5, time.Hour)
	var info wire.InviteReply
	ic.next(&info, wire.TypeInvite)
	key, _ := cmcrypto.GenerateIdentity()
	st, body, bob := joinWith(t, b, token, "bob", key)
	if st != 200 {
		t.Fatalf("join: %d %v", st, body)
	}
	oc := connect(t, b, owner, false, nil)
	bc := connect(t, b, bob, false, nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		for range 15 {
			if st, body, _ := joinWith(t, b, token, "bob", key); st != 200 {
				t.Errorf("re-join: %d %v", st, body)
			}
		}
	})
	wg.Go(func() {
		for i := range 20 {
			role := "admin"
			if i%2 == 1 {
				role = "member"
			}
			var res wire.AdminResult
			oc.request(map[string]any{"type": "set_role", "target": "bob", "role": role}, &res, wire.TypeAdminResult)
		}
	})
	wg.Go(func() {
		for range 20 {
			// Admin checks: answered or forbidden, never a race.
			bc.write(map[string]any{"type": "invite_list", "reqId": "il"})
			bc.next(nil, wire.TypeInvites, wire.TypeError)
			bc.write(map[string]any{"type": "apikey_list", "reqId": "al"})
			bc.next(nil, wire.TypeAPIKeys, wire.TypeError)
		}
	})
	wg.Wait()
	var members wire.Members
	oc.request(map[string]any{"type": "members_list"}, &members, wire.TypeMembers)
	for _, m := range members.Members {
		if m.DisplayName == "bob" && m.MemberRole != "member" {
			t.Fatalf("bob ends as %s", m.MemberRole)
		}
	}
}

// TestAuditMessages: with --audit-messages every accepted send is in the
// chain, metadata only; without it none is.
func TestAuditMessages(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		b := startBroker(t, func(c *Config) { c.AuditMessages = on })
		owner := createMesh(t, b, "msgs", "alice")
		bob := addMember(t, b, owner, "msgs", "bob")
		oc := connect(t, b, owner, false, nil)
		s := dm(t, owner, bob.pub(), "secret words")
		if ack := oc.sendAck(s); ack.Error != nil {
			t.Fatal(ack.Error)
		}
		if ack := oc.sendAck(s); !ack.Duplicate {
			t.Fatal("repeat was not a duplicate")
		}
		var page wire.AuditEntries
		oc.request(map[string]any{"type": "audit_query", "eventType": "message_sent"}, &page, wire.TypeAuditEntries)
		if !on {
			if len(page.Entries) != 0 {
				t.Fatalf("audited without the flag: %+v", page.Entries)
			}
			continue
		}
		if len(page.Entries) != 1 {
			t.Fatalf("message_sent entries: %d", len(page.Entries))
		}
		p := string(page.Entries[0].Payload)
		if !strings.Contains(p, `"targetSpec":"`+bob.pub()) || strings.Contains(p, s.Ciphertext) || page.Entries[0].ActorPubkey != owner.pub() {
			t.Fatalf("payload %s", p)
		}
		checkChain(t, owner.meshID, auditChain(t, oc))
	}
}
