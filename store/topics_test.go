package store

import (
	"errors"
	"testing"

	"claudemesh/wire"
)

func testMesh(t *testing.T, s *Store) Mesh {
	t.Helper()
	m := Mesh{ID: id("M", 1), Slug: "acme", Name: "Acme", CreatedAt: 1000}
	owner := &Member{ID: id("U", 1), Pubkey: key(1), DisplayName: "alice", NameKey: "alice", Role: "owner", JoinedAt: 1000}
	mustUpdate(t, s, func(tx *Tx) error { return CreateMesh(tx, m, owner) })
	return m
}

// A new mesh has its general topic (keyGen 0, no key yet); a mesh created by
// a schema-2 broker gets one when the file is migrated.
func TestGeneralTopicForNewAndMigratedMeshes(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, Options{Migrations: BrokerMigrations[:2]})
	m := Mesh{ID: id("M", 1), Slug: "acme", Name: "Acme", CreatedAt: 1000}
	mustUpdate(t, s, func(tx *Tx) error {
		if err := CreateMesh(tx, m, &Member{ID: id("U", 1), Pubkey: key(1), DisplayName: "alice", NameKey: "alice", Role: "owner"}); err != nil {
			return err
		}
		// What a schema-2 broker wrote: no topic or API-key buckets.
		mb := meshBucket(tx, m.ID)
		for _, b := range append(topicBuckets, bAPIKeys) {
			if err := mb.DeleteBucket(b); err != nil {
				return err
			}
		}
		return tx.DeleteBucket(bucketKeyPrefixes)
	})
	s.Close()
	s = openAt(t, path, Options{})
	mustView(t, s, func(tx *Tx) error {
		g, err := TopicByName(tx, m.ID, wire.GeneralTopic)
		if err != nil {
			t.Fatalf("general after migration: %v", err)
		}
		if !g.General || g.KeyGen != 0 || !g.Encrypted || g.Visibility != wire.VisibilityPublic {
			t.Fatalf("general: %+v", g)
		}
		if _, err := ListAPIKeys(tx, m.ID); err != nil {
			t.Fatalf("API keys after migration: %v", err)
		}
		return nil
	})
	m2 := Mesh{ID: id("M", 2), Slug: "beta", Name: "Beta", CreatedAt: 2000}
	mustUpdate(t, s, func(tx *Tx) error {
		return CreateMesh(tx, m2, &Member{ID: id("U", 2), Pubkey: key(2), DisplayName: "bob", NameKey: "bob", Role: "owner"})
	})
	mustView(t, s, func(tx *Tx) error {
		if _, err := TopicByName(tx, m2.ID, wire.GeneralTopic); err != nil {
			t.Fatalf("general of a new mesh: %v", err)
		}
		return nil
	})
}

// History pages by seq in both directions; retention purges the oldest
// posts with their index and idempotency records.
func TestTopicHistoryPagingAndPurge(t *testing.T) {
	s := newStore(t)
	m := testMesh(t, s)
	topic := &Topic{ID: id("T", 1), Name: "ops", Visibility: "public", Encrypted: true, KeyGen: 1}
	mustUpdate(t, s, func(tx *Tx) error {
		if err := CreateTopic(tx, m.ID, topic, &TopicMember{MemberID: id("U", 1), Pubkey: key(1), Role: "lead"}, nil); err != nil {
			return err
		}
		if err := CreateTopic(tx, m.ID, &Topic{ID: id("T", 2), Name: "ops"}, &TopicMember{Pubkey: key(1)}, nil); !errors.Is(err, ErrTopicExists) {
			t.Fatalf("a second ops: %v", err)
		}
		return nil
	})
	for i := 1; i <= 10; i++ {
		mustUpdate(t, s, func(tx *Tx) error {
			seq, err := AppendTopicPost(tx, m.ID, &TopicPost{ID: id("P", i), TopicID: topic.ID, SenderPubkey: key(1), SenderMember: key(1),
				ClientMessageID: id("C", i), CreatedAt: int64(i * 100), Push: []byte(`{"n":` + string(rune('0'+i%10)) + `}`)})
			if err == nil && seq != uint64(i) {
				t.Fatalf("seq %d for post %d", seq, i)
			}
			return err
		})
	}
	mustView(t, s, func(tx *Tx) error {
		page, more, err := TopicPostsBefore(tx, m.ID, topic.ID, 0, 4)
		if err != nil || !more || len(page) != 4 || page[0].ID != id("P", 10) || page[3].ID != id("P", 7) {
			t.Fatalf("newest page: %v %v %+v", err, more, page)
		}
		page, more, _ = TopicPostsBefore(tx, m.ID, topic.ID, 3, 4)
		if more || len(page) != 2 || page[0].Seq != 2 || page[1].Seq != 1 {
			t.Fatalf("before 3: %v %+v", more, page)
		}
		page, more, _ = TopicPostsAfter(tx, m.ID, topic.ID, 8, 4)
		if more || len(page) != 2 || page[0].Seq != 9 {
			t.Fatalf("after 8: %v %+v", more, page)
		}
		if p, err := LookupTopicIdempotent(tx, m.ID, key(1), id("C", 4)); err != nil || p.ID != id("P", 4) {
			t.Fatalf("idempotency: %v %+v", err, p)
		}
		return nil
	})
	mustUpdate(t, s, func(tx *Tx) error {
		n, more, err := PurgeTopicPosts(tx, m.ID, topic.ID, 450, 2)
		if err != nil || n != 2 || !more {
			t.Fatalf("first purge: %d %v %v", n, more, err)
		}
		n, more, err = PurgeTopicPosts(tx, m.ID, topic.ID, 450, 100)
		if err != nil || n != 2 || more {
			t.Fatalf("second purge: %d %v %v", n, more, err)
		}
		return nil
	})
	mustView(t, s, func(tx *Tx) error {
		if first := TopicFirstSeq(tx, m.ID, topic.ID); first != 5 {
			t.Fatalf("first seq %d", first)
		}
		if last := TopicLastSeq(tx, m.ID, topic.ID); last != 10 {
			t.Fatalf("last seq %d", last)
		}
		if _, _, err := TopicPostLocation(tx, m.ID, id("P", 2)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("purged post still indexed: %v", err)
		}
		if _, err := LookupTopicIdempotent(tx, m.ID, key(1), id("C", 2)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("purged post's idempotency record: %v", err)
		}
		return nil
	})
}

// A member keeps at most MaxNotifications; the oldest go first.
func TestNotificationsCapped(t *testing.T) {
	s := newStore(t)
	m := testMesh(t, s)
	mustUpdate(t, s, func(tx *Tx) error {
		for i := 1; i <= MaxNotifications+5; i++ {
			if err := AddNotification(tx, m.ID, key(1), &Notification{ID: id("N", i), CreatedAt: int64(i)}); err != nil {
				return err
			}
		}
		return AddNotification(tx, m.ID, key(2), &Notification{ID: id("N", 0), CreatedAt: 1})
	})
	mustView(t, s, func(tx *Tx) error {
		list, err := ListNotifications(tx, m.ID, key(1), 0, false, 2*MaxNotifications)
		if err != nil || len(list) != MaxNotifications || list[0].ID != id("N", 6) {
			t.Fatalf("kept %d, oldest %v: %v", len(list), list[0].ID, err)
		}
		if other, _ := ListNotifications(tx, m.ID, key(2), 0, false, 10); len(other) != 1 {
			t.Fatalf("another member's notifications: %+v", other)
		}
		return nil
	})
}
