// Package storetest is the conformance suite of store.Engine: the same
// tests run against a single broker's bbolt engine (store.Local) and the
// cluster's JetStream engine (one node with R1, three nodes with R3), so the
// broker's records behave the same on both (issue 14).
package storetest

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"claudemesh/store"
	"claudemesh/wire"
)

// Run runs the whole suite against the engines of one store: one for a
// single broker, one per node for a cluster. Writes go to any of them, and
// every one must end up with the same records. Each test works in a mesh
// of its own, so one store (and one cluster) serves them all.
func Run(t *testing.T, es []store.Engine) {
	// The suite's mesh is a package variable: runs of parallel tests (one
	// per engine) take turns.
	runMu.Lock()
	defer runMu.Unlock()
	for i, tc := range []struct {
		name string
		fn   func(t *testing.T, es []store.Engine)
	}{
		{"MeshesMembersInvites", testMeshes},
		{"QueueAckReceiptsFIFO", testQueue},
		{"Idempotency", testIdempotency},
		{"ExpireAndDrop", testExpire},
		{"GrantsSkillsAPIKeys", testGovernance},
		{"TopicsHistory", testTopics},
		{"AuditChainConcurrent", testAudit},
		{"FailedWriteAlone", testFailedWrite},
		{"ConcurrentReadModifyWrite", testCounter},
		{"WriteRightAfterAnotherNodes", testWriteAfterOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			meshID = fmt.Sprintf("01JMESH%019d", i+1)
			slug = fmt.Sprintf("team-%d", i+1)
			tc.fn(t, es)
		})
	}
}

// The mesh of the running test (tests run one after the other).
var (
	meshID, slug string
	runMu        sync.Mutex
)

func key(n int) string { return fmt.Sprintf("%064x", n) }

// eventually retries a read on every engine until it passes: a cluster
// node applies the others' writes shortly after they are acknowledged.
func eventually(t *testing.T, es []store.Engine, fn func(tx *store.Tx) error) {
	t.Helper()
	for i, e := range es {
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := e.View(fn)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("engine %d: %v", i, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func update(t *testing.T, e store.Engine, fn func(tx *store.Tx) error) {
	t.Helper()
	if err := e.Update(fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func owner() *store.Member {
	return &store.Member{ID: "01JOWNER000000000000000000", Pubkey: key(0xA1), DisplayName: "alice", NameKey: "alice", Role: wire.MemberOwner, JoinedAt: 1}
}

func createMesh(t *testing.T, e store.Engine) {
	t.Helper()
	update(t, e, func(tx *store.Tx) error {
		if err := store.CreateMesh(tx, store.Mesh{ID: meshID, Slug: slug, Name: "Team", CreatedAt: 1}, owner()); err != nil {
			return err
		}
		_, err := store.AppendAudit(tx, meshID, store.AuditEvent{Type: wire.AuditMeshCreated, Actor: key(0xB0), At: time.UnixMilli(1)})
		return err
	})
}

func pick(es []store.Engine, i int) store.Engine { return es[i%len(es)] }

func testMeshes(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	if err := pick(es, 1).Update(func(tx *store.Tx) error {
		return store.CreateMesh(tx, store.Mesh{ID: "01JOTHER0000000000000000000", Slug: slug}, owner())
	}); !errors.Is(err, store.ErrSlugTaken) {
		t.Fatalf("second mesh with the slug: %v, want ErrSlugTaken", err)
	}
	bob := &store.Member{ID: "01JBOB00000000000000000000", Pubkey: key(0xB2), DisplayName: "bob", NameKey: "bob", Role: wire.MemberMember, JoinedAt: 2}
	update(t, pick(es, 1), func(tx *store.Tx) error { return store.PutMember(tx, meshID, bob) })
	imp := &store.Member{ID: "01JIMP00000000000000000000", Pubkey: key(0xB3), DisplayName: "Bob", NameKey: "bob", JoinedAt: 3}
	if err := pick(es, 2).Update(func(tx *store.Tx) error { return store.PutMember(tx, meshID, imp) }); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("a second bob: %v, want ErrNameTaken", err)
	}
	inv := &store.Invite{ID: "01JINV00000000000000000000", Token: "tok", Role: wire.MemberMember, IssuerPubkey: key(0xA1), ExpiresAt: 9, MaxUses: 2}
	update(t, pick(es, 2), func(tx *store.Tx) error { return store.PutInvite(tx, meshID, inv) })
	// Uses are counted by read-modify-write: from two nodes at once, both
	// must count.
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			update(t, pick(es, i), func(tx *store.Tx) error {
				rec, err := store.GetInvite(tx, meshID, inv.ID)
				if err != nil {
					return err
				}
				rec.Uses++
				return store.PutInvite(tx, meshID, rec)
			})
		}()
	}
	wg.Wait()
	eventually(t, es, func(tx *store.Tx) error {
		m, err := store.MemberByPubkey(tx, meshID, bob.Pubkey)
		if err != nil {
			return err
		}
		if m.DisplayName != "bob" {
			return fmt.Errorf("bob is %+v", m)
		}
		if _, err := store.MemberByPubkey(tx, meshID, imp.Pubkey); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the refused member exists: %v", err)
		}
		rec, err := store.GetInvite(tx, meshID, inv.ID)
		if err != nil {
			return err
		}
		if rec.Uses != 2 {
			return fmt.Errorf("invite uses %d, want 2", rec.Uses)
		}
		if _, err := store.GetMesh(tx, "01JOTHER0000000000000000000"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("the refused mesh exists: %v", err)
		}
		if m, err := store.GetMesh(tx, meshID); err != nil || m.Slug != slug {
			return fmt.Errorf("mesh %+v %v", m, err)
		}
		return nil
	})
}

func message(id, sender string, at int64, prio string) *store.Message {
	return &store.Message{ID: id, ClientMessageID: id, SenderPubkey: sender, SenderMember: sender, TargetSpec: key(1),
		Kind: wire.KindBox, Priority: prio, Fingerprint: key(0xF0 + int(at)), Push: []byte(`{"type":"push","messageId":"` + id + `"}`),
		Receipts: true, CreatedAt: at}
}

func testQueue(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	sender, r := key(0x5E), key(1)
	prios := []string{wire.PriorityNext, wire.PriorityNow, wire.PriorityLow, wire.PriorityNext}
	var ids []string
	for i, p := range prios {
		id := fmt.Sprintf("01JM%022d", i+1)
		ids = append(ids, id)
		update(t, pick(es, i), func(tx *store.Tx) error {
			_, err := store.AppendMessage(tx, meshID, message(id, sender, int64(10+i), p), []store.NewDelivery{{Recipient: r}})
			return err
		})
	}
	// FIFO per recipient in the order the writes were acknowledged, with
	// each entry's priority (the hub holds next/low while a recipient is
	// busy; `now` overtakes them).
	eventually(t, es, func(tx *store.Tx) error {
		var got []string
		var gotPrio []string
		err := store.ScanQueue(tx, meshID, r, 0, func(_ uint64, e *store.QueueEntry) bool {
			got, gotPrio = append(got, e.ID), append(gotPrio, e.Priority)
			return true
		})
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(ids) || fmt.Sprint(gotPrio) != fmt.Sprint(prios) {
			return fmt.Errorf("queue %v %v, want %v %v", got, gotPrio, ids, prios)
		}
		return nil
	})
	// Ack two on another node: delivered, with receipts queued for the
	// sender; acking again settles nothing (acks are idempotent).
	var out []store.AckOutcome
	update(t, pick(es, 1), func(tx *store.Tx) error {
		var err error
		out, err = store.Ack(tx, meshID, r, ids[:2], 100)
		return err
	})
	if len(out) != 2 || out[0].NewReceipt == nil || out[1].NewReceipt == nil {
		t.Fatalf("ack outcomes %+v", out)
	}
	update(t, pick(es, 2), func(tx *store.Tx) error {
		again, err := store.Ack(tx, meshID, r, ids[:2], 101)
		if err == nil && len(again) != 0 {
			return fmt.Errorf("a second ack settled %d", len(again))
		}
		return err
	})
	eventually(t, es, func(tx *store.Tx) error {
		dl, err := store.Deliveries(tx, meshID, ids[0])
		if err != nil {
			return err
		}
		if len(dl) != 1 || dl[0].State != store.DeliveryDelivered || dl[0].DeliveredAt != 100 {
			return fmt.Errorf("deliveries of the first %+v", dl)
		}
		var receipts int
		err = store.ScanQueue(tx, meshID, sender, 0, func(_ uint64, e *store.QueueEntry) bool {
			if e.Receipt {
				receipts++
			}
			return true
		})
		if receipts != 2 {
			return fmt.Errorf("%d receipts queued for the sender, want 2", receipts)
		}
		pending, err := store.CountPending(tx, meshID)
		if err != nil {
			return err
		}
		if pending[r] != 2 {
			return fmt.Errorf("pending %v", pending)
		}
		if m, err := store.GetMessage(tx, meshID, ids[0]); err != nil || m.Push != nil {
			return fmt.Errorf("a settled message keeps its body: %+v %v", m, err)
		}
		return nil
	})
	// Settle a receipt on yet another node.
	update(t, pick(es, 2), func(tx *store.Tx) error {
		out, err := store.Ack(tx, meshID, sender, []string{out[0].NewReceipt.ReceiptID}, 102)
		if err == nil && (len(out) != 1 || !out[0].Receipt) {
			return fmt.Errorf("receipt ack %+v", out)
		}
		return err
	})
	eventually(t, es, func(tx *store.Tx) error {
		n := 0
		err := store.ScanQueue(tx, meshID, sender, 0, func(uint64, *store.QueueEntry) bool { n++; return true })
		if err == nil && n != 1 {
			return fmt.Errorf("%d entries for the sender, want 1", n)
		}
		return err
	})
}

// A write acknowledged on one node is seen by the next write on another,
// even when that one is first judged on a copy that has not applied it
// yet (it was refused with not_found under load before the engine judged
// refusals again on the state it publishes on).
func testWriteAfterOther(t *testing.T, es []store.Engine) {
	for i := range 30 {
		id, s := fmt.Sprintf("01JMX%021d", i), fmt.Sprintf("after-%d", i)
		update(t, pick(es, i), func(tx *store.Tx) error {
			return store.CreateMesh(tx, store.Mesh{ID: id, Slug: s, Name: "After", CreatedAt: 1}, owner())
		})
		update(t, pick(es, i+1), func(tx *store.Tx) error {
			_, err := store.AppendMessage(tx, id, message("01JM0000000000000000000001", key(0x5E), 10, wire.PriorityNext), []store.NewDelivery{{Recipient: key(1)}})
			return err
		})
	}
}

func testIdempotency(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	sender := key(0x5E)
	m := message("01JM0000000000000000000001", sender, 10, wire.PriorityNext)
	m.ClientMessageID = "client-1"
	update(t, pick(es, 1), func(tx *store.Tx) error {
		_, err := store.AppendMessage(tx, meshID, m, []store.NewDelivery{{Recipient: key(1)}})
		return err
	})
	// A retry on another node finds the original (the 24 h contract is the
	// broker's purge, which keeps records a day past the queue TTL).
	eventually(t, es, func(tx *store.Tx) error {
		prev, err := store.LookupIdempotent(tx, meshID, sender, "client-1")
		if err != nil {
			return err
		}
		if prev.ID != m.ID || prev.Fingerprint != m.Fingerprint {
			return fmt.Errorf("idempotency record %+v", prev)
		}
		return nil
	})
}

func testExpire(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	sender, r := key(0x5E), key(1)
	for i := range 3 {
		id := fmt.Sprintf("01JM%022d", i+1)
		update(t, pick(es, i), func(tx *store.Tx) error {
			_, err := store.AppendMessage(tx, meshID, message(id, sender, int64(10*(i+1)), wire.PriorityNext), []store.NewDelivery{{Recipient: r}, {Recipient: key(2)}})
			return err
		})
	}
	var expired []store.Expired
	update(t, pick(es, 1), func(tx *store.Tx) error {
		var err error
		expired, _, err = store.ExpireBefore(tx, meshID, 25, 100) // the first two
		return err
	})
	if len(expired) != 4 {
		t.Fatalf("expired %+v, want 2 messages × 2 recipients", expired)
	}
	update(t, pick(es, 2), func(tx *store.Tx) error {
		d, err := store.DropQueue(tx, meshID, key(2))
		if err == nil && len(d) != 1 {
			return fmt.Errorf("dropped %+v", d)
		}
		return err
	})
	eventually(t, es, func(tx *store.Tx) error {
		pending, err := store.CountPending(tx, meshID)
		if err != nil {
			return err
		}
		if pending[r] != 1 || pending[key(2)] != 0 {
			return fmt.Errorf("pending %v", pending)
		}
		dl, err := store.Deliveries(tx, meshID, "01JM0000000000000000000001")
		if err != nil || len(dl) != 2 || dl[0].State != store.DeliveryExpired {
			return fmt.Errorf("deliveries %+v %v", dl, err)
		}
		return nil
	})
}

func testGovernance(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	update(t, pick(es, 1), func(tx *store.Tx) error {
		return store.PutGrants(tx, meshID, key(1), store.Grants{key(2): {}})
	})
	update(t, pick(es, 2), func(tx *store.Tx) error {
		return store.PutSkill(tx, meshID, &store.Skill{Name: "deploy", Body: "steps", UpdatedAt: 5})
	})
	k := &store.APIKey{ID: "01JKEY00000000000000000000", Prefix: "cm_abcdefgh", Hash: key(9), Label: "bot", Capabilities: []string{"read"}, MemberPubkey: key(0xA1)}
	update(t, pick(es, 1), func(tx *store.Tx) error { return store.PutAPIKey(tx, meshID, k) })
	dup := *k
	dup.ID = "01JKEY00000000000000000001"
	if err := pick(es, 2).Update(func(tx *store.Tx) error { return store.PutAPIKey(tx, meshID, &dup) }); !errors.Is(err, store.ErrExists) {
		// The prefix check must see the first key even when it was
		// written on another node.
		t.Fatalf("a second key with the prefix: %v, want ErrExists", err)
	}
	eventually(t, es, func(tx *store.Tx) error {
		g, err := store.GetGrants(tx, meshID, key(1))
		if err != nil || len(g) != 1 {
			return fmt.Errorf("grants %v %v", g, err)
		}
		s, err := store.GetSkill(tx, meshID, "deploy")
		if err != nil || s.Body != "steps" {
			return fmt.Errorf("skill %+v %v", s, err)
		}
		mid, got, err := store.APIKeyByPrefix(tx, "cm_abcdefgh")
		if err != nil || mid != meshID || got.ID != k.ID {
			return fmt.Errorf("api key %+v %v", got, err)
		}
		return nil
	})
}

func testTopics(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	topic := &store.Topic{ID: "01JTOPIC000000000000000000", Name: "deploys", Visibility: wire.VisibilityPublic, KeyGen: 1, Encrypted: true}
	update(t, pick(es, 1), func(tx *store.Tx) error {
		return store.CreateTopic(tx, meshID, topic, &store.TopicMember{MemberID: owner().ID, Pubkey: key(0xA1), Role: wire.TopicLead}, nil)
	})
	if err := pick(es, 2).Update(func(tx *store.Tx) error {
		return store.CreateTopic(tx, meshID, &store.Topic{ID: "01JTOPIC000000000000000001", Name: "deploys"}, &store.TopicMember{Pubkey: key(0xA1)}, nil)
	}); !errors.Is(err, store.ErrTopicExists) {
		t.Fatalf("a second #deploys: %v", err)
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := &store.TopicPost{ID: fmt.Sprintf("01JP%022d", i), TopicID: topic.ID, SenderPubkey: key(0xA1), SenderMember: key(0xA1),
				ClientMessageID: fmt.Sprintf("c%d", i), CreatedAt: int64(i), Push: []byte(`{}`)}
			update(t, pick(es, i), func(tx *store.Tx) error {
				_, err := store.AppendTopicPost(tx, meshID, p)
				return err
			})
		}()
	}
	wg.Wait()
	// History has every post once, with gap-free seqs, the same on every
	// node.
	var first []string
	eventually(t, es, func(tx *store.Tx) error {
		posts, more, err := store.TopicPostsBefore(tx, meshID, topic.ID, 0, 50)
		if err != nil {
			return err
		}
		if len(posts) != 6 || more {
			return fmt.Errorf("%d posts (more %v)", len(posts), more)
		}
		var got []string
		for i, p := range posts {
			if p.Seq != uint64(6-i) {
				return fmt.Errorf("post %d has seq %d", i, p.Seq)
			}
			got = append(got, p.ID)
		}
		if first == nil {
			first = got
		} else if fmt.Sprint(first) != fmt.Sprint(got) {
			return fmt.Errorf("history %v here, %v on the first node", got, first)
		}
		if _, err := store.LookupTopicIdempotent(tx, meshID, key(0xA1), "c3"); err != nil {
			return err
		}
		return nil
	})
}

func testAudit(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			update(t, pick(es, i), func(tx *store.Tx) error {
				_, err := store.AppendAudit(tx, meshID, store.AuditEvent{Type: wire.AuditGrantsChanged, Actor: key(0xA1),
					Payload: map[string]any{"i": i}, At: time.UnixMilli(int64(100 + i))})
				return err
			})
		}()
	}
	wg.Wait()
	// Appends from every node at once make one chain: seqs without gaps,
	// each entry's prevHash the hash before it, identical on every node.
	var head string
	eventually(t, es, func(tx *store.Tx) error {
		entries, _, err := store.QueryAudit(tx, meshID, store.AuditQuery{Limit: 500})
		if err != nil {
			return err
		}
		if len(entries) != n+1 {
			return fmt.Errorf("%d entries, want %d", len(entries), n+1)
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Seq < entries[j].Seq })
		for i, e := range entries {
			if e.Seq != uint64(i+1) {
				return fmt.Errorf("entry %d has seq %d", i, e.Seq)
			}
			if i > 0 && e.PrevHash != entries[i-1].Hash {
				return fmt.Errorf("entry %d does not chain", e.Seq)
			}
		}
		h := entries[len(entries)-1].Hash
		if head == "" {
			head = h
		} else if head != h {
			return fmt.Errorf("head %s here, %s on the first node", h, head)
		}
		return nil
	})
}

var errRefused = errors.New("refused on purpose")

func testFailedWrite(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	// A failing write leaves nothing behind and does not take the writes
	// batched with it down.
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pick(es, i).Update(func(tx *store.Tx) error {
				if err := store.PutSkill(tx, meshID, &store.Skill{Name: fmt.Sprintf("s%d", i)}); err != nil {
					return err
				}
				if i%2 == 1 {
					return errRefused
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if (i%2 == 1) != errors.Is(err, errRefused) || (i%2 == 0 && err != nil) {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	eventually(t, es, func(tx *store.Tx) error {
		skills, err := store.ListSkills(tx, meshID)
		if err != nil {
			return err
		}
		var names []string
		for _, s := range skills {
			names = append(names, s.Name)
		}
		if fmt.Sprint(names) != "[s0 s2 s4 s6]" {
			return fmt.Errorf("skills %v", names)
		}
		return nil
	})
}

func testCounter(t *testing.T, es []store.Engine) {
	createMesh(t, es[0])
	// Read-modify-write from every node at once loses no increment: each
	// write ran against the state its entry follows.
	const writers, each = 6, 10
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				update(t, pick(es, i), func(tx *store.Tx) error {
					m, err := store.GetMember(tx, meshID, owner().ID)
					if err != nil {
						return err
					}
					m.LastSeenAt++
					return store.PutMember(tx, meshID, m)
				})
			}
		}()
	}
	wg.Wait()
	eventually(t, es, func(tx *store.Tx) error {
		m, err := store.GetMember(tx, meshID, owner().ID)
		if err != nil {
			return err
		}
		if m.LastSeenAt != writers*each {
			return fmt.Errorf("counter %d, want %d", m.LastSeenAt, writers*each)
		}
		return nil
	})
}
